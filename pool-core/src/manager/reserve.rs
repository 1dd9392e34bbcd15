//! What a caller submitting many tasks takes a chunk at a time instead of
//! once a task: queue slots and task ids. Both live on counters every
//! caller and lane shares; taken one by one from many threads, each take
//! moves their cache line between cores.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::Semaphore;

/// The most a reserve takes at once (the tasks of one chunk a caller queues).
const MOST: usize = 256;

/// Queue slots and task ids taken ahead for the tasks a caller is about to
/// queue. Slots it still holds when dropped (the caller's tasks were refused,
/// or its submit future was dropped) go back to the queue.
pub(crate) struct Reserve<'a> {
    /// The queue's slots (`max_queue_len` of them).
    queue_slots: &'a Semaphore,
    /// The pool's next task id.
    next_id: &'a AtomicU64,
    slots: u32,
    ids: Range<u64>,
}

impl<'a> Reserve<'a> {
    /// An empty reserve, taking from `queue_slots` and `next_id`.
    pub(crate) fn new(queue_slots: &'a Semaphore, next_id: &'a AtomicU64) -> Self {
        Self {
            queue_slots,
            next_id,
            slots: 0,
            ids: 0..0,
        }
    }

    /// Takes one queue slot for the next task from the reserve, refilled with
    /// up to `wanted` (the tasks still to come) when empty: `false` when the
    /// queue has not that much room (or is closed), for the caller to take
    /// its slot one at a time, waiting if need be.
    pub(crate) fn slot(&mut self, wanted: usize) -> bool {
        if self.slots == 0 && wanted > 1 {
            let n = u32::try_from(wanted.min(MOST)).unwrap_or(1);
            if let Ok(permits) = self.queue_slots.try_acquire_many(n) {
                permits.forget();
                self.slots = n;
            }
        }
        if self.slots == 0 {
            return false;
        }
        self.slots -= 1;
        true
    }

    /// The id of the next task, from the reserve, refilled with up to
    /// `wanted` ids when empty (ids taken and not used are skipped: ids are
    /// unique, not dense).
    pub(crate) fn id(&mut self, wanted: usize) -> u64 {
        if let Some(id) = self.ids.next() {
            return id;
        }
        let n = wanted.clamp(1, MOST) as u64;
        let first = self.next_id.fetch_add(n, Relaxed);
        self.ids = first + 1..first + n;
        first
    }
}

impl Drop for Reserve<'_> {
    fn drop(&mut self) {
        if self.slots > 0 {
            self.queue_slots.add_permits(self.slots as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn slots_are_taken_a_chunk_at_a_time_and_the_unused_ones_go_back() {
        let (slots, ids) = (Semaphore::new(1000), AtomicU64::new(1));
        {
            let mut reserve = Reserve::new(&slots, &ids);
            assert!(reserve.slot(10));
            assert_eq!(slots.available_permits(), 990, "ten taken at once");
            for _ in 0..4 {
                assert!(reserve.slot(9));
            }
            assert_eq!(slots.available_permits(), 990);
        }
        assert_eq!(slots.available_permits(), 995, "the five unused came back");
    }

    #[test]
    fn a_queue_without_room_for_the_chunk_leaves_the_slot_to_the_caller() {
        let (slots, ids) = (Semaphore::new(3), AtomicU64::new(1));
        let mut reserve = Reserve::new(&slots, &ids);
        assert!(!reserve.slot(10), "three slots cannot hold ten tasks");
        assert!(
            !reserve.slot(1),
            "one task takes its slot the one-by-one way"
        );
        assert_eq!(slots.available_permits(), 3);
        slots.close();
        assert!(!Reserve::new(&slots, &ids).slot(2));
    }

    #[test]
    fn ids_from_reserves_side_by_side_never_repeat() {
        let ids = AtomicU64::new(1);
        let slots = Semaphore::new(0);
        let (mut a, mut b) = (Reserve::new(&slots, &ids), Reserve::new(&slots, &ids));
        let mut seen = HashSet::new();
        for i in 0..600 {
            assert!(seen.insert(a.id(600 - i)));
            assert!(seen.insert(b.id(1)));
        }
        assert_eq!(seen.len(), 1200);
        assert!(!seen.contains(&0), "ids start where the counter did");
    }
}
