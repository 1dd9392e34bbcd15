//! A task as the writer holds it between checkpoints ([`Live`]), and the row
//! it is read from and written to.

use std::sync::LazyLock;

use rusqlite::{CachedStatement, Connection, OptionalExtension, Row, ToSql};
use task_source::{ErrorInfo, HistoryEntry, NewTask, TaskRecord, TaskState, TaskStatus};

/// One task's whole record, changed in memory and written to its row at a
/// checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) task: NewTask,
    pub(crate) state: TaskState,
    pub(crate) attempts: u32,
    pub(crate) due_ms: u64,
    pub(crate) error: Option<ErrorInfo>,
    pub(crate) line: Option<String>,
    /// The history as the JSON text the row keeps (entries appended in place);
    /// empty for none yet (the row's `[]`).
    pub(crate) history: String,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    /// How many changes it has had: each journal entry names the version it
    /// makes, and the row keeps the version it holds.
    pub(crate) version: u64,
    /// The state its row holds; `None` while it has no row.
    pub(crate) stored: Option<TaskState>,
    /// The journal row of its oldest change its row does not hold yet;
    /// `None` when the row holds them all.
    pub(crate) unwritten_since: Option<i64>,
}

/// Bytes a new task's history text gets at first.
const HISTORY_ROOM: usize = 112;

impl Live {
    /// A task just accepted.
    pub(crate) fn accepted(task: NewTask, at_ms: u64) -> Self {
        Self {
            task,
            state: TaskState::Queued,
            attempts: 0,
            due_ms: 0,
            error: None,
            line: None,
            // Room for its usual life (an attempt and its end) without growing.
            history: String::with_capacity(HISTORY_ROOM),
            created_ms: at_ms,
            updated_ms: at_ms,
            version: 1,
            stored: None,
            unwritten_since: None,
        }
    }

    /// Whether its row lacks some of its changes.
    pub(crate) fn dirty(&self) -> bool {
        self.unwritten_since.is_some()
    }

    /// Whether it settled and its row lacks some of its changes: what a
    /// checkpoint's slice writes.
    pub(crate) fn settled_unwritten(&self) -> bool {
        self.dirty() && self.state.is_settled()
    }

    /// Moves it to `state` at `at_ms`, appending `(event, attempt)` to its
    /// history (the caller sets the version).
    pub(crate) fn change(&mut self, state: TaskState, at_ms: u64, event: &str, attempt: u32) {
        self.state = state;
        self.updated_ms = at_ms;
        push_history(&mut self.history, at_ms, event, attempt);
    }

    pub(crate) fn status(&self) -> TaskStatus {
        TaskStatus {
            state: self.state,
            attempts: self.attempts,
            line: self.line.clone(),
        }
    }

    pub(crate) fn record(&self) -> TaskRecord {
        TaskRecord {
            task: self.task.clone(),
            state: self.state,
            attempts: self.attempts,
            error: self.error.clone(),
            line: self.line.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            due_ms: self.due_ms,
            history: serde_json::from_str::<Vec<HistoryEntry>>(&self.history).unwrap_or_default(),
        }
    }

    /// Bytes of memory its strings hold, roughly: what bounds the writes
    /// kept in memory between checkpoints.
    pub(crate) fn weight(&self) -> usize {
        self.task.id.len()
            + self.task.task_type.len()
            + self.task.payload.len()
            + self.line.as_ref().map_or(0, String::len)
            + self.history.len()
            + 160
    }
}

