//! The dispatcher: reads manager frames after the handshake and runs tasks, at most
//! `hello.concurrency` at once; the others wait in arrival order.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use pool_core::protocol::emit::Scratch;
use pool_core::protocol::{encode_frame, ErrorReply, FrameError, FromWorker, ToWorker};
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use crate::broken::{Broken, WhenBroken};
use crate::cancel::Cancel;
use crate::handler::{Caught, Encoded, HandlerOutput, Started};
use crate::idle_read::IdleSwitch;
use crate::registry::{Lookup, Registered};
use crate::running::{Replied, Running};
use crate::stats::{InFlight, Stats};
use crate::task_frames::TaskFrames;
use crate::wire::{self, Frame, Task};
use crate::writer::Outbox;
use crate::{ServeError, Stopped, TaskContext};

/// Frames handled per read batch before the replies are handed to the writer.
const READ_BATCH: usize = 256;

/// How long a worker holds finished tasks' replies while later tasks start, by
/// default ([`Worker::hold_replies`](crate::Worker::hold_replies)): before a
/// task starts, replies held since longer are written first.
pub const HOLD_REPLIES: Duration = Duration::from_millis(1);

/// Everything the dispatch loop owns.
pub(crate) struct Dispatcher<'a, R> {
    pub(crate) frames: &'a mut FramedRead<R, TaskFrames>,
    pub(crate) outbox: Outbox,
    pub(crate) broken: Arc<Broken>,
    pub(crate) handlers: Lookup,
    pub(crate) worker_id: Arc<str>,
    pub(crate) stats: Arc<Stats>,
    /// The most tasks running at once (`hello.concurrency`; `usize::MAX` without it).
    pub(crate) limit: usize,
    /// How long finished tasks' replies may be held while later tasks start
    /// (`None`: not at all, each is written before a later task starts).
    pub(crate) hold: Option<Duration>,
    /// Turned on while nothing but the next frame can happen, so that the reader
    /// waits for it in one blocking read (see [`idle_read`](crate::idle_read));
    /// `None` where the reader cannot or must not block.
    pub(crate) idle: Option<IdleSwitch>,
}

/// A task that arrived while every slot was taken: what it needs to start later.
struct Waiting {
    id: u64,
    attempt: u32,
    timeout_ms: u64,
    handler: Registered,
    /// Sliced from the frame's buffer: no copy.
    payload: Bytes,
}

