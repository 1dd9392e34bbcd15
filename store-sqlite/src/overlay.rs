//! The writer's view of the tasks: the rows of `tasks`, with every task
//! changed since the last checkpoint held in memory ([`Overlay`]), and the
//! ready order of every waiting task.
//!
//! A task's record is its entry here when it has one, else its row. Every
//! change is an [`Entry`] of the journal, applied by the one function that
//! replays the journal too, so what a commit answered and what a restart
//! rebuilds cannot differ.
//!
//! A checkpoint writes the rows of the tasks that settled (a task that waits
//! or runs is likely to change again soon: its row would be written twice),
//! forgets the journal rows before the oldest change still unwritten, and
//! keeps in memory only the tasks still unwritten and the running ones. A
//! full checkpoint writes every changed task: before an operation that reads
//! or changes the rows themselves, and when the unwritten changes hold too
//! much memory or the journal too many bytes.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use foldhash::HashMap;
use rusqlite::Connection;
use task_source::{
    Admission, Claimed, Filter, NewTask, Outcome, Requeue, Settlement, TaskRecord, TaskState,
    TaskStatus,
};

use crate::counts::StateDelta;
use crate::journal::{self, Entry};
use crate::known_ids::KnownIds;
use crate::live::{self, Live};

/// A checkpoint is due once this many settled tasks wait for their rows…
const CHECKPOINT_TASKS: usize = 8_192;
/// …or this long after the first of them settled.
pub(crate) const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// A full checkpoint is due once the unwritten records hold this many bytes
/// of memory, or the journal this many bytes.
const FULL_CHECKPOINT_BYTES: usize = 64 << 20;

/// Every waiting task's row, read when the overlay is loaded: through the
/// partial index of waiting tasks, not a scan of every task kept.
pub(crate) const WAITING: &str =
    "SELECT seq, priority, state, due_ms FROM tasks INDEXED BY tasks_ready
     WHERE state IN ('queued','retrying')";

/// The tasks changed since the last checkpoint, and the ready order.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Records by sequence number: every task changed since the last
    /// checkpoint, and every running task.
    /// (Boxed: a record moves in and out at every change.)
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
    /// Bytes the entries hold, roughly.
    weight: usize,
    /// When the first task that is still unwritten settled.
    settled_since: Option<Instant>,
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
}

impl Overlay {
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

    /// Takes task `seq` out of the ready order, wherever it is there.
    fn unwait(&mut self, seq: i64, priority: u8, due_ms: u64) {
        if !self.ready.remove(&(priority, seq)) {
            self.due.remove(&(due_ms, priority, seq));
        }
    }

    fn count(&mut self, live: &Live, sign: i64) {
        self.counts[live.state as usize] += sign;
        if let Some(stored) = live.stored {
            self.counts[stored as usize] -= sign;
        }
        if live.dirty() {
            self.dirty = self.dirty.wrapping_add_signed(sign as isize);
            if live.state.is_settled() {
                self.dirty_settled = self.dirty_settled.wrapping_add_signed(sign as isize);
            }
        }
        let weight = live.weight();
        if sign > 0 {
            self.weight += weight;
        } else {
            self.weight = self.weight.saturating_sub(weight);
        }
    }

    /// Takes task `seq`'s record out, from its entry or its row, and out of
    /// the ready order; `None` when there is no such task. Its id is in
    /// `ids` while the record is out: it goes back under the same number.
    fn take(&mut self, conn: &Connection, seq: i64) -> rusqlite::Result<Option<Box<Live>>> {
        if let Some(live) = self.entries.remove(&seq) {
            self.unwait(seq, live.task.priority, live.due_ms);
            self.count(&live, -1);
            return Ok(Some(live));
        }
        let Some(live) = live::load_seq(conn, seq)? else {
            return Ok(None);
        };
        self.unwait(seq, live.task.priority, live.due_ms);
        self.ids.insert(live.task.id.clone(), seq);
        Ok(Some(Box::new(live)))
    }

