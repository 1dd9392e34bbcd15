//! Shared harness: drives an in-process worker the way the manager would.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use pool_core::protocol::{
    decode_from_worker, encode_frame, FrameCodec, FromWorker, Heartbeat, TaskFrame, ToWorker,
    PROTOCOL_VERSION,
};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::unix::pipe;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use worker_sdk::{HandlerError, ServeError, Stopped, TaskContext, Worker};

pub const MAX_FRAME: usize = 64 * 1024;
/// Bounds every wait of a test: a hang fails the test instead of blocking CI.
pub const WATCHDOG: Duration = Duration::from_secs(20);
/// A heartbeat interval that never fires during a test.
pub const NO_HEARTBEAT: u64 = 0;

/// A frame from the worker, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ready {
        version: u32,
        task_types: Vec<String>,
    },
    Result {
        id: u64,
        value: Value,
    },
    /// A result that is a MessagePack `bin`.
    ResultBin {
        id: u64,
        bytes: Vec<u8>,
    },
    Error {
        id: u64,
        kind: String,
        message: String,
        retryable: bool,
    },
    Heartbeat(Heartbeat),
}

/// The manager's end of an in-process link.
pub struct Peer {
    input: Option<DuplexStream>,
    output: FramedRead<pipe::Receiver, FrameCodec>,
    pub worker: JoinHandle<Result<Stopped, ServeError>>,
}

/// Lets a test hold a handler until it says so: `gated` waits asynchronously,
/// `block` occupies its runtime thread.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    unblock: Arc<Mutex<mpsc::Sender<()>>>,
    blocked: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Default for Gate {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            permits: Arc::new(Semaphore::new(0)),
            unblock: Arc::new(Mutex::new(tx)),
            blocked: Arc::new(Mutex::new(rx)),
        }
    }
}

impl Gate {
    /// Lets one `gated` handler finish.
    pub fn open(&self) {
        self.permits.add_permits(1);
    }

    /// Lets one `block` handler finish.
    pub fn unblock(&self) {
        self.unblock
            .lock()
            .expect("lock")
            .send(())
            .expect("block handler alive");
    }
}

/// A `hello` frame (no heartbeats, frames up to [`MAX_FRAME`]) with the
/// `concurrency` key, which [`ToWorker::Hello`] does not carry.
pub fn hello_with_concurrency(concurrency: u32) -> Vec<u8> {
    hello_frame(concurrency, NO_HEARTBEAT)
}

