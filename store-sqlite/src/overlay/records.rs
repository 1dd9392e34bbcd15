//! The overlay's records by sequence number ([`Records`]).
//!
//! Tasks are numbered in order of acceptance, and the records in memory are
//! mostly of the latest tasks: they are kept in a window addressed by
//! `seq - base`, so finding one is an index, not a hash and a probe into a
//! table of a hundred thousand slots, and records accepted together sit side
//! by side. A record before the window goes in a map: one read back from its
//! row long after its task was accepted, and one moved out of the window.
//! The window is never mostly empty slots, so its memory follows the records
//! it holds, not the numbers between them:
//! - its front moves on as its first records leave, and while the window is
//!   mostly empty slots its first records move to the map (a task running
//!   for hours does not hold the slots of every task accepted since);
//! - a record far past its end (the next task accepted after an old one was
//!   read back into an empty window) starts the window again there, the
//!   records before it moved to the map.

use std::collections::VecDeque;

use foldhash::HashMap;

use crate::live::Live;

/// Slots a window keeps however empty (below it, no record is moved).
#[cfg(not(test))]
const SMALLEST_WINDOW: usize = 4096;
/// Small in the crate's tests, so that their few tasks move records to the
/// map.
#[cfg(test)]
const SMALLEST_WINDOW: usize = 8;
/// A window whose slots outnumber its records this many times is made
/// smaller, its front records moved to the map.
const MOST_EMPTY: usize = 8;

/// The records, by sequence number.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// The records of `base`, `base + 1`, …; `None` where a task has none.
    window: VecDeque<Option<Box<Live>>>,
    /// The sequence number of the window's first slot.
    base: i64,
    /// Records in the window.
    in_window: usize,
    /// The records of tasks before `base`.
    older: HashMap<i64, Box<Live>>,
}

impl Records {
    /// Task `seq`'s record.
    pub(crate) fn get(&self, seq: i64) -> Option<&Live> {
        match self.slot(seq) {
            Some(at) => self.window.get(at)?.as_deref(),
            None => self.older.get(&seq).map(|live| &**live),
        }
    }

    /// Task `seq`'s record, to change.
    pub(crate) fn get_mut(&mut self, seq: i64) -> Option<&mut Live> {
        match self.slot(seq) {
            Some(at) => self.window.get_mut(at)?.as_deref_mut(),
            None => self.older.get_mut(&seq).map(|live| &mut **live),
        }
    }

    /// Whether task `seq` has a record.
    pub(crate) fn contains(&self, seq: i64) -> bool {
        self.get(seq).is_some()
    }

    /// Holds `live` as task `seq`'s record (replacing one it had).
    pub(crate) fn insert(&mut self, seq: i64, live: Box<Live>) {
        if self.window.is_empty() && seq >= self.base {
            self.base = seq;
        }
        let Some(mut at) = self.slot(seq) else {
            self.older.insert(seq, live);
            return;
        };
        if at >= self.window.len() {
            if at >= SMALLEST_WINDOW.max(MOST_EMPTY * (self.in_window + 1)) {
                self.start_at(seq);
                at = 0;
            }
            self.window.resize_with(at + 1, || None);
        }
        if self.window[at].replace(live).is_none() {
            self.in_window += 1;
        }
    }

    /// Lets go of task `seq`'s record, and returns it.
    pub(crate) fn remove(&mut self, seq: i64) -> Option<Box<Live>> {
        let Some(at) = self.slot(seq) else {
            return self.older.remove(&seq);
        };
        let live = self.window.get_mut(at)?.take()?;
        self.in_window -= 1;
        self.trim();
        Some(live)
    }

