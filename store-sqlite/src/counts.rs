//! The number of tasks in each state (`state_counts`), kept by the write
//! operations themselves: each adds up what it moved and applies the sum with
//! one statement per state it touched, in the same transaction. Schema 2 kept
//! it with a trigger on every changed row, which cost about a third of the
//! store's SQL work per task.

use rusqlite::{params, Connection};
use task_source::TaskState;

/// Tasks added to (positive) or taken from (negative) each state by one write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateDelta([i64; TaskState::ALL.len()]);

impl StateDelta {
    /// `n` more tasks in `state` (fewer when negative).
    pub(crate) fn add(&mut self, state: TaskState, n: i64) {
        self.0[state as usize] += n;
    }

    /// `n` tasks moved from `from` to `to`.
    pub(crate) fn moved(&mut self, from: TaskState, to: TaskState, n: i64) {
        self.add(from, -n);
        self.add(to, n);
    }

    /// Writes the sums to `state_counts`: one statement per state that changed.
    pub(crate) fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO state_counts (state, n) VALUES (?1, ?2)
             ON CONFLICT (state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (state, n) in TaskState::ALL.iter().zip(self.0) {
            if n != 0 {
                upsert.execute(params![state.as_str(), n])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_slot() {
        for (i, state) in TaskState::ALL.iter().enumerate() {
            assert_eq!(*state as usize, i, "{state:?}");
        }
    }

    #[test]
    fn moves_cancel_out_and_only_changed_states_are_written() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO state_counts VALUES ('ok', 5);",
        )
        .unwrap();
        let mut delta = StateDelta::default();
        delta.add(TaskState::Queued, 3);
        delta.moved(TaskState::Queued, TaskState::Running, 2);
        delta.moved(TaskState::Running, TaskState::Ok, 2);
        delta.apply(&conn).unwrap();
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT state, n FROM state_counts ORDER BY state")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, [("ok".to_owned(), 7), ("queued".to_owned(), 1)]);
    }

    fn table(conn: &Connection, sql: &str) -> Vec<(String, i64)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// The kept counts against a full count of the table.
    fn assert_counts_true(conn: &Connection, after: &str) {
        assert_eq!(
            table(
                conn,
                "SELECT state, n FROM state_counts WHERE n <> 0 ORDER BY state"
            ),
            table(
                conn,
                "SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state"
            ),
            "after {after}"
        );
    }

    fn new_task(id: &str) -> task_source::NewTask {
        task_source::NewTask {
            id: id.to_owned(),
            task_type: "echo".to_owned(),
            payload: "1".to_owned(),
            priority: 10,
            timeout_ms: None,
        }
    }

    fn settle(id: &str, attempt: u32, outcome: task_source::Outcome) -> task_source::Settlement {
        task_source::Settlement {
            id: id.to_owned(),
            attempt,
            outcome,
        }
    }

    fn done(state: TaskState) -> task_source::Outcome {
        task_source::Outcome::Settled {
            state,
            line: "{}".to_owned(),
            error: None,
        }
    }

    #[test]
    fn every_write_keeps_the_counts_equal_to_a_full_count() {
        use crate::ops;
        use task_source::{ErrorInfo, Outcome};
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn).unwrap();
        let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        let tasks: Vec<_> = ids.iter().map(|id| new_task(id)).collect();
        ops::accept(&conn, &tasks, 1, None).unwrap();
        ops::accept(&conn, &tasks[..2], 1, None).unwrap();
        assert_counts_true(&conn, "accept, twice for two ids");
        ops::claim(&conn, 6, 1).unwrap();
        assert_counts_true(&conn, "claim");
        assert_eq!(ops::unsettled(&conn).unwrap(), 8, "6 running and 2 queued");
        let error = ErrorInfo {
            kind: "boom".to_owned(),
            message: "boom".to_owned(),
        };
        ops::settle(
            &conn,
            &[
                settle("t0", 1, done(TaskState::Ok)),
                settle("t1", 1, done(TaskState::Failed)),
                settle("t2", 1, done(TaskState::DeadLetter)),
                settle("t3", 1, done(TaskState::Cancelled)),
                settle(
                    "t4",
                    1,
                    Outcome::Retry {
                        due_ms: 0,
                        error: error.clone(),
                    },
                ),
                settle("t5", 1, Outcome::Interrupted),
                // Stale: no longer running this attempt, so nothing changes.
                settle("t0", 1, done(TaskState::Failed)),
                settle("t6", 1, done(TaskState::Ok)),
            ],
            2,
        )
        .unwrap();
        assert_counts_true(&conn, "settle");
        ops::claim(&conn, 3, 5).unwrap();
        assert_counts_true(&conn, "a claim of retrying and queued tasks");
        assert_eq!(ops::recover(&conn, 6).unwrap(), 3);
        assert_counts_true(&conn, "recover");
        ops::requeue_dead(&conn, None, 7).unwrap();
        assert_counts_true(&conn, "requeue");
        ops::claim(&conn, 1, 8).unwrap();
        ops::settle(&conn, &[settle("t2", 2, done(TaskState::DeadLetter))], 9).unwrap();
        ops::purge_dead(&conn).unwrap();
        assert_counts_true(&conn, "purge");
        assert_eq!(ops::prune(&conn, 3, None, ops::PRUNE_STEP).unwrap(), 3);
        assert_counts_true(&conn, "prune by age");
        ops::accept(&conn, &[new_task("late")], 10, None).unwrap();
        ops::claim(&conn, 8, 10).unwrap();
        let all: Vec<_> = ["t4", "t5", "t6", "t7", "late"]
            .iter()
            .map(|id| settle(id, 1, done(TaskState::Ok)))
            .chain(
                ["t4", "t5", "t6", "t7"]
                    .iter()
                    .map(|id| settle(id, 2, done(TaskState::Ok))),
            )
            .collect();
        ops::settle(&conn, &all, 11).unwrap();
        assert!(ops::prune(&conn, 0, Some(0), ops::PRUNE_STEP).unwrap() > 0);
        assert_counts_true(&conn, "prune by size");
        let unsettled: i64 = conn
            .query_row(
                "SELECT count(*) FROM tasks WHERE state IN ('queued','running','retrying')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            ops::unsettled(&conn).unwrap(),
            unsettled as u64,
            "{unsettled}"
        );
    }

    #[test]
    fn a_prune_deletes_no_more_than_its_limit_and_keeps_the_counts() {
        use crate::ops;
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn).unwrap();
        let ids: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        let tasks: Vec<_> = ids.iter().map(|id| new_task(id)).collect();
        ops::accept(&conn, &tasks, 1, None).unwrap();
        ops::claim(&conn, 7, 1).unwrap();
        let all: Vec<_> = ids
            .iter()
            .map(|id| settle(id, 1, done(TaskState::Ok)))
            .collect();
        ops::settle(&conn, &all, 2).unwrap();
        assert_eq!(ops::prune(&conn, 3, None, 3).unwrap(), 3, "by age");
        assert_counts_true(&conn, "a limited prune by age");
        assert_eq!(ops::prune(&conn, 0, Some(0), 2).unwrap(), 2, "by size");
        assert_counts_true(&conn, "a limited prune by size");
        assert_eq!(ops::prune(&conn, 3, None, 10).unwrap(), 2, "the rest");
        assert_counts_true(&conn, "the last prune");
    }
}
