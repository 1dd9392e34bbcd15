//! The ready order of the waiting tasks ([`ReadyOrder`]): queued ones by
//! priority, then by acceptance; retrying ones by their due time until it
//! passes.
//!
//! Tasks are accepted in the order of their numbers, so each priority's
//! queued tasks are a FIFO appended at its end: a task is put in and taken
//! out in a few instructions, where a B-tree of `(priority, seq)` cost about
//! 660 instructions an accepted task. The few tasks that come back behind
//! later ones (a retry that came due, an interrupted attempt, a requeued
//! dead letter) wait in a B-tree beside the FIFOs, and a claim takes the
//! first of both.
//!
//! Both hold only tasks whose records are in memory; the ready tasks whose
//! records are in their rows only (read at open, or written out by a spill
//! or a full checkpoint) wait in a third set, `on_disk`. A spill takes its
//! tasks from the ends of the FIFOs, so it never passes over a task it
//! cannot write.

use std::collections::{BTreeSet, VecDeque};

use task_source::TaskState;

/// The priorities a task may have: `u8`'s.
const LEVELS: usize = 256;

/// Every waiting task's place.
#[derive(Debug)]
pub(super) struct ReadyOrder {
    /// Queued tasks (and retrying ones past their due time) by priority,
    /// each FIFO in ascending `seq`.
    fifo: Vec<VecDeque<i64>>,
    /// Which priorities' FIFOs hold a task: bit `p % 64` of word `p / 64`.
    nonempty: [u64; LEVELS / 64],
    /// Ready tasks whose number is below the end of their priority's FIFO
    /// when they came: `(priority, seq)`.
    behind: BTreeSet<(u8, i64)>,
    /// Ready tasks whose records are in their rows only: `(priority, seq)`.
    on_disk: BTreeSet<(u8, i64)>,
    /// Retrying tasks not yet ready: `(due_ms, priority, seq)`.
    pub(super) due: BTreeSet<(u64, u8, i64)>,
    /// How many tasks the FIFOs hold.
    queued: usize,
}

impl Default for ReadyOrder {
    fn default() -> Self {
        Self {
            fifo: vec![VecDeque::new(); LEVELS],
            nonempty: [0; LEVELS / 64],
            behind: BTreeSet::new(),
            on_disk: BTreeSet::new(),
            due: BTreeSet::new(),
            queued: 0,
        }
    }
}