    /// Every record, with its task's number, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, &Live)> + '_ {
        let base = self.base;
        let window = self.window.iter().zip(base..).filter_map(|(slot, seq)| {
            let live = slot.as_deref()?;
            Some((seq, live))
        });
        window.chain(self.older.iter().map(|(seq, live)| (*seq, &**live)))
    }

    /// How many records it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_window + self.older.len()
    }

    /// The window's slot of `seq`; `None` before the window.
    fn slot(&self, seq: i64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base)?).ok()
    }

    /// Moves every record of the window to the map, and starts the window
    /// again at `seq` (past them all), empty.
    fn start_at(&mut self, seq: i64) {
        let window = std::mem::take(&mut self.window);
        for (live, at) in window.into_iter().zip(self.base..) {
            if let Some(live) = live {
                self.older.insert(at, live);
            }
        }
        self.in_window = 0;
        self.base = seq;
    }

    /// Drops the empty slots at the window's ends, and moves its first
    /// records to the map while it is mostly empty slots; gives back the
    /// memory of slots it no longer uses.
    fn trim(&mut self) {
        loop {
            match self.window.front() {
                Some(None) => {}
                Some(Some(_))
                    if self.window.len() > SMALLEST_WINDOW
                        && self.window.len() > self.in_window * MOST_EMPTY =>
                {
                    if let Some(Some(live)) = self.window.front_mut().map(Option::take) {
                        self.older.insert(self.base, live);
                        self.in_window -= 1;
                    }
                }
                _ => break,
            }
            self.window.pop_front();
            self.base += 1;
        }
        while matches!(self.window.back(), Some(None)) {
            self.window.pop_back();
        }
        let used = self.window.len().max(SMALLEST_WINDOW);
        if self.window.capacity() > 4 * used {
            self.window.shrink_to(2 * used);
        }
    }

    /// Checks its own invariants (the overlay's model test).
    #[cfg(test)]
    pub(crate) fn check(&self, at: &str) {
        let held = self.window.iter().filter(|slot| slot.is_some()).count();
        assert_eq!(held, self.in_window, "{at}: records counted in the window");
        assert!(
            self.older.keys().all(|seq| *seq < self.base),
            "{at}: a record in the map at or past the window's start {}",
            self.base
        );
        assert!(
            self.window.front().is_none_or(Option::is_some)
                && self.window.back().is_none_or(Option::is_some),
            "{at}: the window ends in an empty slot"
        );
        assert_eq!(self.iter().count(), self.len(), "{at}: records counted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::accepted as record;

    fn ids(records: &Records) -> Vec<(i64, String)> {
        let mut all: Vec<(i64, String)> = records
            .iter()
            .map(|(seq, live)| (seq, live.task.id.clone()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn records_are_found_in_the_window_and_before_it() {
        let mut records = Records::default();
        for seq in 10..20 {
            records.insert(seq, record(&format!("t{seq}")));
        }
        assert_eq!(records.len(), 10);
        // Read back from its row: older than the window.
        records.insert(3, record("old"));
        assert_eq!(records.get(3).map(|l| l.task.id.as_str()), Some("old"));
        assert_eq!(records.get(15).map(|l| l.task.id.as_str()), Some("t15"));
        assert!(records.get(9).is_none() && records.get(20).is_none());
        records.check("filled");
        assert_eq!(records.remove(10).map(|l| l.task.id), Some("t10".into()));
        assert_eq!(records.base, 11, "the front moved on");
        assert!(records.remove(10).is_none(), "gone");
        assert_eq!(records.remove(3).map(|l| l.task.id), Some("old".into()));
        records.get_mut(12).unwrap().attempts = 7;
        assert_eq!(records.get(12).unwrap().attempts, 7);
        // A gap, then a later record.
        records.insert(30, record("t30"));
        assert!(records.contains(30) && !records.contains(25));
        assert_eq!(records.len(), 10);
        let want: Vec<i64> = (11..20).chain([30]).collect();
        let got: Vec<i64> = ids(&records).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(got, want);
    }

    /// A record far past the others (the next task accepted after an old
    /// one was read back into an empty window) starts the window again: it
    /// does not make a slot for every number between them.
    #[test]
    fn a_record_far_past_the_window_starts_it_again() {
        let mut records = Records::default();
        records.insert(100, record("old"));
        records.insert(10_000_000, record("new"));
        records.insert(10_000_001, record("next"));
        assert!(records.window.len() <= 2, "{} slots", records.window.len());
        assert!(records.window.capacity() < 1 << 16);
        for (seq, id) in [(100, "old"), (10_000_000, "new"), (10_000_001, "next")] {
            assert_eq!(records.get(seq).map(|l| l.task.id.as_str()), Some(id));
        }
        records.check("far");
        assert_eq!(records.remove(100).map(|l| l.task.id), Some("old".into()));
        records.check("removed");
    }

    #[test]
    fn one_old_record_does_not_hold_a_window_of_empty_slots() {
        let mut records = Records::default();
        records.insert(0, record("long"));
        let last = (SMALLEST_WINDOW.max(64) * MOST_EMPTY * 4) as i64;
        for seq in 1..=last {
            records.insert(seq, record(&format!("t{seq}")));
            if seq > 16 {
                records.remove(seq - 16);
            }
            let most = SMALLEST_WINDOW.max(MOST_EMPTY * (records.in_window + 1)) + 1;
            assert!(
                records.window.len() <= most,
                "{} slots for {} records",
                records.window.len(),
                records.in_window
            );
        }
        assert!(records.older.contains_key(&0), "moved out of the window");
        records.check("slid");
        assert_eq!(records.get(0).map(|l| l.task.id.as_str()), Some("long"));
        assert_eq!(records.len(), 17);
        assert_eq!(records.remove(0).map(|l| l.task.id), Some("long".into()));
        assert_eq!(records.len(), 16);
    }
}