/// Appends `{"at_ms":…,"event":…,"attempt":…}` to the history's JSON text in
/// place of its closing `]`: the minified JSON that SQLite's
/// `json_insert(history, '$[#]', json_object(…))` writes (a test holds them
/// equal). `event` is a state or event name: plain ASCII, nothing to escape.
///
/// Written piece by piece, the numbers with `itoa`: `write!`'s formatting
/// machinery cost the store thread about 2 000 instructions a task (two or
/// three entries a task), 7 % of its work.
pub(crate) fn push_history(history: &mut String, at_ms: u64, event: &str, attempt: u32) {
    if history.ends_with(']') {
        history.pop();
    }
    if history.len() > 1 {
        history.push(',');
    } else if history.is_empty() {
        history.push('[');
    }
    let mut number = itoa::Buffer::new();
    history.push_str("{\"at_ms\":");
    history.push_str(number.format(at_ms));
    history.push_str(",\"event\":\"");
    history.push_str(event);
    history.push_str("\",\"attempt\":");
    history.push_str(number.format(attempt));
    history.push_str("}]");
}

/// The columns [`row`] reads, in its order.
pub(crate) const COLS: &str = "seq, id, type, payload, priority, timeout_ms, state, attempts, \
                    error_kind, error_message, line, created_ms, updated_ms, due_ms, history, version";

/// A task's row, read as [`COLS`] lists it: its sequence number and record.
pub(crate) fn row(r: &Row<'_>) -> rusqlite::Result<(i64, Live)> {
    let state: String = r.get(6)?;
    let state = TaskState::parse(&state).unwrap_or(TaskState::Failed);
    let kind: Option<String> = r.get(8)?;
    let message: Option<String> = r.get(9)?;
    Ok((
        r.get(0)?,
        Live {
            task: NewTask {
                id: r.get(1)?,
                task_type: r.get(2)?,
                payload: r.get(3)?,
                priority: r.get(4)?,
                timeout_ms: r.get(5)?,
            },
            state,
            attempts: r.get(7)?,
            due_ms: r.get(13)?,
            error: kind.map(|kind| ErrorInfo {
                kind,
                message: message.unwrap_or_default(),
            }),
            line: r.get(10)?,
            created_ms: r.get(11)?,
            updated_ms: r.get(12)?,
            history: r.get(14)?,
            version: r.get(15)?,
            stored: Some(state),
            unwritten_since: None,
        },
    ))
}

/// Rows [`load_seqs`] reads with one statement, at most.
pub(crate) const ROWS_READ_AT_ONCE: usize = 32;

/// The statements that read rows, built once (the statement cache finds a
/// statement by its text): by number, by id, and [`load_seqs`]'s.
static LOAD_SEQ: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLS} FROM tasks WHERE seq = ?1"));
static LOAD_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLS} FROM tasks WHERE id = ?1"));
static LOAD_SEQS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLS} FROM tasks WHERE seq IN ({})",
        marks(1, ROWS_READ_AT_ONCE)
    )
});

/// `count` numbered parameters from `?first` on, separated by commas.
fn marks(first: usize, count: usize) -> String {
    let marks: Vec<String> = (first..first + count).map(|n| format!("?{n}")).collect();
    marks.join(", ")
}

/// The rows of the tasks numbered `seqs` (at most [`ROWS_READ_AT_ONCE`];
/// those with no row left out), with their numbers.
pub(crate) fn load_seqs(conn: &Connection, seqs: &[i64]) -> rusqlite::Result<Vec<(i64, Live)>> {
    let mut statement = conn.prepare_cached(&LOAD_SEQS)?;
    for n in 0..ROWS_READ_AT_ONCE {
        // An unused place names no row.
        let seq = seqs.get(n).copied().unwrap_or(-1);
        statement.raw_bind_parameter(n + 1, seq)?;
    }
    let mut rows = statement.raw_query();
    let mut out = Vec::with_capacity(seqs.len());
    while let Some(r) = rows.next()? {
        out.push(row(r)?);
    }
    Ok(out)
}

/// The row of the task numbered `seq`.
pub(crate) fn load_seq(conn: &Connection, seq: i64) -> rusqlite::Result<Option<Live>> {
    conn.prepare_cached(&LOAD_SEQ)?
        .query_row([seq], row)
        .optional()
        .map(|found| found.map(|(_, live)| live))
}

