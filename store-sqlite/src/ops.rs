//! The SQL of each [`TaskSource`](task_source::TaskSource) operation.

use rusqlite::{params, Connection, OptionalExtension, Row};
use task_source::{
    Admission, Claimed, ErrorInfo, Filter, HistoryEntry, NewTask, Outcome, Requeue, Settlement,
    TaskRecord, TaskState, TaskStatus,
};

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

const COLS: &str = "id, type, payload, priority, timeout_ms, state, attempts, error_kind, \
                    error_message, line, created_ms, updated_ms, due_ms, history";

/// Appends a history entry `(event, attempt)` at `?1` ms: an SQL assignment.
///
/// The entry is spliced into the stored text in place of its closing `]`: the
/// same minified JSON that `json_insert(history, '$[#]', json_object(…))`
/// writes (a test holds them equal), without parsing the array and writing it
/// out again on every claim and settlement. `event` is an SQL expression of a
/// state or event name (plain ASCII, nothing to escape); `attempt` one of an
/// integer.
fn push_history(event: &str, attempt: &str) -> String {
    format!("history = {}", history_appended("history", event, attempt))
}

/// The text of the history `column` (an SQL expression) with the entry
/// appended (see [`push_history`]).
fn history_appended(column: &str, event: &str, attempt: &str) -> String {
    format!(
        "CASE WHEN {column} = '[]' THEN '[' ELSE substr({column}, 1, length({column}) - 1) || ',' END \
         || '{{\"at_ms\":' || ?1 || ',\"event\":\"' || {event} || '\",\"attempt\":' || ({attempt}) || '}}]'"
    )
}

fn record(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let state: String = row.get(5)?;
    let kind: Option<String> = row.get(7)?;
    let message: Option<String> = row.get(8)?;
    let history: String = row.get(13)?;
    Ok(TaskRecord {
        task: NewTask {
            id: row.get(0)?,
            task_type: row.get(1)?,
            payload: row.get(2)?,
            priority: row.get(3)?,
            timeout_ms: row.get(4)?,
        },
        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
        attempts: row.get(6)?,
        error: kind.map(|kind| ErrorInfo {
            kind,
            message: message.unwrap_or_default(),
        }),
        line: row.get(9)?,
        created_ms: row.get(10)?,
        updated_ms: row.get(11)?,
        due_ms: row.get(12)?,
        history: serde_json::from_str::<Vec<HistoryEntry>>(&history).unwrap_or_default(),
    })
}

/// Stores `tasks` while fewer than `max_unsettled` wait or run, counted in
/// the same transaction as the inserts (the writer's one connection), so no
/// two admissions pass the limit together; `None`: no limit.
pub(crate) fn accept(
    conn: &Connection,
    tasks: &[NewTask],
    now: u64,
    max_unsettled: Option<u64>,
) -> rusqlite::Result<Vec<Admission>> {
    let mut unsettled_now = match max_unsettled {
        Some(_) => unsettled(conn)?,
        None => 0,
    };
    let mut insert = conn.prepare_cached(
        "INSERT INTO tasks (id, type, payload, priority, timeout_ms, state, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6) ON CONFLICT (id) DO NOTHING",
    )?;
    let mut known = conn.prepare_cached("SELECT state FROM tasks WHERE id = ?1")?;
    let mut out = Vec::with_capacity(tasks.len());
    let mut delta = StateDelta::default();
    for t in tasks {
        let full = max_unsettled.filter(|max| unsettled_now >= *max);
        let n = match full {
            Some(_) => 0,
            None => insert.execute(params![
                t.id,
                t.task_type,
                t.payload,
                t.priority,
                t.timeout_ms,
                now
            ])?,
        };
        if n == 1 {
            delta.add(TaskState::Queued, 1);
            unsettled_now += 1;
            out.push(Admission::Accepted);
            continue;
        }
        let state: Option<String> = known.query_row([&t.id], |r| r.get(0)).optional()?;
        out.push(match (state, full) {
            (Some(state), _) => {
                Admission::Known(TaskState::parse(&state).unwrap_or(TaskState::Failed))
            }
            (None, Some(max)) => Admission::queue_full(unsettled_now, max),
            // Not inserted, yet not there: only a bug does that.
            (None, None) => return Err(rusqlite::Error::QueryReturnedNoRows),
        });
    }
    delta.apply(conn)?;
    Ok(out)
}

