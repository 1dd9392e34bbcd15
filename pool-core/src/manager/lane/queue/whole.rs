//! The whole queue, every shard locked: the actor's view (its dispatch pass,
//! retries, cancels, shutdown) and a metrics snapshot's.

use super::super::super::actor::Pending;
use super::super::super::metrics::QueueDepth;
use super::{Flags, Head, ShardGuard};

/// Every shard, locked in order. Its head is the first of the shards' heads:
/// the highest priority, and of those the task queued first.
pub(crate) struct WholeQueue<'a> {
    pub(super) shards: Vec<ShardGuard<'a>>,
    pub(super) flags: &'a Flags,
}

impl WholeQueue<'_> {
    /// Which shard holds the whole queue's head.
    fn head_shard(&self) -> Option<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(index, shard)| {
                let head = shard.peek()?;
                Some(((head.task.priority, head.queued_at), index))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, index)| index)
    }

    /// The task [`pop`](Self::pop) would return.
    pub(crate) fn peek(&self) -> Option<&Pending> {
        self.shards[self.head_shard()?].peek()
    }

    /// Removes and returns the head.
    pub(crate) fn pop(&mut self) -> Option<Pending> {
        let index = self.head_shard()?;
        self.shards[index].tasks().pop()
    }

    /// Takes the head if `test` accepts it, in one step (see
    /// [`ShardGuard::pop_if`]).
    pub(crate) fn pop_if(&mut self, test: impl FnOnce(&Pending) -> bool) -> Head {
        match self.head_shard() {
            Some(index) => self.shards[index].pop_if(test),
            None => Head::Empty,
        }
    }

    /// The shard `pending` was queued in, where it goes back.
    fn home_of(&self, pending: &Pending) -> usize {
        usize::from(pending.shard) % self.shards.len()
    }

    /// Queues `pending` behind every task of its priority (a retry that is
    /// due), in the shard its caller queued it in.
    pub(crate) fn push(&mut self, pending: Pending) {
        let home = self.home_of(&pending);
        self.shards[home]
            .tasks()
            .push(pending.task.priority, pending);
    }

    /// Queues `pending` in front of every task of its priority (a task that
    /// was taken and goes back), in the shard its caller queued it in, so it
    /// is again ahead of that caller's later tasks there.
    pub(crate) fn push_front(&mut self, pending: Pending) {
        let home = self.home_of(&pending);
        self.shards[home]
            .tasks()
            .push_front(pending.task.priority, pending);
    }

    /// Removes the first task matching `pred` (a linear scan, for cancels).
    pub(crate) fn remove_first(
        &mut self,
        mut pred: impl FnMut(&Pending) -> bool,
    ) -> Option<Pending> {
        self.shards
            .iter_mut()
            .find_map(|shard| shard.tasks().remove_first(&mut pred))
    }

    /// Removes every task, highest priority first, then by queueing time.
    pub(crate) fn drain(&mut self) -> Vec<Pending> {
        let mut all: Vec<Pending> = self
            .shards
            .iter_mut()
            .flat_map(|shard| shard.tasks().drain().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|pending| (pending.task.priority, pending.queued_at));
        all
    }

    /// How many tasks wait.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.queued().len()).sum()
    }

    /// Whether no task waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(ShardGuard::is_empty)
    }

    /// Its depth, for a metrics snapshot (read there, under the locks, rather
    /// than written to shared gauges by every change).
    pub(crate) fn depth(&self) -> QueueDepth {
        let mut depth = QueueDepth {
            shards: self.shards.len() as u64,
            ..QueueDepth::default()
        };
        for shard in &self.shards {
            let tasks = shard.queued();
            depth.len += tasks.len() as u64;
            for (sum, band) in depth.by_band.iter_mut().zip(tasks.depth_by_band()) {
                *sum += band as u64;
            }
        }
        depth
    }

    /// Lets lanes and the desk take tasks on their own, or stops them.
    pub(crate) fn set_lanes_may_take(&mut self, may: bool) {
        self.flags.set_lanes_may_take(may);
    }

    /// Closes the queue to callers: what they submit from now on goes to the
    /// actor, which refuses it.
    pub(crate) fn close_to_callers(&mut self) {
        self.flags.close();
    }

    /// Whether it was closed to callers (a shutdown drained it).
    pub(crate) fn closed(&self) -> bool {
        self.flags.closed()
    }
}
