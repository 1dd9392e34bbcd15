//! One shard of the queue, locked: its tasks, and the guard that leaves its
//! head's priority behind for lanes and callers to read without the lock.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::MutexGuard;

use crate::manager::clock::Moment;

use super::super::super::actor::Pending;
use super::names::TypeNames;
use super::Flags;
use crate::queue::PriorityQueue;

/// What a shard's head hint holds when the shard is empty.
pub(super) const NO_HEAD: u8 = u8::MAX;

/// One shard's waiting tasks.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) tasks: PriorityQueue<Pending>,
    /// The names of the task types callers queued here, shared between their
    /// tasks.
    names: TypeNames,
}

/// What [`ShardGuard::pop_if`] found at the head of the shard.
pub(crate) enum Head {
    /// The head, taken.
    Taken(Pending),
    /// The head, left in place: the test refused it.
    Refused,
    Empty,
}

/// A shard, locked. As it is let go it leaves the priority of its head
/// behind (or [`NO_HEAD`]): stored while the lock is still held, so the last
/// store is the shard as it was left.
pub(crate) struct ShardGuard<'a> {
    /// Which shard it is.
    pub(super) index: u8,
    pub(super) waiting: MutexGuard<'a, Waiting>,
    pub(super) head: &'a AtomicU8,
    pub(super) flags: &'a Flags,
}

impl ShardGuard<'_> {
    /// Callers no longer add tasks (the pool is shutting down, or its actor is
    /// gone): what they submit goes to the actor, which refuses it. Exact
    /// under any shard's lock (it changes only under all of them).
    pub(crate) fn closed(&self) -> bool {
        self.flags.closed()
    }

    /// Lanes and the desk may take tasks on their own: nothing is held for a
    /// worker of some type (the actor alone weighs held tasks against queued
    /// ones). Exact under any shard's lock, as [`closed`](Self::closed).
    pub(crate) fn lanes_may_take(&self) -> bool {
        self.flags.lanes_may_take()
    }

    /// Queues a caller's task, queued at `queued_at`, its type's name shared
    /// with the earlier tasks of that type here.
    #[inline]
    pub(crate) fn push_new(&mut self, mut pending: Pending, queued_at: Moment) {
        pending.shard = self.index;
        pending.queued_at = queued_at;
        let waiting = &mut *self.waiting;
        waiting.names.share(&mut pending.task.task_type);
        waiting.tasks.push(pending.task.priority, pending);
    }

    /// Takes the head of the shard if `test` accepts it, in one step (a lane
    /// may take the head between a separate look and take).
    pub(crate) fn pop_if(&mut self, test: impl FnOnce(&Pending) -> bool) -> Head {
        let tasks = &mut self.waiting.tasks;
        match tasks.peek() {
            None => Head::Empty,
            Some(head) if !test(head) => Head::Refused,
            Some(_) => tasks.pop().map_or(Head::Empty, Head::Taken),
        }
    }

    /// The priority of the head, if any.
    pub(crate) fn head_priority(&self) -> Option<u8> {
        self.waiting.tasks.head_priority()
    }

    /// Whether no task waits here.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.tasks.is_empty()
    }

    /// The shard's tasks, for the whole queue's operations.
    pub(super) fn tasks(&mut self) -> &mut PriorityQueue<Pending> {
        &mut self.waiting.tasks
    }

    /// The shard's tasks, to look at.
    pub(super) fn queued(&self) -> &PriorityQueue<Pending> {
        &self.waiting.tasks
    }

    /// The shard's head, for the whole queue's operations.
    pub(super) fn peek(&self) -> Option<&Pending> {
        self.waiting.tasks.peek()
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let head = self.waiting.tasks.head_priority().unwrap_or(NO_HEAD);
        self.head.store(head, Relaxed);
    }
}
