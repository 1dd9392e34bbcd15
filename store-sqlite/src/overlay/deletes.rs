//! The operations that delete rows (retention, the dead letters' purge): a
//! full checkpoint first, so that what they read or delete is all in the rows
//! and no journal entry is left to bring a deleted task back at a replay;
//! and the mark of the numbers after (`numbers.rs`).

use rusqlite::Connection;

use super::{Checkpoint, Overlay};
use crate::numbers;

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
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::overlay::Overlay;
    use crate::test_support::{column, empty_overlay, new_task};

    /// Writes the journal entries of the overlay's transaction.
    fn commit(conn: &Connection, overlay: &mut Overlay) {
        if let Some((row, entries)) = overlay.take_pending() {
            crate::journal::append(conn, row, &entries).unwrap();
        }
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
