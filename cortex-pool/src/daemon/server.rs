//! The control socket: accepts connections, checks each peer's credentials, and
//! answers framed requests. A malformed, oversized or unauthorised request gets an
//! error reply and a closed connection; everyone else is served as before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use interprocess::local_socket::tokio::prelude::*;
use tokio::io::{ReadHalf, WriteHalf};

type RecvHalf = ReadHalf<LocalSocketStream>;
type SendHalf = WriteHalf<LocalSocketStream>;
use pool_core::protocol::FrameCodec;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, Reply, Request, MAX_REPLY};
use super::state::Daemon;
use crate::cli::{input, output};

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
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let daemon = daemon.clone();
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let uid = conn.peer_creds().ok().and_then(|c| c.euid());
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
            handle(recv, send, daemon).await;
        });
    }
}

/// Answers requests on one connection until it closes or misbehaves.
async fn handle(recv: RecvHalf, send: SendHalf, daemon: Arc<Daemon>) {
    let max = daemon.setting(|s| s.max_request_bytes);
    let mut frames = FramedRead::new(recv, FrameCodec::new(max));
    let (replies, rx) = mpsc::channel::<Reply>(1024);
    let writer = tokio::spawn(write_replies(send, rx));
    loop {
        let body = match tokio::time::timeout(IDLE, frames.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Ok(body))) => body,
            Ok(Some(Err(e))) => {
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
        if answer(request, &daemon, &replies).await.is_err() {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
}

async fn write_replies(mut send: SendHalf, mut rx: mpsc::Receiver<Reply>) {
    while let Some(reply) = rx.recv().await {
        if protocol::write(&mut send, &reply, MAX_REPLY).await.is_err() {
            break;
        }
    }
}

type Closed = mpsc::error::SendError<Reply>;

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
        Request::Status => {
            let paths = daemon.setting(|s| s.paths.clone());
            Reply::Json {
                value: json!({
                    "pid": std::process::id(),
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_ms": daemon.started.elapsed().as_millis() as u64,
                    "socket": paths.socket,
                    "pid_file": paths.pid,
                    "metrics": pool.metrics(),
                    "workers": pool.workers().await,
                }),
            }
        }
        Request::Metrics { prometheus: true } => Reply::Text {
            text: super::prometheus::render(daemon),
        },
        Request::Metrics { prometheus: false } => Reply::Json {
            value: json!(pool.metrics()),
        },
        Request::Workers => Reply::Json {
            value: json!(pool.workers().await),
        },
        Request::Submit {
            lines,
            wait,
            first_line,
        } => {
            return submit(lines, wait, first_line, daemon, out).await;
        }
        Request::DlqList => {
            let entries: Vec<_> = pool
                .dead_letters()
                .await
                .into_iter()
                .map(|d| {
                    let payload = rmp_serde::from_slice::<serde_json::Value>(&d.task.payload)
                        .unwrap_or(serde_json::Value::Null);
                    json!({
                        "id": d.id,
                        "type": &*d.task.task_type,
                        "payload": payload,
                        "attempts": d.attempts,
                        "error": {"kind": d.failure.kind(), "message": d.failure.to_string()},
                        "at_ms": d.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_millis() as u64),
                    })
                })
                .collect();
            Reply::Json {
                value: json!(entries),
            }
        }
        Request::DlqRetry { ids } => match pool.retry_dead_letters(ids).await {
            Ok(handles) => Reply::Done {
                accepted: handles.len() as u64,
                refused: 0,
            },
            Err(e) => Reply::error("shutting_down", e.to_string()),
        },
        Request::DlqPurge => Reply::Done {
            accepted: pool.clear_dead_letters().await as u64,
            refused: 0,
        },
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

/// Submits each line; with `wait`, streams one result line per task as it ends.
async fn submit(
    lines: Vec<String>,
    wait: bool,
    first_line: u64,
    daemon: &Arc<Daemon>,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut running = JoinSet::new();
    for (n, text) in lines.iter().enumerate() {
        let line_no = first_line + n as u64;
        if text.trim().is_empty() {
            continue;
        }
        let parsed = match input::parse(text, line_no) {
            Ok(parsed) => parsed,
            Err(message) => {
                refused += 1;
                out.send(Reply::Line {
                    line: output::invalid(line_no, &message).json,
                })
                .await?;
                continue;
            }
        };
        let since = Instant::now();
        match daemon.pool.submit(parsed.task).await {
            Ok(handle) => {
                accepted += 1;
                if wait {
                    let out = out.clone();
                    let daemon = daemon.clone();
                    running.spawn(async move {
                        let outcome = handle.await;
                        let elapsed = since.elapsed();
                        daemon.latency.observe(elapsed.as_secs_f64());
                        let ms = elapsed.as_secs_f64() * 1000.0;
                        let line = match outcome {
                            Ok(result) => output::ok(&parsed.id, &result, ms),
                            Err(err) => output::failed(&parsed.id, &err, ms),
                        };
                        let _ = out.send(Reply::Line { line: line.json }).await;
                    });
                }
            }
            Err(e) => {
                refused += 1;
                out.send(Reply::Line {
                    line: output::refused(&parsed.id, &e).json,
                })
                .await?;
            }
        }
    }
    while running.join_next().await.is_some() {}
    out.send(Reply::Done { accepted, refused }).await
}
