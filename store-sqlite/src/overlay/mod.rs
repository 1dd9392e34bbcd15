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
//! `change.rs` is how an entry changes a record; `ops.rs` the source's
//! operations; `checkpoint.rs` the writing of rows.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Instant;

use foldhash::HashMap;
use rusqlite::Connection;
use task_source::{NewTask, TaskState};

use crate::journal::{self, Entry};
use crate::known_ids::KnownIds;
use crate::live::{self, Live};

mod change;
mod checkpoint;
mod ops;

pub(crate) use checkpoint::{Checkpoint, CHECKPOINT_AFTER};
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
    /// changes, and every running task (boxed: a record moves out and back at
    /// every change).
    entries: HashMap<i64, Box<Live>>,
    /// The sequence numbers of `entries` by id.
    ids: HashMap<String, i64>,
    /// Queued tasks, and retrying ones past their due time: `(priority, seq)`.
    ready: BTreeSet<(u8, i64)>,
    /// Retrying tasks not yet moved to `ready`: `(due_ms, priority, seq)`.
    due: BTreeSet<(u64, u8, i64)>,
    /// The number the next accepted task gets.
    next_seq: i64,
    /// Tasks by state in `entries`, less the same tasks by their rows' state:
    /// what the counts in `state_counts` lack until the next checkpoint.
    counts: [i64; TaskState::ALL.len()],
    /// Entries whose rows lack some of their changes…
    dirty: usize,
    /// …and of those, the settled ones.
    dirty_settled: usize,
    /// Bytes the entries with unwritten changes hold, roughly (a running
    /// task's entry stays in memory once written, and is not counted)…
    dirty_weight: usize,
    /// …and of those, the settled ones (what a slice writes).
    settled_weight: usize,
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
}