impl<R: AsyncRead + Unpin> Dispatcher<'_, R> {
    /// Serves tasks until shutdown (a graceful one once its tasks replied, even
    /// if the input ended meanwhile), end of input, or a protocol error.
    ///
    /// On return, tasks still running are aborted when `self` is dropped.
    pub(crate) async fn run(mut self) -> Result<Stopped, ServeError> {
        let mut running = Running::default();
        let mut waiting = VecDeque::new();
        let mut draining = false;
        // False once the input ended during a drain, which goes on without it.
        let mut input_open = true;
        let mut replies = BytesMut::new();
        // One wait for the whole loop (see `WhenBroken`).
        let broken = WhenBroken::new(Arc::clone(&self.broken));
        tokio::pin!(broken);
        loop {
            if draining && running.is_idle() && waiting.is_empty() {
                return Ok(Stopped::Shutdown);
            }
            match &self.idle {
                // Besides a frame, only a broken output can happen then, which
                // the heartbeat thread acts on (see `heartbeat::spawn`).
                Some(idle) if input_open => idle.allow_if_alone(),
                _ => {}
            }
            tokio::select! {
                biased;
                () = &mut broken => return Ok(Stopped::Disconnected),
                // Not polled while no task runs (it would only say so).
                Some(joined) = running.join_next(), if !running.is_idle() => {
                    running.forget(joined);
                    // A slot is free: start the tasks waiting for one.
                    self.start_waiting(&mut running, &mut waiting, &mut replies);
                    self.flush(&mut replies);
                }
                frame = self.frames.next(), if input_open => {
                    // No more blocking reads: the batch reads only what is there.
                    if let Some(idle) = &self.idle {
                        idle.forbid();
                    }
                    if frame.is_none() && draining {
                        // End of input after a graceful shutdown (the manager
                        // closes it right after the `shutdown`) does not cut the
                        // drain short: it reads on until this worker exits.
                        input_open = false;
                        continue;
                    }
                    // Handle this frame and every further one already readable; the
                    // replies that are still unwritten when the batch ends (or before
                    // a task starts) are written in one piece.
                    let mut batch = Batch {
                        now: None,
                        ready: None,
                        draining: &mut draining,
                        running: &mut running,
                        waiting: &mut waiting,
                        replies: &mut replies,
                    };
                    let outcome = self.read_batch(frame, &mut batch);
                    if let Some(started) = &mut batch.now {
                        self.time_last(started);
                    }
                    if matches!(outcome, Ok(None)) && !waiting.is_empty() {
                        // A task reaped during the batch (a repeated id, see
                        // `on_task`) freed its slot with no join left to say so.
                        self.start_waiting(&mut running, &mut waiting, &mut replies);
                    }
                    self.flush(&mut replies);
                    if let Some(stop) = outcome? {
                        return Ok(stop);
                    }
                }
            }
        }
    }

    /// A batch whose tasks start now.
    fn batch_start(&self) -> BatchStart {
        BatchStart::new(Instant::now(), self.hold)
    }

    /// Writes the replies gathered so far, if any.
    fn flush(&self, replies: &mut BytesMut) {
        if !replies.is_empty() {
            self.outbox.send_encoded(replies);
            replies.clear();
        }
    }

    /// Starts waiting tasks, oldest first, while a slot is free.
    fn start_waiting(
        &self,
        running: &mut Running,
        waiting: &mut VecDeque<Waiting>,
        replies: &mut BytesMut,
    ) {
        let mut started = self.batch_start();
        while running.len() < self.limit {
            let Some(task) = waiting.pop_front() else {
                break;
            };
            self.stats.count_waited();
            self.run_task(task, &mut started, running, replies);
        }
        self.time_last(&mut started);
    }

    /// Times the task of `started` that started last, if it is timed (see
    /// [`BatchStart::last`]): at the end of a batch, with no next task to time
    /// it.
    #[inline]
    fn time_last(&self, started: &mut BatchStart) {
        if let Some(hold) = self.hold {
            if started.last.is_some() {
                let now = Instant::now();
                if started.replies_due.is_some_and(|due| now >= due) {
                    self.time_slow(started, now, hold);
                }
                started.last = None;
            }
        }
    }

    /// Marks the type of the task started last as blocking if it held the
    /// thread for longer than `hold` (until `now`). Called only once `now` is
    /// past the batch's `replies_due`: a hold after the batch started, no later
    /// than that task, so before it the task was quick, found without a
    /// subtraction.
    #[cold]
    #[inline(never)]
    fn time_slow(&self, started: &BatchStart, now: Instant, hold: Duration) {
        if let Some((at, pace)) = started.last {
            if now.saturating_duration_since(at) > hold {
                self.handlers.slow(pace);
            }
        }
    }

    /// Handles `first` and then up to [`READ_BATCH`] frames that are readable without
    /// waiting; replies of tasks that finished at once are appended to `replies`.
    /// `Some` when the session ends.
    fn read_batch(
        &mut self,
        first: Option<Result<Bytes, FrameError>>,
        batch: &mut Batch<'_>,
    ) -> Result<Option<Stopped>, ServeError> {
        let mut frame = first;
        for handled in 1..=READ_BATCH {
            let Some(body) = frame.transpose()? else {
                return Ok(Some(Stopped::Disconnected));
            };
            let stop = self.on_frame(&body, batch)?;
            // Let go of the frame before the next one is read: when no task kept a
            // slice of it, the read buffer is ours alone again and the next frame
            // is read into it, not into a fresh allocation (for a 1 MiB payload, a
            // fresh one costs a page fault per 4 KiB on top of the copy). And
            // before its task starts: a large frame's buffer is then the
            // payload's alone (`task_frames`), and a handler that takes it as
            // an owned buffer takes it without a copy (`bytes_path`).
            drop(body);
            if let Some(task) = batch.ready.take() {
                let started = batch.now.get_or_insert_with(|| self.batch_start());
                self.run_task(task, started, batch.running, batch.replies);
            }
            if let Some(stop) = stop {
                return Ok(Some(stop));
            }
            // Back to the main loop, which looks at these first, as it always did;
            // and after a full batch, before a next frame is taken out of the
            // stream (it would be dropped with this loop).
            if self.outbox.is_broken() || handled == READ_BATCH {
                break;
            }
            frame = match self.buffered() {
                // A whole frame already read: no poll of the stream needed. In a
                // drain, frames read with the `shutdown` are still handled (a late
                // task is refused, a cancel applies) before the drain may end.
                Ok(Some(body)) => Some(Ok(body)),
                Err(e) => Some(Err(e)),
                Ok(None) if *batch.draining => break,
                // The blocking read that brought these frames emptied the
                // pipe: a poll now would find nothing (the loop's next read
                // waits for more).
                Ok(None) if self.idle.as_ref().is_some_and(IdleSwitch::take_emptied) => break,
                Ok(None) => match self.frames.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                },
            };
        }
        Ok(None)
    }

    /// The next frame already in the read buffer, taken with the link's own codec.
    fn buffered(&mut self) -> Result<Option<Bytes>, FrameError> {
        // The codec is a stateless `Copy` value: a copy decodes exactly as the stream's.
        let mut codec = *self.frames.decoder();
        codec.decode(self.frames.read_buffer_mut())
    }

    /// Handles one frame from the manager.
    fn on_frame(
        &mut self,
        body: &Bytes,
        batch: &mut Batch<'_>,
    ) -> Result<Option<Stopped>, ServeError> {
        let message = match wire::decode(body, self.handlers.last_type())? {
            Frame::Task(task) if *batch.draining => {
                self.refuse(
                    task.id,
                    "shutting_down",
                    "the worker is shutting down",
                    true,
                    batch.replies,
                );
                return Ok(None);
            }
            Frame::Task(task) => {
                self.on_task(body, &task, batch);
                return Ok(None);
            }
            Frame::Other(message) => message,
            Frame::Unknown => return Ok(None),
        };
        match message {
            ToWorker::Cancel { id } => self.on_cancel(id, batch),
            ToWorker::Shutdown { graceful: true } => *batch.draining = true,
            ToWorker::Shutdown { graceful: false } => {
                batch.running.cancel_all();
                return Ok(Some(Stopped::Shutdown));
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
                    got: other.name().to_owned(),
                }));
            }
        }
        Ok(None)
    }

    /// Cancels a running task, or answers a waiting one as `cancelled` at once (it
    /// never runs). A cancel for a task that is not here is ignored.
    fn on_cancel(&self, id: u64, batch: &mut Batch<'_>) {
        if batch.running.cancel(id) {
            return;
        }
        if let Some(at) = batch.waiting.iter().position(|w| w.id == id) {
            batch.waiting.remove(at);
            self.stats.count_waited();
            let message = format!("task {id} was cancelled before it started");
            self.refuse(id, "cancelled", &message, false, batch.replies);
        }
    }

    /// Replies with an error at once, without running anything.
    fn refuse(&self, id: u64, kind: &str, message: &str, retryable: bool, replies: &mut BytesMut) {
        self.stats.count_done();
        send_reply(
            &mut Sink::Batch(&self.outbox, replies),
            id,
            Err(crate::HandlerError::retryable(message)),
            Some((kind, retryable)),
        );
    }

    /// Starts the task when a slot is free and nothing waits before it (one
    /// with a payload of [`APART_MIN`] bytes or more once its frame is let go,
    /// `Batch::ready`), makes it wait otherwise, or refuses it (unknown type, an
    /// id already here).
    fn on_task(&mut self, body: &Bytes, task: &Task<'_>, batch: &mut Batch<'_>) {
        let handler = match self.handlers.get(&task.task_type) {
            Ok(handler) => handler.clone(),
            Err(name) => {
                let message = format!("no handler for task type {name:?}");
                return self.refuse(task.id, "unknown_type", &message, false, batch.replies);
            }
        };
        if batch.running.holds_unanswered(task.id) || batch.waiting.iter().any(|w| w.id == task.id)
        {
            let message = format!("task {} is already running in this worker", task.id);
            return self.refuse(task.id, "duplicate_task", &message, false, batch.replies);
        }
        let task = Waiting {
            id: task.id,
            attempt: task.attempt,
            timeout_ms: task.timeout_ms,
            handler,
            // The payload stays in the frame's buffer: no copy.
            payload: body.slice_ref(task.payload),
        };
        if batch.waiting.is_empty() && batch.running.len() < self.limit {
            if task.payload.len() >= APART_MIN {
                // Started once the frame is let go (`read_batch`).
                batch.ready = Some(task);
            } else {
                let started = batch.now.get_or_insert_with(|| self.batch_start());
                self.run_task(task, started, batch.running, batch.replies);
            }
        } else {
            batch.waiting.push_back(task);
            self.stats.count_waiting();
        }
    }

    /// Runs the task's handler.
    ///
    /// The replies gathered so far are written first, unless replies are batched
    /// (`self.hold`), the batch started less than the hold ago and the task's
    /// type does not count as blocking ([`Pace`](crate::registry::Pace)): then
    /// they stay for one write with the next ones, and the worker said so in
    /// `ready` (`docs/PROTOCOL.md`, "Batched replies"). Otherwise a finished
    /// task's reply is on the wire before a later task starts, so a task that
    /// kills the process cannot take it along, and a task that blocks the
    /// thread does not delay it.
    ///
    /// With batched replies, whether the task held the thread for longer than
    /// the hold as it started is found from the clock read before it and the
    /// next one (the next task's start, or the end of the batch:
    /// [`BatchStart::last`]). The clock is read where it was read anyway (held
    /// replies to check, a batch's first task), before a task that follows one
    /// that went pending, and once at the end of a batch; the two readings are
    /// subtracted only when the held replies are due.
    ///
    /// The handler's future is polled once right here: when it finishes at once (a
    /// handler with nothing to wait for, like most small ones), its reply joins
    /// `replies` and no tokio task, cancellation entry or thread hop is spent on it;
    /// the box its future ran in serves the next task of its type, and its
    /// cancellation signal the next task when the handler kept no copy of its
    /// context. Otherwise the future moves onto its own tokio task and holds a slot
    /// until it ends; its reply is written by that task as soon as it finishes.
    /// `started` is when the task starts: one clock read serves a whole batch,
    /// renewed when held replies are written.
    fn run_task(
        &self,
        task: Waiting,
        started: &mut BatchStart,
        running: &mut Running,
        replies: &mut BytesMut,
    ) {
        match self.hold {
            None => self.flush(replies),
            Some(hold) if !replies.is_empty() || started.last.is_some() => {
                let now = Instant::now();
                let due = started.replies_due.is_some_and(|due| now >= due);
                if due {
                    self.time_slow(started, now, hold);
                }
                // Not `||`: a start of a blocking type always counts.
                if !replies.is_empty() && (due | self.handlers.starts(task.handler.pace)) {
                    self.flush(replies);
                    *started = BatchStart::new(now, Some(hold));
                }
                // Timed from now.
                started.last = Some((now, task.handler.pace));
            }
            // Nothing held, and no task started since the batch's clock read
            // (each one sets `last`): timed from that read.
            Some(_) => started.last = Some((started.at, task.handler.pace)),
        }
        let started = started.at;
        let cancel = running.spare.take().unwrap_or_default();
        let ctx = TaskContext::new(
            task.id,
            task.attempt,
            started,
            Duration::from_millis(task.timeout_ms),
            Arc::clone(&task.handler.task_type),
            Arc::clone(&self.worker_id),
            cancel.clone(),
        );
        let in_flight = InFlight::start(&self.stats);
        let id = task.id;
        let future = match task.handler.handler.start(ctx, task.payload) {
            Started::Pending(future) => future,
            Started::Done(output) => {
                let override_kind = reply_kind(&output, &cancel);
                running.spare = cancel.reuse();
                drop(in_flight);
                send_reply(
                    &mut Sink::Batch(&self.outbox, replies),
                    id,
                    output_of(output),
                    override_kind,
                );
                return;
            }
        };
        let outbox = self.outbox.clone();
        let cancelled = cancel.clone();
        let replied = Replied::default();
        let replying = replied.clone();
        running.spawn(id, cancel, replied, async move {
            let output = AssertUnwindSafe(future).catch_unwind().await;
            let override_kind = reply_kind(&output, &cancelled);
            drop(in_flight);
            replying.mark();
            send_reply(
                &mut Sink::Direct(&outbox),
                id,
                output_of(output),
                override_kind,
            );
        });
    }
}

