//! [`Task`]: what a caller submits.

use std::cell::Cell;
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
/// cut to it by [`Task::with_timeout`], and by the pool when it takes a task whose
/// `timeout` field was set longer (the task it hands back in a refusal or a dead
/// letter has the cut timeout); front ends (the CLI, the daemon) refuse them with
/// this bound in the message.
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
    /// Per-attempt timeout; the pool's default when `None`. At most
    /// [`MAX_TIMEOUT`]: the pool cuts a longer one to it.
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
    ///
    /// Tasks made one after another on a thread with the same type share
    /// one allocation of its name: `Task::new("resize", …)` in a loop
    /// allocates the name once.
    pub fn new(task_type: impl AsRef<str> + Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            task_type: shared_type(task_type),
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
        task_type: impl AsRef<str> + Into<Arc<str>>,
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

thread_local! {
    /// The type of the last task made on this thread.
    static LAST_TYPE: Cell<Option<Arc<str>>> = const { Cell::new(None) };
}

/// `name` as the type of a new task: the last task's on this thread when it
/// is the same name, else `name` itself, then remembered.
fn shared_type(name: impl AsRef<str> + Into<Arc<str>>) -> Arc<str> {
    let same = LAST_TYPE.try_with(|last| {
        let held = last.take();
        let same = held
            .as_ref()
            .filter(|held| ***held == *name.as_ref())
            .cloned();
        last.set(held);
        same
    });
    if let Ok(Some(shared)) = same {
        return shared;
    }
    let fresh: Arc<str> = name.into();
    // Nothing is remembered while this thread's locals are being destroyed.
    let _ = LAST_TYPE.try_with(|last| last.set(Some(fresh.clone())));
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_of_one_type_made_in_a_row_share_its_name() {
        let first = Task::new("resize", Vec::new());
        let second = Task::new(String::from("resize"), Vec::new());
        assert!(Arc::ptr_eq(&first.task_type, &second.task_type));
        let other = Task::new("crop", Vec::new());
        assert_eq!(&*other.task_type, "crop");
        let third = Task::new("resize", Vec::new());
        assert_eq!(&*third.task_type, "resize");
        assert!(
            !Arc::ptr_eq(&first.task_type, &third.task_type),
            "the cache holds one name"
        );
    }

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
