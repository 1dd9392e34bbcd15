//! [`PoolEvent`]: the typed event stream.

use serde::Serialize;

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// For the record.
    Info,
    /// Needs a look.
    Warning,
    /// Capacity or correctness is at risk.
    Critical,
}

/// Something that happened in the pool. Subscribe with
/// [`Pool::events`](super::Pool::events); a slow subscriber loses the oldest
/// events and is told how many (`RecvError::Lagged`), it never slows the pool.
///
/// Serialises as a JSON object whose `event` field is the kebab-case name
/// (`worker-spawned`, `task-completed`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PoolEvent {
    /// A worker process was started.
    WorkerSpawned {
        /// Its name.
        worker: String,
    },
    /// A worker completed its handshake and takes tasks.
    WorkerReady {
        /// Its name.
        worker: String,
        /// Its process id.
        pid: u32,
    },
    /// A worker process ended.
    WorkerExited {
        /// Its name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// How it ended.
        exit: String,
        /// Whether the pool asked it to (shutdown, recycling, a kill for cause).
        expected: bool,
        /// The last lines it wrote on stderr (empty when none).
        stderr_tail: String,
    },
    /// A replacement was started for a worker that died.
    WorkerRestarted {
        /// The new worker's name.
        worker: String,
        /// Delay before the start, in milliseconds (restart backoff).
        backoff_ms: u64,
    },
    /// A worker stopped sending heartbeats and was killed.
    ZombieDetected {
        /// Its name.
        worker: String,
        /// The probe's reason.
        reason: String,
    },
    /// A worker's RSS crossed a configured memory limit.
    HighMemory {
        /// Its name.
        worker: String,
        /// Its resident set size, in bytes.
        rss_bytes: u64,
    },
    /// A worker is being retired and replaced (health, task count, scale-down).
    WorkerRecycled {
        /// Its name.
        worker: String,
        /// Why.
        reason: String,
    },
    /// A task entered the queue.
    TaskQueued {
        /// Its id.
        task: u64,
        /// Its priority.
        priority: u8,
    },
    /// A task attempt was sent to a worker.
    TaskAssigned {
        /// Its id.
        task: u64,
        /// The worker.
        worker: String,
        /// Which attempt (1 = first).
        attempt: u32,
        /// How long it waited in the queue, in milliseconds.
        queued_ms: u64,
    },
    /// A task produced its result.
    TaskCompleted {
        /// Its id.
        task: u64,
        /// The worker.
        worker: String,
        /// Attempts it took.
        attempts: u32,
        /// Run time of the successful attempt, in milliseconds.
        run_ms: u64,
        /// Whether the worker had run a task before this one.
        worker_reused: bool,
    },
    /// One attempt failed.
    TaskAttemptFailed {
        /// Its id.
        task: u64,
        /// The worker, if the attempt reached one.
        worker: Option<String>,
        /// Which attempt.
        attempt: u32,
        /// The failure's class.
        kind: String,
        /// The failure's message.
        message: String,
        /// Whether another attempt follows.
        will_retry: bool,
    },
    /// A task is scheduled for another attempt.
    TaskRetried {
        /// Its id.
        task: u64,
        /// The attempt that will run next.
        next_attempt: u32,
        /// Backoff before it, in milliseconds.
        backoff_ms: u64,
    },
    /// An attempt ran past its timeout; its worker is being killed.
    TaskTimedOut {
        /// Its id.
        task: u64,
        /// The worker.
        worker: String,
        /// The timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// A task ran out of attempts and went to the dead-letter queue.
    TaskDeadLettered {
        /// Its id.
        task: u64,
        /// Attempts that ran.
        attempts: u32,
        /// The last failure's class.
        kind: String,
    },
    /// A task was cancelled.
    TaskCancelled {
        /// Its id.
        task: u64,
    },
    /// The pool's target size grew.
    PoolScaledUp {
        /// Workers added.
        count: usize,
        /// The new target size.
        new_size: usize,
    },
    /// The pool's target size shrank.
    PoolScaledDown {
        /// Workers removed.
        count: usize,
        /// The new target size.
        new_size: usize,
    },
    /// Something needs attention.
    Alert {
        /// How serious.
        severity: AlertSeverity,
        /// A short class (`restart-breaker-open`, `zombie-detected`, …): the
        /// string of an [`AlertKind`](super::AlertKind).
        kind: String,
        /// The worker concerned, if any.
        worker: Option<String>,
        /// Details for people.
        message: String,
    },
    /// The pool has shut down; no more events follow.
    PoolShutdown,
}
