//! What the overlay's entries add up to ([`Tally`]): how far their states
//! are from their rows', and how many of them, and how many bytes, wait
//! for their rows. Every entry is counted in when it is put in or changed,
//! and out before.

use task_source::TaskState;

use crate::live::Live;

/// The sums over the overlay's entries.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Tasks by state in the entries, less the same tasks by their rows'
    /// state: what the counts in `state_counts` lack until the next
    /// checkpoint.
    pub(super) counts: [i64; TaskState::ALL.len()],
    /// Entries whose rows lack some of their changes…
    pub(super) dirty: usize,
    /// …and of those, the settled ones…
    pub(super) dirty_settled: usize,
    /// …and the waiting ones (what a spill writes after the settled ones).
    pub(super) dirty_waiting: usize,
    /// Bytes the entries with unwritten changes hold, roughly (a running
    /// task's entry stays in memory once written, and is not counted)…
    pub(super) dirty_weight: usize,
    /// …and of those, the settled ones (what a slice writes).
    pub(super) settled_weight: usize,
}

impl Tally {
    /// Counts `live` in (`sign` 1) or out (-1).
    pub(super) fn count(&mut self, live: &Live, sign: i64) {
        self.counts[live.state as usize] += sign;
        if let Some(stored) = live.stored {
            self.counts[stored as usize] -= sign;
        }
        let settled = live.settled_unwritten();
        let dirty = live.dirty();
        if dirty {
            self.dirty = self.dirty.wrapping_add_signed(sign as isize);
        }
        if settled {
            self.dirty_settled = self.dirty_settled.wrapping_add_signed(sign as isize);
        }
        if dirty && live.state.is_waiting() {
            self.dirty_waiting = self.dirty_waiting.wrapping_add_signed(sign as isize);
        }
        if !dirty {
            return;
        }
        let weight = live.weight();
        if sign > 0 {
            self.dirty_weight += weight;
            if settled {
                self.settled_weight += weight;
            }
        } else {
            self.dirty_weight = self.dirty_weight.saturating_sub(weight);
            if settled {
                self.settled_weight = self.settled_weight.saturating_sub(weight);
            }
        }
    }
}