/// The next ready tasks, best priority first, FIFO within a priority. It walks the
/// partial index of ready tasks in its own order and stops after `?2` rows. Left
/// to itself the planner may choose another index (schema 3's `tasks_by_state`)
/// and sort every queued task on each claim: SQLite 3.40 did on a daemon's store (86 ms a claim with 30 000
/// queued, against 0.4 ms through the index), the bundled 3.46 does on a fresh
/// store.
pub(crate) const CLAIM: &str =
    "SELECT seq, id, type, payload, priority, timeout_ms, attempts, state FROM tasks INDEXED BY tasks_ready
     WHERE state IN ('queued','retrying') AND due_ms <= ?1
     ORDER BY priority, seq LIMIT ?2";

pub(crate) fn claim(conn: &Connection, max: usize, now: u64) -> rusqlite::Result<Vec<Claimed>> {
    let mut select = conn.prepare_cached(CLAIM)?;
    let rows: Vec<(i64, NewTask, u32, TaskState)> = select
        .query_map(params![now, max as i64], |r| {
            let state: String = r.get(7)?;
            Ok((
                r.get(0)?,
                NewTask {
                    id: r.get(1)?,
                    task_type: r.get(2)?,
                    payload: r.get(3)?,
                    priority: r.get(4)?,
                    timeout_ms: r.get(5)?,
                },
                r.get(6)?,
                // The query takes only these two.
                if state == TaskState::Retrying.as_str() {
                    TaskState::Retrying
                } else {
                    TaskState::Queued
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = conn.prepare_cached(&format!(
        "UPDATE tasks SET state = 'running', attempts = attempts + 1, due_ms = 0, updated_ms = ?1, {}
         WHERE seq = ?2",
        push_history("'attempt'", "attempts + 1")
    ))?;
    let mut out = Vec::with_capacity(rows.len());
    let mut delta = StateDelta::default();
    for (seq, task, attempts, state) in rows {
        update.execute(params![now, seq])?;
        delta.moved(state, TaskState::Running, 1);
        out.push(Claimed {
            task,
            attempt: attempts + 1,
        });
    }
    delta.apply(conn)?;
    Ok(out)
}

pub(crate) fn settle(conn: &Connection, all: &[Settlement], now: u64) -> rusqlite::Result<()> {
    let mut done = conn.prepare_cached(&format!(
        "UPDATE tasks SET state = ?2, line = ?3, error_kind = coalesce(?4, error_kind),
         error_message = coalesce(?5, error_message), updated_ms = ?1, {}
         WHERE id = ?6 AND state = 'running' AND attempts = ?7",
        push_history("?2", "?7")
    ))?;
    let mut retry = conn.prepare_cached(&format!(
        "UPDATE tasks SET state = 'retrying', due_ms = ?2, error_kind = ?3, error_message = ?4,
         updated_ms = ?1, {} WHERE id = ?5 AND state = 'running' AND attempts = ?6",
        push_history("'retry'", "?6")
    ))?;
    let mut back = conn.prepare_cached(&format!(
        "UPDATE tasks SET state = 'queued', updated_ms = ?1, {}
         WHERE id = ?2 AND state = 'running' AND attempts = ?3",
        push_history("'interrupted'", "?3")
    ))?;
    let mut unstarted = conn.prepare_cached(&format!(
        "UPDATE tasks SET state = 'queued', attempts = attempts - 1, updated_ms = ?1, {}
         WHERE id = ?2 AND state = 'running' AND attempts = ?3",
        push_history("'withdrawn'", "?3")
    ))?;
    let mut delta = StateDelta::default();
    for s in all {
        // Only a task still running this attempt changes: a stale settlement
        // (the attempt was recovered, requeued, settled already) does not.
        match &s.outcome {
            Outcome::Settled { state, line, error } => {
                let (kind, message) = match error {
                    Some(e) => (Some(&e.kind), Some(&e.message)),
                    None => (None, None),
                };
                let n = done.execute(params![
                    now,
                    state.as_str(),
                    line,
                    kind,
                    message,
                    s.id,
                    s.attempt
                ])?;
                delta.moved(TaskState::Running, *state, n as i64);
            }
            Outcome::Retry { due_ms, error } => {
                let n = retry.execute(params![
                    now,
                    due_ms,
                    error.kind,
                    error.message,
                    s.id,
                    s.attempt
                ])?;
                delta.moved(TaskState::Running, TaskState::Retrying, n as i64);
            }
            Outcome::Interrupted => {
                let n = back.execute(params![now, s.id, s.attempt])?;
                delta.moved(TaskState::Running, TaskState::Queued, n as i64);
            }
            Outcome::NotStarted => {
                let n = unstarted.execute(params![now, s.id, s.attempt])?;
                delta.moved(TaskState::Running, TaskState::Queued, n as i64);
            }
        }
    }
    delta.apply(conn)
}

pub(crate) fn recover(conn: &Connection, now: u64) -> rusqlite::Result<u64> {
    let n = conn.execute(
        &format!(
            "UPDATE tasks SET state = 'queued', updated_ms = ?1, {} WHERE state = 'running'",
            push_history("'interrupted'", "attempts")
        ),
        [now],
    )?;
    let mut delta = StateDelta::default();
    delta.moved(TaskState::Running, TaskState::Queued, n as i64);
    delta.apply(conn)?;
    Ok(n as u64)
}

pub(crate) fn get(conn: &Connection, ids: &[String]) -> rusqlite::Result<Vec<Option<TaskRecord>>> {
    let mut select = conn.prepare_cached(&format!("SELECT {COLS} FROM tasks WHERE id = ?1"))?;
    ids.iter()
        .map(|id| select.query_row([id], record).optional())
        .collect()
}

/// Where each id stands: its state, attempts and line, nothing else read.
pub(crate) fn status(
    conn: &Connection,
    ids: &[String],
) -> rusqlite::Result<Vec<Option<TaskStatus>>> {
    let mut select =
        conn.prepare_cached("SELECT state, attempts, line FROM tasks WHERE id = ?1")?;
    ids.iter()
        .map(|id| {
            select
                .query_row([id], |r| {
                    let state: String = r.get(0)?;
                    Ok(TaskStatus {
                        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
                        attempts: r.get(1)?,
                        line: r.get(2)?,
                    })
                })
                .optional()
        })
        .collect()
}

pub(crate) fn list(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<TaskRecord>> {
    let limit = if filter.limit == 0 {
        -1
    } else {
        filter.limit as i64
    };
    let mut select = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM tasks WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR type = ?2)
         ORDER BY seq DESC LIMIT ?3"
    ))?;
    let rows = select.query_map(
        params![filter.state.map(TaskState::as_str), filter.task_type, limit],
        record,
    )?;
    rows.collect()
}

pub(crate) fn requeue_dead(
    conn: &Connection,
    ids: Option<Vec<String>>,
    now: u64,
) -> rusqlite::Result<Vec<(String, Requeue)>> {
    let ids = match ids {
        Some(ids) => ids,
        None => dead_letters(conn)?,
    };
    let mut state = conn.prepare_cached("SELECT state FROM tasks WHERE id = ?1")?;
    let mut update = conn.prepare_cached(&format!(
        "UPDATE tasks SET state = 'queued', attempts = 0, due_ms = 0, line = NULL, updated_ms = ?1, {}
         WHERE id = ?2",
        push_history("'requeued'", "0")
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    let mut delta = StateDelta::default();
    for id in ids {
        let found: Option<String> = state.query_row([&id], |r| r.get(0)).optional()?;
        let verdict = match found.as_deref().map(TaskState::parse) {
            None => Requeue::Unknown,
            Some(Some(TaskState::DeadLetter)) => {
                let n = update.execute(params![now, id])?;
                delta.moved(TaskState::DeadLetter, TaskState::Queued, n as i64);
                Requeue::Requeued
            }
            Some(s) => Requeue::NotDeadLettered(s.unwrap_or(TaskState::Failed)),
        };
        out.push((id, verdict));
    }
    delta.apply(conn)?;
    Ok(out)
}

/// The ids of the dead-lettered tasks, oldest first.
pub(crate) const DEAD_LETTERS: &str = concat!(
    "SELECT id FROM tasks INDEXED BY tasks_at_rest WHERE state = 'dead_letter' AND ",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The history column after appending `(event, attempt)` at `at` ms to
    /// `history`, by the splice and by SQLite's JSON functions.
    fn both(
        conn: &Connection,
        history: &str,
        at: u64,
        event: &str,
        attempt: u32,
    ) -> (String, String) {
        let spliced = conn
            .query_row(
                &format!("SELECT {}", history_appended("?2", "?3", "?4")),
                params![at, history, event, attempt],
                |r| r.get(0),
            )
            .unwrap();
        let json = conn
            .query_row(
                "SELECT json_insert(?2, '$[#]', json_object('at_ms', ?1, 'event', ?3, 'attempt', ?4))",
                params![at, history, event, attempt],
                |r| r.get(0),
            )
            .unwrap();
        (spliced, json)
    }

    #[test]
    fn the_spliced_history_is_the_text_json_insert_writes() {
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
            let (spliced, json) = both(&conn, &history, at, event, attempt);
            assert_eq!(spliced, json, "after {event}");
            history = spliced;
        }
        let entries: Vec<HistoryEntry> = serde_json::from_str(&history).unwrap();
        assert_eq!(entries.len(), steps.len());
        assert_eq!(entries[2].event, "attempt");
        assert_eq!(entries[2].attempt, 2);
        assert_eq!(entries[5].at_ms, 1_795_750_554_003);
    }
}
