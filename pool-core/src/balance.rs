//! The [`BalancePolicy`] trait: which worker gets the next task.

use std::fmt;

/// What a policy sees of one worker that can take a task now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSnapshot {
    /// The worker's number (`worker-N` has number N), stable for its lifetime.
    pub id: u64,
    /// Tasks sent to it and not yet answered.
    pub in_flight: u32,
    /// Tasks it has finished, successfully or not.
    pub completed: u64,
    /// How many tasks it may hold at once.
    pub capacity: u32,
}

impl WorkerSnapshot {
    /// A snapshot from its parts (for policies' own tests).
    pub fn new(id: u64, in_flight: u32, completed: u64, capacity: u32) -> Self {
        Self {
            id,
            in_flight,
            completed,
            capacity,
        }
    }
}

/// Picks the worker for the next task among the workers with a free run slot.
///
/// Runs on the dispatch hot path, one call at a time: on the thread of a
/// caller whose submit found idle workers, or inside the pool's actor. While
/// it runs, other submits that find idle workers, and the actor's dispatch,
/// wait for it: it must be cheap, synchronous and must not block or allocate
/// per call. A busy worker is refilled from the queue without a pick.
pub trait BalancePolicy: Send + fmt::Debug + 'static {
    /// Stable short name (`round-robin`, `least-loaded`).
    fn name(&self) -> &'static str;

    /// Returns an index into `candidates`, which is never empty and holds only
    /// healthy workers with free capacity, in ascending id order. An index out of
    /// range is logged by the pool and replaced by 0.
    fn pick(&mut self, candidates: &[WorkerSnapshot]) -> usize;
}

/// The policy the pool uses when none is given: the first candidate (lowest id).
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstAvailable;

impl BalancePolicy for FirstAvailable {
    fn name(&self) -> &'static str {
        "first-available"
    }

    fn pick(&mut self, _candidates: &[WorkerSnapshot]) -> usize {
        0
    }
}

#[cfg(test)]
fn _object_safe(_: Box<dyn BalancePolicy>) {}