/// Whether the task numbered `seq` has a row (its record not read).
pub(crate) fn has_row(conn: &Connection, seq: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE seq = ?1)")?
        .query_row([seq], |r| r.get(0))
}

/// The row of the task `id`, with its sequence number.
pub(crate) fn load_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<(i64, Live)>> {
    conn.prepare_cached(&LOAD_ID)?
        .query_row([id], row)
        .optional()
}

/// Looks tasks up by id, its statements prepared once for a batch.
pub(crate) struct Lookup<'c> {
    seq: CachedStatement<'c>,
    state: CachedStatement<'c>,
}

impl<'c> Lookup<'c> {
    pub(crate) fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: conn.prepare_cached("SELECT seq FROM tasks WHERE id = ?1")?,
            state: conn.prepare_cached("SELECT state FROM tasks WHERE seq = ?1")?,
        })
    }

    /// The sequence number and state of the task `id`. A new id (the usual
    /// case, at every acceptance) costs one look-up in the index of ids: the
    /// index alone says whether it is there, the table is read only when it is.
    pub(crate) fn state_of(&mut self, id: &str) -> rusqlite::Result<Option<(i64, TaskState)>> {
        let Some(seq) = self
            .seq
            .query_row([id], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(None);
        };
        let state: String = self.state.query_row([seq], |r| r.get(0))?;
        Ok(Some((
            seq,
            TaskState::parse(&state).unwrap_or(TaskState::Failed),
        )))
    }
}

/// The columns of a row, in the order [`bind_row`] binds them: the ten an
/// update sets, then the six only an insert writes.
const COLUMNS: &str = "seq, state, attempts, due_ms, error_kind, error_message, line, history,
     updated_ms, version, id, type, payload, priority, timeout_ms, created_ms";
/// Values a row binds when it is inserted…
const INSERTED: usize = 16;
/// …and when it is updated.
const UPDATED: usize = 10;
/// New rows one statement inserts: a statement's own work (its cursors on
/// the table and each index, its end) was about a third of a row's
/// instructions when each row had one.
pub(crate) const ROWS_AT_ONCE: usize = 32;

/// The insert of one row…
static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert(1));
/// …and of [`ROWS_AT_ONCE`] rows (built once: the statement cache finds
/// a statement by its text).
static INSERT_MANY: LazyLock<String> = LazyLock::new(|| insert(ROWS_AT_ONCE));

/// The insert of `rows` rows, its parameters numbered as [`bind_row`]
/// binds them.
fn insert(rows: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| format!("({})", marks(row * INSERTED + 1, INSERTED)))
        .collect();
    format!("INSERT INTO tasks ({COLUMNS}) VALUES {}", tuples.join(", "))
}

/// Writes records to their rows, its statements prepared once for a checkpoint.
pub(crate) struct RowWriter<'c> {
    insert: CachedStatement<'c>,
    insert_many: CachedStatement<'c>,
    update: CachedStatement<'c>,
}

impl<'c> RowWriter<'c> {
    pub(crate) fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            insert: conn.prepare_cached(&INSERT_ONE)?,
            insert_many: conn.prepare_cached(&INSERT_MANY)?,
            update: conn.prepare_cached(
                "UPDATE tasks SET state = ?2, attempts = ?3, due_ms = ?4, error_kind = ?5,
                 error_message = ?6, line = ?7, history = ?8, updated_ms = ?9, version = ?10
                 WHERE seq = ?1",
            )?,
        })
    }

    /// Writes each record to its row (made when it has none): the new rows
    /// [`ROWS_AT_ONCE`] to a statement.
    pub(crate) fn write_all(&mut self, records: &[(i64, &Live)]) -> rusqlite::Result<()> {
        let mut new = Vec::with_capacity(records.len());
        for &(seq, live) in records {
            if live.stored.is_some() {
                bind_row(&mut self.update, 0, UPDATED, seq, live)?;
                expect_rows(self.update.raw_execute()?, 1)?;
            } else {
                new.push((seq, live));
            }
        }
        let mut chunks = new.chunks_exact(ROWS_AT_ONCE);
        for chunk in &mut chunks {
            for (n, &(seq, live)) in chunk.iter().enumerate() {
                bind_row(&mut self.insert_many, n * INSERTED, INSERTED, seq, live)?;
            }
            expect_rows(self.insert_many.raw_execute()?, ROWS_AT_ONCE)?;
        }
        for &(seq, live) in chunks.remainder() {
            bind_row(&mut self.insert, 0, INSERTED, seq, live)?;
            expect_rows(self.insert.raw_execute()?, 1)?;
        }
        Ok(())
    }
}

