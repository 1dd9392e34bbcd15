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
/// wait for a spill or the full checkpoint)…
const BUSY_BYTES: usize = 48 << 20;
/// …or the first settled task still unwritten settled this long ago.
const BUSY_AGE: Duration = Duration::from_secs(10);
/// A full checkpoint is due once the journal holds this many bytes (a
/// replay after a crash reads that much, and the commit that passed it).
const FULL_CHECKPOINT_BYTES: usize = 256 << 20;
/// The default [`MemoryBound`].
pub(crate) const MEMORY_BYTES: usize = 64 << 20;
/// The most bytes of records one spill writes (some tens of milliseconds
/// of the writer's time); a larger excess takes a spill after each commit,
/// or back to back while no request comes.
const SPILL_BYTES: usize = 4 * SLICE_BYTES;

/// The most bytes of memory the unwritten records hold, but for those of
/// running tasks: past it, a [`Checkpoint::Spill`] after each group commit
/// (and back to back while no request comes) writes the settled tasks' rows
/// first (a settled row is written once in any case), then those of the
/// waiting tasks claimed last, whose records leave memory, [`SPILL_BYTES`]
/// at a time, until the records are back within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryBound(pub(crate) usize);

impl Default for MemoryBound {
    fn default() -> Self {
        Self(MEMORY_BYTES)
    }
}

impl Overlay {
    /// The checkpoint due after a group commit, if one is: a full one past
    /// the journal's bound; a spill past the memory bound, when settled or
    /// ready tasks' records can be written (running ones are written once
    /// they settle); a slice of the settled tasks while the unwritten
    /// settled ones are large or old.
    pub(crate) fn checkpoint_due(&self) -> Option<Checkpoint> {
        if self.journal_bytes >= FULL_CHECKPOINT_BYTES {
            return Some(Checkpoint::Full);
        }
        if self.spill_due() {
            return Some(Checkpoint::Spill);
        }
        let since = self.settled_since?;
        (self.tally.settled_weight >= BUSY_BYTES || since.elapsed() >= BUSY_AGE)
            .then_some(Checkpoint::Settled)
    }

    /// Whether the records are past the memory bound and a spill has
    /// something to write: waiting tasks, or settled ones worth a slice.
    pub(super) fn spill_due(&self) -> bool {
        let excess = self.excess();
        excess > 0
            && (self.tally.dirty_waiting > 0
                || self.tally.settled_weight >= excess.min(SLICE_BYTES))
    }

    /// The bytes the unwritten records hold past the memory bound.
    fn excess(&self) -> usize {
        self.tally.dirty_weight.saturating_sub(self.memory.0)
    }

    /// The checkpoint the writer runs once it waited [`checkpoint_in`]
    /// (Self::checkpoint_in) for a request in vain: a spill while one is
    /// due (a large commit's records are brought within the bound a spill
    /// at a time), else a slice of the settled tasks.
    pub(crate) fn idle_checkpoint(&self) -> Checkpoint {
        if self.spill_due() {
            Checkpoint::Spill
        } else {
            Checkpoint::Settled
        }
    }

    /// How long the writer waits for a request before it writes a slice of
    /// the settled tasks' rows (or spills): `None` while none waits for its
    /// row; no wait at all once it is `idle` (it wrote a slice and no
    /// request came since).
    pub(crate) fn checkpoint_in(&self, idle: bool) -> Option<Duration> {
        if self.spill_due() {
            return Some(if idle { Duration::ZERO } else { IDLE });
        }
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
        // Whether this checkpoint took a slice of the plan.
        let mut sliced = which == Checkpoint::Settled;
        let written = match which {
            Checkpoint::Full => {
                self.plan = None;
                self.newly_settled.clear();
                let mut all: Vec<i64> = self
                    .entries
                    .iter()
                    .filter(|(_, live)| live.dirty())
                    .map(|(seq, _)| seq)
                    .collect();
                // In order of acceptance: new rows are appended to the table's tree.
                all.sort_unstable();
                all
            }
            Checkpoint::Settled => self.next_slice(SLICE, SLICE_BYTES).0,
            Checkpoint::Spill => {
                let excess = self.excess().min(SPILL_BYTES);
                // Settled tasks first when they are worth a slice; else
                // waiting ones first, and settled ones for what those leave.
                let (mut written, mut bytes) = (Vec::new(), 0);
                if self.tally.settled_weight >= excess.min(SLICE_BYTES) {
                    sliced = true;
                    (written, bytes) = self.settled_worth(excess);
                }
                let (spilled, spilled_bytes) = self.spill(excess.saturating_sub(bytes));
                written.extend(spilled);
                bytes += spilled_bytes;
                if !sliced && bytes < excess && self.tally.dirty_settled > 0 {
                    sliced = true;
                    written.extend(self.settled_worth(excess - bytes).0);
                }
                // In order of acceptance: new rows are appended to the table's tree.
                written.sort_unstable();
                written
            }
        };
        let mut delta = StateDelta::default();
        let records: Vec<(i64, &Live)> = written
            .iter()
            .filter_map(|seq| self.entries.get(*seq).map(|live| (*seq, live)))
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
        // memory; the others keep their place in the ready order (evicted
        // from the last down: a spilled FIFO's end goes one task at a time).
        for seq in written.into_iter().rev() {
            let Some(live) = self.entries.get_mut(seq) else {
                continue;
            };
            self.tally.count(live, -1);
            live.stored = Some(live.state);
            if let Some(row) = live.unwritten_since.take() {
                self.unwritten_rows.remove(row);
            }
            if live.state == TaskState::Running {
                self.tally.count(live, 1);
            } else {
                self.release(seq);
            }
        }
        // A plan is done once its last slice is written (a spill that took
        // none leaves the plan, and the journal, as they are).
        let done = match which {
            Checkpoint::Full => true,
            _ => sliced && self.plan.as_ref().is_none_or(|plan| plan.seqs.is_empty()),
        };
        if done {
            // What settled before the plan was made is written.
            self.settled_since = self.plan.take().map(|plan| plan.made);
            self.forget_written(conn)?;
        }
        if self.tally.dirty_settled == 0 {
            self.settled_since = None;
        }
        Ok(())
    }

