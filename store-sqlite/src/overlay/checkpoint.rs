//! Checkpoints: when one is due, and writing the changed records to their rows.
//!
//! Rows are written while the store is idle, a slice at a time, so that a
//! burst of tasks pays only for its journal rows and no request waits long
//! behind a checkpoint. While requests keep coming, rows wait until the
//! unwritten settled tasks grow large or old; then a slice is written after
//! each group commit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use task_source::TaskState;

use super::Overlay;
use crate::counts::StateDelta;
use crate::journal;
use crate::live::{self, Live};

/// The most settled tasks one checkpoint transaction writes (a few
/// milliseconds of the writer's time): what a request that arrives meanwhile
/// waits at most…
pub(crate) const SLICE: usize = 1_024;
/// …and the most bytes of their records (large payloads or results make
/// fewer tasks a slice; a slice writes one task however large).
pub(crate) const SLICE_BYTES: usize = 4 << 20;
/// The store is idle once no request came for this long…
pub(crate) const IDLE: Duration = Duration::from_millis(5);
/// …and its settled tasks are written then, once this many wait for their
/// rows (a trickle of tasks is written a few hundred at a time, not one
/// transaction each)…
pub(crate) const IDLE_TASKS: usize = 256;
/// …or the first of them settled this long ago.
pub(crate) const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// While requests keep coming, a slice is written after each group commit
/// once the unwritten settled tasks hold this many bytes of memory (what
/// slices can write: waiting and running tasks, and the journal they keep,
/// wait for the full checkpoint)…
const BUSY_BYTES: usize = 48 << 20;
/// …or the first settled task still unwritten settled this long ago.
const BUSY_AGE: Duration = Duration::from_secs(10);
/// A full checkpoint is due once the journal holds this many bytes (or the
/// unwritten records hold their [`MemoryBound`] and no waiting task's record
/// is left to write).
const FULL_CHECKPOINT_BYTES: usize = 256 << 20;
/// The default [`MemoryBound`].
pub(crate) const MEMORY_BYTES: usize = 64 << 20;

/// The most bytes of memory the unwritten records hold. Past it, the
/// settled tasks' rows are written first (a row written once in any case);
/// a quarter past it, or with few settled tasks, the waiting tasks claimed
/// last have their rows written and leave memory (a [`Checkpoint::Spill`]),
/// [`SLICE_BYTES`] of them after each group commit until the records are
/// back within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryBound(pub(crate) usize);

impl Default for MemoryBound {
    fn default() -> Self {
        Self(MEMORY_BYTES)
    }
}

impl Overlay {
    /// The checkpoint due after a group commit, if one is: a full one past
    /// the journal's bound; a spill past the memory bound; a slice of the settled tasks while the unwritten
    /// settled ones are large or old.
    pub(crate) fn checkpoint_due(&self) -> Option<Checkpoint> {
        if self.journal_bytes >= FULL_CHECKPOINT_BYTES {
            return Some(Checkpoint::Full);
        }
        if self.tally.dirty_weight >= self.memory.0 {
            // A settled task's row is written once in any case, a waiting
            // one's twice once spilled: the settled ones go first, unless
            // they are few or the records keep growing past the bound.
            let settled_first = self.tally.settled_weight >= self.memory.0 / 2
                && self.tally.dirty_weight < self.memory.0 + self.memory.0 / 4;
            return Some(if settled_first {
                Checkpoint::Settled
            } else {
                Checkpoint::Spill
            });
        }
        let since = self.settled_since?;
        (self.tally.settled_weight >= BUSY_BYTES || since.elapsed() >= BUSY_AGE)
            .then_some(Checkpoint::Settled)
    }

    /// How long the writer waits for a request before it writes a slice of
    /// the settled tasks' rows: `None` while none waits for its row; no wait
    /// at all once it is `idle` (it wrote a slice and no request came since).
    pub(crate) fn checkpoint_in(&self, idle: bool) -> Option<Duration> {
        let since = self.settled_since?;
        Some(if idle {
            Duration::ZERO
        } else if self.tally.dirty_settled >= IDLE_TASKS {
            IDLE
        } else {
            IDLE.max(CHECKPOINT_AFTER.saturating_sub(since.elapsed()))
        })
    }

    /// Makes the unwritten settled tasks look `by` older (a test's clock).
    #[cfg(test)]
    pub(crate) fn age_settled(&mut self, by: Duration) {
        self.settled_since = self.settled_since.and_then(|since| since.checked_sub(by));
    }

    /// How many settled tasks wait for their rows (a test's look).
    #[cfg(test)]
    pub(crate) fn settled_unwritten(&self) -> usize {
        self.tally.dirty_settled
    }

    /// Whether some change is in the journal only.
    pub(crate) fn has_unwritten(&self) -> bool {
        self.tally.dirty > 0
    }

    /// Runs `f` on the rows, in the caller's transaction, after a full
    /// checkpoint in it: what `f` reads or deletes is all in the rows, and no
    /// journal entry is left to bring back a task whose row `f` deletes.
    pub(crate) fn on_rows<T>(
        &mut self,
        conn: &Connection,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.checkpoint(conn, Checkpoint::Full)?;
        f(conn)
    }

