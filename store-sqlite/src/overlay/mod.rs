//! The writer's view of the tasks: the rows of `tasks`, with every task
//! changed since the last checkpoint held in memory ([`Overlay`]), and the
//! ready order of every waiting task.
//!
//! A task's record is its entry here when it has one, else its row. Every
//! change is an [`Entry`] of the journal, applied by the one function that
//! replays the journal too, so what a commit answered and what a restart
//! rebuilds cannot differ.
//!
//! A checkpoint writes the rows of a slice of the tasks that settled (a task
//! that waits or runs is likely to change again soon: its row would be
//! written twice), keeps in memory only the tasks still unwritten and the
//! running ones, and once its plan is done forgets the journal rows before
//! the oldest change still unwritten. A full checkpoint writes every changed
//! task: before an operation that deletes rows, at close, and when the
//! unwritten changes hold too much memory or the journal too many bytes.
//!
//! `change.rs` is how an entry changes a record; `order.rs` the ready
//! order; `tally.rs` what the entries add up to; `ops.rs` the source's
//! operations; `checkpoint.rs` the writing of rows; `deletes.rs` the
//! operations that delete rows.

use std::borrow::Cow;
use std::time::Instant;

use rusqlite::Connection;
use task_source::{NewTask, TaskState};

use crate::journal::{self, Entry};
use crate::known_ids::KnownIds;
use crate::live::{self, Live};
use crate::numbers;
use ids::Ids;
use order::ReadyOrder;
use records::Records;
use tally::Tally;
use unwritten::UnwrittenRows;

mod change;
mod checkpoint;
mod deletes;
mod ids;
#[cfg(test)]
mod invariants;
mod ops;
mod order;
mod records;
mod tally;
mod unwritten;

pub(crate) use checkpoint::{Checkpoint, MemoryBound, CHECKPOINT_AFTER, MEMORY_BYTES};
#[cfg(test)]
pub(crate) use checkpoint::{IDLE, IDLE_TASKS, SLICE};

/// Every waiting task's row, read when the overlay is loaded: through the
/// partial index of waiting tasks, not a scan of every task kept.
pub(crate) const WAITING: &str =
    "SELECT seq, priority, state, due_ms FROM tasks INDEXED BY tasks_ready
     WHERE state IN ('queued','retrying')";

/// The tasks changed since the last checkpoint, and the ready order.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Records by sequence number: every task whose row lacks some of its
    /// changes, and every running task (boxed: the slots stay small, and a
    /// record is changed in place).
    entries: Records,
    /// The sequence numbers of `entries` by id.
    ids: Ids,
    /// Where the waiting tasks come.
    order: ReadyOrder,
    /// The number the next accepted task gets.
    next_seq: i64,
    /// What the entries add up to.
    tally: Tally,
    /// The journal rows the dirty entries' oldest changes are in.
    unwritten_rows: UnwrittenRows,
    /// The tasks that settled with their rows unwritten since the last plan
    /// was made, as they settled (some since written or requeued): the next
    /// plan is made of these, not of a scan of every entry.
    newly_settled: Vec<i64>,
    /// When the first task that is still unwritten settled.
    settled_since: Option<Instant>,
    /// The settled tasks the next checkpoints write, a slice at a time;
    /// `None` between plans.
    plan: Option<checkpoint::Plan>,
    /// The number of this transaction's journal row.
    journal_row: i64,
    /// The bytes of each journal row kept, oldest first.
    journal_sizes: std::collections::VecDeque<(i64, usize)>,
    /// Their sum.
    journal_bytes: usize,
    /// This transaction's journal entries, encoded.
    pending: Vec<u8>,
    /// Every id with a row or an entry, and maybe others; `None` while none
    /// is built (every id is then looked up).
    known: Option<KnownIds>,
    /// How much memory the unwritten records may hold.
    memory: MemoryBound,
}

impl Overlay {
    /// Bounds the memory its unwritten records hold from now on.
    pub(crate) fn bound_memory(&mut self, bound: MemoryBound) {
        self.memory = bound;
    }

    /// The bound its unwritten records are held to.
    pub(crate) fn memory_bound(&self) -> MemoryBound {
        self.memory
    }

    /// Its filter of ids, taken out (the overlay is about to be loaded again).
    pub(crate) fn take_known(&mut self) -> Option<KnownIds> {
        self.known.take()
    }

