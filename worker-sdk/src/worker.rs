//! [`Worker`]: the handler registry and the session driver.

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use pool_core::protocol::{
    decode_to_worker, require_map, FrameError, FromWorker, ToWorker, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use crate::dispatch::{Dispatcher, HOLD_REPLIES};
use crate::handler::{erase, erase_raw, ErasedHandler};
use crate::idle_read::IdleSwitch;
use crate::registry::{Handlers, Lookup, Registered};
use crate::stats::Stats;
use crate::task_frames::TaskFrames;
use crate::{heartbeat, link, writer, HandlerError, ServeError, TaskContext};

/// How long a closing session waits for a frame still being written.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// How a session ended when nothing went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// The manager sent `shutdown` (after a graceful one, every in-flight task
    /// replied, even when the input ended during the drain).
    Shutdown,
    /// The manager went away: end of input without a graceful `shutdown` before
    /// it, or it stopped reading.
    Disconnected,
}

/// A worker: a set of task handlers, plus the loop that serves them to the manager.
///
/// # Examples
/// ```
/// use worker_sdk::{HandlerError, TaskContext, Worker};
///
/// let worker = Worker::new()
///     .handle("double", |_ctx: TaskContext, n: u64| async move {
///         n.checked_mul(2).ok_or_else(|| HandlerError::fatal("overflow"))
///     });
/// assert_eq!(worker.task_types(), ["double"]);
/// ```
pub struct Worker {
    handlers: Handlers,
    max_frame: usize,
    /// How long replies of tasks that finished at once may be held while later
    /// tasks start ([`hold_replies`](Self::hold_replies)); zero: not at all.
    hold_replies: Duration,
    /// The runtime's threads in [`run`](Self::run) ([`threads`](Self::threads)).
    threads: usize,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("task_types", &self.task_types())
            .field("max_frame", &self.max_frame)
            .field("hold_replies", &self.hold_replies)
            .field("threads", &self.threads)
            .finish()
    }
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker {
    /// A worker with no handlers.
    pub fn new() -> Self {
        Self {
            handlers: Handlers::default(),
            max_frame: DEFAULT_MAX_FRAME,
            hold_replies: HOLD_REPLIES,
            threads: 1,
        }
    }

    /// How many threads [`run`](Self::run)'s tokio runtime has: 1 (the
    /// default) runs the worker on a single-threaded runtime, 0 on one thread
    /// per CPU core, `n` on `n` threads.
    ///
    /// One thread is the fastest for what a pool worker usually is — one
    /// process per core, one task at a time (`worker_concurrency` 1): the
    /// thread that waits for the manager's frames runs the handlers and writes
    /// the replies, so no task is handed between threads. Ask for more when
    /// the manager sends several tasks at once and handlers compute after they
    /// await (their computing then runs in parallel), or when a handler calls
    /// [`block_in_place`](tokio::task::block_in_place), which a
    /// single-threaded runtime does not allow. Work that blocks for long
    /// belongs in [`spawn_blocking`](tokio::task::spawn_blocking) with any
    /// number of threads. Heartbeats come from their own thread either way.
    /// [`serve`](Self::serve) runs on whatever runtime calls it and ignores this.
    ///
    /// ```
    /// let worker = worker_sdk::Worker::new().threads(4);
    /// # drop(worker);
    /// ```
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How long replies may be held to batch them ([`HOLD_REPLIES`], 1 ms, by
    /// default; [`Duration::ZERO`] turns batching off). The replies of tasks
    /// whose handlers finish at once are held while the next tasks of the same
    /// read start, and written together (one system call for a batch instead of
    /// one per task) before the worker waits for anything, or before a task
    /// starts once `hold` passed since the first of them started. The worker
    /// says so in `ready` (`batches_replies`), and the manager then blames no
    /// task when the worker dies holding several (`docs/PROTOCOL.md`, "Batched
    /// replies"): each of them runs its next attempt alone.
    ///
    /// `hold` is checked only as a task starts, so the worker also times how
    /// long each task holds its thread as it starts (until the handler's first
    /// poll returned, with the decoding and encoding around it). Once a task
    /// took longer than `hold`, its type counts as blocking, and a task of
    /// that type starts only once every reply held before it is written; the
    /// type counts as quick again once at least 100 of its tasks in a row started
    /// within `hold` (so that a thread preempted during a quick handler costs
    /// its type's next tasks their batching, not all of it). A task that blocks
    /// still delays the replies held before it until its first poll returns
    /// when its type does not count as blocking: **the first task of a type
    /// that blocks** (and the first after its type counted as quick again),
    /// and one of a type that blocks only on some inputs. The manager counts
    /// the held tasks as running meanwhile, their timeouts too. And a quick
    /// task's reply may wait about twice `hold`.
    ///
    /// So for handlers that block their thread for long without awaiting, move
    /// the work into [`spawn_blocking`](tokio::task::spawn_blocking), or turn
    /// batching off: off, each reply is written before a later task starts.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let worker = worker_sdk::Worker::new().hold_replies(Duration::ZERO);
    /// # drop(worker);
    /// ```
    pub fn hold_replies(mut self, hold: Duration) -> Self {
        self.hold_replies = hold;
        self
    }

    /// Registers `handler` for tasks of type `task_type` (replacing an earlier one).
    ///
    /// The task's payload is decoded from MessagePack into `T`, an empty payload
    /// as nil (so a `()` or `Option<_>` input takes it; a payload that does
    /// not decode is answered with a `bad_input` error, not retried); the handler's
    /// output is encoded with `rmp_serde::to_vec_named`. Handlers run concurrently, at
    /// most `hello.concurrency` at once when the manager sends that key (tasks beyond
    /// it wait and start in arrival order; a `cancel` of a waiting task is answered at
    /// once with a `cancelled` error): a handler's future is polled once as its task
    /// starts, and if it does not finish right then, it goes on on its own tokio task
    /// and holds its slot until it ends; a panic becomes a `panic` error reply and the
    /// worker keeps serving. CPU-heavy work belongs in
    /// [`spawn_blocking`](tokio::task::spawn_blocking) (until it awaits something, a
    /// handler holds up the reading of the next task).
    ///
    /// Large bytes are not copied where serde would copy them: a `bytes::Bytes`
    /// input of 64 KiB or more sent as a MessagePack `bin` is a slice of the
    /// frame it came in (kept, it keeps that frame's read buffer), a
    /// `serde_bytes::ByteBuf` one is the buffer that frame was read into (a
    /// large frame is read into a buffer of its own), and a `Bytes` or
    /// `ByteBuf` output of 64 KiB or more is written from its own buffer. What
    /// the handler gets and what the manager reads are the same as through
    /// serde.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use worker_sdk::{HandlerError, TaskContext, Worker};
    ///
    /// // Neither copied in nor out: a blob store's `put` or an echo.
    /// let worker = Worker::new().handle("echo", |_ctx: TaskContext, blob: Bytes| async move {
    ///     Ok::<_, HandlerError>(blob)
    /// });
    /// assert_eq!(worker.task_types(), ["echo"]);
    /// ```
    pub fn handle<T, O, F, Fut>(self, task_type: impl Into<String>, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        self.register(task_type.into(), erase(handler))
    }

    /// Registers `handler` for tasks of type `task_type`, on raw bytes: it gets the
    /// task's payload as it arrived (a slice of the frame, no copy, not decoded) and
    /// returns the result's bytes as they should leave (not checked: by convention
    /// MessagePack, which the manager hands to the caller undecoded). Everything else
    /// — concurrency, cancellation, panics, error replies — is as for
    /// [`handle`](Self::handle). For proxies, caches and echoes that need no typed
    /// view of the data, and for measuring the SDK without serde.
    ///
    /// # Examples
    /// ```
    /// use bytes::Bytes;
    /// use worker_sdk::{HandlerError, TaskContext, Worker};
    ///
    /// let worker = Worker::new().handle_raw("echo", |_ctx: TaskContext, payload: Bytes| async move {
    ///     Ok::<_, HandlerError>(payload)
    /// });
    /// assert_eq!(worker.task_types(), ["echo"]);
    /// ```
    pub fn handle_raw<F, Fut>(self, task_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(TaskContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
    {
        self.register(task_type.into(), erase_raw(handler))
    }

    fn register(mut self, task_type: String, handler: ErasedHandler) -> Self {
        let registered = Registered {
            task_type: Arc::from(task_type.as_str()),
            handler,
            pace: 0,
        };
        self.handlers.insert(task_type, registered);
        self
    }

    /// Limits frames to `bytes` until the manager's hello sets the limit (default
    /// [`DEFAULT_MAX_FRAME`]; [`run`](Self::run) takes it from `CORTEX_MAX_FRAME`).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The registered task types, sorted.
    pub fn task_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// Runs the worker on the link the manager set up, and returns the process exit
    /// code (or ends the process with code 0, see below): 0 after a shutdown or
    /// when the manager went away, 2 on a protocol
    /// version mismatch or another protocol error, 1 when the link cannot be used.
    ///
    /// Before anything else the protocol is moved off stdin/stdout (for the `stdio`
    /// transport), so a stray `println!` goes to stderr. Builds a tokio runtime of
    /// [`threads`](Self::threads) threads (one by default); call it from `main`,
    /// not from inside a runtime. Errors are written to
    /// stderr in one line.
    ///
    /// On one thread, a worker with nothing to run — no handler waiting for
    /// something, no tokio task of anyone's alive — waits for the next frame in
    /// a blocking read of its link instead of the runtime's `epoll_wait`: one
    /// system call per wait, as a plain blocking program makes, which shortens
    /// a round trip by about a tenth. A worker that keeps a tokio task alive
    /// (a connection pool's, say) waits through the runtime as before. Work
    /// handed to the runtime from another thread during such a wait
    /// (`Handle::spawn` or `Handle::block_on` from a thread a handler started)
    /// waits for the next frame; a worker that does that asks for two threads
    /// or more. A heartbeat that cannot be written during such a wait (the
    /// manager stopped listening) ends the process with code 0 from the
    /// heartbeat thread, without returning here: the destructors of what
    /// `main` holds, and code after this call, do not run then.
    pub fn run(self) -> ExitCode {
        let threads = self.threads;
        let link = match link::from_env() {
            Ok(link) => link,
            Err(e) => return fail(&ServeError::Io(e)),
        };
        let worker = self.max_frame(link.max_frame);
        let serve = async move {
            // Only a runtime's one thread may wait in a blocking read.
            let (reader, idle) =
                link::async_reader(link.reader, threads == 1).map_err(ServeError::Io)?;
            worker.serve_link(reader, link.writer, idle).await
        };
        let runtime = match runtime(threads) {
            Ok(runtime) => runtime,
            Err(e) => return fail(&ServeError::Io(e)),
        };
        let outcome = if threads == 1 {
            // The runtime's one thread waits for the link and runs the
            // handlers, so nothing is handed between threads.
            runtime.block_on(serve)
        } else {
            // Served on one of the runtime's threads, not on this one: a
            // runtime thread that waits for the link to become readable then
            // handles the frames itself, where a `block_on` future would be
            // woken from the thread that saw them (a hand-over, two context
            // switches, per read).
            runtime.block_on(async move {
                tokio::spawn(serve)
                    .await
                    .unwrap_or_else(|e| Err(ServeError::Io(std::io::Error::other(e))))
            })
        };
        // Handlers still running (a hung one, blocking work) must not delay the exit.
        runtime.shutdown_background();
        match outcome {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        }
    }

    /// Serves the manager over any byte streams: frames arrive on `reader` and leave
    /// through `writer`. [`run`](Self::run) calls it with the link from the environment;
    /// tests call it with in-memory streams or pipes.
    ///
    /// `writer` is a blocking [`Write`], shared under a lock: replies are written
    /// in batches as [`hold_replies`](Self::hold_replies) says (else each
    /// before a later task starts, so a task that kills the process cannot take
    /// the replies of the tasks before it along). Heartbeats come from a
    /// dedicated thread that writes them itself, so they keep flowing even while
    /// every runtime thread runs a CPU-bound handler. A write blocks while the other
    /// end is not reading and the pipe is full. Must be called inside a tokio
    /// runtime (any flavour). Tasks still running when it returns are aborted.
    ///
    /// # Errors
    /// [`ServeError::VersionMismatch`] when the hello announces another version,
    /// [`ServeError::Protocol`] on a bad frame or a missing hello, [`ServeError::Io`]
    /// when reading fails or the heartbeat thread cannot start.
    pub async fn serve<R, W>(self, reader: R, writer: W) -> Result<Stopped, ServeError>
    where
        R: AsyncRead + Unpin,
        W: Write + Send + 'static,
    {
        self.serve_link(reader, writer, None).await
    }

    /// [`serve`](Self::serve), with the switch that lets the dispatcher wait in a
    /// blocking read of `reader` when nothing else can run (see `idle_read`).
    async fn serve_link<R, W>(
        self,
        reader: R,
        writer: W,
        idle: Option<IdleSwitch>,
    ) -> Result<Stopped, ServeError>
    where
        R: AsyncRead + Unpin,
        W: Write + Send + 'static,
    {
        let mut frames = FramedRead::new(reader, TaskFrames::new(self.max_frame));
        let mut out = writer::open(writer, self.max_frame);
        let result = self.session(&mut frames, &mut out, idle).await;
        // Close the stream (end of file for the manager), but never hang on a
        // manager that stopped reading.
        out.close(FLUSH_GRACE).await;
        result
    }

    async fn session<R: AsyncRead + Unpin>(
        self,
        frames: &mut FramedRead<R, TaskFrames>,
        out: &mut writer::WriterHandle,
        idle: Option<IdleSwitch>,
    ) -> Result<Stopped, ServeError> {
        let Some(body) = frames.next().await.transpose()? else {
            return Ok(Stopped::Disconnected);
        };
        // A manager of another version may have changed any other key: its
        // version is compared before the rest is read.
        if let Some(version) = hello_version(&body) {
            if version != u64::from(PROTOCOL_VERSION) {
                return Err(ServeError::VersionMismatch {
                    manager: u32::try_from(version).unwrap_or(u32::MAX),
                    worker: PROTOCOL_VERSION,
                });
            }
        }
        let (worker_id, heartbeat_ms, max_frame) = match decode_to_worker(&body)? {
            ToWorker::Hello {
                version,
                worker_id,
                heartbeat_ms,
                max_frame,
                ..
            } => {
                if version != PROTOCOL_VERSION {
                    return Err(ServeError::VersionMismatch {
                        manager: version,
                        worker: PROTOCOL_VERSION,
                    });
                }
                (
                    Arc::<str>::from(worker_id),
                    heartbeat_ms,
                    max_frame as usize,
                )
            }
            other => {
                return Err(ServeError::Protocol(FrameError::Unexpected {
                    expected: "hello",
                    got: other.name().to_owned(),
                }))
            }
        };
        let limit = concurrency(&body)?;
        *frames.decoder_mut() = TaskFrames::new(max_frame);
        out.set_max_frame(max_frame);
        let task_types = self.task_types();
        let hold = (!self.hold_replies.is_zero()).then_some(self.hold_replies);
        out.outbox().send(&FromWorker::Ready {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            task_types,
            batches_replies: hold.is_some(),
        })?;
        let stats = Arc::new(Stats::default());
        let _heartbeat = match heartbeat_ms {
            0 => None,
            ms => Some(
                heartbeat::spawn(
                    Duration::from_millis(ms),
                    out.outbox().clone(),
                    Arc::clone(&stats),
                    idle.clone(),
                )
                .map_err(ServeError::Io)?,
            ),
        };
        Dispatcher {
            frames,
            outbox: out.outbox().clone(),
            broken: Arc::clone(out.broken()),
            handlers: Lookup::new(self.handlers),
            worker_id,
            stats,
            limit,
            hold,
            idle,
        }
        .run()
        .await
    }
}

/// The `version` of a `hello` body, read alone; `None` when the body is no
/// `hello` map with an unsigned integer `version` (one past a `u32` is
/// another version all the same).
fn hello_version(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Versioned<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        version: u64,
    }
    require_map(body).ok()?;
    let hello: Versioned<'_> = rmp_serde::from_slice(body).ok()?;
    (hello.kind == "hello").then_some(hello.version)
}

/// `hello.concurrency`: the most tasks to run at once (`usize::MAX` when the
/// manager does not say; a `nil`, like a `0`, is malformed).
fn concurrency(hello: &[u8]) -> Result<usize, ServeError> {
    #[derive(serde::Deserialize)]
    struct Window {
        /// `Some(None)`: the key is there, `nil`.
        #[serde(default, deserialize_with = "present")]
        concurrency: Option<Option<u32>>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
        <Option<u32> as serde::Deserialize>::deserialize(d).map(Some)
    }
    let malformed = |why: String| ServeError::Protocol(FrameError::Malformed(why));
    let window: Window =
        rmp_serde::from_slice(hello).map_err(|e| malformed(format!("hello.concurrency: {e}")))?;
    match window.concurrency {
        None => Ok(usize::MAX),
        Some(None) => Err(malformed(
            "hello.concurrency must be a number of at least 1, got nil".into(),
        )),
        Some(Some(0)) => Err(malformed(
            "hello.concurrency must be at least 1, got 0".into(),
        )),
        Some(Some(n)) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

/// The runtime [`Worker::run`] serves on: single-threaded for 1 thread, else
/// multi-threaded with `threads` threads (0: one per CPU core).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

fn fail(error: &ServeError) -> ExitCode {
    eprintln!("cortex worker: {error}");
    ExitCode::from(error.exit_code())
}
