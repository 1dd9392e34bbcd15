//! Checkpoints: when one is due, and writing the changed records to their rows.

use std::time::Duration;

use rusqlite::Connection;
use task_source::TaskState;

use super::Overlay;
use crate::counts::StateDelta;
use crate::journal;
use crate::live;

/// A checkpoint is due once this many settled tasks wait for their rows…
const CHECKPOINT_TASKS: usize = 8_192;
/// …or this long after the first of them settled.
pub(crate) const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// A full checkpoint is due once the unwritten records hold this many bytes
/// of memory, or the journal this many bytes.
const FULL_CHECKPOINT_BYTES: usize = 64 << 20;

impl Overlay {
    /// Whether a checkpoint is due, and whether a full one.
    pub(crate) fn checkpoint_due(&self) -> Option<Checkpoint> {
        if self.weight >= FULL_CHECKPOINT_BYTES || self.journal_bytes >= FULL_CHECKPOINT_BYTES {
            Some(Checkpoint::Full)
        } else if self.dirty_settled >= CHECKPOINT_TASKS
            || self
                .settled_since
                .is_some_and(|since| since.elapsed() >= CHECKPOINT_AFTER)
        {
            Some(Checkpoint::Settled)
        } else {
            None
        }
    }

    /// How long until a checkpoint is due by time; `None` while no settled
    /// task waits for its row.
    pub(crate) fn checkpoint_in(&self) -> Option<Duration> {
        self.settled_since
            .map(|since| CHECKPOINT_AFTER.saturating_sub(since.elapsed()))
    }

    /// Whether some change is in the journal only.
    pub(crate) fn has_unwritten(&self) -> bool {
        self.dirty > 0
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
    /// transaction, and forgets the journal rows that only those held; then
    /// keeps in memory only the tasks still unwritten and the running ones.
    /// Should the transaction fail, the caller loads the overlay again.
    pub(crate) fn checkpoint(
        &mut self,
        conn: &Connection,
        which: Checkpoint,
    ) -> rusqlite::Result<()> {
        let mut written: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, live)| {
                live.dirty() && (which == Checkpoint::Full || live.state.is_settled())
            })
            .map(|(seq, _)| *seq)
            .collect();
        // In order of acceptance: new rows are appended to the table's tree.
        written.sort_unstable();
        let mut delta = StateDelta::default();
        let mut rows = live::RowWriter::new(conn)?;
        for &seq in &written {
            if let Some(live) = self.entries.get(&seq) {
                rows.write(seq, live)?;
                delta.add(live.state, 1);
                if let Some(stored) = live.stored {
                    delta.add(stored, -1);
                }
            }
        }
        delta.apply(conn)?;
        // What a full checkpoint leaves unwritten: nothing.
        let keep_from = match which {
            Checkpoint::Full => None,
            Checkpoint::Settled => self
                .entries
                .values()
                .filter(|live| !live.state.is_settled())
                .filter_map(|live| live.unwritten_since)
                .min(),
        };
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
        self.settled_since = None;
        // Each written record is its row now: only a running one stays in
        // memory; the others keep their place in the ready order.
        for seq in written {
            let Some(mut live) = self.entries.remove(&seq) else {
                continue;
            };
            self.count(&live, -1);
            live.stored = Some(live.state);
            live.unwritten_since = None;
            if live.state == TaskState::Running {
                self.count(&live, 1);
                self.entries.insert(seq, live);
            } else {
                self.ids.remove(&live.task.id);
            }
        }
        Ok(())
    }
}

/// Which changed tasks a checkpoint writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// The settled ones: the rest are likely to change again soon.
    Settled,
    /// Every one.
    Full,
}