/// A `hello` frame with the `concurrency` key and heartbeats every
/// `heartbeat_ms` (frames up to [`MAX_FRAME`]).
pub fn hello_frame(concurrency: u32, heartbeat_ms: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Hello {
        r#type: &'static str,
        version: u32,
        worker_id: &'static str,
        heartbeat_ms: u64,
        max_frame: u32,
        concurrency: u32,
    }
    let body = rmp_serde::to_vec_named(&Hello {
        r#type: "hello",
        version: PROTOCOL_VERSION,
        worker_id: "worker-7",
        heartbeat_ms,
        max_frame: MAX_FRAME as u32,
        concurrency,
    })
    .expect("encode hello");
    let mut frame = u32::try_from(body.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// `n` bytes that tell where each one is (what the `bytes` handler returns).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The handlers most tests use.
pub fn test_worker(gate: Gate) -> Worker {
    #[derive(serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }
    Worker::new()
        .handle("echo", |_ctx: TaskContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .handle("add", |_ctx: TaskContext, x: Add| async move {
            Ok::<_, HandlerError>(json!({ "sum": x.a + x.b }))
        })
        .handle("fail", |_ctx: TaskContext, v: Value| async move {
            if v["retryable"] == json!(true) {
                Err::<Value, _>(HandlerError::retryable("try again"))
            } else {
                Err(HandlerError::fatal("never").with_kind("invalid"))
            }
        })
        .handle("panic", |_ctx: TaskContext, _: Value| async move {
            if true {
                panic!("boom");
            }
            Ok::<Value, HandlerError>(Value::Null)
        })
        .handle("big", |_ctx: TaskContext, n: usize| async move {
            Ok::<_, HandlerError>("x".repeat(n))
        })
        .handle("bytes", |_ctx: TaskContext, n: usize| async move {
            Ok::<_, HandlerError>(serde_bytes::ByteBuf::from(pattern(n)))
        })
        .handle("attempt", |ctx: TaskContext, _: Value| async move {
            Ok::<_, HandlerError>(json!({ "attempt": ctx.attempt(), "worker": ctx.worker_id() }))
        })
        .handle("until_cancelled", |ctx: TaskContext, v: Value| async move {
            ctx.cancelled().await;
            if v["finish"] == json!(true) {
                Ok(json!("finished anyway"))
            } else {
                Err(HandlerError::retryable("stopped"))
            }
        })
        .handle("gated", {
            let permits = Arc::clone(&gate.permits);
            move |_ctx: TaskContext, v: Value| {
                let permits = Arc::clone(&permits);
                async move {
                    permits
                        .acquire()
                        .await
                        .map_err(HandlerError::from)?
                        .forget();
                    Ok::<_, HandlerError>(v)
                }
            }
        })
        .handle("block", move |_ctx: TaskContext, _: Value| {
            // Occupies its runtime thread until the test's signal (a std channel).
            let blocked = Arc::clone(&gate.blocked);
            async move {
                let rx = blocked
                    .lock()
                    .map_err(|_| HandlerError::fatal("poisoned"))?;
                rx.recv_timeout(WATCHDOG).map_err(HandlerError::from)?;
                Ok::<_, HandlerError>("unblocked")
            }
        })
}

impl Peer {
    /// Starts `worker` on an in-memory input and an OS pipe as output.
    pub fn start(worker: Worker) -> Self {
        Self::start_with_max_frame(worker, MAX_FRAME)
    }

    /// [`start`](Self::start) with frames of up to `max_frame` bytes (the
    /// input holds two of them).
    pub fn start_with_max_frame(worker: Worker, max_frame: usize) -> Self {
        Self::start_reading_through(worker, max_frame, |input| input)
    }

    /// [`start_with_max_frame`](Self::start_with_max_frame) with the worker
    /// reading its input through `wrap`'s reader.
    pub fn start_reading_through<R>(
        worker: Worker,
        max_frame: usize,
        wrap: impl FnOnce(DuplexStream) -> R,
    ) -> Self
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let (input, worker_input) = tokio::io::duplex(max_frame * 2);
        let (read_end, write_end) = rustix::pipe::pipe().expect("pipe");
        let output = pipe::Receiver::from_owned_fd(read_end).expect("pipe receiver");
        let worker = tokio::spawn(
            worker
                .max_frame(max_frame)
                .serve(wrap(worker_input), File::from(write_end)),
        );
        Self {
            input: Some(input),
            output: FramedRead::new(output, FrameCodec::new(max_frame)),
            worker,
        }
    }

    /// Starts `worker` and does the handshake.
    pub async fn ready(worker: Worker, heartbeat_ms: u64) -> Self {
        let mut peer = Self::start(worker);
        peer.hello(PROTOCOL_VERSION, heartbeat_ms, MAX_FRAME as u32)
            .await;
        match peer.next().await {
            Some(Reply::Ready { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected ready, got {other:?}"),
        }
        peer
    }

    /// Starts `worker` and does the handshake with a hello that carries
    /// `concurrency` (the most tasks the worker may run at once).
    pub async fn ready_with_concurrency(worker: Worker, concurrency: u32) -> Self {
        let mut peer = Self::start(worker);
        peer.hello_with_concurrency(concurrency).await;
        match peer.next().await {
            Some(Reply::Ready { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected ready, got {other:?}"),
        }
        peer
    }

    /// Sends a hello with the `concurrency` key.
    pub async fn hello_with_concurrency(&mut self, concurrency: u32) {
        self.send_raw(&hello_with_concurrency(concurrency)).await;
    }

    pub async fn send(&mut self, message: &ToWorker<'_>) {
        let mut buf = BytesMut::new();
        encode_frame(message, &mut buf, MAX_FRAME).expect("encode");
        self.send_raw(&buf).await;
    }

    /// Sends `message` (a JSON map, or any other value to test refusals) as
    /// one frame, as MessagePack.
    pub async fn send_json(&mut self, message: &serde_json::Value) {
        let body = rmp_serde::to_vec_named(message).expect("encode");
        let mut frame = u32::try_from(body.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(&body);
        self.send_raw(&frame).await;
    }

    /// Sends an `echo` task `id` of `text` and checks that it comes back: the
    /// worker still serves.
    pub async fn echoes(&mut self, id: u64, text: &str) {
        self.task(id, "echo", &serde_json::json!(text)).await;
        assert_eq!(
            self.reply().await,
            Reply::Result {
                id,
                value: serde_json::json!(text)
            }
        );
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("input still open");
        input.write_all(bytes).await.expect("write to worker");
    }

    pub async fn hello(&mut self, version: u32, heartbeat_ms: u64, max_frame: u32) {
        self.send(&ToWorker::Hello {
            version,
            worker_id: "worker-7",
            heartbeat_ms,
            max_frame,
        })
        .await;
    }

    /// The handshake with frames of up to `max_frame` bytes and no heartbeats:
    /// hello, then the worker's `ready`.
    pub async fn greet(&mut self, max_frame: u32) {
        self.hello(PROTOCOL_VERSION, NO_HEARTBEAT, max_frame).await;
        match self.reply().await {
            Reply::Ready { .. } => {}
            other => panic!("expected ready, got {other:?}"),
        }
    }

    pub async fn task(&mut self, id: u64, task_type: &str, payload: &Value) {
        self.task_attempt(id, task_type, payload, 1).await;
    }

    pub async fn task_attempt(&mut self, id: u64, task_type: &str, payload: &Value, attempt: u32) {
        let payload = rmp_serde::to_vec_named(payload).expect("payload");
        self.task_bytes(id, task_type, &payload, attempt).await;
    }

    pub async fn task_bytes(&mut self, id: u64, task_type: &str, payload: &[u8], attempt: u32) {
        self.send(&ToWorker::Task(TaskFrame {
            id,
            task_type,
            payload,
            attempt,
            timeout_ms: 60_000,
        }))
        .await;
    }

    /// Closes the manager's side of the input (end of file for the worker).
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// The next frame, heartbeats included; `None` at end of output.
    pub async fn next(&mut self) -> Option<Reply> {
        let frame = tokio::time::timeout(WATCHDOG, self.output.next())
            .await
            .expect("the worker answered within the watchdog")?;
        Some(decode(&frame.expect("a valid frame")))
    }

    /// The next frame that is not a heartbeat.
    pub async fn reply(&mut self) -> Reply {
        loop {
            match self.next().await {
                Some(Reply::Heartbeat(_)) => continue,
                Some(reply) => return reply,
                None => panic!("the worker closed its output"),
            }
        }
    }

    /// Stops reading the worker's output (its next write fails, as when the
    /// manager is gone) and waits for the worker to stop, its input still open.
    pub async fn finish_unread(self) -> Result<Stopped, ServeError> {
        let Self {
            input,
            output,
            worker,
        } = self;
        drop(output);
        let result = tokio::time::timeout(WATCHDOG, worker)
            .await
            .expect("the worker stopped within the watchdog")
            .expect("the worker task did not panic");
        drop(input);
        result
    }

    /// Waits for the worker to stop and for its output to end.
    pub async fn finish(mut self) -> Result<Stopped, ServeError> {
        let result = tokio::time::timeout(WATCHDOG, &mut self.worker)
            .await
            .expect("the worker stopped within the watchdog")
            .expect("the worker task did not panic");
        while let Some(frame) = self.next().await {
            assert!(
                matches!(frame, Reply::Heartbeat(_)),
                "unexpected frame after the end: {frame:?}"
            );
        }
        result
    }
}

fn decode(body: &Bytes) -> Reply {
    match decode_from_worker(body).expect("a known message") {
        FromWorker::Ready {
            version,
            task_types,
            ..
        } => Reply::Ready {
            version,
            task_types: task_types.into_iter().map(str::to_owned).collect(),
        },
        FromWorker::Result { id, payload } if matches!(payload.first(), Some(0xc4..=0xc6)) => {
            Reply::ResultBin {
                id,
                bytes: rmp_serde::from_slice::<serde_bytes::ByteBuf>(payload)
                    .expect("a MessagePack bin")
                    .into_vec(),
            }
        }
        FromWorker::Result { id, payload } => Reply::Result {
            id,
            value: rmp_serde::from_slice(payload).expect("a MessagePack result"),
        },
        FromWorker::Error(e) => Reply::Error {
            id: e.id,
            kind: e.kind.to_owned(),
            message: e.message.to_owned(),
            retryable: e.retryable,
        },
        FromWorker::Heartbeat(h) => Reply::Heartbeat(h),
        other => panic!("unexpected message {other:?}"),
    }
}

/// The error reply's kind and retry flag, for short assertions.
pub fn error_of(reply: &Reply, want_id: u64) -> (&str, bool) {
    match reply {
        Reply::Error {
            id,
            kind,
            retryable,
            ..
        } if *id == want_id => (kind, *retryable),
        other => panic!("expected an error for task {want_id}, got {other:?}"),
    }
}
