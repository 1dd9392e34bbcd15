//! [`TaskContext`]: what a handler knows about the attempt it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::cancel::Cancel;

/// How far [`TaskContext::deadline`] lies after the start of an attempt without
/// a time limit: a year, the longest `timeout_ms` a manager sends
/// (`docs/PROTOCOL.md`, "Every key").
const NO_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

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

    /// How long the manager lets this attempt run before it kills the worker;
    /// [`Duration::ZERO`] when it set no limit (`timeout_ms` 0, see
    /// [`time_limit`](Self::time_limit)).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long the manager lets this attempt run before it kills the worker, or
    /// `None` when it set no limit (`timeout_ms` 0).
    pub fn time_limit(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then_some(self.timeout)
    }

    /// When the manager will give up on this attempt: the moment the task started
    /// (its frame was read, or a slot freed up for it) plus its
    /// [`time_limit`](Self::time_limit). Without a limit, a year after the start
    /// (longer than any limit a manager sets), so that waiting until the deadline
    /// never ends the work early.
    pub fn deadline(&self) -> Instant {
        let limit = self.time_limit().unwrap_or(NO_LIMIT);
        self.received
            .checked_add(limit)
            .unwrap_or_else(|| self.received + NO_LIMIT)
    }

    /// The time left before the [`deadline`](Self::deadline) (zero once it has
    /// passed), or `None` when the manager set no limit.
    pub fn remaining(&self) -> Option<Duration> {
        let limit = self.time_limit()?;
        Some(limit.saturating_sub(self.received.elapsed()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(timeout: Duration) -> TaskContext {
        TaskContext::new(
            1,
            1,
            Instant::now(),
            timeout,
            "t".into(),
            "w".into(),
            Cancel::default(),
        )
    }

    #[test]
    fn a_timeout_of_0_is_no_limit_and_no_deadline_at_the_start() {
        let ctx = with_timeout(Duration::ZERO);
        assert_eq!(ctx.time_limit(), None);
        assert_eq!(ctx.remaining(), None);
        assert_eq!(ctx.deadline(), ctx.received + NO_LIMIT);
    }

    #[test]
    fn a_timeout_sets_the_limit_deadline_and_what_remains() {
        let ctx = with_timeout(Duration::from_secs(5));
        assert_eq!(ctx.time_limit(), Some(Duration::from_secs(5)));
        assert_eq!(ctx.deadline(), ctx.received + Duration::from_secs(5));
        let remaining = ctx.remaining().expect("a limit");
        assert!(remaining <= Duration::from_secs(5), "{remaining:?}");
        let past = TaskContext {
            received: Instant::now()
                .checked_sub(Duration::from_secs(10))
                .expect("the monotonic clock runs for 10 s already"),
            ..with_timeout(Duration::from_secs(5))
        };
        assert_eq!(past.remaining(), Some(Duration::ZERO), "never negative");
    }
}