impl Overlay {
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
            next_seq: conn.query_row("SELECT coalesce(max(seq), 0) + 1 FROM tasks", [], |r| {
                r.get(0)
            })?,
            journal_row: journal::next_row(conn)?,
            ..Self::default()
        };
        {
            let mut waiting = conn.prepare(WAITING)?;
            let mut rows = waiting.query([])?;
            while let Some(row) = rows.next()? {
                let state: String = row.get(2)?;
                let state = TaskState::parse(&state).unwrap_or(TaskState::Queued);
                overlay.wait(row.get(0)?, state, row.get(1)?, row.get(3)?);
            }
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
                for id in overlay.ids.keys() {
                    known.insert(id);
                }
                known
            }
            None => KnownIds::load(conn, overlay.ids.keys().map(String::as_str))?,
        });
        Ok(overlay)
    }

    /// Puts task `seq` in the ready order as its `state` says.
    fn wait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        match state {
            TaskState::Queued => {
                self.ready.insert((priority, seq));
            }
            TaskState::Retrying => {
                self.due.insert((due_ms, priority, seq));
            }
            _ => {}
        }
    }

    /// Takes task `seq` out of the ready order, where its `state` puts it:
    /// only a waiting task is there ([`wait`](Self::wait)), so a running one,
    /// at every settlement, costs no search of either set. (Should a bug
    /// leave another task's key there, [`claim`](Self::claim) drops it.)
    fn unwait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        if matches!(state, TaskState::Queued | TaskState::Retrying)
            && !self.ready.remove(&(priority, seq))
        {
            self.due.remove(&(due_ms, priority, seq));
        }
    }

    fn count(&mut self, live: &Live, sign: i64) {
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
        let weight = live.weight();
        if sign > 0 {
            if dirty {
                self.dirty_weight += weight;
            }
            if settled {
                self.settled_weight += weight;
            }
        } else {
            if dirty {
                self.dirty_weight = self.dirty_weight.saturating_sub(weight);
            }
            if settled {
                self.settled_weight = self.settled_weight.saturating_sub(weight);
            }
        }
    }

    /// Takes task `seq`'s record out, from its entry or its row, and out of
    /// the ready order; `None` when there is no such task. Its id is in
    /// `ids` while the record is out: it goes back under the same number.
    fn take(&mut self, conn: &Connection, seq: i64) -> rusqlite::Result<Option<Box<Live>>> {
        if let Some(live) = self.entries.remove(&seq) {
            self.unwait(seq, live.state, live.task.priority, live.due_ms);
            self.count(&live, -1);
            return Ok(Some(live));
        }
        let Some(live) = live::load_seq(conn, seq)? else {
            return Ok(None);
        };
        self.unwait(seq, live.state, live.task.priority, live.due_ms);
        self.ids.insert(live.task.id.clone(), seq);
        Ok(Some(Box::new(live)))
    }

    /// Puts task `seq`'s record back as its entry (its id is in `ids`), in
    /// the ready order as its state says.
    fn put(&mut self, seq: i64, live: Box<Live>) {
        if live.settled_unwritten() && self.settled_since.is_none() {
            self.settled_since = Some(Instant::now());
        }
        self.wait(seq, live.state, live.task.priority, live.due_ms);
        self.count(&live, 1);
        self.entries.insert(seq, live);
    }

    /// Puts task `seq`'s record back: as its entry while its row lacks some
    /// of its changes or it runs, else only in the ready order (its row says
    /// all there is).
    fn release(&mut self, seq: i64, live: Box<Live>) {
        if live.dirty() || live.state == TaskState::Running {
            self.put(seq, live);
        } else {
            self.wait(seq, live.state, live.task.priority, live.due_ms);
            self.ids.remove(&live.task.id);
        }
    }

    /// Marks `live` as changed in this transaction's journal row.
    fn unwritten(&self, live: &mut Live) {
        live.unwritten_since.get_or_insert(self.journal_row);
    }

    /// Applies a journal entry read back; one whose change the task's row
    /// holds already changes nothing.
    fn replay(&mut self, conn: &Connection, entry: Entry<'static>) -> rusqlite::Result<()> {
        let seq = entry.seq();
        // A number the journal names is never handed out again, whatever
        // became of its row.
        self.next_seq = self.next_seq.max(seq + 1);
        if let Entry::Accepted { at_ms, task, .. } = entry {
            if !self.entries.contains_key(&seq) && !live::has_row(conn, seq)? {
                self.add_accepted(seq, task.into_owned(), at_ms);
            }
            return Ok(());
        }
        if let Some(mut live) = self.take(conn, seq)? {
            if change::change(&mut live, entry) {
                self.unwritten(&mut live);
            }
            self.release(seq, live);
        }
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
        let Some(mut live) = self.take(conn, seq)? else {
            return Ok(None);
        };
        let entry = make(&live, live.version + 1);
        let mark = self.pending.len();
        let changed = match journal::encode(&mut self.pending, &entry) {
            Ok(()) => change::change(&mut live, entry),
            Err(e) => {
                self.release(seq, live);
                return Err(e);
            }
        };
        if changed {
            self.unwritten(&mut live);
        } else {
            self.pending.truncate(mark);
        }
        self.release(seq, live);
        Ok(Some(changed))
    }

    /// Journals the acceptance of `task` as the next sequence number.
    fn record_accepted(&mut self, task: NewTask, at_ms: u64) -> rusqlite::Result<()> {
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
            known.insert(&task.id);
        }
        self.next_seq += 1;
        self.add_accepted(seq, task.into_owned(), at_ms);
        Ok(())
    }

    /// Adds the record of `task`, accepted as `seq` at `at_ms`.
    fn add_accepted(&mut self, seq: i64, task: NewTask, at_ms: u64) {
        let mut live = Box::new(Live::accepted(task, at_ms));
        self.unwritten(&mut live);
        self.ids.insert(live.task.id.clone(), seq);
        self.put(seq, live);
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

    /// The sequence number and state of task `id`.
    fn find(
        &self,
        rows: &mut live::Lookup<'_>,
        id: &str,
    ) -> rusqlite::Result<Option<(i64, TaskState)>> {
        match self.ids.get(id) {
            Some(&seq) => Ok(self.entries.get(&seq).map(|live| (seq, live.state))),
            None if self.known.as_ref().is_none_or(|known| known.may_hold(id)) => rows.state_of(id),
            None => Ok(None),
        }
    }
}
