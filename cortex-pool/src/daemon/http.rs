//! The optional HTTP endpoint for scrapers: `GET /metrics` (OpenMetrics or the
//! classic Prometheus text, as the scraper's `Accept` asks; see
//! [`super::exposition`]) and `GET /healthz`, on a loopback address only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::exposition::Format;
use super::state::Daemon;

/// Binds `addr`.
///
/// # Errors
/// When the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Scrapes answered at once; a connection past them is closed unanswered
/// (any local user may connect: loopback TCP checks no uid).
const MAX_SCRAPES: usize = 16;

/// How long one scrape may take, its request read included.
const SCRAPE_TIME: Duration = Duration::from_secs(5);

/// How long the accept loop waits after a failed accept (out of file
/// descriptors, say) before it tries again, instead of spinning.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves scrapes until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, daemon: Arc<Daemon>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let conn = match accepted {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SCRAPE_TIME, answer(conn, &daemon)).await;
            drop(slot);
        });
    }
}

async fn answer(mut conn: TcpStream, daemon: &Daemon) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let n = conn.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if head_ended(&buf[..len]) {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    // A scrape may add a query (Prometheus' `params`): the path alone names
    // what is asked for.
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    // HEAD is answered as GET is, without the body.
    let with_body = method != "HEAD";
    let method = if method == "HEAD" { "GET" } else { method };
    let allow = if method == "GET" {
        ""
    } else {
        "Allow: GET, HEAD\r\n"
    };
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => {
            let format = Format::asked_in(&head);
            (
                "200 OK",
                format.content_type(),
                format.render(super::prometheus::scrape(daemon).await),
            )
        }
        ("GET", "/healthz") => {
            let health = daemon.pool.metrics().health.status;
            let status = if matches!(
                health,
                pool_core::HealthStatus::Critical | pool_core::HealthStatus::Failed
            ) {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            (status, "text/plain", format!("{health}\n"))
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET or HEAD only\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{}",
        body.len(),
        if with_body { body.as_str() } else { "" }
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

/// Whether `read` holds a whole request head: its blank line, after CRLF
/// line ends or bare LF ones (which some clients send).
fn head_ended(read: &[u8]) -> bool {
    read.windows(4).any(|w| w == b"\r\n\r\n") || read.windows(2).any(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint of a test daemon, served on a free loopback port until
    /// the token is cancelled.
    async fn serving() -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let daemon = crate::daemon::test_daemon::daemon().await;
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(listener, daemon, stop.clone()));
        (addr, stop, served)
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        send(addr, &format!("GET {path} HTTP/1.1\r\n\r\n")).await
    }

    /// Sends `request` as it is and reads the whole answer.
    async fn send(addr: SocketAddr, request: &str) -> String {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out).await;
        out
    }

    /// A query after the path, a HEAD, bare LF line ends and another method
    /// are each answered as HTTP says: the path's page, the head alone, an
    /// answer (not a wait for a CRLF that never comes), 405 with `Allow`.
    #[tokio::test]
    async fn queries_head_bare_line_feeds_and_other_methods_are_answered() {
        let (addr, stop, served) = serving().await;
        let queried = get(addr, "/metrics?module=pool").await;
        assert!(queried.starts_with("HTTP/1.1 200"), "{queried}");
        assert!(queried.contains("cortex_pool_"), "{queried}");
        let head = send(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        let (head_part, body) = head.split_once("\r\n\r\n").expect("a head");
        assert!(head_part.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head_part.contains("Content-Length: 0\r\n"), "{head}");
        assert_eq!(body, "", "no body for HEAD");
        // Unanswered, the connection is closed when the scrape's time runs out.
        let bare = send(addr, "GET /healthz HTTP/1.0\n\n").await;
        assert!(bare.starts_with("HTTP/1.1 200"), "{bare}");
        let post = send(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        stop.cancel();
        served.await.unwrap();
    }

    /// Prometheus (which asks for OpenMetrics) gets the OpenMetrics text under
    /// its content type; a scraper that asks for nothing gets the classic text
    /// under `version=0.0.4`, its counters typed by their sample's name.
    #[tokio::test]
    async fn metrics_come_in_the_format_the_scraper_accepts() {
        let (addr, stop, served) = serving().await;
        let open = send(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n\r\n",
        )
        .await;
        assert!(
            open.contains(
                "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE cortex_pool_tasks_submitted counter\n"),
            "{open}"
        );
        let classic = get(addr, "/metrics").await;
        assert!(
            classic.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(
            classic.contains("# TYPE cortex_pool_tasks_submitted_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("\ncortex_pool_tasks_submitted_total 0\n"),
            "{classic}"
        );
        stop.cancel();
        served.await.unwrap();
    }

    /// At most [`MAX_SCRAPES`] connections are served at once: one past them
    /// is closed unanswered (idle connections held a task each, unbounded),
    /// and once they go, scrapes are answered again.
    #[tokio::test]
    async fn connections_past_the_scrape_slots_are_closed_until_slots_free() {
        let (addr, stop, served) = serving().await;
        let mut idle = Vec::new();
        for _ in 0..MAX_SCRAPES {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Accepted in order, each taking its slot in the accept loop: the
        // next one finds none.
        assert_eq!(get(addr, "/healthz").await, "", "answered past the slots");
        drop(idle);
        let mut answered = String::new();
        for _ in 0..100 {
            answered = get(addr, "/healthz").await;
            if !answered.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered:?}");
        stop.cancel();
        served.await.unwrap();
    }
}