/// When a batch's tasks start (one clock read serves them all), and when
/// replies held since are due to be written: found once, so that each task
/// compares two instants instead of subtracting them.
struct BatchStart {
    at: Instant,
    /// `None` without a hold, or when the hold reaches past what an
    /// `Instant` holds (never due).
    replies_due: Option<Instant>,
    /// With batched replies, the task started last: when the clock was read
    /// right before it started, and its type's [`Registered::pace`] (`None`
    /// before the first task, and once it was timed at the end of a batch).
    /// The next clock read (the next task's, or one at the end of the batch)
    /// tells whether it held the thread for longer than the hold, and so
    /// whether its type counts as blocking.
    last: Option<(Instant, usize)>,
}

impl BatchStart {
    fn new(at: Instant, hold: Option<Duration>) -> Self {
        Self {
            at,
            replies_due: hold.and_then(|hold| at.checked_add(hold)),
            last: None,
        }
    }
}

/// What one read batch works on.
struct Batch<'a> {
    /// When the batch's first task started (read once, on the first task).
    now: Option<BatchStart>,
    /// The task of the frame just handled, when its payload is large: started
    /// once the frame is let go, so that nothing else holds the frame's buffer.
    ready: Option<Waiting>,
    draining: &'a mut bool,
    running: &'a mut Running,
    waiting: &'a mut VecDeque<Waiting>,
    replies: &'a mut BytesMut,
}

