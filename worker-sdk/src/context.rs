//! [`TaskContext`]: what a handler knows about the attempt it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::cancel::Cancel;

/// The identity, limits and cancellation signal of one task attempt.
///
/// Cheap to clone (reference counts only), so it can be moved into
/// [`spawn_blocking`](tokio::task::spawn_blocking) work that wants to poll
/// [`is_cancelled`](Self::is_cancelled).
///
/// # Cancellation
/// When the manager cancels the task, the token fires (it is made the first time
/// [`cancelled`](Self::cancelled) or [`cancellation_token`](Self::cancellation_token)
/// asks for it; every call gets the same token). Cancellation is cooperative:
/// the handler keeps running until it returns. If it then returns an error, the
/// manager is told the task was `cancelled` (not retryable); if it returns a value
/// anyway, that value is sent as the result.
#[derive(Debug, Clone)]
pub struct TaskContext {
    id: u64,
    attempt: u32,
    received: Instant,
    timeout: Duration,
    task_type: Arc<str>,
    worker_id: Arc<str>,
    cancel: Cancel,
}

impl TaskContext {
    /// A context for tests of handlers outside a worker: attempt 1, no time limit
    /// worth speaking of, worker id `test-worker`.
    pub fn for_test(id: u64, task_type: &str) -> Self {
        Self::new(
            id,
            1,
            Instant::now(),
            Duration::from_secs(24 * 3600),
            task_type.into(),
            "test-worker".into(),
            Cancel::default(),
        )
    }

    pub(crate) fn new(
        id: u64,
        attempt: u32,
        received: Instant,
        timeout: Duration,
        task_type: Arc<str>,
        worker_id: Arc<str>,
        cancel: Cancel,
    ) -> Self {
        Self {
            id,
            attempt,
            received,
            timeout,
            task_type,
            worker_id,
            cancel,
        }
    }

    /// The task's id, unique within the pool's lifetime.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task type that selected this handler.
    pub fn task_type(&self) -> &str {
        &self.task_type
    }

    /// The manager's name for this worker (`worker-N`; empty when unknown).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// How long the manager lets this attempt run before it kills the worker.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the manager will give up on this attempt: the moment the task started
    /// (its frame was read, or a slot freed up for it) plus [`timeout`](Self::timeout).
    pub fn deadline(&self) -> Instant {
        self.received
            .checked_add(self.timeout)
            .unwrap_or_else(|| self.received + Duration::from_secs(365 * 24 * 3600))
    }

    /// Whether the manager has cancelled this task.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the manager cancels this task.
    ///
    /// # Cancel safety
    /// Cancel safe: use it as a branch of `tokio::select!` next to the real work.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.token().cancelled()
    }

    /// The underlying token, e.g. to hand a child token to sub-tasks.
    pub fn cancellation_token(&self) -> &CancellationToken {
        self.cancel.token()
    }
}