    /// The view of the store `conn` holds: its rows, with the journal
    /// replayed over them. `known`: a filter of ids kept from a view of the
    /// same store (one a failed transaction left stale: a rollback adds no
    /// row, so it still holds every id with one); else one is built.
    pub(crate) fn load(conn: &Connection, known: Option<KnownIds>) -> rusqlite::Result<Self> {
        let mut overlay = Self {
            next_seq: numbers::next(conn)?,
            journal_row: journal::next_row(conn)?,
            ..Self::default()
        };
        {
            let mut waiting = conn.prepare(WAITING)?;
            let mut rows = waiting.query([])?;
            let (mut queued, mut retrying) = (Vec::new(), Vec::new());
            while let Some(row) = rows.next()? {
                let state: String = row.get(2)?;
                let (seq, priority) = (row.get(0)?, row.get(1)?);
                match TaskState::parse(&state) {
                    Some(TaskState::Retrying) => retrying.push((row.get(3)?, priority, seq)),
                    _ => queued.push((priority, seq)),
                }
            }
            overlay.order.load_on_disk(queued, retrying);
        }
        overlay.journal_sizes = journal::row_sizes(conn)?.into();
        overlay.journal_bytes = overlay.journal_sizes.iter().map(|(_, n)| n).sum();
        let journal_row = overlay.journal_row;
        journal::replay(conn, |row, entry| {
            overlay.journal_row = row;
            overlay.replay(conn, entry)
        })?;
        overlay.journal_row = journal_row;
        overlay.known = Some(match known {
            Some(mut known) => {
                for (_, live) in overlay.entries.iter() {
                    known.insert(&live.task.id);
                }
                known
            }
            None => KnownIds::load(conn, overlay.held_ids().into_iter())?,
        });
        Ok(overlay)
    }

    /// Applies the change `make` builds from task `seq`'s record and the
    /// version it makes, in place: its entry, or its row's record loaded as
    /// one (unchanged, so counted nowhere); the tally, the ready order and
    /// the journal row of its oldest unwritten change follow. With
    /// `journal`, the change is journaled too (and taken out again when it
    /// changes nothing). Then lets go of the entry if its row says all there
    /// is and it does not run (it keeps its place in the ready order).
    /// `Some(false)` when it changes nothing, `None` when there is no such
    /// task.
    fn change(
        &mut self,
        conn: &Connection,
        seq: i64,
        journal: bool,
        make: impl FnOnce(&Live, u64) -> Entry<'static>,
    ) -> rusqlite::Result<Option<bool>> {
        if !self.entries.contains(seq) {
            let Some(live) = live::load_seq(conn, seq)? else {
                return Ok(None);
            };
            hold(&mut self.ids, &mut self.entries, seq, live);
        }
        let Some(live) = self.entries.get_mut(seq) else {
            return Ok(None);
        };
        let entry = make(live, live.version + 1);
        let mark = self.pending.len();
        let encoded = if journal {
            journal::encode(&mut self.pending, &entry)
        } else {
            Ok(())
        };
        let changed = encoded.map(|()| {
            let (state, priority, due_ms) = (live.state, live.task.priority, live.due_ms);
            let was_settled_unwritten = live.settled_unwritten();
            self.tally.count(live, -1);
            let changed = change::change(live, entry);
            if changed {
                if live.unwritten_since.is_none() {
                    live.unwritten_since = Some(self.journal_row);
                    self.unwritten_rows.add(self.journal_row);
                }
                if live.settled_unwritten() && !was_settled_unwritten {
                    self.newly_settled.push(seq);
                }
                self.order.unwait(seq, state, priority, due_ms);
                self.order
                    .wait(seq, live.state, live.task.priority, live.due_ms);
            }
            self.tally.count(live, 1);
            if live.settled_unwritten() && self.settled_since.is_none() {
                self.settled_since = Some(Instant::now());
            }
            changed
        });
        if !matches!(changed, Ok(true)) {
            self.pending.truncate(mark);
        }
        if !live.dirty() && live.state != TaskState::Running {
            self.release(seq);
        }
        changed.map(Some)
    }

    /// Lets go of task `seq`'s record (its row holds it): out of the entries
    /// and the ids; a waiting task keeps its place in the ready order, on
    /// disk.
    fn release(&mut self, seq: i64) {
        if let Some(live) = self.entries.remove(seq) {
            self.ids.remove(&live.task.id, seq);
            if live.state.is_waiting() {
                self.order.evict(live.task.priority, seq);
            }
        }
    }

