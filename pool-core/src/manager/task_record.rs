//! [`TaskRecord`]: a submitted [`Task`] as the pool keeps it, in fewer bytes.
//!
//! Every task the pool holds is moved by value: into the queue, out of it into
//! a worker's book, out of the book when it settles. A record of at most 128
//! bytes the compiler moves inline; a larger one costs a `memcpy` call at each
//! move. `Task`'s public `timeout` takes 16 bytes; kept as nanoseconds it takes
//! 8, which leaves the task's record ([`Pending`](super::actor::Pending)) room
//! for its answer at 128 bytes.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::task::{Task, MAX_TIMEOUT};

/// A submitted task's fields, its timeout in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRecord {
    /// [`Task::task_type`].
    pub(crate) task_type: Arc<str>,
    /// [`Task::payload`].
    pub(crate) payload: Bytes,
    /// [`Task::priority`].
    pub(crate) priority: u8,
    /// [`Task::timeout`], at most [`MAX_TIMEOUT`].
    timeout: Option<Nanos>,
    /// [`Task::max_retries`].
    pub(crate) max_retries: Option<u32>,
    /// [`Task::attempts_before`].
    pub(crate) attempts_before: u32,
    /// [`Task::dead_letter`].
    pub(crate) dead_letter: bool,
}

/// A duration of at most [`MAX_TIMEOUT`] in nanoseconds, plus one (so that
/// `Option` costs nothing and a zero timeout is still one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Nanos(NonZeroU64);

impl Nanos {
    fn new(duration: Duration) -> Self {
        // MAX_TIMEOUT is about 3.2e16 ns: the sum cannot overflow.
        let nanos = u64::try_from(duration.min(MAX_TIMEOUT).as_nanos()).unwrap_or(u64::MAX);
        Self(NonZeroU64::MIN.saturating_add(nanos))
    }

    fn duration(self) -> Duration {
        Duration::from_nanos(self.0.get() - 1)
    }
}

impl TaskRecord {
    /// The record of `task`; a timeout above [`MAX_TIMEOUT`] is cut to it, as
    /// [`Task::with_timeout`] cuts it.
    #[inline]
    pub(crate) fn new(task: Task) -> Self {
        Self {
            task_type: task.task_type,
            payload: task.payload,
            priority: task.priority,
            timeout: task.timeout.map(Nanos::new),
            max_retries: task.max_retries,
            attempts_before: task.attempts_before,
            dead_letter: task.dead_letter,
        }
    }

    /// The task again, as submitted (its timeout cut to [`MAX_TIMEOUT`]).
    pub(crate) fn into_task(self) -> Task {
        let timeout = self.timeout();
        Task {
            task_type: self.task_type,
            payload: self.payload,
            priority: self.priority,
            timeout,
            max_retries: self.max_retries,
            attempts_before: self.attempts_before,
            dead_letter: self.dead_letter,
        }
    }

    /// Its per-attempt timeout; the pool's default when `None`.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout.map(Nanos::duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_comes_back_as_it_went_in() {
        let tasks = [
            Task::new("echo", Bytes::from_static(b"\x01")),
            Task::new("resize", Bytes::new())
                .with_priority(3)
                .with_timeout(Duration::new(7, 123_456_789))
                .with_max_retries(0)
                .with_attempts_before(4)
                .with_dead_letter(false),
            Task::new("now", Bytes::new()).with_timeout(Duration::ZERO),
            Task::new("longest", Bytes::new()).with_timeout(MAX_TIMEOUT),
        ];
        for task in tasks {
            assert_eq!(TaskRecord::new(task.clone()).into_task(), task);
        }
    }

    #[test]
    fn a_timeout_beyond_the_longest_is_cut_to_it() {
        let mut task = Task::new("echo", Bytes::new());
        task.timeout = Some(Duration::MAX);
        let record = TaskRecord::new(task);
        assert_eq!(record.timeout(), Some(MAX_TIMEOUT));
        assert_eq!(record.into_task().timeout, Some(MAX_TIMEOUT));
    }

    #[test]
    fn a_task_s_record_in_the_pool_stays_within_128_bytes() {
        // Beyond 128 bytes each move of a queued or running task's record is
        // a `memcpy` call (see the module doc): about 330 instructions a task
        // in all when it grew by 8 bytes.
        assert!(std::mem::size_of::<TaskRecord>() + 8 <= std::mem::size_of::<Task>());
        assert!(std::mem::size_of::<crate::manager::actor::Pending>() <= 128);
    }
}
