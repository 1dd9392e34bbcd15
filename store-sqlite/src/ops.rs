//! The SQL of the [`TaskSource`](task_source::TaskSource) operations that
//! read or change the rows themselves, after a checkpoint (listings, the dead
//! letters' purge, retention) or beside the overlay (the kept counts).

use rusqlite::{params, Connection, OptionalExtension};
use task_source::{Filter, ListFrom, ListOrder, TaskRecord, TaskState};

use crate::counts::StateDelta;

/// The condition of the `tasks_dead` index (schema 6: the dead letters),
/// which a query repeats word for word to use it: SQLite uses a partial index
/// only when the query's own terms imply its condition. Each such query names
/// the index (`INDEXED BY`), so a condition that drifted from the index's
/// fails when the statement is prepared instead of scanning.
macro_rules! dead {
    () => {
        "state = 'dead_letter'"
    };
}

/// The rows matching `filter`, in `order`, after `from`, with their sequence
/// numbers; `limit` of them at most (`None`: all).
pub(crate) fn list(
    conn: &Connection,
    filter: &Filter,
    order: ListOrder,
    from: Option<ListFrom>,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<(i64, TaskRecord)>> {
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let from = from.map(|ListFrom(seq)| i64::try_from(seq).unwrap_or(i64::MAX));
    let (bound, from) = match order {
        ListOrder::NewestFirst => ("seq < ?4 ORDER BY seq DESC", from.unwrap_or(i64::MAX)),
        ListOrder::OldestFirst => ("seq > ?4 ORDER BY seq", from.unwrap_or(i64::MIN)),
    };
    let mut select = conn.prepare_cached(&format!(
        "SELECT {} FROM tasks WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR type = ?2)
         AND {bound} LIMIT ?3",
        crate::live::COLS
    ))?;
    let rows = select.query_map(
        params![
            filter.state.map(TaskState::as_str),
            filter.task_type,
            limit,
            from
        ],
        |row| crate::live::row(row).map(|(seq, live)| (seq, live.record())),
    )?;
    rows.collect()
}

/// The ids of the dead-lettered tasks, oldest first.
pub(crate) const DEAD_LETTERS: &str = concat!(
    "SELECT id FROM tasks INDEXED BY tasks_dead WHERE ",
    dead!(),
    " ORDER BY seq"
);

/// The sequence numbers and ids of the dead-lettered tasks' rows, oldest first.
pub(crate) const DEAD_LETTER_SEQS: &str = concat!(
    "SELECT seq, id FROM tasks INDEXED BY tasks_dead WHERE ",
    dead!(),
    " ORDER BY seq"
);

/// Deletes the dead-lettered tasks.
pub(crate) const PURGE_DEAD: &str =
    concat!("DELETE FROM tasks INDEXED BY tasks_dead WHERE ", dead!());

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

/// `state IN (…)` of the states a prune deletes ([`TaskState::PRUNABLE`]).
fn prunable() -> String {
    let states = TaskState::PRUNABLE.map(|s| format!("'{}'", s.as_str()));
    format!("state IN ({})", states.join(","))
}

/// Deletes at most `?4` of the tasks numbered from `?1` up to `?2` that are
/// settled for good and were last changed before `?3` ms, in `seq` order;
/// gives the number and state of each. SQLite walks that range of the table
/// in `seq` order: no index is kept for this (see schema 6).
fn prune_older() -> String {
    format!(
        "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks
         WHERE seq >= ?1 AND seq < ?2 AND {} AND updated_ms < ?3 ORDER BY seq LIMIT ?4)
         RETURNING seq, state",
        prunable()
    )
}

/// The most task numbers one call of [`prune`] walks: what a step reads is
/// bounded, however many old tasks it keeps (dead letters, tasks still
/// running). Small in this crate's tests, so that they walk in several steps.
const WALK_STEP: i64 = if cfg!(test) { 4 } else { 50_000 };

/// The lowest and one past the highest task number, each read by key: `min`
/// and `max` in one query would read every row.
const NUMBERS: &str = "SELECT coalesce((SELECT min(seq) FROM tasks), 0),
                coalesce((SELECT max(seq) FROM tasks), 0) + 1";

/// The most tasks one call of [`prune`] deletes: the store runs each call as
/// a transaction of its own, and calls again until the round is over.
pub(crate) const PRUNE_STEP: u64 = 10_000;