/// Binds the first `columns` of `live`'s row, in [`COLUMNS`]' order, to the
/// parameters after the first `offset`.
fn bind_row(
    statement: &mut CachedStatement<'_>,
    offset: usize,
    columns: usize,
    seq: i64,
    live: &Live,
) -> rusqlite::Result<()> {
    let (kind, message) = match &live.error {
        Some(e) => (Some(e.kind.as_str()), Some(e.message.as_str())),
        None => (None, None),
    };
    let history = if live.history.is_empty() {
        "[]"
    } else {
        live.history.as_str()
    };
    let (due_ms, updated_ms, version, created_ms) = (
        stored(live.due_ms),
        stored(live.updated_ms),
        stored(live.version),
        stored(live.created_ms),
    );
    let timeout_ms = live.task.timeout_ms.map(stored);
    let values: [&dyn ToSql; INSERTED] = [
        &seq,
        &live.state.as_str(),
        &live.attempts,
        &due_ms,
        &kind,
        &message,
        &live.line,
        &history,
        &updated_ms,
        &version,
        &live.task.id,
        &live.task.task_type,
        &live.task.payload,
        &live.task.priority,
        &timeout_ms,
        &created_ms,
    ];
    for (n, value) in values[..columns].iter().enumerate() {
        statement.raw_bind_parameter(offset + n + 1, value)?;
    }
    Ok(())
}

/// `value` as a column holds it: SQLite's integers are signed, and a value
/// past the largest (a retry due, or a timeout, hundreds of millions of years
/// away: the same in effect) is kept as the largest, not refused, which would
/// leave the row unwritable and every checkpoint failing on it.
fn stored(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether a statement changed the rows it was to: only a bug (a row gone
/// from under its record) makes it change fewer.
fn expect_rows(changed: usize, rows: usize) -> rusqlite::Result<()> {
    if changed == rows {
        Ok(())
    } else {
        Err(rusqlite::Error::StatementChangedRows(changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appended_history_is_the_text_json_insert_writes() {
        let conn = Connection::open_in_memory().unwrap();
        let mut history = "[]".to_owned();
        let steps = [
            (1_795_750_553_964, "attempt", 1),
            (1_795_750_553_970, "retry", 1),
            (1_795_750_554_000, "attempt", 2),
            (1_795_750_554_001, "interrupted", 2),
            (1_795_750_554_002, "dead_letter", 2),
            (1_795_750_554_003, "requeued", 0),
        ];
        for (at, event, attempt) in steps {
            let json: String = conn
                .query_row(
                    "SELECT json_insert(?2, '$[#]', json_object('at_ms', ?1, 'event', ?3, 'attempt', ?4))",
                    rusqlite::params![at, history, event, attempt],
                    |r| r.get(0),
                )
                .unwrap();
            push_history(&mut history, at, event, attempt);
            assert_eq!(history, json, "after {event}");
        }
        let entries: Vec<HistoryEntry> = serde_json::from_str(&history).unwrap();
        assert_eq!(entries.len(), steps.len());
        assert_eq!(entries[2].event, "attempt");
        assert_eq!(entries[2].attempt, 2);
        assert_eq!(entries[5].at_ms, 1_795_750_554_003);
    }
}