impl ReadyOrder {
    /// Puts task `seq`, its record in memory, in the order as its `state`
    /// says (nowhere unless it waits).
    pub(super) fn wait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        match state {
            TaskState::Queued => self.ready(priority, seq),
            TaskState::Retrying => {
                self.due.insert((due_ms, priority, seq));
            }
            _ => {}
        }
    }

    /// Puts the waiting rows read at open in the order, none of them in
    /// memory: `queued` as `(priority, seq)`, `retrying` as `(due_ms,
    /// priority, seq)`. (Built whole, the sets' nodes are full.)
    pub(super) fn load_on_disk(&mut self, queued: Vec<(u8, i64)>, retrying: Vec<(u64, u8, i64)>) {
        self.on_disk.append(&mut queued.into_iter().collect());
        self.due.append(&mut retrying.into_iter().collect());
    }

    /// Notes that ready task `seq`'s record left memory (its row holds it
    /// all); nothing for a task that is not ready.
    pub(super) fn evict(&mut self, priority: u8, seq: i64) {
        if self.remove_in_memory(priority, seq) {
            self.on_disk.insert((priority, seq));
        }
    }

    /// Takes task `seq` out of the order, where its `state` puts it: only a
    /// waiting task is there ([`wait`](Self::wait)), so a running one, at
    /// every settlement, costs no search. (Should a bug leave another
    /// task's key there, a claim drops it.)
    pub(super) fn unwait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        if state.is_waiting() && !self.remove(priority, seq) {
            self.due.remove(&(due_ms, priority, seq));
        }
    }

    /// Moves the retrying tasks due by `now_ms` to the ready ones
    /// (`in_memory`: whether a task's record is in memory).
    pub(super) fn promote_due(&mut self, now_ms: u64, in_memory: impl Fn(i64) -> bool) {
        while let Some(&(due_ms, priority, seq)) = self.due.first() {
            if due_ms > now_ms {
                break;
            }
            self.due.remove(&(due_ms, priority, seq));
            if in_memory(seq) {
                self.ready(priority, seq);
            } else {
                self.on_disk.insert((priority, seq));
            }
        }
    }

    /// The ready task a claim takes next: the first by `(priority, seq)`.
    pub(super) fn first(&self) -> Option<(u8, i64)> {
        [self.first_in_memory(), self.on_disk.first().copied()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The first ready task by `(priority, seq)` whose record is in memory.
    fn first_in_memory(&self) -> Option<(u8, i64)> {
        let in_fifo = self.first_level().and_then(|priority| {
            let seq = *self.fifo[usize::from(priority)].front()?;
            Some((priority, seq))
        });
        [in_fifo, self.behind.first().copied()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The numbers of the ready tasks on disk that a claim takes next, up to
    /// `most`, before any ready task in memory.
    pub(super) fn next_on_disk(&self, most: usize) -> Vec<i64> {
        let in_memory = self.first_in_memory();
        self.on_disk
            .iter()
            .take_while(|key| in_memory.is_none_or(|first| **key < first))
            .take(most)
            .map(|&(_, seq)| seq)
            .collect()
    }

    /// Takes `(priority, seq)` out of the ready tasks; whether it was there.
    pub(super) fn remove(&mut self, priority: u8, seq: i64) -> bool {
        self.remove_in_memory(priority, seq) || self.on_disk.remove(&(priority, seq))
    }

    /// Takes `(priority, seq)` out of the ready tasks in memory; whether it
    /// was there.
    fn remove_in_memory(&mut self, priority: u8, seq: i64) -> bool {
        let level = &mut self.fifo[usize::from(priority)];
        // A claim takes the front, an eviction the end (a spill evicts from
        // the last down); only a replay or a bug takes another.
        let found = if level.front() == Some(&seq) {
            level.pop_front().is_some()
        } else if level.back() == Some(&seq) {
            level.pop_back().is_some()
        } else if self.behind.remove(&(priority, seq)) {
            return true;
        } else {
            match level.binary_search(&seq) {
                Ok(at) => level.remove(at).is_some(),
                Err(_) => false,
            }
        };
        if found {
            self.queued -= 1;
            if level.is_empty() {
                self.nonempty[usize::from(priority) / 64] &= !(1 << (priority % 64));
            }
        }
        found
    }

    /// How many tasks are ready.
    pub(super) fn ready_len(&self) -> usize {
        self.queued + self.behind.len() + self.on_disk.len()
    }

    /// Whether a ready task's record is in memory.
    #[cfg(test)]
    pub(super) fn any_in_memory(&self) -> bool {
        self.queued > 0 || !self.behind.is_empty()
    }

    /// The ready tasks whose records are in memory, those claimed last
    /// first as far as the FIFOs go: each priority's FIFO from its end, the
    /// lowest priority first; then those that came back behind later ones.
    pub(super) fn in_memory_from_last(&self) -> impl Iterator<Item = (u8, i64)> + '_ {
        (0..LEVELS)
            .rev()
            .flat_map(move |p| {
                let priority = p as u8;
                self.fifo[p].iter().rev().map(move |&seq| (priority, seq))
            })
            .chain(self.behind.iter().rev().copied())
    }

    /// The retrying tasks not yet due, the last due first: `(priority,
    /// seq)`, their records in memory or not.
    pub(super) fn due_from_last(&self) -> impl Iterator<Item = (u8, i64)> + '_ {
        self.due
            .iter()
            .rev()
            .map(|&(_, priority, seq)| (priority, seq))
    }

    /// The ready tasks whose records are in their rows only.
    #[cfg(test)]
    pub(super) fn on_disk(&self) -> impl Iterator<Item = (u8, i64)> + '_ {
        self.on_disk.iter().copied()
    }

    /// Puts `seq` among the ready tasks of its priority.
    fn ready(&mut self, priority: u8, seq: i64) {
        let level = &mut self.fifo[usize::from(priority)];
        if level.back().is_none_or(|&last| last < seq) {
            level.push_back(seq);
            self.queued += 1;
            self.nonempty[usize::from(priority) / 64] |= 1 << (priority % 64);
        } else {
            self.behind.insert((priority, seq));
        }
    }

    /// The highest priority (lowest number) whose FIFO holds a task.
    fn first_level(&self) -> Option<u8> {
        self.nonempty
            .iter()
            .enumerate()
            .find(|(_, word)| **word != 0)
            .map(|(n, word)| (n * 64 + word.trailing_zeros() as usize) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(order: &mut ReadyOrder) -> Vec<(u8, i64)> {
        let mut out = Vec::new();
        while let Some((priority, seq)) = order.first() {
            assert!(order.remove(priority, seq));
            out.push((priority, seq));
        }
        assert_eq!(order.ready_len(), 0);
        out
    }

    /// Tasks come out by priority, then by number, however they came in:
    /// appended in order, or behind later ones (a retry come due).
    #[test]
    fn a_claim_takes_the_first_by_priority_then_number() {
        let mut order = ReadyOrder::default();
        for (seq, priority) in [(1, 50), (2, 10), (3, 50), (4, 255), (5, 0), (6, 10)] {
            order.wait(seq, TaskState::Queued, priority, 0);
        }
        order.wait(7, TaskState::Retrying, 10, 100);
        // Behind later ones of its priority: 3 is there already.
        order.wait(0, TaskState::Queued, 50, 0);
        order.promote_due(99, |_| true);
        assert_eq!(order.ready_len(), 7, "7 is not due yet");
        order.promote_due(100, |_| true);
        let mut all: Vec<(u8, i64)> = order.in_memory_from_last().collect();
        all.sort_unstable();
        let drained = drain(&mut order);
        assert_eq!(drained, all);
        assert_eq!(
            drained,
            [
                (0, 5),
                (10, 2),
                (10, 6),
                (10, 7),
                (50, 0),
                (50, 1),
                (50, 3),
                (255, 4)
            ]
        );
    }

    /// A task taken out from the middle of its FIFO (a replayed claim) is
    /// gone, and the others keep their order.
    #[test]
    fn a_task_taken_from_the_middle_leaves_the_rest_in_order() {
        let mut order = ReadyOrder::default();
        for seq in 1..=5 {
            order.wait(seq, TaskState::Queued, 20, 0);
        }
        order.unwait(3, TaskState::Queued, 20, 0);
        assert!(!order.remove(20, 3), "once");
        assert!(!order.remove(21, 1), "under its own priority only");
        assert_eq!(drain(&mut order), [(20, 1), (20, 2), (20, 4), (20, 5)]);
    }

    /// The tasks claimed last come first in `in_memory_from_last`: the
    /// lowest priority's newest. An evicted task leaves it, and is still
    /// claimed in its turn.
    #[test]
    fn the_tasks_claimed_last_come_first_from_the_end() {
        let mut order = ReadyOrder::default();
        for (seq, priority) in [(1, 5), (2, 90), (3, 5), (4, 90)] {
            order.wait(seq, TaskState::Queued, priority, 0);
        }
        let from_last: Vec<(u8, i64)> = order.in_memory_from_last().collect();
        assert_eq!(from_last, [(90, 4), (90, 2), (5, 3), (5, 1)]);
        order.evict(90, 4);
        order.evict(5, 1);
        order.load_on_disk(vec![(90, 0)], Vec::new());
        let from_last: Vec<(u8, i64)> = order.in_memory_from_last().collect();
        assert_eq!(from_last, [(90, 2), (5, 3)]);
        assert!(order.any_in_memory());
        assert_eq!(
            drain(&mut order),
            [(5, 1), (5, 3), (90, 0), (90, 2), (90, 4)]
        );
        assert!(!order.any_in_memory());
    }

    /// A retry that comes due goes among the ready tasks in memory or on
    /// disk, as its record is.
    #[test]
    fn a_retry_come_due_is_ready_where_its_record_is() {
        let mut order = ReadyOrder::default();
        order.wait(1, TaskState::Retrying, 7, 10);
        order.load_on_disk(Vec::new(), vec![(10, 7, 2)]);
        order.promote_due(10, |seq| seq == 1);
        assert_eq!(order.in_memory_from_last().collect::<Vec<_>>(), [(7, 1)]);
        assert_eq!(order.on_disk().collect::<Vec<_>>(), [(7, 2)]);
    }
}