/// A panic becomes a retryable `panic` error.
#[inline]
fn output_of(output: Caught) -> HandlerOutput {
    output.unwrap_or_else(panicked)
}

/// The error reply for a handler that panicked.
#[cold]
fn panicked(panic: Box<dyn std::any::Any + Send>) -> HandlerOutput {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_owned());
    Err(crate::HandlerError::retryable(format!("handler panicked: {text}")).with_kind("panic"))
}

/// An error after the task was cancelled is reported as `cancelled`.
fn reply_kind(output: &Caught, cancel: &Cancel) -> Option<(&'static str, bool)> {
    match output {
        Ok(Ok(_)) => None,
        _ if cancel.is_cancelled() => Some(("cancelled", false)),
        _ => None,
    }
}

/// Result payloads this large are written from their own buffer instead of
/// being copied into a reply frame (a copy of a large payload costs more than a
/// separate write).
pub(crate) const APART_MIN: usize = 64 * 1024;

/// Where a reply goes: straight into the stream, or into a batch that the
/// dispatcher writes before it starts another task or ends its read batch.
enum Sink<'a> {
    Direct(&'a Outbox),
    Batch(&'a Outbox, &'a mut BytesMut),
}

impl Sink<'_> {
    fn send(&mut self, message: &FromWorker<'_>) -> Result<(), FrameError> {
        match self {
            Self::Direct(outbox) => outbox.send(message),
            Self::Batch(outbox, buf) => outbox.encode(message, buf),
        }
    }

    /// Sends a `result` frame (encoded without serde, see [`wire`]); a payload
    /// of [`APART_MIN`] bytes or more goes through [`result_apart`](Self::result_apart).
    fn result(&mut self, id: u64, payload: &Encoded) -> Result<(), FrameError> {
        let payload = match payload {
            Encoded::Vec(v) => &v[..],
            Encoded::Bytes(b) => &b[..],
            Encoded::Bin(b) => return self.result_bin(id, b),
        };
        if payload.len() >= APART_MIN {
            return self.result_apart(id, payload);
        }
        match self {
            Self::Direct(outbox) => {
                let mut buf = BytesMut::new();
                wire::encode_result(id, payload, &mut buf, outbox.max_frame())?;
                outbox.send_encoded(&buf);
                Ok(())
            }
            Self::Batch(outbox, buf) => wire::encode_result(id, payload, buf, outbox.max_frame()),
        }
    }

    /// Writes a large result's payload from its own buffer, after the frame's
    /// head and after the replies batched before it, instead of copying it into
    /// the batch. Kept out of line: the small-result path stays as short as it
    /// was.
    #[cold]
    #[inline(never)]
    fn result_apart(&mut self, id: u64, payload: &[u8]) -> Result<(), FrameError> {
        let head = wire::result_head(id, payload.len(), self.max_frame())?;
        let outbox = self.flushed();
        outbox.send_pieces(&[head.bytes(), payload]);
        Ok(())
    }

    /// The outbox, after the replies batched so far were sent: what is written
    /// next follows them.
    fn flushed(&mut self) -> &Outbox {
        match self {
            Self::Direct(outbox) => outbox,
            Self::Batch(outbox, buf) => {
                if !buf.is_empty() {
                    outbox.send_encoded(buf);
                    buf.clear();
                }
                outbox
            }
        }
    }

    /// Writes a result that is a MessagePack `bin` of `bytes` the way
    /// [`result_apart`](Self::result_apart) writes a large payload: the frame's
    /// head and the `bin` marker, then `bytes` from their own buffer.
    #[cold]
    #[inline(never)]
    fn result_bin(&mut self, id: u64, bytes: &[u8]) -> Result<(), FrameError> {
        let mut marker = Scratch::new();
        marker.bin_head(bytes.len());
        let head = wire::result_head(id, marker.bytes().len() + bytes.len(), self.max_frame())?;
        let outbox = self.flushed();
        outbox.send_pieces(&[head.bytes(), marker.bytes(), bytes]);
        Ok(())
    }

    fn max_frame(&self) -> usize {
        match self {
            Self::Direct(outbox) | Self::Batch(outbox, _) => outbox.max_frame(),
        }
    }
}

