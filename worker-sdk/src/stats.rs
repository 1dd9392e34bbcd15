//! Counters shared by the dispatcher, the tasks and the heartbeat thread.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Tasks finished and in flight, read by the heartbeat thread.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    tasks_done: AtomicU64,
    /// Tasks running now.
    running: AtomicU32,
    /// Tasks received that wait for a free slot (beyond `concurrency`).
    waiting: AtomicU32,
}

impl Stats {
    /// Tasks finished so far, successfully or not.
    pub(crate) fn tasks_done(&self) -> u64 {
        self.tasks_done.load(Ordering::Relaxed)
    }

    /// Tasks received and not yet answered, running or waiting for a slot
    /// (the heartbeat's `in_flight`, `docs/PROTOCOL.md`).
    pub(crate) fn in_flight(&self) -> u32 {
        let running = self.running.load(Ordering::Relaxed);
        running.saturating_add(self.waiting.load(Ordering::Relaxed))
    }

    /// Counts a task that waits for a slot.
    pub(crate) fn count_waiting(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// A waiting task left the queue (it starts, or it was cancelled).
    pub(crate) fn count_waited(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
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
        stats.running.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.tasks_done.fetch_add(1, Ordering::Relaxed);
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}
