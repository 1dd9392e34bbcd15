//! The SQL of the [`TaskSource`](task_source::TaskSource) operations that
//! read or change the rows themselves, after a checkpoint (listings, the dead
//! letters' purge, retention) or beside the overlay (the kept counts).

use rusqlite::{params, Connection};
use task_source::{Filter, TaskRecord, TaskState};

use crate::counts::StateDelta;

/// The condition of the `tasks_at_rest` index (schema 4: tasks neither queued
/// nor running), which a query repeats word for word to use it: SQLite uses a
/// partial index only when the query's own terms imply its condition. Each
/// such query names the index (`INDEXED BY`), so a condition that drifted from
/// the index's fails when the statement is prepared instead of scanning.
macro_rules! at_rest {
    () => {
        "state <> 'queued' AND state <> 'running'"
    };
}

/// The rows matching `filter`, newest first, with their sequence numbers;
/// `limit` of them at most (`None`: all).
pub(crate) fn list(
    conn: &Connection,
    filter: &Filter,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<(i64, TaskRecord)>> {
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut select = conn.prepare_cached(&format!(
        "SELECT {} FROM tasks WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR type = ?2)
         ORDER BY seq DESC LIMIT ?3",
        crate::live::COLS
    ))?;
    let rows = select.query_map(
        params![filter.state.map(TaskState::as_str), filter.task_type, limit],
        |row| crate::live::row(row).map(|(seq, live)| (seq, live.record())),
    )?;
    rows.collect()
}

/// The ids of the dead-lettered tasks, oldest first.
pub(crate) const DEAD_LETTERS: &str = concat!(
    "SELECT id FROM tasks INDEXED BY tasks_at_rest WHERE state = 'dead_letter' AND ",
    at_rest!(),
    " ORDER BY seq"
);

/// The sequence numbers and ids of the dead-lettered tasks' rows, oldest first.
pub(crate) const DEAD_LETTER_SEQS: &str = concat!(
    "SELECT seq, id FROM tasks INDEXED BY tasks_at_rest WHERE state = 'dead_letter' AND ",
    at_rest!(),
    " ORDER BY seq"
);

/// Deletes the dead-lettered tasks.
pub(crate) const PURGE_DEAD: &str = concat!(
    "DELETE FROM tasks INDEXED BY tasks_at_rest WHERE state = 'dead_letter' AND ",
    at_rest!()
);

fn dead_letters(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(DEAD_LETTERS)?
        .query_map([], |r| r.get(0))?
        .collect()
}

pub(crate) fn purge_dead(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let ids = dead_letters(conn)?;
    let n = conn.prepare_cached(PURGE_DEAD)?.execute([])?;
    let mut delta = StateDelta::default();
    delta.add(TaskState::DeadLetter, -(n as i64));
    delta.apply(conn)?;
    Ok(ids)
}

/// Bytes the store's live pages take.
pub(crate) fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// Deletes at most `?3` of the tasks in state `?1` (one of [`TaskState::PRUNABLE`]) last
/// changed before `?2` ms.
pub(crate) const PRUNE_OLDER: &str = concat!(
    "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks INDEXED BY tasks_at_rest \
     WHERE state = ?1 AND updated_ms < ?2 AND ",
    at_rest!(),
    " LIMIT ?3)"
);

/// The most tasks one call of [`prune`] deletes: the store runs each call as
/// a transaction of its own, and calls again while a call deleted this many.
pub(crate) const PRUNE_STEP: u64 = 10_000;

/// Deletes at most `limit` settled tasks: those last changed before `before`
/// ms, then, while the store takes more than `max_bytes`, the oldest.
pub(crate) fn prune(
    conn: &Connection,
    before: u64,
    max_bytes: Option<u64>,
    limit: u64,
) -> rusqlite::Result<u64> {
    let mut delta = StateDelta::default();
    let mut removed = 0;
    let mut older = conn.prepare_cached(PRUNE_OLDER)?;
    for state in TaskState::PRUNABLE {
        let n = older.execute(params![state.as_str(), before, limit - removed])? as u64;
        delta.add(state, -(n as i64));
        removed += n;
    }
    if let Some(max) = max_bytes {
        let states = TaskState::PRUNABLE
            .map(|s| format!("'{}'", s.as_str()))
            .join(",");
        let mut oldest = conn.prepare_cached(&format!(
            "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE state IN ({states})
             ORDER BY seq LIMIT ?1) RETURNING state"
        ))?;
        while removed < limit && used_bytes(conn)? > max {
            let states: Vec<String> = oldest
                .query_map([(limit - removed).min(1000)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if states.is_empty() {
                break;
            }
            for state in &states {
                if let Some(state) = TaskState::parse(state) {
                    delta.add(state, -1);
                }
            }
            removed += states.len() as u64;
        }
    }
    delta.apply(conn)?;
    Ok(removed)
}

/// Tasks waiting or running, from the kept counts: every `submit` asks, and
/// counting the rows took time in proportion to the queue.
pub(crate) fn unsettled(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT coalesce(sum(n), 0) FROM state_counts WHERE state IN ('queued','running','retrying')",
    )?
    .query_row([], |r| r.get(0))
}

pub(crate) fn rows(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare_cached("SELECT state, n FROM state_counts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}
