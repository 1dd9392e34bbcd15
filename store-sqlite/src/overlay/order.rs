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
            due: BTreeSet::new(),
            queued: 0,
        }
    }
}

impl ReadyOrder {
    /// Puts task `seq` in the order as its `state` says (nowhere unless it
    /// waits).
    pub(super) fn wait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        match state {
            TaskState::Queued => self.ready(priority, seq),
            TaskState::Retrying => {
                self.due.insert((due_ms, priority, seq));
            }
            _ => {}
        }
    }

    /// Takes task `seq` out of the order, where its `state` puts it: only a
    /// waiting task is there ([`wait`](Self::wait)), so a running one, at
    /// every settlement, costs no search. (Should a bug leave another
    /// task's key there, a claim drops it.)
    pub(super) fn unwait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        if matches!(state, TaskState::Queued | TaskState::Retrying) && !self.remove(priority, seq) {
            self.due.remove(&(due_ms, priority, seq));
        }
    }

    /// Moves the retrying tasks due by `now_ms` to the ready ones.
    pub(super) fn promote_due(&mut self, now_ms: u64) {
        while let Some(&(due_ms, priority, seq)) = self.due.first() {
            if due_ms > now_ms {
                break;
            }
            self.due.remove(&(due_ms, priority, seq));
            self.ready(priority, seq);
        }
    }

    /// The ready task a claim takes next: the first by `(priority, seq)`.
    pub(super) fn first(&self) -> Option<(u8, i64)> {
        let in_fifo = self.first_level().and_then(|priority| {
            let seq = *self.fifo[usize::from(priority)].front()?;
            Some((priority, seq))
        });
        match (in_fifo, self.behind.first().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes `(priority, seq)` out of the ready tasks; whether it was there.
    pub(super) fn remove(&mut self, priority: u8, seq: i64) -> bool {
        if self.behind.remove(&(priority, seq)) {
            return true;
        }
        let level = &mut self.fifo[usize::from(priority)];
        // A claim takes the front; only a replay or a bug takes another.
        let found = if level.front() == Some(&seq) {
            level.pop_front().is_some()
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
        self.queued + self.behind.len()
    }

    /// The ready tasks, claimed last first as far as the FIFOs go: each
    /// priority's FIFO from its end, the lowest priority first; then those
    /// that came back behind later ones.
    pub(super) fn ready_from_last(&self) -> impl Iterator<Item = (u8, i64)> + '_ {
        (0..LEVELS)
            .rev()
            .flat_map(move |p| {
                let priority = p as u8;
                self.fifo[p].iter().rev().map(move |&seq| (priority, seq))
            })
            .chain(self.behind.iter().rev().copied())
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
        order.promote_due(99);
        assert_eq!(order.ready_len(), 7, "7 is not due yet");
        order.promote_due(100);
        let mut all: Vec<(u8, i64)> = order.ready_from_last().collect();
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

    /// The tasks claimed last come first in `ready_from_last`: the lowest
    /// priority's newest.
    #[test]
    fn the_tasks_claimed_last_come_first_from_the_end() {
        let mut order = ReadyOrder::default();
        for (seq, priority) in [(1, 5), (2, 90), (3, 5), (4, 90)] {
            order.wait(seq, TaskState::Queued, priority, 0);
        }
        let from_last: Vec<(u8, i64)> = order.ready_from_last().collect();
        assert_eq!(from_last, [(90, 4), (90, 2), (5, 3), (5, 1)]);
    }
}