    /// Writes the rows of the changed tasks `which` says, in the caller's
    /// transaction; then keeps in memory only the tasks still unwritten and
    /// the running ones. Once no settled task is left in the plan, forgets
    /// the journal rows that only written tasks held (between slices the
    /// journal keeps them: a replay skips the changes a row holds already).
    /// Should the transaction fail, the caller loads the overlay again.
    pub(crate) fn checkpoint(
        &mut self,
        conn: &Connection,
        which: Checkpoint,
    ) -> rusqlite::Result<()> {
        let written = match which {
            Checkpoint::Full => {
                self.plan = None;
                let mut all: Vec<i64> = self
                    .entries
                    .iter()
                    .filter(|(_, live)| live.dirty())
                    .map(|(seq, _)| *seq)
                    .collect();
                // In order of acceptance: new rows are appended to the table's tree.
                all.sort_unstable();
                all
            }
            Checkpoint::Settled => self.next_slice(),
            Checkpoint::Spill => {
                let spilled = self.spill();
                if spilled.is_empty() {
                    // Nothing waits in memory: the records held are running
                    // or settled ones.
                    return self.checkpoint(conn, Checkpoint::Full);
                }
                spilled
            }
        };
        let mut delta = StateDelta::default();
        let records: Vec<(i64, &Live)> = written
            .iter()
            .filter_map(|seq| self.entries.get(seq).map(|live| (*seq, &**live)))
            .collect();
        for (_, live) in &records {
            delta.add(live.state, 1);
            if let Some(stored) = live.stored {
                delta.add(stored, -1);
            }
        }
        live::RowWriter::new(conn)?.write_all(&records)?;
        delta.apply(conn)?;
        // Each written record is its row now: only a running one stays in
        // memory; the others keep their place in the ready order.
        for seq in written {
            let Some(live) = self.entries.get_mut(&seq) else {
                continue;
            };
            self.tally.count(live, -1);
            live.stored = Some(live.state);
            live.unwritten_since = None;
            if live.state == TaskState::Running {
                self.tally.count(live, 1);
            } else if let Some(live) = self.entries.remove(&seq) {
                self.ids.remove(&live.task.id);
            }
        }
        // A spill leaves the settled tasks, and the journal they keep, to the
        // slices.
        if which != Checkpoint::Spill && self.plan.as_ref().is_none_or(|plan| plan.seqs.is_empty())
        {
            // What settled before the plan was made is written.
            self.settled_since = self.plan.take().map(|plan| plan.made);
            self.forget_written(conn)?;
        }
        if self.tally.dirty_settled == 0 {
            self.settled_since = None;
        }
        Ok(())
    }

    /// The next slice of the plan: up to [`SLICE`] settled tasks still
    /// unwritten, oldest first; the plan is made from the entries when there
    /// is none.
    fn next_slice(&mut self) -> Vec<i64> {
        let entries = &self.entries;
        let plan = self.plan.get_or_insert_with(|| {
            let mut seqs: Vec<i64> = entries
                .iter()
                .filter(|(_, live)| live.settled_unwritten())
                .map(|(seq, _)| *seq)
                .collect();
            seqs.sort_unstable();
            Plan {
                seqs: seqs.into(),
                made: Instant::now(),
            }
        });
        let mut slice = Vec::with_capacity(SLICE.min(plan.seqs.len()));
        let mut bytes = 0;
        while slice.len() < SLICE && bytes < SLICE_BYTES {
            let Some(seq) = plan.seqs.pop_front() else {
                break;
            };
            // A task requeued since the plan was made is not settled; one
            // written by a full checkpoint since is not dirty.
            if let Some(live) = entries.get(&seq).filter(|live| live.settled_unwritten()) {
                bytes += live.weight();
                slice.push(seq);
            }
        }
        slice
    }

    /// The waiting tasks a spill writes: from the end of the ready order
    /// (the tasks claimed last), those whose records are in memory, until
    /// the unwritten records are back within their [`MemoryBound`] or
    /// [`SLICE_BYTES`] are found (a request waits for one spill at most).
    /// Tasks written by an earlier spill are passed over, [`SPILL_SCAN`] at
    /// most.
    fn spill(&self) -> Vec<i64> {
        let mut excess = self
            .tally
            .dirty_weight
            .saturating_sub(self.memory.0)
            .min(SLICE_BYTES);
        let mut spilled = Vec::new();
        let mut passed = 0;
        for (_, seq) in self.order.ready_from_last() {
            if excess == 0 || passed == SPILL_SCAN {
                break;
            }
            match self.entries.get(&seq).filter(|live| live.dirty()) {
                Some(live) => {
                    excess = excess.saturating_sub(live.weight());
                    spilled.push(seq);
                }
                None => passed += 1,
            }
        }
        // In order of acceptance: new rows are appended to the table's tree.
        spilled.sort_unstable();
        spilled
    }

    /// Forgets the journal rows before the oldest change still unwritten
    /// (all of them when none is).
    fn forget_written(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let keep_from = self
            .entries
            .values()
            .filter_map(|live| live.unwritten_since)
            .min();
        journal::forget_before(conn, keep_from)?;
        // A checkpoint runs in a transaction of its own: no change waits
        // for this one's journal row.
        debug_assert!(self.pending.is_empty());
        while let Some(&(row, bytes)) = self.journal_sizes.front() {
            if keep_from.is_some_and(|keep| row >= keep) {
                break;
            }
            self.journal_sizes.pop_front();
            self.journal_bytes = self.journal_bytes.saturating_sub(bytes);
        }
        Ok(())
    }
}

/// The settled tasks the next checkpoints write, in order of acceptance, and
/// when they were taken from the entries: every settled task still unwritten
/// once the plan is done settled after that.
#[derive(Debug)]
pub(crate) struct Plan {
    seqs: VecDeque<i64>,
    made: Instant,
}

/// Which changed tasks a checkpoint writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// The next [`SLICE`] of the settled ones, oldest first: the rest are
    /// likely to change again soon.
    Settled,
    /// Every one.
    Full,
    /// Some of the waiting tasks claimed last ([`Overlay::spill`]); they
    /// leave memory, and a claim reads each one's row.
    Spill,
}

/// The most tasks a spill passes over, looking for records in memory at
/// the end of the ready order, before it settles for those it found.
const SPILL_SCAN: usize = 65_536;
