//! [`DeadLetterQueue`]: tasks that ran out of retries, bounded, oldest evicted.

use std::collections::VecDeque;
use std::time::SystemTime;

use crate::manager::Failure;
use crate::task::Task;

/// A task that failed every attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The id it had in the pool.
    pub id: u64,
    /// The task as submitted (payload included, so it can be submitted again).
    pub task: Task,
    /// How many attempts ran.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub failure: Failure,
    /// When it was dead-lettered.
    pub at: SystemTime,
}

/// A bounded dead-letter queue: when full, the oldest entry is evicted and counted.
#[derive(Debug)]
pub struct DeadLetterQueue {
    entries: VecDeque<DeadLetter>,
    capacity: usize,
    evicted: u64,
}

impl DeadLetterQueue {
    /// An empty queue holding at most `capacity` entries (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            evicted: 0,
        }
    }

    /// Adds an entry, evicting the oldest when full.
    pub fn push(&mut self, entry: DeadLetter) {
        if self.capacity == 0 {
            self.evicted += 1;
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.evicted += 1;
        }
        self.entries.push_back(entry);
    }

    /// Removes and returns the entry for task `id`.
    pub fn take(&mut self, id: u64) -> Option<DeadLetter> {
        let pos = self.entries.iter().position(|e| e.id == id)?;
        self.entries.remove(pos)
    }

    /// Puts back `entries` taken out before (by [`take`](Self::take) or
    /// [`take_all`](Self::take_all)) and not used, each in its place by when it
    /// was dead-lettered; past the bound the oldest are evicted, as by
    /// [`push`](Self::push).
    pub fn put_back(&mut self, entries: impl IntoIterator<Item = DeadLetter>) {
        for entry in entries {
            let at = self.entries.partition_point(|e| e.at <= entry.at);
            self.entries.insert(at, entry);
        }
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
            self.evicted += 1;
        }
    }

    /// Removes and returns every entry, oldest first.
    pub fn take_all(&mut self) -> Vec<DeadLetter> {
        self.entries.drain(..).collect()
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &DeadLetter> {
        self.entries.iter()
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries were evicted to respect the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Empties the queue; returns how many entries were removed.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> DeadLetter {
        DeadLetter {
            id,
            task: Task::new("t", vec![]),
            attempts: 4,
            failure: Failure::Handler {
                kind: "handler".into(),
                message: "boom".into(),
            },
            at: SystemTime::now(),
        }
    }

    #[test]
    fn the_bound_evicts_the_oldest_and_counts_it() {
        let mut dlq = DeadLetterQueue::new(3);
        for id in 1..=5 {
            dlq.push(entry(id));
        }
        assert_eq!(dlq.len(), 3);
        assert_eq!(dlq.evicted(), 2);
        assert_eq!(dlq.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn entries_put_back_go_in_their_place_and_the_bound_holds() {
        let mut dlq = DeadLetterQueue::new(3);
        let (a, b, c, d) = (entry(1), entry(2), entry(3), entry(4));
        dlq.push(a);
        dlq.push(b);
        dlq.push(c);
        let taken = dlq.take_all();
        dlq.push(d);
        dlq.put_back(taken);
        assert_eq!(dlq.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(dlq.evicted(), 1);
    }

    #[test]
    fn take_and_clear() {
        let mut dlq = DeadLetterQueue::new(10);
        dlq.push(entry(1));
        dlq.push(entry(2));
        assert_eq!(dlq.take(1).map(|e| e.id), Some(1));
        assert!(dlq.take(1).is_none());
        assert_eq!(dlq.clear(), 1);
        assert!(dlq.is_empty());
    }
}
