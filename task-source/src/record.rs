//! The records a [`TaskSource`](crate::TaskSource) takes and gives back.

use serde::{Deserialize, Serialize};

/// A task as the daemon accepted it: the user's (or a generated) id and the
/// fields of `run`'s input line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// Unique id: the user's `id`, else a generated sortable one.
    pub id: String,
    /// The handler that runs it.
    pub task_type: String,
    /// The payload as JSON text.
    pub payload: String,
    /// 0 (highest) … 100 (lowest).
    pub priority: u8,
    /// Per-attempt timeout, when the task sets one.
    pub timeout_ms: Option<u64>,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, waiting for a worker.
    Queued,
    /// An attempt is running.
    Running,
    /// An attempt failed; the next one is due at the record's `due_ms`.
    Retrying,
    /// Settled with a result.
    Ok,
    /// Settled with an error (not retryable, or shut out).
    Failed,
    /// Settled: every attempt failed; it is in the dead-letter queue.
    DeadLetter,
    /// Settled: its caller cancelled it.
    Cancelled,
}

impl TaskState {
    /// Every state, in life-cycle order.
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Ok,
        Self::Failed,
        Self::DeadLetter,
        Self::Cancelled,
    ];

    /// The settled states retention may remove: every one but a dead letter,
    /// which stays until it is retried or purged.
    pub const PRUNABLE: [Self; 3] = [Self::Ok, Self::Failed, Self::Cancelled];

    /// The state's name (as in JSON and in the store).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::DeadLetter => "dead_letter",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the task waits for a claim (queued, or retrying after a
    /// backoff).
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Queued | Self::Retrying)
    }

    /// Whether the task has ended (it will not run again unless retried from the DLQ).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Ok | Self::Failed | Self::DeadLetter | Self::Cancelled
        )
    }
}

/// What [`accept`](crate::TaskSource::accept) did with one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Newly stored (on disk, for a durable source).
    Accepted,
    /// The id was already known: nothing was changed; this is its state.
    Known(TaskState),
    /// Not taken, with the reason.
    Refused(String),
}

impl Admission {
    /// The refusal of a new task while `unsettled` tasks wait or run and the
    /// daemon's `max_queue_len` is `max`: the reason starts with `queue_full`.
    pub fn queue_full(unsettled: u64, max: u64) -> Self {
        Self::Refused(queue_full_reason(unsettled, max))
    }
}

/// The reason of [`Admission::queue_full`].
pub(crate) fn queue_full_reason(unsettled: u64, max: u64) -> String {
    format!("queue_full: {unsettled} tasks are waiting or running (max_queue_len {max})")
}

/// A task handed out by [`claim`](crate::TaskSource::claim): its attempt has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The task.
    pub task: NewTask,
    /// This attempt's number (1 for the first; carried over restarts).
    pub attempt: u32,
    /// When the source accepted the task, in ms since the Unix epoch: the
    /// time its outcome's `duration_ms` counts from (across its attempts and
    /// restarts, as `run` counts from a task's submission).
    pub submitted_ms: u64,
}

/// Why an attempt did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// A short class (`timeout`, `worker_crashed`, the handler's kind, …).
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// How an attempt ended, as the source should record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settled for good in `state` (ok, failed, dead letter or cancelled), with
    /// its `run`-format output line (JSON text) and, unless ok, the error.
    Settled {
        /// The final state.
        state: TaskState,
        /// The output line, JSON text.
        line: String,
        /// The error of a task that did not end ok.
        error: Option<ErrorInfo>,
    },
    /// Run it again once `due_ms` (Unix ms) has passed.
    Retry {
        /// When the next attempt may start.
        due_ms: u64,
        /// Why this attempt failed.
        error: ErrorInfo,
    },
    /// The attempt was interrupted (the pool is stopping): back to the queue
    /// with the attempt given back, recorded as `interrupted` in the history.
    /// The interruption was the daemon's doing, not the task's, so it uses up
    /// no retry.
    Interrupted,
    /// The attempt never started (the pool did not take the task, or withdrew
    /// it unstarted as it stopped): back to the queue with the attempt given
    /// back, recorded as `withdrawn` in the history.
    NotStarted,
}

/// The end of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The task.
    pub id: String,
    /// The attempt that ended (a settlement for an older attempt is ignored).
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (Unix ms).
    pub at_ms: u64,
    /// `attempt`, `retry`, `interrupted`, `settled`, `requeued`.
    pub event: String,
    /// The attempt it concerns.
    pub attempt: u32,
}

/// Everything a source knows about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// The task as accepted.
    pub task: NewTask,
    /// Where it is.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last error, if an attempt failed.
    pub error: Option<ErrorInfo>,
    /// The output line of a settled task (JSON text).
    pub line: Option<String>,
    /// When it was accepted (Unix ms).
    pub created_ms: u64,
    /// When it last changed (Unix ms).
    pub updated_ms: u64,
    /// When a retrying task may run again (Unix ms; 0 otherwise).
    pub due_ms: u64,
    /// What happened to it, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// Where a task stands, for a look-up by id
/// ([`status`](crate::TaskSource::status)): the part of its record a `result`
/// or `wait` line shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// Where it is.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The output line of a settled task (JSON text).
    pub line: Option<String>,
}

impl From<TaskRecord> for TaskStatus {
    fn from(r: TaskRecord) -> Self {
        Self {
            state: r.state,
            attempts: r.attempts,
            line: r.line,
        }
    }
}

/// Which tasks [`list`](crate::TaskSource::list) returns: newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this state.
    pub state: Option<TaskState>,
    /// Only this type.
    pub task_type: Option<String>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

impl Filter {
    /// Whether a task in `state` of type `task_type` is one it picks (the
    /// limit aside).
    pub fn matches(&self, state: TaskState, task_type: &str) -> bool {
        self.state.is_none_or(|s| s == state)
            && self.task_type.as_deref().is_none_or(|t| t == task_type)
    }
}

/// Whether the source can take new tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceHealth {
    /// Writing works.
    Ok,
    /// Writes fail: new tasks are refused with this reason.
    Failing {
        /// Why (disk full, read-only, …).
        reason: String,
    },
}

/// A source's figures for `daemon status` and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStats {
    /// `memory` or `sqlite`.
    pub backend: String,
    /// The store's file, if any.
    pub path: Option<String>,
    /// Whether it takes writes.
    pub health: SourceHealth,
    /// Bytes on disk (database and its write-ahead log); 0 in memory.
    pub size_bytes: u64,
    /// Tasks by state name. A state the source cannot count now (a queue
    /// whose server is unreachable) is left out rather than reported as 0.
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Transactions committed since start.
    pub commits: u64,
    /// Latency of the last commit, ms.
    pub commit_ms_last: f64,
    /// Slowest commit since start, ms.
    pub commit_ms_max: f64,
    /// Sum of every commit's latency, ms (with `commits`, the mean).
    pub commit_ms_sum: f64,
}

/// A source's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The store cannot write (disk full, read-only, I/O error): the reason.
    #[error("the task store cannot write: {0}")]
    Unwritable(String),
    /// The store is closed (the daemon is stopping).
    #[error("the task store is closed")]
    Closed,
    /// Any other failure of the backend.
    #[error("task store error: {0}")]
    Backend(String),
}
