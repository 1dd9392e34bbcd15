//! The dispatcher: reads manager frames after the handshake and runs tasks.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use pool_core::protocol::{
    decode_to_worker, ErrorReply, FrameCodec, FrameError, FromWorker, TaskFrame, ToWorker,
};
use tokio::io::AsyncRead;
use tokio::task::{Id, JoinSet};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::handler::{ErasedHandler, HandlerOutput};
use crate::stats::{InFlight, Stats};
use crate::writer::Outbox;
use crate::{ServeError, Stopped, TaskContext};

/// Everything the dispatch loop owns.
pub(crate) struct Dispatcher<'a, R> {
    pub(crate) frames: &'a mut FramedRead<R, FrameCodec>,
    pub(crate) outbox: Outbox,
    pub(crate) broken: CancellationToken,
    pub(crate) handlers: Arc<HashMap<String, ErasedHandler>>,
    pub(crate) worker_id: Arc<str>,
    pub(crate) stats: Arc<Stats>,
}

/// The tasks in flight: their cancellation tokens, by task id and by tokio task id.
#[derive(Default)]
struct Running {
    set: JoinSet<()>,
    tokens: HashMap<u64, CancellationToken>,
    ids: HashMap<Id, u64>,
}

impl<R: AsyncRead + Unpin> Dispatcher<'_, R> {
    /// Serves tasks until shutdown, end of input, or a protocol error.
    ///
    /// On return, tasks still running are aborted when `self` is dropped.
    pub(crate) async fn run(self) -> Result<Stopped, ServeError> {
        let mut running = Running::default();
        let mut draining = false;
        loop {
            if draining && running.set.is_empty() {
                return Ok(Stopped::Shutdown);
            }
            tokio::select! {
                biased;
                () = self.broken.cancelled() => return Ok(Stopped::Disconnected),
                Some(joined) = running.set.join_next_with_id() => {
                    let tokio_id = match joined {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    if let Some(task_id) = running.ids.remove(&tokio_id) {
                        running.tokens.remove(&task_id);
                    }
                }
                frame = self.frames.next() => {
                    let Some(body) = frame.transpose()? else {
                        return Ok(Stopped::Disconnected);
                    };
                    match decode_to_worker(&body)? {
                        ToWorker::Task(task) if draining => self.refuse(&task, "shutting_down",
                            "the worker is shutting down", true),
                        ToWorker::Task(task) => self.start(&body, &task, &mut running),
                        ToWorker::Cancel { id } => {
                            if let Some(token) = running.tokens.get(&id) {
                                token.cancel();
                            }
                        }
                        ToWorker::Shutdown { graceful: true } => draining = true,
                        ToWorker::Shutdown { graceful: false } => {
                            for token in running.tokens.values() {
                                token.cancel();
                            }
                            return Ok(Stopped::Shutdown);
                        }
                        ToWorker::Hello { .. } => {
                            return Err(ServeError::Protocol(FrameError::Unexpected {
                                expected: "task, cancel or shutdown",
                                got: "a second hello".into(),
                            }));
                        }
                        other => {
                            return Err(ServeError::Protocol(FrameError::Unexpected {
                                expected: "task, cancel or shutdown",
                                got: format!("{other:?}"),
                            }));
                        }
                    }
                }
            }
        }
    }

    /// Replies with an error at once, without running anything.
    fn refuse(&self, task: &TaskFrame<'_>, kind: &str, message: &str, retryable: bool) {
        self.stats.count_done();
        send_reply(
            &self.outbox,
            task.id,
            Err(crate::HandlerError::retryable(message)),
            Some((kind, retryable)),
        );
    }

    /// Spawns the task's handler, or refuses the task.
    fn start(&self, body: &Bytes, task: &TaskFrame<'_>, running: &mut Running) {
        let Some(handler) = self.handlers.get(task.task_type) else {
            let message = format!("no handler for task type {:?}", task.task_type);
            return self.refuse(task, "unknown_type", &message, false);
        };
        if running.tokens.contains_key(&task.id) {
            let message = format!("task {} is already running in this worker", task.id);
            return self.refuse(task, "duplicate_task", &message, false);
        }
        let token = CancellationToken::new();
        let ctx = TaskContext::new(
            task.id,
            task.attempt,
            Duration::from_millis(task.timeout_ms),
            task.task_type.into(),
            Arc::clone(&self.worker_id),
            token.clone(),
        );
        // The payload stays in the frame's buffer: no copy.
        let payload = body.slice_ref(task.payload);
        let handler = Arc::clone(handler);
        let outbox = self.outbox.clone();
        let in_flight = InFlight::start(&self.stats);
        let id = task.id;
        let cancelled = token.clone();
        let abort = running.set.spawn(async move {
            let output = AssertUnwindSafe(async move { handler(ctx, payload).await })
                .catch_unwind()
                .await;
            let output: HandlerOutput = output.unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the handler panicked".to_owned());
                Err(
                    crate::HandlerError::retryable(format!("handler panicked: {text}"))
                        .with_kind("panic"),
                )
            });
            let override_kind = match &output {
                Err(_) if cancelled.is_cancelled() => Some(("cancelled", false)),
                _ => None,
            };
            drop(in_flight);
            send_reply(&outbox, id, output, override_kind);
        });
        running.tokens.insert(task.id, token);
        running.ids.insert(abort.id(), task.id);
    }
}

/// Sends a task's reply; a result too large for the link becomes an error reply.
fn send_reply(
    outbox: &Outbox,
    id: u64,
    output: HandlerOutput,
    override_kind: Option<(&str, bool)>,
) {
    let error = match output {
        Ok(payload) => match outbox.send(&FromWorker::Result {
            id,
            payload: &payload,
        }) {
            Ok(()) => return,
            Err(e) => crate::HandlerError::fatal(format!(
                "the result of {} bytes does not fit in a frame of at most {} bytes ({e})",
                payload.len(),
                outbox.max_frame()
            ))
            .with_kind("result_too_large"),
        },
        Err(e) => e,
    };
    let (kind, retryable) = override_kind.unwrap_or((error.kind(), error.is_retryable()));
    let reply = FromWorker::Error(ErrorReply {
        id,
        kind,
        message: error.message(),
        retryable,
    });
    if outbox.send(&reply).is_err() {
        // Only a huge message can make an error reply too large: send it shortened.
        let short: String = error.message().chars().take(1024).collect();
        let _ = outbox.send(&FromWorker::Error(ErrorReply {
            id,
            kind,
            message: &short,
            retryable,
        }));
    }
}