    /// Settled tasks still unwritten worth `bytes` of records (at least
    /// one), oldest first, from the plan; should the plan run out first, a
    /// new one takes the tasks the old one lacked (not those just taken).
    /// With the bytes taken.
    fn settled_worth(&mut self, bytes: usize) -> (Vec<i64>, usize) {
        let (mut taken, mut got) = self.next_slice(usize::MAX, bytes.max(1));
        let plan_done = self.plan.as_ref().is_none_or(|plan| plan.seqs.is_empty());
        if got < bytes && plan_done && self.tally.dirty_settled > taken.len() {
            // The slice came from the front of a plan in order of acceptance.
            let mut plan = Plan::of(&mut self.newly_settled);
            plan.seqs.retain(|seq| taken.binary_search(seq).is_err());
            self.plan = Some(plan);
            let (more, more_bytes) = self.next_slice(usize::MAX, bytes - got);
            taken.extend(more);
            got += more_bytes;
        }
        (taken, got)
    }

    /// The next slice of the plan: up to `most` settled tasks still
    /// unwritten, oldest first, until `limit` bytes of their records are taken (at
    /// least one); a plan is made of the tasks settled since the last one
    /// when there is none.
    /// With the bytes taken.
    fn next_slice(&mut self, most: usize, limit: usize) -> (Vec<i64>, usize) {
        let entries = &self.entries;
        let newly_settled = &mut self.newly_settled;
        let plan = self.plan.get_or_insert_with(|| Plan::of(newly_settled));
        let mut slice = Vec::with_capacity(most.min(plan.seqs.len()));
        let mut bytes = 0;
        while slice.len() < most && bytes < limit {
            let Some(seq) = plan.seqs.pop_front() else {
                break;
            };
            // A task requeued since the plan was made is not settled; one
            // written by a full checkpoint since is not dirty.
            if let Some(live) = entries.get(seq).filter(|live| live.settled_unwritten()) {
                bytes += live.weight();
                slice.push(seq);
            }
        }
        (slice, bytes)
    }

    /// The waiting tasks a spill writes, `bytes` of their records (none for
    /// 0, else at least one): those claimed last, from the ends of the
    /// FIFOs in memory, then retrying ones not yet due, the last due first.
    /// With the bytes taken.
    fn spill(&self, bytes: usize) -> (Vec<i64>, usize) {
        let mut took = 0;
        let mut spilled = Vec::new();
        let order = &self.order;
        for (_, seq) in order.in_memory_from_last().chain(order.due_from_last()) {
            if took >= bytes {
                break;
            }
            // A retrying task's record may be on disk already.
            if let Some(live) = self.entries.get(seq) {
                took += live.weight();
                spilled.push(seq);
            }
        }
        (spilled, took)
    }

    /// Forgets the journal rows before the oldest change still unwritten
    /// (all of them when none is).
    fn forget_written(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let keep_from = self.unwritten_rows.oldest();
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
/// when the plan was made: every settled task still unwritten once the plan
/// is done settled after that.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(super) seqs: VecDeque<i64>,
    made: Instant,
}

impl Plan {
    /// The tasks that settled since the last plan was made (taken), in
    /// order of acceptance, made now: with the plan before it, every settled
    /// task still unwritten (and some since written or requeued, which a
    /// slice passes over).
    fn of(newly_settled: &mut Vec<i64>) -> Self {
        let mut seqs = std::mem::take(newly_settled);
        seqs.sort_unstable();
        seqs.dedup();
        Self {
            seqs: seqs.into(),
            made: Instant::now(),
        }
    }
}

/// Which changed tasks a checkpoint writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// The next [`SLICE`] of the settled ones, oldest first: the rest are
    /// likely to change again soon.
    Settled,
    /// Every one.
    Full,
    /// Past the [`MemoryBound`]: settled tasks, then the waiting tasks
    /// claimed last, whose records leave memory (a claim reads each one's
    /// row back), until the records are within the bound or
    /// [`SPILL_BYTES`] are written.
    Spill,
}
