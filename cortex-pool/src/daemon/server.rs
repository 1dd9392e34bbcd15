//! The control socket: accepts connections, checks each peer's credentials, and
//! answers framed requests. A malformed, oversized or unauthorised request gets an
//! error reply and a closed connection; everyone else is served as before.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use interprocess::local_socket::tokio::prelude::*;
use pool_core::protocol::FrameCodec;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::durable::{api, listing};
use super::hangup::HangUp;
use super::protocol::{self, frame_reply, Reply, Request, MAX_REPLY};
use super::state::Daemon;

/// How long a connection may sit idle (or in the middle of a frame).
const IDLE: Duration = Duration::from_secs(60);

/// Serves `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: LocalSocketListener,
    daemon: Arc<Daemon>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(daemon.setting(|s| s.max_connections)));
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            conn = listener.accept() => conn,
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(super::http::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let daemon = daemon.clone();
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let uid = conn.peer_creds().ok().and_then(|c| c.euid());
            let LocalSocketStream::UdSocket(inner) = &conn;
            let watch = HangUp::watch(inner.as_fd());
            let (recv, mut send) = tokio::io::split(conn);
            let Ok(_permit) = permit else {
                let reply = Reply::error("busy", "too many control connections");
                let _ = protocol::write(&mut send, &reply, MAX_REPLY).await;
                return;
            };
            let allowed = uid.is_some_and(|uid| daemon.setting(|s| s.allowed_uids.contains(&uid)));
            if !allowed {
                let who = uid.map_or_else(|| "an unknown user".to_owned(), |u| format!("uid {u}"));
                tracing::warn!(peer = %who, "refused a control connection");
                let reply = Reply::error("unauthorized", format!("{who} may not use this daemon"));
                let _ = protocol::write(&mut send, &reply, MAX_REPLY).await;
                return;
            }
            let hung_up = async {
                match &watch {
                    Ok(watch) => watch.hung_up().await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch a control connection for its peer hanging up");
                        std::future::pending().await
                    }
                }
            };
            handle(recv, send, hung_up, daemon).await;
        });
    }
}

