//! What a caller submitting many tasks takes a chunk at a time instead of
//! once a task: queue slots and task ids. Both live on counters every
//! caller and lane shares; taken one by one from many threads, each take
//! moves their cache line between cores.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;

use super::actor::Shared;

/// The most a reserve takes at once (the tasks of one chunk a caller queues).
const MOST: usize = 256;

/// Queue slots and task ids taken ahead for the tasks a caller is about to
/// queue. Slots it still holds when dropped (the caller's tasks were refused,
/// or its submit future was dropped) go back to the queue.
pub(crate) struct Reserve<'a> {
    shared: &'a Shared,
    slots: u32,
    ids: Range<u64>,
}

impl<'a> Reserve<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
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
            if let Ok(permits) = self.shared.queue_slots.try_acquire_many(n) {
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
        let first = self.shared.next_task_id.fetch_add(n, Relaxed);
        self.ids = first + 1..first + n;
        first
    }
}

impl Drop for Reserve<'_> {
    fn drop(&mut self) {
        if self.slots > 0 {
            self.shared.queue_slots.add_permits(self.slots as usize);
        }
    }
}
