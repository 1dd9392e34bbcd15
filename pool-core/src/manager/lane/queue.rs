//! The queue of waiting tasks, shared by the actor (which adds tasks and hands
//! them to idle workers) and every lane (which refills its own worker from it
//! as results come back, with no hop through the actor).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::sync::atomic::Ordering::Relaxed;

use super::super::actor::Pending;
use super::super::metrics::Stats;
use crate::queue::PriorityQueue;

/// The waiting tasks, and whether lanes may take from them on their own.
#[derive(Default)]
pub(crate) struct Waiting {
    pub(crate) tasks: PriorityQueue<Pending>,
    /// Lanes refill from the queue only while nothing is held for a worker of
    /// its type (the actor alone weighs held tasks against queued ones).
    pub(crate) lanes_may_take: bool,
}

/// What [`Waiting::pop_if`] found at the head of the queue.
pub(crate) enum Head {
    /// The head, taken.
    Taken(Pending),
    /// The head, left in place: the test refused it.
    Refused,
    Empty,
}

impl Waiting {
    /// Publishes the queue's gauges (under the lock, so the last change of the
    /// queue is the last published).
    pub(crate) fn publish(&self, stats: &Stats) {
        stats.queued.store(self.tasks.len() as u64, Relaxed);
        for (gauge, depth) in stats.queued_by_band.iter().zip(self.tasks.depth_by_band()) {
            gauge.store(depth as u64, Relaxed);
        }
    }

    /// Takes the head of the queue if `test` accepts it, in one step (a lane
    /// may take the head between a separate look and take).
    pub(crate) fn pop_if(&mut self, test: impl FnOnce(&Pending) -> bool) -> Head {
        match self.tasks.peek() {
            None => Head::Empty,
            Some(head) if !test(head) => Head::Refused,
            Some(_) => self.tasks.pop().map_or(Head::Empty, Head::Taken),
        }
    }
}

/// The shared queue: [`Waiting`] behind one lock. A holder of this lock never
/// takes a lane's lock (a lane takes its own, then this one).
#[derive(Clone, Default)]
pub(crate) struct SharedQueue(Arc<Mutex<Waiting>>);

impl SharedQueue {
    /// The queue, locked (see [`Lane::book`](super::Lane::book) on poisoning).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
