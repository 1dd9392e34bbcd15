//! The messages of the protocol, one enum per direction.

use serde::{Deserialize, Serialize};

/// A message from the manager to a worker.
///
/// Borrows its payload from the frame it was decoded from, so a worker can hand the
/// task's bytes to its handler without a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToWorker<'a> {
    /// First frame on every link: who the worker is and how it should behave.
    Hello {
        /// Must equal the worker's [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
        version: u32,
        /// The manager's name for this worker (`worker-N`).
        worker_id: &'a str,
        /// How often the worker should send a heartbeat, in milliseconds.
        heartbeat_ms: u64,
        /// The largest frame body either side may send, in bytes.
        max_frame: u32,
    },
    /// Run one attempt of a task.
    Task(TaskFrame<'a>),
    /// Stop working on a task: the worker should answer with an error of kind
    /// `cancelled` (or its result, if it already had one).
    Cancel {
        /// The task to cancel.
        id: u64,
    },
    /// Finish what is in flight (if `graceful`), then exit.
    Shutdown {
        /// Whether in-flight tasks should be finished first.
        graceful: bool,
    },
}

impl ToWorker<'_> {
    /// The message's `type` (`"hello"`, `"task"`, …): what an error about an
    /// unexpected message names, instead of its fields (a payload among them).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Task(_) => "task",
            Self::Cancel { .. } => "cancel",
            Self::Shutdown { .. } => "shutdown",
        }
    }
}

/// One attempt of a task, as sent to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFrame<'a> {
    /// The task's id, unique within the pool's lifetime; replies carry it back.
    pub id: u64,
    /// Which handler runs it.
    pub task_type: &'a str,
    /// The task's input, opaque to the manager (MessagePack by convention).
    #[serde(with = "serde_bytes", borrow)]
    pub payload: &'a [u8],
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// How long this attempt may run before the manager kills the worker.
    pub timeout_ms: u64,
}

/// A message from a worker to the manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FromWorker<'a> {
    /// The handshake answer: the worker is ready for tasks.
    Ready {
        /// The protocol version the worker speaks.
        version: u32,
        /// The worker's process id, as the worker sees it.
        pid: u32,
        /// The task types the worker has handlers for (may be empty: unknown).
        #[serde(default, borrow)]
        task_types: Vec<&'a str>,
        /// The worker may hold finished tasks' replies while it starts later
        /// tasks, and writes them together (`docs/PROTOCOL.md`, "Batched
        /// replies"). Absent on the wire means `false`.
        #[serde(default, skip_serializing_if = "is_false")]
        batches_replies: bool,
    },
    /// A task attempt succeeded.
    Result {
        /// The task's id.
        id: u64,
        /// The handler's output, opaque to the manager.
        #[serde(with = "serde_bytes", borrow)]
        payload: &'a [u8],
    },
    /// A task attempt failed.
    Error(ErrorReply<'a>),
    /// Proof of life with the worker's own vitals.
    Heartbeat(Heartbeat),
    /// A log line the worker wants the manager to record.
    Log {
        /// Severity.
        level: LogLevel,
        /// The text.
        #[serde(borrow)]
        message: &'a str,
    },
}

/// A failed attempt, as reported by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    /// The task's id.
    pub id: u64,
    /// A short machine-readable class (`handler`, `panic`, `unknown_type`, `cancelled`, …).
    #[serde(borrow)]
    pub kind: &'a str,
    /// What went wrong, for people.
    #[serde(borrow)]
    pub message: &'a str,
    /// Whether another attempt could succeed; `false` skips the remaining retries.
    /// Optional on the wire: absent means `true` (the pool's retry policy applies,
    /// as for any failure the worker did not mark final).
    #[serde(default = "retryable_by_default")]
    pub retryable: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn retryable_by_default() -> bool {
    true
}

/// A worker's heartbeat: its own view of its vitals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Heartbeat {
    /// Resident set size in bytes (0 when unknown).
    #[serde(default)]
    pub rss_bytes: u64,
    /// CPU time used since the worker started, in milliseconds (0 when unknown).
    #[serde(default)]
    pub cpu_ms: u64,
    /// Tasks the worker has finished, successfully or not.
    #[serde(default)]
    pub tasks_done: u64,
    /// Tasks running in the worker now.
    #[serde(default)]
    pub in_flight: u32,
}

impl FromWorker<'_> {
    /// The message's `type` (`"ready"`, `"result"`, …): what an error about an
    /// unexpected message names, instead of its fields.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "ready",
            Self::Result { .. } => "result",
            Self::Error(_) => "error",
            Self::Heartbeat(_) => "heartbeat",
            Self::Log { .. } => "log",
        }
    }
}

impl Heartbeat {
    /// Builds a heartbeat from its parts.
    pub fn new(rss_bytes: u64, cpu_ms: u64, tasks_done: u64, in_flight: u32) -> Self {
        Self {
            rss_bytes,
            cpu_ms,
            tasks_done,
            in_flight,
        }
    }
}

/// Severity of a worker's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for developers.
    Debug,
}