    /// Puts task `seq`'s record back as its entry (its id is in `ids`), in
    /// the ready order as its state says.
    fn put(&mut self, seq: i64, live: Box<Live>) {
        if live.dirty() && live.state.is_settled() && self.settled_since.is_none() {
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

    /// Applies `entry` to `live` if it is the task's next change; `false`
    /// (nothing changed) otherwise: a replayed change its row holds already,
    /// a settlement of an attempt that is not running, a claim of a task that
    /// does not wait.
    fn change(live: &mut Live, entry: Entry<'static>) -> bool {
        let version = entry.version();
        if version != live.version + 1 {
            return false;
        }
        let running = |live: &Live, attempt: u32| {
            live.state == TaskState::Running && live.attempts == attempt
        };
        let changed = match entry {
            Entry::Accepted { .. } => false,
            Entry::Claimed { at_ms, attempt, .. } => {
                let waiting = matches!(live.state, TaskState::Queued | TaskState::Retrying);
                if waiting {
                    live.attempts = attempt;
                    live.due_ms = 0;
                    live.change(TaskState::Running, at_ms, "attempt", attempt);
                }
                waiting
            }
            Entry::Settled {
                at_ms,
                attempt,
                state,
                line,
                error,
                ..
            } => {
                let now = running(live, attempt);
                if now {
                    live.line = Some(line.into_owned());
                    if let Some(error) = error {
                        live.error = Some(error.into_owned());
                    }
                    live.change(state, at_ms, state.as_str(), attempt);
                }
                now
            }
            Entry::Retrying {
                at_ms,
                attempt,
                due_ms,
                error,
                ..
            } => {
                let now = running(live, attempt);
                if now {
                    live.due_ms = due_ms;
                    live.error = Some(error.into_owned());
                    live.change(TaskState::Retrying, at_ms, "retry", attempt);
                }
                now
            }
            Entry::Interrupted { at_ms, attempt, .. } => {
                let now = running(live, attempt);
                if now {
                    live.change(TaskState::Queued, at_ms, "interrupted", attempt);
                }
                now
            }
            Entry::Withdrawn { at_ms, attempt, .. } => {
                let now = running(live, attempt);
                if now {
                    live.attempts = attempt.saturating_sub(1);
                    live.change(TaskState::Queued, at_ms, "withdrawn", attempt);
                }
                now
            }
            Entry::Requeued { at_ms, .. } => {
                let dead = live.state == TaskState::DeadLetter;
                if dead {
                    live.attempts = 0;
                    live.due_ms = 0;
                    live.line = None;
                    live.change(TaskState::Queued, at_ms, "requeued", 0);
                }
                dead
            }
        };
        if changed {
            live.version = version;
        }
        changed
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
            if !self.entries.contains_key(&seq) && live::load_seq(conn, seq)?.is_none() {
                let mut live = Box::new(Live::accepted(task.into_owned(), at_ms));
                self.unwritten(&mut live);
                self.ids.insert(live.task.id.clone(), seq);
                self.put(seq, live);
            }
            return Ok(());
        }
        if let Some(mut live) = self.take(conn, seq)? {
            if Self::change(&mut live, entry) {
                self.unwritten(&mut live);
            }
            self.release(seq, live);
        }
        Ok(())
    }

    /// Journals the change `make` builds from task `seq`'s record (for its
    /// next version), and applies it: `Some(false)` (nothing journaled) when
    /// it changes nothing, `None` when there is no such task.
    fn record(
        &mut self,
        conn: &Connection,
        seq: i64,
        make: impl FnOnce(&Live) -> Entry<'static>,
    ) -> rusqlite::Result<Option<bool>> {
        let Some(mut live) = self.take(conn, seq)? else {
            return Ok(None);
        };
        let entry = make(&live);
        let mark = self.pending.len();
        let changed = match journal::encode(&mut self.pending, &entry) {
            Ok(()) => Self::change(&mut live, entry),
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
        let mut live = Box::new(Live::accepted(task.into_owned(), at_ms));
        self.unwritten(&mut live);
        self.ids.insert(live.task.id.clone(), seq);
        self.put(seq, live);
        Ok(())
    }

    /// This transaction's journal row: its number and its entries, encoded
    /// (none when nothing changed); the next transaction writes the next row.
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

    /// Tasks waiting or running, with `stored` of them counted in the rows.
    pub(crate) fn unsettled(&self, stored: u64) -> u64 {
        let unsettled: i64 = [TaskState::Queued, TaskState::Running, TaskState::Retrying]
            .iter()
            .map(|s| self.counts[*s as usize])
            .sum();
        stored.saturating_add_signed(unsettled)
    }

    /// Tasks by state, with `stored` the rows' counts.
    pub(crate) fn rows(&self, stored: Vec<(String, u64)>) -> Vec<(String, u64)> {
        let mut by_state: std::collections::HashMap<String, u64> = stored.into_iter().collect();
        for state in TaskState::ALL {
            let n = by_state.entry(state.as_str().to_owned()).or_default();
            *n = n.saturating_add_signed(self.counts[state as usize]);
        }
        by_state.into_iter().collect()
    }

    /// Stores `tasks` in order, idempotently by id, while fewer than
    /// `max_unsettled` (with `stored_unsettled` of the rows') wait or run.
    pub(crate) fn accept(
        &mut self,
        conn: &Connection,
        tasks: Vec<NewTask>,
        at_ms: u64,
        limit: Option<(u64, u64)>,
    ) -> rusqlite::Result<Vec<Admission>> {
        let mut unsettled_now = limit.map_or(0, |(stored, _)| self.unsettled(stored));
        let mut out = Vec::with_capacity(tasks.len());
        let mut rows = live::Lookup::new(conn)?;
        for task in tasks {
            if let Some((_, state)) = self.find(&mut rows, &task.id)? {
                out.push(Admission::Known(state));
                continue;
            }
            if let Some((_, max)) = limit.filter(|(_, max)| unsettled_now >= *max) {
                out.push(Admission::queue_full(unsettled_now, max));
                continue;
            }
            self.record_accepted(task, at_ms)?;
            unsettled_now += 1;
            out.push(Admission::Accepted);
        }
        if self.known.as_ref().is_some_and(KnownIds::full) {
            // Built again at twice its size (and without the ids deleted since).
            self.known = Some(KnownIds::load(conn, self.ids.keys().map(String::as_str))?);
        }
        Ok(out)
    }

    /// Starts an attempt of each of up to `max` ready tasks: highest priority
    /// first, then in order of acceptance, retrying ones once `now_ms` passed
    /// their due time.
    pub(crate) fn claim(
        &mut self,
        conn: &Connection,
        max: usize,
        now_ms: u64,
    ) -> rusqlite::Result<Vec<Claimed>> {
        while let Some(&(due_ms, priority, seq)) = self.due.first() {
            if due_ms > now_ms {
                break;
            }
            self.due.remove(&(due_ms, priority, seq));
            self.ready.insert((priority, seq));
        }
        let mut out = Vec::with_capacity(max.min(self.ready.len()));
        while out.len() < max {
            let Some((_, seq)) = self.ready.first().copied() else {
                break;
            };
            let mut attempt = 0;
            let claimed = self.record(conn, seq, |live| {
                attempt = live.attempts + 1;
                Entry::Claimed {
                    seq,
                    version: live.version + 1,
                    at_ms: now_ms,
                    attempt,
                }
            })?;
            match claimed {
                Some(true) => {}
                // Not waiting after all: out of the order already.
                Some(false) => continue,
                None => {
                    // A row retention removed: nothing to run.
                    self.ready.pop_first();
                    continue;
                }
            }
            if let Some(live) = self.entries.get(&seq) {
                out.push(Claimed {
                    task: live.task.clone(),
                    attempt,
                });
            }
        }
        Ok(out)
    }

    /// Records how attempts ended; a settlement of an attempt that is not
    /// running (recovered, requeued, settled already) changes nothing.
    pub(crate) fn settle(
        &mut self,
        conn: &Connection,
        settlements: Vec<Settlement>,
        at_ms: u64,
    ) -> rusqlite::Result<()> {
        let mut rows = live::Lookup::new(conn)?;
        for s in settlements {
            let Some((seq, TaskState::Running)) = self.find(&mut rows, &s.id)? else {
                continue;
            };
            let attempt = s.attempt;
            self.record(conn, seq, move |live| {
                let version = live.version + 1;
                match s.outcome {
                    Outcome::Settled { state, line, error } => Entry::Settled {
                        seq,
                        version,
                        at_ms,
                        attempt,
                        state,
                        line: Cow::Owned(line),
                        error: error.map(Cow::Owned),
                    },
                    Outcome::Retry { due_ms, error } => Entry::Retrying {
                        seq,
                        version,
                        at_ms,
                        attempt,
                        due_ms,
                        error: Cow::Owned(error),
                    },
                    Outcome::Interrupted => Entry::Interrupted {
                        seq,
                        version,
                        at_ms,
                        attempt,
                    },
                    Outcome::NotStarted => Entry::Withdrawn {
                        seq,
                        version,
                        at_ms,
                        attempt,
                    },
                }
            })?;
        }
        Ok(())
    }

    /// Puts every running task back in the queue as interrupted (after a
    /// crash: nothing runs yet); returns how many.
    pub(crate) fn recover(&mut self, conn: &Connection, at_ms: u64) -> rusqlite::Result<u64> {
        let mut running: Vec<(i64, u32)> = self
            .entries
            .iter()
            .filter(|(_, live)| live.state == TaskState::Running)
            .map(|(seq, live)| (*seq, live.attempts))
            .collect();
        let mut stored =
            conn.prepare_cached("SELECT seq, attempts FROM tasks WHERE state = 'running'")?;
        let rows = stored.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?)))?;
        for row in rows {
            let (seq, attempts) = row?;
            if !self.entries.contains_key(&seq) {
                running.push((seq, attempts));
            }
        }
        running.sort_unstable();
        let mut n = 0;
        for (seq, attempt) in running {
            let entry = |live: &Live| Entry::Interrupted {
                seq,
                version: live.version + 1,
                at_ms,
                attempt,
            };
            n += u64::from(self.record(conn, seq, entry)? == Some(true));
        }
        Ok(n)
    }

    /// Where each id stands, from its entry or its row.
    pub(crate) fn status(
        &self,
        conn: &Connection,
        ids: &[String],
    ) -> rusqlite::Result<Vec<Option<TaskStatus>>> {
        let mut stored =
            conn.prepare_cached("SELECT state, attempts, line FROM tasks WHERE id = ?1")?;
        ids.iter()
            .map(|id| match self.entry(id) {
                Some(live) => Ok(Some(live.status())),
                None => {
                    let mut rows = stored.query([id])?;
                    let Some(row) = rows.next()? else {
                        return Ok(None);
                    };
                    let state: String = row.get(0)?;
                    Ok(Some(TaskStatus {
                        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
                        attempts: row.get(1)?,
                        line: row.get(2)?,
                    }))
                }
            })
            .collect()
    }

    /// Each id's whole record, from its entry or its row.
    pub(crate) fn get(
        &self,
        conn: &Connection,
        ids: &[String],
    ) -> rusqlite::Result<Vec<Option<TaskRecord>>> {
        ids.iter()
            .map(|id| match self.entry(id) {
                Some(live) => Ok(Some(live.record())),
                None => Ok(live::load_id(conn, id)?.map(|(_, live)| live.record())),
            })
            .collect()
    }

    /// Recent tasks matching `filter`, newest first: the rows, each replaced
    /// by its task's entry when there is one.
    pub(crate) fn list(
        &self,
        conn: &Connection,
        filter: &Filter,
    ) -> rusqlite::Result<Vec<TaskRecord>> {
        let wanted = |live: &Live| {
            filter.state.is_none_or(|state| live.state == state)
                && filter
                    .task_type
                    .as_ref()
                    .is_none_or(|task_type| *task_type == live.task.task_type)
        };
        // Enough rows to fill the limit once those the entries replace are gone.
        let limit = (filter.limit > 0).then(|| filter.limit + self.entries.len());
        let mut found: Vec<(i64, TaskRecord)> = crate::ops::list(conn, filter, limit)?
            .into_iter()
            .filter(|(seq, _)| !self.entries.contains_key(seq))
            .collect();
        found.extend(
            self.entries
                .iter()
                .filter(|(_, live)| wanted(live))
                .map(|(seq, live)| (*seq, live.record())),
        );
        found.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        if filter.limit > 0 {
            found.truncate(filter.limit);
        }
        Ok(found.into_iter().map(|(_, record)| record).collect())
    }

    fn entry(&self, id: &str) -> Option<&Live> {
        self.ids
            .get(id)
            .and_then(|seq| self.entries.get(seq))
            .map(|live| &**live)
    }

    /// Puts dead letters back in the queue under their ids with their
    /// attempts reset: `ids`, or every dead letter, oldest first.
    pub(crate) fn requeue_dead(
        &mut self,
        conn: &Connection,
        ids: Option<Vec<String>>,
        at_ms: u64,
    ) -> rusqlite::Result<Vec<(String, Requeue)>> {
        let ids = match ids {
            Some(ids) => ids,
            None => self.dead_letters(conn)?,
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut rows = live::Lookup::new(conn)?;
        for id in ids {
            let verdict = match self.find(&mut rows, &id)? {
                None => Requeue::Unknown,
                Some((seq, TaskState::DeadLetter)) => {
                    self.record(conn, seq, |live| Entry::Requeued {
                        seq,
                        version: live.version + 1,
                        at_ms,
                    })?;
                    Requeue::Requeued
                }
                Some((_, state)) => Requeue::NotDeadLettered(state),
            };
            out.push((id, verdict));
        }
        Ok(out)
    }

    /// The ids of the dead letters, oldest first.
    fn dead_letters(&self, conn: &Connection) -> rusqlite::Result<Vec<String>> {
        let mut found: Vec<(i64, String)> = Vec::new();
        let mut stored = conn.prepare_cached(crate::ops::DEAD_LETTER_SEQS)?;
        let rows = stored.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (seq, id) = row?;
            if !self.entries.contains_key(&seq) {
                found.push((seq, id));
            }
        }
        found.extend(
            self.entries
                .iter()
                .filter(|(_, live)| live.state == TaskState::DeadLetter)
                .map(|(seq, live)| (*seq, live.task.id.clone())),
        );
        found.sort_unstable();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

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
        let keep_from = self
            .entries
            .values()
            .filter(|live| which != Checkpoint::Full && !live.state.is_settled())
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
        self.settled_since = None;
        for seq in written {
            let Some(mut live) = self.entries.remove(&seq) else {
                continue;
            };
            self.count(&live, -1);
            live.stored = Some(live.state);
            live.unwritten_since = None;
            self.count(&live, 1);
            self.entries.insert(seq, live);
        }
        // Only the unwritten and the running stay: every other record is its
        // row now, and keeps its place in the ready order.
        let gone: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, live)| !live.dirty() && live.state != TaskState::Running)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in gone {
            if let Some(live) = self.entries.remove(&seq) {
                self.count(&live, -1);
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
