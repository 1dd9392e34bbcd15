//! The operations that delete rows (retention, the dead letters' purge): a
//! full checkpoint first, so that what they read or delete is all in the rows
//! and no journal entry is left to bring a deleted task back at a replay;
//! the mark of the numbers after (`numbers.rs`); and a retention step that
//! finds nothing due, which writes nothing at all.

use rusqlite::Connection;
use task_source::TaskState;

use super::{Checkpoint, Overlay};
use crate::numbers;
use crate::ops::{self, Survey};

impl Overlay {
    /// Runs `f` on the rows, in the caller's transaction, after a full
    /// checkpoint in it: what `f` reads or deletes is all in the rows, and no
    /// journal entry is left to bring back a task whose row `f` deletes.
    /// Should `f` have deleted the newest rows, the number the next task
    /// gets is kept apart from them.
    pub(crate) fn on_rows<T>(
        &mut self,
        conn: &Connection,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.checkpoint(conn, Checkpoint::Full)?;
        let value = f(conn)?;
        numbers::keep(conn, self.next_seq)?;
        Ok(value)
    }

    /// One step of a retention round ([`ops::prune`]'s arguments), in the
    /// caller's transaction: gives how many tasks it deleted and where the
    /// next step starts. With changes unwritten, the full checkpoint the
    /// deletes need comes only when the step finds a task due: neither in
    /// memory (a settled task whose row is not written yet) nor in the rows
    /// ([`ops::survey`]); a step that finds none writes nothing, and the
    /// unwritten tasks wait for their own checkpoints.
    pub(crate) fn prune_step(
        &mut self,
        conn: &Connection,
        before: u64,
        max_bytes: Option<u64>,
        limit: u64,
        from: i64,
    ) -> rusqlite::Result<(u64, Option<i64>)> {
        if self.has_unwritten() && !self.holds_prunable(before) {
            if let Survey::Nothing(next) = ops::survey(conn, before, max_bytes, from)? {
                return Ok((0, next));
            }
        }
        self.on_rows(conn, |c| ops::prune(c, before, max_bytes, limit, from))
    }

    /// Whether a task retention deletes (settled for good, last changed
    /// before `before` ms) waits for its row: one of the settled tasks still
    /// unwritten, each of which is in the plan or settled since it was made.
    fn holds_prunable(&self, before: u64) -> bool {
        if self.tally.dirty_settled == 0 {
            return false;
        }
        let planned = self.plan.iter().flat_map(|plan| plan.seqs.iter());
        planned.chain(&self.newly_settled).any(|seq| {
            self.entries.get(*seq).is_some_and(|live| {
                live.settled_unwritten()
                    && TaskState::PRUNABLE.contains(&live.state)
                    && live.updated_ms < before
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use task_source::{Outcome, Settlement, TaskState};

    use crate::overlay::Overlay;
    use crate::test_support::{column, empty_overlay, new_task};

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Writes the journal entries of the overlay's transaction.
    fn commit(conn: &Connection, overlay: &mut Overlay) {
        if let Some((row, entries)) = overlay.take_pending() {
            crate::journal::append(conn, row, &entries).unwrap();
        }
    }

    /// `x` waits, `a` settled ok at 3 ms: both in the journal only.
    fn waiting_and_settled() -> (Connection, Overlay) {
        let (conn, mut overlay) = empty_overlay();
        overlay
            .accept(&conn, vec![new_task("a"), new_task("x")], 1, None)
            .unwrap();
        assert_eq!(overlay.claim(&conn, 1, 2).unwrap()[0].task.id, "a");
        let done = Settlement {
            id: "a".into(),
            attempt: 1,
            outcome: Outcome::Settled {
                state: TaskState::Ok,
                line: "{}".into(),
                error: None,
            },
        };
        overlay.settle(&conn, vec![done], 3).unwrap();
        commit(&conn, &mut overlay);
        (conn, overlay)
    }

    /// A round with nothing due (every task changed after the cutoff, the
    /// store within its size) writes no row and keeps the journal.
    #[test]
    fn a_prune_with_nothing_due_writes_nothing() {
        let (conn, mut overlay) = waiting_and_settled();
        assert_eq!(
            overlay
                .prune_step(&conn, 3, Some(u64::MAX), 100, 0)
                .unwrap(),
            (0, None)
        );
        assert_eq!(count(&conn, "tasks"), 0, "no row written");
        assert_eq!(count(&conn, "journal"), 1, "the journal kept");
    }

    /// A settled task due for retention whose row is not written yet is
    /// found in memory: the rows are written, and it is deleted.
    #[test]
    fn a_task_due_in_memory_only_is_written_and_pruned() {
        let (conn, mut overlay) = waiting_and_settled();
        assert_eq!(
            overlay.prune_step(&conn, 4, None, 100, 0).unwrap(),
            (1, None)
        );
        assert_eq!(column::<String>(&conn, "SELECT id FROM tasks"), ["x"]);
        assert_eq!(count(&conn, "journal"), 0, "emptied before the delete");
    }

    /// Once the newest row is deleted, the mark keeps its number from being
    /// handed out again by a store loaded from the rows.
    #[test]
    fn deleting_the_newest_row_keeps_its_number() {
        let (conn, mut overlay) = empty_overlay();
        overlay.accept(&conn, vec![new_task("a")], 1, None).unwrap();
        commit(&conn, &mut overlay);
        let purged = overlay
            .on_rows(&conn, |c| c.execute("DELETE FROM tasks", []))
            .unwrap();
        assert_eq!(purged, 1);
        let mut loaded = Overlay::load(&conn, None).unwrap();
        loaded.accept(&conn, vec![new_task("b")], 2, None).unwrap();
        commit(&conn, &mut loaded);
        loaded
            .checkpoint(&conn, crate::overlay::Checkpoint::Full)
            .unwrap();
        assert_eq!(column::<i64>(&conn, "SELECT seq FROM tasks"), [2]);
    }
}
