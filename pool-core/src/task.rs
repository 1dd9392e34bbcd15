//! [`Task`]: what a caller submits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// The highest priority (served first).
pub const PRIORITY_HIGHEST: u8 = 0;
/// The lowest priority (served last).
pub const PRIORITY_LOWEST: u8 = 100;
/// The priority of a task that does not set one.
pub const PRIORITY_DEFAULT: u8 = 10;
/// The longest per-attempt timeout a task may ask for (365 days). Longer ones are
/// cut to it by [`Task::with_timeout`]; front ends (the CLI, the daemon) refuse them
/// with this bound in the message.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A unit of work: a type that names the worker's handler and an opaque payload.
///
/// The payload is bytes the pool never decodes; by convention (and in `worker-sdk`)
/// it is MessagePack, which [`Task::msgpack`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Task {
    /// Which handler runs it. Shared (`Arc<str>`): the pool keeps one copy per
    /// distinct type however many tasks wait.
    pub task_type: Arc<str>,
    /// The input, opaque to the pool.
    pub payload: Bytes,
    /// 0 (highest) … 100 (lowest); default 10.
    pub priority: u8,
    /// Per-attempt timeout; the pool's default when `None`.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt; the pool's default when `None`.
    pub max_retries: Option<u32>,
    /// Attempts made before this submission (by whoever submitted it before, such
    /// as a daemon that keeps a task's attempts in its store): the attempt number
    /// a worker sees is this plus the pool's own count. Default 0.
    pub attempts_before: u32,
    /// Whether a task whose retries run out goes to the pool's dead-letter queue
    /// (the default). A submitter that keeps its own dead letters and retries (a
    /// daemon with a task store) turns it off: such a task then ends as
    /// [`FinalStatus::Exhausted`](crate::FinalStatus::Exhausted), with no
    /// dead-letter entry, count or alert in the pool.
    pub dead_letter: bool,
}

impl Task {
    /// A task of `task_type` with raw payload bytes and default settings.
    pub fn new(task_type: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            task_type: task_type.into(),
            payload: payload.into(),
            priority: PRIORITY_DEFAULT,
            timeout: None,
            max_retries: None,
            attempts_before: 0,
            dead_letter: true,
        }
    }

    /// A task whose payload is `value` encoded as MessagePack (named fields).
    ///
    /// # Errors
    /// When `value` cannot be encoded.
    pub fn msgpack<T: Serialize + ?Sized>(
        task_type: impl Into<Arc<str>>,
        value: &T,
    ) -> Result<Self, rmp_serde::encode::Error> {
        Ok(Self::new(task_type, rmp_serde::to_vec_named(value)?))
    }

    /// Sets the priority (0 highest … 100 lowest; values above 100 are rejected at
    /// submission).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the per-attempt timeout, saturated at [`MAX_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout.min(MAX_TIMEOUT));
        self
    }

    /// Sets how many retries follow a failed first attempt (0 = none).
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Sets how many attempts were made before this submission, so the worker
    /// sees the task's real attempt number (see [`Task::attempts_before`]).
    pub fn with_attempts_before(mut self, attempts: u32) -> Self {
        self.attempts_before = attempts;
        self
    }

    /// Sets whether the task goes to the pool's dead-letter queue when its retries
    /// run out (see [`Task::dead_letter`]).
    pub fn with_dead_letter(mut self, dead_letter: bool) -> Self {
        self.dead_letter = dead_letter;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_beyond_the_maximum_is_saturated() {
        let huge = Task::new("t", Vec::new()).with_timeout(Duration::from_millis(68_719_476_735));
        assert_eq!(huge.timeout, Some(MAX_TIMEOUT));
        let max = Task::new("t", Vec::new()).with_timeout(Duration::MAX);
        assert_eq!(max.timeout, Some(MAX_TIMEOUT));
        let short = Task::new("t", Vec::new()).with_timeout(Duration::from_millis(5));
        assert_eq!(short.timeout, Some(Duration::from_millis(5)));
    }
}