/// One step of a retention round that has walked the tasks numbered below
/// `from`: deletes at most `limit` settled tasks last changed before `before`
/// ms among the next [`WALK_STEP`] numbers; once the walk is past the last
/// task created before `before`, the oldest settled tasks while the store
/// takes more than `max_bytes`. Gives how many it deleted and where the next
/// step starts, `None` when the round is over.
pub(crate) fn prune(
    conn: &Connection,
    before: u64,
    max_bytes: Option<u64>,
    limit: u64,
    from: i64,
) -> rusqlite::Result<(u64, Option<i64>)> {
    let mut delta = StateDelta::default();
    // A task created at or after `before` was last changed after it: the
    // walk ends at the first one.
    let bound = created_from(conn, before)?;
    let end = bound.min(from.saturating_add(WALK_STEP));
    let deleted: Vec<(i64, String)> = conn
        .prepare_cached(&prune_older())?
        .query_map(params![from, end, before, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    count_out(&mut delta, deleted.iter().map(|(_, state)| state.as_str()));
    let mut removed = deleted.len() as u64;
    let walked_to = match deleted.last() {
        // The limit cut the walk short: it goes on after the last one.
        Some((seq, _)) if removed == limit => seq + 1,
        _ => end,
    };
    if walked_to < bound {
        delta.apply(conn)?;
        return Ok((removed, Some(walked_to)));
    }
    if let Some(max) = max_bytes {
        let mut oldest = conn.prepare_cached(&format!(
            "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE {}
             ORDER BY seq LIMIT ?1) RETURNING state",
            prunable()
        ))?;
        while removed < limit && used_bytes(conn)? > max {
            let states: Vec<String> = oldest
                .query_map([(limit - removed).min(1000)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if states.is_empty() {
                break;
            }
            count_out(&mut delta, states.iter().map(String::as_str));
            removed += states.len() as u64;
        }
    }
    delta.apply(conn)?;
    // Cut short by the limit: the next step prunes for size again.
    Ok((removed, (removed == limit).then_some(walked_to)))
}

/// Takes one task in each of the deleted tasks' `states` out of `delta`.
fn count_out<'a>(delta: &mut StateDelta, states: impl Iterator<Item = &'a str>) {
    for state in states.filter_map(TaskState::parse) {
        delta.add(state, -1);
    }
}

/// A whole retention round, in the caller's transaction (the store runs each
/// step in a transaction of its own).
#[cfg(test)]
pub(crate) fn prune_round(
    conn: &Connection,
    before: u64,
    max_bytes: Option<u64>,
    limit: u64,
) -> rusqlite::Result<u64> {
    let (mut removed, mut from) = (0, 0);
    loop {
        let (n, next) = prune(conn, before, max_bytes, limit, from)?;
        removed += n;
        match next {
            Some(next) => from = next,
            None => return Ok(removed),
        }
    }
}

/// The lowest task number from which on every task was created at or after
/// `at_ms` (one past the last task when none was): tasks are numbered in the
/// order they are accepted, so their creation times rise with their numbers,
/// and a binary search over the numbers finds it in a few look-ups by key. A
/// wall clock set back breaks that order: the bound may then fall at the
/// step, and the tasks accepted after it are pruned only once the clock has
/// passed their times again. None is pruned early: the prune checks each
/// task's own time.
pub(crate) fn created_from(conn: &Connection, at_ms: u64) -> rusqlite::Result<i64> {
    let (mut lo, mut hi): (i64, i64) = conn
        .prepare_cached(NUMBERS)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut first_at =
        conn.prepare_cached("SELECT created_ms FROM tasks WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    // Invariant: every task below `lo` was created before `at_ms`; the first
    // task at or after `hi` (if any) was not.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let created: Option<u64> = first_at.query_row([mid], |r| r.get(0)).optional()?;
        match created {
            Some(created) if created < at_ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
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

    /// A store of rows numbered `seq`, each created at `created` and last
    /// changed at `updated` ms, in `state`.
    fn store(rows: &[(i64, u64, u64, &str)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn).unwrap();
        for (seq, created, updated, state) in rows {
            conn.execute(
                "INSERT INTO tasks (seq, id, type, payload, priority, state, created_ms, updated_ms)
                 VALUES (?1, 'id-' || ?1, 'echo', '1', 10, ?2, ?3, ?4)",
                params![seq, state, created, updated],
            )
            .unwrap();
        }
        conn
    }

    fn seqs(conn: &Connection) -> Vec<i64> {
        crate::test_support::column(conn, "SELECT seq FROM tasks ORDER BY seq")
    }

    /// Every task below the bound was created before the time, every task
    /// from it on at or after it, with gaps in the numbers (pruned tasks) and
    /// an empty store.
    #[test]
    fn the_creation_bound_splits_the_tasks_at_the_time() {
        let rows: Vec<(i64, u64, u64, &str)> = [1, 2, 3, 5, 8, 9, 12, 20]
            .into_iter()
            .map(|seq| (seq, seq as u64 * 100, 0, "ok"))
            .collect();
        let conn = store(&rows);
        for at in [0, 100, 150, 300, 400, 500, 750, 1_200, 1_250, 2_000, 5_000] {
            let bound = created_from(&conn, at).unwrap();
            for (seq, created, _, _) in &rows {
                assert_eq!(
                    *seq < bound,
                    *created < at,
                    "at {at}: bound {bound}, task {seq} created at {created}"
                );
            }
        }
        assert_eq!(created_from(&store(&[]), 1_000).unwrap(), 0);
    }

    /// The walk in `seq` order passes over what it keeps (a dead letter, a
    /// running task, one changed since the cutoff) and stops at the first task
    /// created after the cutoff; the counts follow.
    #[test]
    fn a_prune_deletes_every_old_settled_task_and_nothing_else() {
        let conn = store(&[
            (1, 100, 150, "dead_letter"),
            (2, 100, 200, "ok"),
            (3, 100, 900, "ok"),
            (4, 100, 100, "running"),
            (5, 200, 300, "failed"),
            (6, 300, 350, "cancelled"),
            (7, 1_000, 1_100, "ok"),
        ]);
        conn.execute_batch(
            "INSERT INTO state_counts (state, n) VALUES
             ('dead_letter', 1), ('ok', 3), ('running', 1), ('failed', 1), ('cancelled', 1)",
        )
        .unwrap();
        assert_eq!(prune_round(&conn, 500, None, 10).unwrap(), 3);
        assert_eq!(seqs(&conn), [1, 3, 4, 7]);
        let mut counts = rows(&conn).unwrap();
        counts.retain(|(_, n)| *n != 0);
        counts.sort();
        assert_eq!(
            counts,
            [
                ("dead_letter".to_owned(), 1),
                ("ok".to_owned(), 2),
                ("running".to_owned(), 1)
            ]
        );
        assert_eq!(
            prune_round(&conn, 500, None, 10).unwrap(),
            0,
            "nothing more is due"
        );
    }

    /// A round walks the numbers in steps of [`WALK_STEP`] (4 here), each
    /// starting where the last ended, a step cut short by its limit going on
    /// after the last task it deleted; every due task goes, whatever it keeps
    /// on the way.
    #[test]
    fn a_round_walks_in_bounded_steps_and_deletes_every_due_task() {
        let mut rows: Vec<(i64, u64, u64, &str)> =
            (1..=9).map(|seq| (seq, 100, 200, "dead_letter")).collect();
        rows.extend((10..=20).map(|seq| (seq, 100, 200, "ok")));
        rows.push((21, 1_000, 1_100, "ok"));
        let conn = store(&rows);
        let mut from = 0;
        let mut steps = Vec::new();
        loop {
            let (removed, next) = prune(&conn, 500, None, 3, from).unwrap();
            steps.push((from, removed));
            match next {
                Some(next) => {
                    assert!(next > from, "a step moves on: {steps:?}");
                    from = next;
                }
                None => break,
            }
        }
        let mut kept: Vec<i64> = (1..=9).collect();
        kept.push(21);
        assert_eq!(seqs(&conn), kept, "{steps:?}");
        assert_eq!(steps.iter().map(|(_, n)| n).sum::<u64>(), 11);
        assert!(
            steps.iter().all(|(_, n)| *n <= 3),
            "each step deletes at most its limit: {steps:?}"
        );
    }

    /// The bounds of the numbers are read by key, not by reading every row.
    #[test]
    fn the_bounds_of_the_numbers_are_read_by_key() {
        let conn = store(&[(1, 100, 100, "ok")]);
        let plan = crate::test_support::plan(&conn, NUMBERS);
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN tasks")),
            "{plan:?}"
        );
    }
}