    /// Applies a journal entry read back; one whose change the task's row
    /// holds already changes nothing.
    fn replay(&mut self, conn: &Connection, entry: Entry<'static>) -> rusqlite::Result<()> {
        let seq = entry.seq();
        // A number the journal names is never handed out again, whatever
        // became of its row.
        self.next_seq = self.next_seq.max(seq + 1);
        if let Entry::Accepted { at_ms, task, .. } = entry {
            if !self.entries.contains(seq) && !live::has_row(conn, seq)? {
                self.add_accepted(seq, task.into_owned(), at_ms);
            }
            return Ok(());
        }
        self.change(conn, seq, false, |_, _| entry)?;
        Ok(())
    }

    /// Journals the change `make` builds from task `seq`'s record and the
    /// version it makes, and applies it: `Some(false)` (nothing journaled)
    /// when it changes nothing, `None` when there is no such task.
    fn record(
        &mut self,
        conn: &Connection,
        seq: i64,
        make: impl FnOnce(&Live, u64) -> Entry<'static>,
    ) -> rusqlite::Result<Option<bool>> {
        self.change(conn, seq, true, make)
    }

    /// Journals the acceptance of `task` as the next sequence number
    /// (`hash`: its id's in the filter of ids, when known).
    fn record_accepted(
        &mut self,
        task: NewTask,
        at_ms: u64,
        hash: Option<u64>,
    ) -> rusqlite::Result<()> {
        let seq = self.next_seq;
        let entry = Entry::Accepted {
            seq,
            at_ms,
            task: Cow::Owned(task),
        };
        journal::encode(&mut self.pending, &entry)?;
        let Entry::Accepted { task, .. } = entry else {
            return Ok(());
        };
        if let Some(known) = &mut self.known {
            known.insert_hash(hash.unwrap_or_else(|| known.hash(&task.id)));
        }
        self.next_seq += 1;
        self.add_accepted(seq, task.into_owned(), at_ms);
        Ok(())
    }

    /// Adds the record of `task`, accepted as `seq` at `at_ms`.
    fn add_accepted(&mut self, seq: i64, task: NewTask, at_ms: u64) {
        let mut live = Box::new(Live::accepted(task, at_ms));
        live.unwritten_since = Some(self.journal_row);
        self.unwritten_rows.add(self.journal_row);
        self.ids.insert(&live.task.id, seq);
        self.order
            .wait(seq, live.state, live.task.priority, live.due_ms);
        self.tally.count(&live, 1);
        self.entries.insert(seq, live);
    }

    /// The bytes of journal entries the transaction has not written yet.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// The transaction's next journal row: its number and the entries since
    /// the last, encoded (none when nothing changed); the next changes go in
    /// the next row.
    pub(crate) fn take_pending(&mut self) -> Option<(i64, Vec<u8>)> {
        if self.pending.is_empty() {
            return None;
        }
        let row = self.journal_row;
        // The next transaction's buffer starts at this one's size.
        let next = Vec::with_capacity(self.pending.len());
        let entries = std::mem::replace(&mut self.pending, next);
        self.journal_sizes.push_back((row, entries.len()));
        self.journal_bytes += entries.len();
        self.journal_row += 1;
        Some((row, entries))
    }

    /// The ids of the tasks with records.
    fn held_ids(&self) -> Vec<&str> {
        self.entries
            .iter()
            .map(|(_, live)| live.task.id.as_str())
            .collect()
    }

    /// The sequence number and state of task `id`.
    fn find(
        &self,
        rows: &mut live::Lookup<'_>,
        id: &str,
    ) -> rusqlite::Result<Option<(i64, TaskState)>> {
        match self.ids.get(id, &self.entries) {
            Some((seq, live)) => Ok(Some((seq, live.state))),
            None if self.known.as_ref().is_none_or(|known| known.may_hold(id)) => rows.state_of(id),
            None => Ok(None),
        }
    }
}

/// Holds the record `live` of task `seq`, read from its row, in `entries`,
/// and its id in `ids`.
fn hold(ids: &mut Ids, entries: &mut Records, seq: i64, live: Live) {
    ids.insert(&live.task.id, seq);
    entries.insert(seq, Box::new(live));
}
