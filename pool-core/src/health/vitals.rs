//! [`Vitals`]: what the pool knows about one worker when it asks a probe.

use std::time::Duration;

/// A worker's vitals, gathered by the pool before any probe runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Vitals {
    /// The worker's number.
    pub worker_id: u64,
    /// Time since the worker last sent anything (a heartbeat or a reply).
    pub since_heard: Duration,
    /// Time since the worker became ready.
    pub age: Duration,
    /// Resident set size in bytes, as last reported (0 when unknown).
    pub rss_bytes: u64,
    /// Tasks the worker has finished.
    pub tasks_done: u64,
    /// Tasks in flight on it now.
    pub in_flight: u32,
    /// How long its oldest in-flight task has been running.
    pub oldest_task_age: Option<Duration>,
}

impl Vitals {
    /// Vitals of a worker that was last heard from `since_heard` ago.
    pub fn new(worker_id: u64, since_heard: Duration) -> Self {
        Self {
            worker_id,
            since_heard,
            ..Self::default()
        }
    }
}
