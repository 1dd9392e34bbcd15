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
    use crate::overlay::{Checkpoint, Overlay};
    use crate::test_support::{empty_overlay, new_task};

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
        delta.add(TaskState::Queued, -2);
        delta.add(TaskState::Running, 2);
        delta.add(TaskState::Running, -2);
        delta.add(TaskState::Ok, 2);
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

    /// The counts the overlay gives (the rows' kept counts and its own
    /// changes) against a full count of the table after a checkpoint, and
    /// the kept counts against the same.
    fn assert_counts_true(conn: &Connection, overlay: &mut Overlay, after: &str) {
        let view = |overlay: &Overlay| {
            let mut rows: Vec<(String, i64)> = overlay
                .rows(crate::ops::rows(conn).unwrap())
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|(state, n)| (state, n as i64))
                .collect();
            rows.sort();
            rows
        };
        let seen = view(overlay);
        // What the writer would store in the journal row.
        let _ = overlay.take_pending();
        overlay.checkpoint(conn, Checkpoint::Settled).unwrap();
        assert_eq!(
            view(overlay),
            seen,
            "after {after} and the settled rows' checkpoint"
        );
        overlay.checkpoint(conn, Checkpoint::Full).unwrap();
        let full = table(
            conn,
            "SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state",
        );
        assert_eq!(seen, full, "the overlay's counts after {after}");
        assert_eq!(
            table(
                conn,
                "SELECT state, n FROM state_counts WHERE n <> 0 ORDER BY state"
            ),
            full,
            "the kept counts after {after}"
        );
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
        let (conn, mut o) = empty_overlay();
        let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        let tasks: Vec<_> = ids.iter().map(|id| new_task(id)).collect();
        o.accept(&conn, tasks.clone(), 1, None).unwrap();
        o.accept(&conn, tasks[..2].to_vec(), 1, None).unwrap();
        assert_counts_true(&conn, &mut o, "accept, twice for two ids");
        o.claim(&conn, 6, 1).unwrap();
        assert_counts_true(&conn, &mut o, "claim");
        assert_eq!(
            o.unsettled(ops::unsettled(&conn).unwrap()),
            8,
            "6 running and 2 queued"
        );
        let error = ErrorInfo {
            kind: "boom".to_owned(),
            message: "boom".to_owned(),
        };
        o.settle(
            &conn,
            vec![
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
        assert_counts_true(&conn, &mut o, "settle");
        o.claim(&conn, 3, 5).unwrap();
        assert_counts_true(&conn, &mut o, "a claim of retrying and queued tasks");
        assert_eq!(o.recover(&conn, 6).unwrap(), 3);
        assert_counts_true(&conn, &mut o, "recover");
        o.requeue_dead(&conn, None, 7).unwrap();
        assert_counts_true(&conn, &mut o, "requeue");
        o.claim(&conn, 1, 8).unwrap();
        o.settle(&conn, vec![settle("t2", 2, done(TaskState::DeadLetter))], 9)
            .unwrap();
        let _ = o.take_pending();
        o.checkpoint(&conn, Checkpoint::Full).unwrap();
        ops::purge_dead(&conn).unwrap();
        assert_counts_true(&conn, &mut o, "purge");
        let _ = o.take_pending();
        o.checkpoint(&conn, Checkpoint::Full).unwrap();
        assert_eq!(
            ops::prune_round(&conn, 3, None, ops::PRUNE_STEP).unwrap(),
            3
        );
        assert_counts_true(&conn, &mut o, "prune by age");
        o.accept(&conn, vec![new_task("late")], 10, None).unwrap();
        o.claim(&conn, 8, 10).unwrap();
        let all: Vec<_> = ["t4", "t5", "t6", "t7", "late"]
            .iter()
            .map(|id| settle(id, 1, done(TaskState::Ok)))
            .chain(
                ["t4", "t5", "t6", "t7"]
                    .iter()
                    .map(|id| settle(id, 2, done(TaskState::Ok))),
            )
            .collect();
        o.settle(&conn, all, 11).unwrap();
        let _ = o.take_pending();
        o.checkpoint(&conn, Checkpoint::Full).unwrap();
        assert!(ops::prune(&conn, 0, Some(0), ops::PRUNE_STEP, 0).unwrap().0 > 0);
        assert_counts_true(&conn, &mut o, "prune by size");
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
        let (conn, mut o) = empty_overlay();
        let ids: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        let tasks: Vec<_> = ids.iter().map(|id| new_task(id)).collect();
        o.accept(&conn, tasks.clone(), 1, None).unwrap();
        o.claim(&conn, 7, 1).unwrap();
        let all: Vec<_> = ids
            .iter()
            .map(|id| settle(id, 1, done(TaskState::Ok)))
            .collect();
        o.settle(&conn, all, 2).unwrap();
        let _ = o.take_pending();
        o.checkpoint(&conn, Checkpoint::Full).unwrap();
        assert_eq!(ops::prune(&conn, 3, None, 3, 0).unwrap().0, 3, "by age");
        assert_counts_true(&conn, &mut o, "a limited prune by age");
        assert_eq!(ops::prune(&conn, 0, Some(0), 2, 0).unwrap().0, 2, "by size");
        assert_counts_true(&conn, &mut o, "a limited prune by size");
        assert_eq!(ops::prune_round(&conn, 3, None, 10).unwrap(), 2, "the rest");
        assert_counts_true(&conn, &mut o, "the last prune");
    }
}
