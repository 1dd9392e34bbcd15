//! The journal: what each group commit changed, as one row of MessagePack
//! entries a commit, until a checkpoint has written the rows of every task
//! those entries changed.
//!
//! A commit that accepts, claims and settles a thousand tasks writes one
//! journal row instead of three thousand changes to `tasks` and its indexes;
//! a task gets its row once, in its final state, unless it waits long enough
//! to be written before (see `overlay/`). Opening the store replays the
//! journal over the rows, so a crash loses nothing a commit answered.

use std::borrow::Cow;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use task_source::{ErrorInfo, NewTask, TaskState};

/// One change to one task, numbered by its sequence number (`tasks.seq`).
///
/// Each change but the acceptance names the task's `version` once it is
/// applied (the acceptance makes version 1): replay applies an entry only to
/// the version before it, so entries whose change a row already holds (a
/// checkpoint wrote the task since) change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Entry<'a> {
    /// Accepted as `seq`.
    Accepted {
        seq: i64,
        at_ms: u64,
        task: Cow<'a, NewTask>,
    },
    /// Attempt `attempt` started.
    Claimed {
        seq: i64,
        version: u64,
        at_ms: u64,
        attempt: u32,
    },
    /// Attempt `attempt` settled it for good.
    Settled {
        seq: i64,
        version: u64,
        at_ms: u64,
        attempt: u32,
        state: TaskState,
        line: Cow<'a, str>,
        error: Option<Cow<'a, ErrorInfo>>,
    },
    /// Attempt `attempt` failed; the next may start at `due_ms`.
    Retrying {
        seq: i64,
        version: u64,
        at_ms: u64,
        attempt: u32,
        due_ms: u64,
        error: Cow<'a, ErrorInfo>,
    },
    /// Attempt `attempt` was interrupted: back to the queue, the attempt given
    /// back (a journal written before it was given back replays the same way).
    Interrupted {
        seq: i64,
        version: u64,
        at_ms: u64,
        attempt: u32,
    },
    /// Attempt `attempt` never started: back to the queue, the attempt given back.
    Withdrawn {
        seq: i64,
        version: u64,
        at_ms: u64,
        attempt: u32,
    },
    /// A dead letter back in the queue, its attempts reset.
    Requeued { seq: i64, version: u64, at_ms: u64 },
}

impl Entry<'_> {
    /// The task it changes.
    pub(crate) fn seq(&self) -> i64 {
        match self {
            Self::Accepted { seq, .. }
            | Self::Claimed { seq, .. }
            | Self::Settled { seq, .. }
            | Self::Retrying { seq, .. }
            | Self::Interrupted { seq, .. }
            | Self::Withdrawn { seq, .. }
            | Self::Requeued { seq, .. } => *seq,
        }
    }

    /// The task's version once it is applied.
    pub(crate) fn version(&self) -> u64 {
        match self {
            Self::Accepted { .. } => 1,
            Self::Claimed { version, .. }
            | Self::Settled { version, .. }
            | Self::Retrying { version, .. }
            | Self::Interrupted { version, .. }
            | Self::Withdrawn { version, .. }
            | Self::Requeued { version, .. } => *version,
        }
    }
}

/// Appends `entry` to `buffer`.
pub(crate) fn encode(buffer: &mut Vec<u8>, entry: &Entry<'_>) -> rusqlite::Result<()> {
    rmp_serde::encode::write(buffer, entry)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Stores one commit's entries as journal row `row`.
pub(crate) fn append(conn: &Connection, row: i64, entries: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO journal (seq, entries) VALUES (?1, ?2)")?
        .execute(rusqlite::params![row, entries])
        .map(drop)
}

/// Forgets the journal rows before `row` (every row when `None`): the rows of
/// `tasks` hold their changes now.
pub(crate) fn forget_before(conn: &Connection, row: Option<i64>) -> rusqlite::Result<()> {
    match row {
        Some(row) => conn
            .prepare_cached("DELETE FROM journal WHERE seq < ?1")?
            .execute([row]),
        None => conn.prepare_cached("DELETE FROM journal")?.execute([]),
    }
    .map(drop)
}

/// The number the next journal row gets.
pub(crate) fn next_row(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM journal")?
        .query_row([], |r| r.get(0))
}

/// The number and size in bytes of every journal row, oldest first.
pub(crate) fn row_sizes(conn: &Connection) -> rusqlite::Result<Vec<(i64, usize)>> {
    conn.prepare_cached("SELECT seq, length(entries) FROM journal ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
        .collect()
}

/// Every stored entry, oldest first, given to `each` with its row's number.
pub(crate) fn replay(
    conn: &Connection,
    mut each: impl FnMut(i64, Entry<'static>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut select = conn.prepare_cached("SELECT seq, entries FROM journal ORDER BY seq")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let at: i64 = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        let mut reader = bytes.as_slice();
        while !reader.is_empty() {
            let entry: Entry<'static> = rmp_serde::from_read(&mut reader).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Blob,
                    format!("journal row {at}: {e}").into(),
                )
            })?;
            each(at, entry)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_from_their_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE journal (seq INTEGER PRIMARY KEY, entries BLOB NOT NULL)")
            .unwrap();
        let task = NewTask {
            id: "a".into(),
            task_type: "echo".into(),
            payload: "{\"n\":1}".into(),
            priority: 7,
            timeout_ms: Some(250),
        };
        let error = ErrorInfo {
            kind: "boom".into(),
            message: "it broke".into(),
        };
        let first = [
            Entry::Accepted {
                seq: 1,
                at_ms: 10,
                task: Cow::Borrowed(&task),
            },
            Entry::Claimed {
                seq: 1,
                version: 2,
                at_ms: 11,
                attempt: 1,
            },
            Entry::Retrying {
                seq: 1,
                version: 3,
                at_ms: 12,
                attempt: 1,
                due_ms: 99,
                error: Cow::Borrowed(&error),
            },
        ];
        let second = [
            Entry::Settled {
                seq: 1,
                version: 4,
                at_ms: 13,
                attempt: 2,
                state: TaskState::DeadLetter,
                line: Cow::Borrowed("{\"id\":\"a\"}"),
                error: Some(Cow::Borrowed(&error)),
            },
            Entry::Requeued {
                seq: 1,
                version: 5,
                at_ms: 14,
            },
        ];
        for (row, commit) in [(1, &first[..]), (2, &second[..])] {
            let mut buffer = Vec::new();
            for entry in commit {
                encode(&mut buffer, entry).unwrap();
            }
            append(&conn, row, &buffer).unwrap();
        }
        assert_eq!(next_row(&conn).unwrap(), 3);
        let mut back = Vec::new();
        replay(&conn, |row, entry| {
            back.push((row, entry));
            Ok(())
        })
        .unwrap();
        let sent: Vec<(i64, Entry<'_>)> = first
            .iter()
            .map(|e| (1, e.clone()))
            .chain(second.iter().map(|e| (2, e.clone())))
            .collect();
        assert_eq!(back, sent);
        forget_before(&conn, Some(2)).unwrap();
        let mut rows = Vec::new();
        replay(&conn, |row, _| {
            rows.push(row);
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, [2, 2], "the second row's two entries are left");
        forget_before(&conn, None).unwrap();
        replay(&conn, |_, _| panic!("forgotten")).unwrap();
    }
}