/// Answers requests on one connection until it closes or misbehaves.
///
/// The peer may go away while a `wait` is answered (for a task that runs for
/// hours, its client interrupted): its end of the socket closing ends the
/// wait, and with it what the wait held (its waiters, this connection's
/// slot). Other requests are answered to the end. A request that arrives
/// while another is answered is answered next. `hung_up` resolves once the
/// peer hung up, seen without reading what it sent ([`HangUp`]): it ends a
/// wait whose connection is no longer read, having sent all it may ahead.
async fn handle<R, W, H>(recv: R, send: W, hung_up: H, daemon: Arc<Daemon>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    H: std::future::Future<Output = ()>,
{
    tokio::pin!(hung_up);
    let max = daemon.setting(|s| s.max_request_bytes);
    let mut frames = FramedRead::new(recv, FrameCodec::new(max));
    let (replies, rx) = mpsc::channel::<Reply>(1024);
    let writer = tokio::spawn(write_replies(send, rx, MAX_REPLY));
    // Requests that arrived while a wait was answered, answered next in turn.
    let mut early = std::collections::VecDeque::new();
    loop {
        let next = match early.pop_front() {
            Some(next) => next,
            None => match tokio::time::timeout(IDLE, frames.next()).await {
                Err(_) => {
                    let why = format!("no request for {} s; the connection closes", IDLE.as_secs());
                    let _ = replies.send(Reply::error("idle", why)).await;
                    break;
                }
                Ok(None) => break,
                Ok(Some(next)) => next,
            },
        };
        let body = match next {
            Ok(body) => body,
            Err(e) => {
                let kind = if e.kind() == "frame_too_large" {
                    "too_large"
                } else {
                    "malformed"
                };
                let _ = replies.send(Reply::error(kind, e.to_string())).await;
                break;
            }
        };
        let request = match protocol::decode::<Request>(&body) {
            Ok(request) => request,
            Err(e) => {
                let _ = replies
                    .send(Reply::error(
                        "malformed",
                        format!("not a valid request: {e}"),
                    ))
                    .await;
                break;
            }
        };
        // Only a look-up that waits for tasks to settle may hold on for
        // hours with nothing to write; a client that hangs up (its end of the
        // socket closes) ends it. Any other answer is finished: a client may
        // close its writing side and still read (`socat`, `shutdown(SHUT_WR)`).
        let waits = matches!(
            request,
            Request::Wait { .. } | Request::Submit { wait: true, .. }
        );
        let answering = answer(request, &daemon, &replies);
        tokio::pin!(answering);
        // While a wait is answered, the socket is still read: requests sent
        // meanwhile are kept for later (up to `PIPELINED` of them, and
        // `max_request_bytes` in all), and a peer that hangs up, even after
        // sending more, ends the wait: seen as the end of the stream while
        // it is read, and by `hung_up` once it is not.
        let answered = loop {
            // A frame the codec refused ends the reading (its error is
            // answered in turn); the stream says nothing more after it.
            let held: usize = early.iter().map(|f| f.as_ref().map_or(0, Bytes::len)).sum();
            let readable = waits
                && early.len() < PIPELINED
                && held < max
                && !early.back().is_some_and(Result::is_err);
            tokio::select! {
                biased;
                answered = &mut answering => break Some(answered),
                next = frames.next(), if readable => match next {
                    None => break None,
                    Some(next) => early.push_back(next),
                },
                () = &mut hung_up, if waits && !readable => break None,
            }
        };
        // `None`: the peer hung up during its wait.
        if !matches!(answered, Some(Ok(()))) {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
}

/// Requests a connection may send ahead while its wait is answered (and at
/// most `max_request_bytes` of them in all); past them it is not read until
/// the wait ends.
const PIPELINED: usize = 64;

/// Bytes of replies gathered into one write, at most (a larger reply is
/// written alone).
const WRITE_BYTES: usize = 256 * 1024;

/// Writes the replies in order, one frame each. The replies that are waiting
/// together (a `wait`'s lines as a batch of tasks settles) are framed into
/// one buffer and sent with one write, not a system call each. A reply that
/// cannot be framed (over `max` bytes) ends the connection's replies after
/// the ones before it; so does a client that takes none of a write for
/// [`IDLE`].
async fn write_replies<W: AsyncWrite + Unpin>(
    mut send: W,
    mut rx: mpsc::Receiver<Reply>,
    max: usize,
) {
    let mut buf = BytesMut::new();
    while let Some(reply) = rx.recv().await {
        buf.clear();
        let mut framed = frame_reply(&reply, &mut buf, max).is_ok();
        while framed && buf.len() < WRITE_BYTES {
            let Ok(more) = rx.try_recv() else { break };
            framed = frame_reply(&more, &mut buf, max).is_ok();
        }
        if !framed {
            // The client is told why its answers end here.
            let why = Reply::error(
                "too_large",
                format!("a reply larger than {max} bytes cannot be sent; the answers end here"),
            );
            let _ = frame_reply(&why, &mut buf, max);
        }
        let written = write_progressing(&mut send, &buf).await;
        if !framed || !written {
            break;
        }
    }
}

/// Writes `buf` whole; false when the write fails or the client takes none
/// of it for [`IDLE`] (it is let go, its slot and the replies held for it, as
/// one that sends nothing is). A slow reader that keeps taking bytes is never
/// cut off.
async fn write_progressing<W: AsyncWrite + Unpin>(send: &mut W, buf: &[u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        match tokio::time::timeout(IDLE, send.write(&buf[at..])).await {
            Ok(Ok(n)) if n > 0 => at += n,
            _ => return false,
        }
    }
    matches!(tokio::time::timeout(IDLE, send.flush()).await, Ok(Ok(())))
}

type Closed = mpsc::error::SendError<Reply>;

/// The `status` reply: the daemon, its pool's metrics (health `failed` with a
/// `failure` reason when the pool's actor died), the store and the workers.
pub(crate) async fn status(daemon: &Daemon) -> serde_json::Value {
    let paths = daemon.setting(|s| s.paths.clone());
    let store = api::store_status(daemon).await;
    json!({
        "pid": std::process::id(),
        "instance": daemon.instance,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": daemon.started.elapsed().as_millis() as u64,
        "socket": paths.socket,
        "pid_file": paths.pid,
        "metrics": api::with_store_dlq(json!(daemon.pool.metrics()), &store),
        "store": store,
        "outcomes": daemon.unrecorded.json(),
        "workers": daemon.pool.workers().await,
        "queue": super::queue::metrics::status(daemon),
        "alerts": super::health_view::active(
            daemon.pool.alerts().await,
            super::health_view::now_ms(),
        ),
    })
}

async fn answer(
    request: Request,
    daemon: &Arc<Daemon>,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let pool = &daemon.pool;
    let reply = match request {
        Request::Ping => Reply::Json {
            value: json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}),
        },
        Request::Status => Reply::Json {
            value: status(daemon).await,
        },
        Request::Metrics { prometheus: true } => Reply::Text {
            text: super::prometheus::scrape(daemon).await,
        },
        Request::Metrics { prometheus: false } => {
            let store = api::store_status(daemon).await;
            let mut value = api::with_store_dlq(json!(pool.metrics()), &store);
            value["store"] = store;
            value["outcomes"] = daemon.unrecorded.json();
            Reply::Json {
                value: super::queue::metrics::with_queue(value, daemon).await,
            }
        }
        Request::Workers => Reply::Json {
            value: json!(pool.workers().await),
        },
        Request::Submit {
            lines,
            wait,
            first_line,
            text,
        } => {
            return api::submit(lines, wait, first_line, text, daemon, out).await;
        }
        Request::Result { ids, text } => return api::lookup(ids, None, text, daemon, out).await,
        Request::Wait {
            ids,
            timeout_ms,
            text,
        } => {
            let timeout = timeout_ms.map(Duration::from_millis);
            return api::lookup(ids, Some(timeout), text, daemon, out).await;
        }
        Request::Tasks {
            status,
            task_type,
            limit,
            paged,
        } => {
            let shape = listing::Shape::asked(paged);
            return listing::tasks(daemon, status, task_type, limit, shape, out).await;
        }
        Request::DlqList { paged } => {
            return listing::dlq_list(daemon, listing::Shape::asked(paged), out).await;
        }
        Request::DlqRetry { ids } => api::dlq_retry(daemon, ids).await,
        Request::DlqPurge => api::dlq_purge(daemon).await,
        Request::Scale { size } => match pool.scale_to(size).await {
            Ok(size) => Reply::Json {
                value: json!({"size": size}),
            },
            Err(e) => Reply::error("invalid", e.to_string()),
        },
        Request::Alerts { last } => {
            let alerts = pool.alerts().await;
            let skip = alerts.len().saturating_sub(last);
            Reply::Json {
                value: json!(alerts[skip..]),
            }
        }
        Request::Roll => match pool.roll_workers(None).await {
            Ok(replaced) => Reply::Json {
                value: json!({"replaced": replaced}),
            },
            Err(e) => Reply::error("invalid", e.to_string()),
        },
    };
    out.send(reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Reply {
        Reply::Line {
            line: json!({"id": n.to_string(), "status": "ok"}).into(),
        }
    }

    /// The replies in `bytes`, frame by frame.
    fn frames(mut bytes: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            out.push(protocol::decode(&bytes[4..4 + len]).unwrap());
            bytes = &bytes[4 + len..];
        }
        out
    }

    /// A writer that counts the writes it was given.
    #[derive(Default)]
    struct Counting {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn replies_waiting_together_are_one_write_of_their_own_frames_in_order() {
        let (tx, rx) = mpsc::channel(16);
        let sent: Vec<Reply> = (0..10).map(line).collect();
        for reply in &sent {
            tx.send(reply.clone()).await.unwrap();
        }
        drop(tx);
        let mut out = Counting::default();
        write_replies(&mut out, rx, MAX_REPLY).await;
        assert_eq!(frames(&out.bytes), sent);
        assert_eq!(out.writes, 1);
    }

    /// A reply too large to send ends the replies after the ones before it,
    /// with an error that says why (not a connection closed without a word).
    #[tokio::test]
    async fn a_reply_too_large_ends_the_replies_after_the_ones_before_it() {
        let (tx, rx) = mpsc::channel(16);
        tx.send(line(1)).await.unwrap();
        tx.send(Reply::Text {
            text: "x".repeat(1000),
        })
        .await
        .unwrap();
        tx.send(line(2)).await.unwrap();
        drop(tx);
        let mut out = Vec::new();
        write_replies(&mut out, rx, 200).await;
        let sent = frames(&out);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0], line(1));
        assert!(
            matches!(&sent[1], Reply::Error { kind, .. } if kind == "too_large"),
            "{sent:?}"
        );
    }

    /// The two ends of a connection served by a daemon that holds the task
    /// `slow` running (as far as its store knows) and never settles it (no
    /// feeder): the daemon, the connection's task, and the client's halves.
    async fn serving_a_running_task() -> (
        Arc<Daemon>,
        tokio::task::JoinHandle<()>,
        tokio::io::ReadHalf<tokio::io::DuplexStream>,
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
    ) {
        let daemon = crate::daemon::test_daemon::daemon().await;
        let slow = crate::daemon::test_daemon::task("slow");
        daemon.source.accept(vec![slow]).await.unwrap();
        assert_eq!(daemon.source.claim(1, 0).await.unwrap().len(), 1);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (recv, send) = tokio::io::split(server);
        let served = tokio::spawn(handle(recv, send, std::future::pending(), daemon.clone()));
        let (client_recv, client_send) = tokio::io::split(client);
        (daemon, served, client_recv, client_send)
    }

    /// A `wait` whose client went away before its task settled ends there:
    /// its waiters are let go and the connection (a slot of
    /// `max_connections`) ends, instead of waiting for a task that may run
    /// for hours.
    #[tokio::test]
    async fn a_wait_whose_client_went_away_lets_go_of_its_waiters_and_connection() {
        let (daemon, served, client_recv, mut client_send) = serving_a_running_task().await;
        wait_for_slow(&daemon, &mut client_send).await;
        drop((client_recv, client_send));
        ends_with_its_client(&daemon, served).await;
    }

    /// Sends a `wait` without a timeout for the running task `slow`, and
    /// waits until the daemon registered it.
    async fn wait_for_slow(
        daemon: &Daemon,
        client_send: &mut tokio::io::WriteHalf<tokio::io::DuplexStream>,
    ) {
        let wait = Request::Wait {
            ids: vec!["slow".to_owned()],
            timeout_ms: None,
            text: true,
        };
        protocol::write(client_send, &wait, MAX_REPLY)
            .await
            .unwrap();
        let registered = tokio::time::timeout(Duration::from_secs(60), async {
            while daemon.waiters.waited_for() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(registered.await.is_ok(), "the wait never registered");
    }

    /// Sends a `result` request for the task `slow`.
    async fn ask_result_of_slow(client_send: &mut tokio::io::WriteHalf<tokio::io::DuplexStream>) {
        let result = Request::Result {
            ids: vec!["slow".to_owned()],
            text: true,
        };
        protocol::write(client_send, &result, MAX_REPLY)
            .await
            .unwrap();
    }

    /// Every reply the daemon sends on the connection, until it closes.
    async fn every_reply(client_recv: tokio::io::ReadHalf<tokio::io::DuplexStream>) -> Vec<Reply> {
        let mut replies = FramedRead::new(client_recv, FrameCodec::new(MAX_REPLY));
        let mut got = Vec::new();
        while let Some(body) = tokio::time::timeout(Duration::from_secs(60), replies.next())
            .await
            .expect("answered")
        {
            got.push(protocol::decode::<Reply>(&body.unwrap()).unwrap());
        }
        got
    }

    /// The connection ends (its client went away) and no waiter is left.
    async fn ends_with_its_client(daemon: &Daemon, served: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(60), served)
            .await
            .expect("the connection ends with its client")
            .unwrap();
        assert_eq!(daemon.waiters.waited_for(), 0, "no waiter is left behind");
    }

    /// A client that sent another request during its wait, then hung up,
    /// still ends the wait: the socket is read while the wait is answered.
    #[tokio::test]
    async fn a_wait_ends_when_its_client_hangs_up_after_sending_more() {
        let (daemon, served, client_recv, mut client_send) = serving_a_running_task().await;
        wait_for_slow(&daemon, &mut client_send).await;
        ask_result_of_slow(&mut client_send).await;
        drop((client_recv, client_send));
        ends_with_its_client(&daemon, served).await;
    }

    /// A frame too large, sent during a wait, is answered with its error
    /// once the wait is: it is not taken for the client hanging up.
    #[tokio::test]
    async fn a_bad_frame_during_a_wait_is_answered_after_it() {
        use tokio::io::AsyncWriteExt;
        let (_daemon, served, client_recv, mut client_send) = serving_a_running_task().await;
        let wait = Request::Wait {
            ids: vec!["slow".to_owned()],
            timeout_ms: Some(300),
            text: true,
        };
        protocol::write(&mut client_send, &wait, MAX_REPLY)
            .await
            .unwrap();
        // A length prefix past max_request_bytes (1 MiB).
        client_send
            .write_all(&(64u32 << 20).to_be_bytes())
            .await
            .unwrap();
        let got = every_reply(client_recv).await;
        let done = got.iter().position(|r| matches!(r, Reply::Done { .. }));
        let refused = got
            .iter()
            .position(|r| matches!(r, Reply::Error { kind, .. } if kind == "too_large"));
        assert!(
            matches!((done, refused), (Some(d), Some(e)) if d < e),
            "the wait, then the frame's error: {got:?}"
        );
        drop(client_send);
        served.await.unwrap();
    }

    /// A request sent while another is still answered is answered after it,
    /// not taken for the peer going away.
    #[tokio::test]
    async fn a_request_sent_during_an_answer_is_answered_next() {
        // The wait lasts until its timeout.
        let (_daemon, served, client_recv, mut client_send) = serving_a_running_task().await;
        let ids = vec!["slow".to_owned()];
        let wait = Request::Wait {
            ids: ids.clone(),
            timeout_ms: Some(300),
            text: true,
        };
        let result = Request::Result { ids, text: true };
        for request in [&wait, &result] {
            protocol::write(&mut client_send, request, MAX_REPLY)
                .await
                .unwrap();
        }
        let mut replies = FramedRead::new(client_recv, FrameCodec::new(MAX_REPLY));
        let mut done = 0;
        while done < 2 {
            let body = tokio::time::timeout(Duration::from_secs(60), replies.next())
                .await
                .expect("both requests are answered")
                .expect("the connection stays open")
                .unwrap();
            if let Reply::Done { .. } = protocol::decode::<Reply>(&body).unwrap() {
                done += 1;
            }
        }
        drop((replies, client_send));
        served.await.unwrap();
    }

    /// A listing asked for in pages is answered on the connection in pages,
    /// then `Done` counting the entries.
    #[tokio::test]
    async fn a_listing_asked_for_in_pages_is_answered_in_pages_then_done() {
        use tokio::io::AsyncWriteExt;
        let (_daemon, served, client_recv, mut client_send) = serving_a_running_task().await;
        let tasks = Request::Tasks {
            status: None,
            task_type: None,
            limit: 0,
            paged: true,
        };
        protocol::write(&mut client_send, &tasks, MAX_REPLY)
            .await
            .unwrap();
        client_send.shutdown().await.unwrap();
        let got = every_reply(client_recv).await;
        let [Reply::LinesText { lines }, Reply::Done { accepted, refused }] = &got[..] else {
            panic!("a page, then done: {got:?}");
        };
        let entry: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!((lines.len(), &entry["id"]), (1, &json!("slow")));
        assert_eq!((*accepted, *refused), (1, 0));
        served.await.unwrap();
    }

    /// A client may close its writing side once its request is sent and
    /// still read the answer (`socat`, `shutdown(SHUT_WR)`): only a wait ends
    /// when the client hangs up.
    #[tokio::test]
    async fn a_client_that_closes_its_writing_side_still_gets_its_answer() {
        use tokio::io::AsyncWriteExt;
        let (_daemon, served, client_recv, mut client_send) = serving_a_running_task().await;
        ask_result_of_slow(&mut client_send).await;
        client_send.shutdown().await.unwrap();
        let got = every_reply(client_recv).await;
        assert!(
            matches!(got.last(), Some(Reply::Done { .. })),
            "the whole answer: {got:?}"
        );
        served.await.unwrap();
    }

    /// A client that sends requests and never reads their answers is let go
    /// once a write has waited [`IDLE`] (it held its `max_connections` slot
    /// for ever); one that sends nothing, or stops mid-frame, is told `idle`
    /// before its connection closes.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_or_never_sends_is_let_go_after_idle() {
        let daemon = crate::daemon::test_daemon::daemon().await;
        let (client, server) = tokio::io::duplex(1024);
        let (recv, send) = tokio::io::split(server);
        let served = tokio::spawn(handle(recv, send, std::future::pending(), daemon.clone()));
        let (_client_recv, mut client_send) = tokio::io::split(client);
        let mut requests = BytesMut::new();
        for _ in 0..300 {
            let status = protocol::frame(&Request::Status, MAX_REPLY).unwrap();
            requests.extend_from_slice(&status);
        }
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client_send.write_all(&requests).await;
            client_send
        });
        tokio::time::timeout(IDLE * 3, served)
            .await
            .expect("the connection let go of a client that reads nothing")
            .unwrap();
        drop(writer);

        let (client, server) = tokio::io::duplex(64 * 1024);
        let (recv, send) = tokio::io::split(server);
        let served = tokio::spawn(handle(recv, send, std::future::pending(), daemon));
        let (client_recv, mut client_send) = tokio::io::split(client);
        {
            use tokio::io::AsyncWriteExt;
            client_send.write_all(&[0, 0, 0, 9, 0x81]).await.unwrap();
        }
        let mut replies = FramedRead::new(client_recv, FrameCodec::new(MAX_REPLY));
        let body = tokio::time::timeout(IDLE * 2, replies.next())
            .await
            .expect("answered")
            .expect("a reply")
            .unwrap();
        let reply: Reply = protocol::decode(&body).unwrap();
        assert!(
            matches!(&reply, Reply::Error { kind, .. } if kind == "idle"),
            "{reply:?}"
        );
        assert!(replies.next().await.is_none(), "the connection closed");
        served.await.unwrap();
    }

    /// A control socket's file, removed when the test ends, passed or not.
    struct SocketFile(std::path::PathBuf);

    impl Drop for SocketFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Whether a new client is served (answered, not refused as `busy`).
    async fn served(socket: &std::path::Path) -> bool {
        let mut client = crate::daemon::client::Client::connect(socket)
            .await
            .expect("the socket takes connections");
        match client.call(&Request::Ping).await {
            Ok(Reply::Json { .. }) => true,
            Ok(Reply::Error { kind, .. }) if kind == "busy" => false,
            other => panic!("unexpected answer: {other:?}"),
        }
    }

    /// A client that sent a `wait` and, behind it, more requests than the
    /// daemon reads ahead, then hung up, lets go of its connection's slot
    /// (of `max_connections`, here 1) and of its waiters, though the end of
    /// its stream was never read and the task it waited for still runs.
    #[tokio::test]
    async fn a_client_that_pipelined_past_the_read_ahead_and_hung_up_frees_its_slot() {
        use interprocess::local_socket::{GenericFilePath, ListenerOptions};
        use task_source::TaskState;
        let daemon = crate::daemon::test_daemon::daemon_set(
            Arc::new(task_source::MemorySource::new()),
            |s| s.max_connections = 1,
        )
        .await;
        daemon
            .source
            .accept(vec![crate::daemon::test_daemon::task("slow")])
            .await
            .unwrap();
        assert_eq!(daemon.source.claim(1, 0).await.unwrap().len(), 1);
        let socket = SocketFile(
            std::env::temp_dir().join(format!("cp-serve-hangup-{}.sock", std::process::id())),
        );
        let _ = std::fs::remove_file(&socket.0);
        let listener = ListenerOptions::new()
            .name(socket.0.as_path().to_fs_name::<GenericFilePath>().unwrap())
            .create_tokio()
            .unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, daemon.clone(), stop.clone()));
        let _stop_on_exit = stop.clone().drop_guard();

        let mut client = crate::daemon::client::Client::connect(&socket.0)
            .await
            .unwrap();
        let wait = Request::Wait {
            ids: vec!["slow".to_owned()],
            timeout_ms: None,
            text: true,
        };
        for _ in 0..1 + PIPELINED + 8 {
            client.send(&wait).await.unwrap();
        }
        let registered = tokio::time::timeout(Duration::from_secs(60), async {
            while daemon.waiters.waited_for() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(registered.await.is_ok(), "the wait never registered");
        assert!(
            !served(&socket.0).await,
            "the one slot is the waiting client's"
        );

        drop(client);
        let freed = tokio::time::timeout(Duration::from_secs(60), async {
            while !served(&socket.0).await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(freed.await.is_ok(), "the slot stays taken");
        assert_eq!(daemon.waiters.waited_for(), 0, "no waiter is left behind");
        let status = daemon.source.status(vec!["slow".to_owned()]).await.unwrap();
        assert_eq!(
            status[0].as_ref().map(|s| s.state),
            Some(TaskState::Running),
            "the task is not touched"
        );
        stop.cancel();
        server.await.unwrap();
    }
}
