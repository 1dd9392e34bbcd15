//! The high-water mark of the tasks' sequence numbers (`seq_mark`, schema 7).
//!
//! A task's number orders the listings, and a page's place
//! ([`ListFrom`](task_source::ListFrom)) is one. The rows alone would say the
//! next number is one past the highest row: once the newest tasks' rows are
//! deleted (retention, the dead letters' purge) and the store is opened again,
//! their numbers would be handed out again, and a place given out before would
//! skip or repeat tasks. The transaction that deletes them keeps the mark.

use rusqlite::Connection;

/// One past the highest number a row holds.
const PAST_ROWS: &str = "SELECT coalesce(max(seq), 0) + 1 FROM tasks";

/// The number the next accepted task gets, as the rows and the mark say:
/// the higher of the two (a replay of the journal may raise it further).
const NEXT: &str = "SELECT max(
    (SELECT coalesce(max(seq), 0) + 1 FROM tasks),
    coalesce((SELECT next_seq FROM seq_mark WHERE id = 0), 1))";

/// Raises the mark to `?1`; it never goes down.
const RAISE: &str = "INSERT INTO seq_mark (id, next_seq) VALUES (0, ?1)
    ON CONFLICT (id) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)";

/// Whether the store has the mark (schema 7 on; a read-only store at
/// schema 6 has none).
const HAS_MARK: &str =
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'seq_mark'";

/// The number the next accepted task gets, as the rows and the mark say
/// (the rows alone in a read-only store of schema 6, which accepts none).
pub(crate) fn next(conn: &Connection) -> rusqlite::Result<i64> {
    let marked: i64 = conn.query_row(HAS_MARK, [], |r| r.get(0))?;
    if marked == 0 {
        return conn.query_row(PAST_ROWS, [], |r| r.get(0));
    }
    conn.query_row(NEXT, [], |r| r.get(0))
}

/// Keeps `next_seq` (the number the next accepted task gets) as the mark
/// when the rows no longer show it, in the transaction that deleted them:
/// a deletion that left the newest row in place writes nothing.
pub(crate) fn keep(conn: &Connection, next_seq: i64) -> rusqlite::Result<()> {
    let shown: i64 = conn
        .prepare_cached(PAST_ROWS)?
        .query_row([], |r| r.get(0))?;
    if shown < next_seq {
        conn.prepare_cached(RAISE)?.execute([next_seq])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(seqs: &[i64]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn).unwrap();
        for seq in seqs {
            conn.execute(
                "INSERT INTO tasks (seq, id, type, payload, priority, state, created_ms, updated_ms)
                 VALUES (?1, 'id-' || ?1, 'echo', '1', 10, 'ok', 0, 0)",
                [seq],
            )
            .unwrap();
        }
        conn
    }

    fn mark(conn: &Connection) -> Vec<i64> {
        crate::test_support::column(conn, "SELECT next_seq FROM seq_mark")
    }

    /// The next number comes from the rows while they show it, and from the
    /// mark once the newest rows are gone; the mark never goes down.
    #[test]
    fn the_next_number_is_past_every_row_and_the_mark() {
        let conn = store(&[1, 2, 3]);
        assert_eq!(next(&conn).unwrap(), 4);
        keep(&conn, 4).unwrap();
        assert_eq!(mark(&conn), [1], "the rows show it: nothing written");
        conn.execute_batch("DELETE FROM tasks WHERE seq >= 2")
            .unwrap();
        keep(&conn, 4).unwrap();
        assert_eq!(mark(&conn), [4]);
        conn.execute_batch("DELETE FROM tasks").unwrap();
        assert_eq!(next(&conn).unwrap(), 4, "from the mark");
        keep(&conn, 3).unwrap();
        assert_eq!(mark(&conn), [4], "never lowered");
    }

    /// A store whose mark's row is gone (edited by hand) numbers from its
    /// rows, and the next deletion puts the row back.
    #[test]
    fn a_missing_mark_is_read_as_none_and_written_again() {
        let conn = store(&[1, 2]);
        conn.execute_batch("DELETE FROM seq_mark; DELETE FROM tasks WHERE seq = 2")
            .unwrap();
        assert_eq!(next(&conn).unwrap(), 2);
        keep(&conn, 3).unwrap();
        assert_eq!(mark(&conn), [3]);
        assert_eq!(next(&conn).unwrap(), 3);
    }
}
