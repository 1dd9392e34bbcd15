//! The optional HTTP endpoint for scrapers: `GET /metrics` (Prometheus text) and
//! `GET /healthz`, on a loopback address only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::state::Daemon;

/// Binds `addr`.
///
/// # Errors
/// When the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves scrapes until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, daemon: Arc<Daemon>, stop: CancellationToken) {
    loop {
        let (conn, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(conn, &daemon)).await;
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
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::prometheus::scrape(daemon).await,
        ),
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
            "GET only\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}