/// Sends a task's reply; a result too large for the link becomes an error reply.
fn send_reply(
    outbox: &mut Sink<'_>,
    id: u64,
    output: HandlerOutput,
    override_kind: Option<(&str, bool)>,
) {
    let error = match output {
        Ok(payload) => match outbox.result(id, &payload) {
            Ok(()) => {
                crate::spare::give_back(payload);
                return;
            }
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
    if outbox
        .send(&error_reply(id, kind, error.message(), retryable))
        .is_err()
    {
        send_fitted(outbox, id, kind, error.message(), retryable);
    }
}

/// The `error` message of task `id`.
fn error_reply<'a>(id: u64, kind: &'a str, message: &'a str, retryable: bool) -> FromWorker<'a> {
    FromWorker::Error(ErrorReply {
        id,
        kind,
        message,
        retryable,
    })
}

/// What an error reply that does not fit in a frame says instead, with kind
/// `handler` (the words the Python and Node SDKs use).
const UNFIT_ERROR: &str = "the error reply does not fit in a frame";

/// Sends an error reply too large for a frame, as the Python and Node SDKs do:
/// with its message cut on a character boundary and marked as cut, keeping its
/// kind and retry hint (they are what the manager acts on); when even an empty
/// message does not fit (a huge custom kind, a tiny `max_frame`), with kind
/// `handler`, the message [`UNFIT_ERROR`] and the same retry hint. So the task
/// is answered, never left to its timeout. Only a `max_frame` too small for
/// that (the manager's is at least 1024 bytes) leaves it unanswered, said on
/// standard error.
#[cold]
#[inline(never)]
fn send_fitted(outbox: &mut Sink<'_>, id: u64, kind: &str, message: &str, retryable: bool) {
    let limit = outbox.max_frame();
    let note = format!(" … (cut to fit a frame of {limit} bytes)");
    // The reply's body without its message, plus the largest string header.
    let mut empty = BytesMut::new();
    let bare = match encode_frame(
        &error_reply(id, kind, "", retryable),
        &mut empty,
        usize::MAX,
    ) {
        Ok(()) => empty.len() - 4 + 5,
        Err(_) => usize::MAX,
    };
    for suffix in [note.as_str(), ""] {
        let Some(room) = limit.checked_sub(bare.saturating_add(suffix.len())) else {
            continue;
        };
        let cut = format!("{}{suffix}", char_head(message, room));
        if outbox.send(&error_reply(id, kind, &cut, retryable)).is_ok() {
            return;
        }
    }
    if outbox
        .send(&error_reply(id, "handler", UNFIT_ERROR, retryable))
        .is_err()
    {
        eprintln!(
            "cortex worker: task {id}: no error reply fits in a frame of {limit} bytes; none was sent"
        );
    }
}

/// The longest start of `text` of at most `max` bytes that ends on a character
/// boundary.
fn char_head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
