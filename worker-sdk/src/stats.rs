//! Counters shared by the dispatcher, the tasks and the heartbeat thread.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Tasks finished and in flight, read by the heartbeat thread.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    tasks_done: AtomicU64,
    in_flight: AtomicU32,
}

impl Stats {
    /// Tasks finished so far, successfully or not.
    pub(crate) fn tasks_done(&self) -> u64 {
        self.tasks_done.load(Ordering::Relaxed)
    }

    /// Tasks running now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a task that finished without running (unknown type, refused).
    pub(crate) fn count_done(&self) {
        self.tasks_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One running task: counted in flight until dropped, then counted as done.
///
/// A guard rather than two calls so that an aborted task is never left in flight.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Stats>);

impl InFlight {
    /// Counts one more task in flight.
    pub(crate) fn start(stats: &Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.tasks_done.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
