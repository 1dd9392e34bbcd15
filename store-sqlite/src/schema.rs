//! The store's schema and its version (`PRAGMA user_version`).

use rusqlite::Connection;

/// The schema version this build writes. A store with a higher version was
/// written by a newer cortex-pool and is refused.
pub const SCHEMA_VERSION: i64 = 7;

/// The oldest schema version a read-only store is read at as it is: one
/// older cannot be brought up to date, and its tasks' columns differ.
pub(crate) const READ_ONLY_FROM: i64 = 6;

const V1: &str = "
CREATE TABLE tasks (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    timeout_ms    INTEGER,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    due_ms        INTEGER NOT NULL DEFAULT 0,
    error_kind    TEXT,
    error_message TEXT,
    line          TEXT,
    history       TEXT NOT NULL DEFAULT '[]',
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);
CREATE INDEX tasks_ready ON tasks (priority, seq) WHERE state IN ('queued','retrying');
CREATE INDEX tasks_by_state ON tasks (state, updated_ms);
PRAGMA user_version = 1;
";

/// Version 2: the number of tasks in each state, kept by triggers in the same
/// transaction as the change, so `stats` reads a few rows instead of scanning
/// every task (a `status` of a store holding 300 000 tasks cost 60 ms).
const V2: &str = "
CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO state_counts (state, n) SELECT state, count(*) FROM tasks GROUP BY state;
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
PRAGMA user_version = 2;
";

/// Version 3: the write operations keep `state_counts` themselves, one statement
/// per state a write touched (`counts.rs`), instead of the triggers' statements
/// on every changed row. The counts carry over unchanged.
const V3: &str = "
DROP TRIGGER tasks_count_insert;
DROP TRIGGER tasks_count_delete;
DROP TRIGGER tasks_count_update;
PRAGMA user_version = 3;
";

/// Version 4: `tasks_by_state (state, updated_ms)` held an entry for every
/// task, moved on every claim and settlement (five B-tree changes a task, a
/// quarter of the store's instructions per task). `tasks_at_rest` held only
/// tasks neither queued nor running: a settled task entered it once. Its
/// condition was two `<>` terms, not `state IN (…)`: SQLite evaluates a
/// partial index's condition on every row written, and an `IN` list of three
/// or more values costs an ephemeral table each time (a store with such an
/// index spent twice the instructions on every write). Version 6 drops it.
const V4: &str = "
DROP INDEX tasks_by_state;
CREATE INDEX tasks_at_rest ON tasks (state, updated_ms) WHERE state <> 'queued' AND state <> 'running';
PRAGMA user_version = 4;
";

/// Version 5: the journal (`journal.rs`). Each group commit stores its changes
/// as one row of entries instead of changing the tasks' rows; a checkpoint
/// writes the rows and forgets the entries they hold. Each row keeps the
/// `version` of the task it holds (its number of changes), so a replay skips
/// the entries a row holds already. A version 4 store has no journal: its
/// rows are current.
const V5: &str = "
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE journal (seq INTEGER PRIMARY KEY, entries BLOB NOT NULL);
PRAGMA user_version = 5;
";

/// Version 6: `tasks_at_rest` cost about 5 800 instructions for every row a
/// checkpoint writes, a sixth of the store thread's work a task (measured in
/// `docs/benchmarks.md`). Retention finds old settled tasks by a scan in `seq`
/// order, bounded by their creation time ([`prune`](crate::ops::prune)); the
/// dead letters, kept until purged, have a partial index of their own, which
/// only they enter. A query that means to use it repeats its condition word
/// for word (`ops.rs`, `dead!`).
const V6: &str = "
DROP INDEX tasks_at_rest;
CREATE INDEX tasks_dead ON tasks (seq) WHERE state = 'dead_letter';
PRAGMA user_version = 6;
";

/// Version 7: the number the next task gets is kept apart from the rows
/// (`seq_mark`, one row; `numbers.rs`), so that deleting the newest tasks'
/// rows (retention, the dead letters' purge) and opening the store again
/// hands none of their numbers out again: a listing's place, a task's
/// number, never comes to stand for a later task. A version 6 store starts
/// from its rows (numbers its newest deleted rows had may be lost already).
const V7: &str = "
CREATE TABLE seq_mark (id INTEGER PRIMARY KEY CHECK (id = 0), next_seq INTEGER NOT NULL);
INSERT INTO seq_mark (id, next_seq) SELECT 0, coalesce(max(seq), 0) + 1 FROM tasks;
PRAGMA user_version = 7;
";

/// What the version check found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// Current (created now if the file was empty).
    Current,
    /// Written by a newer version.
    Newer(i64),
}

/// Creates the schema in an empty store, or checks an existing one's version.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<Version> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Version::Newer(version));
    }
    let steps = match version {
        0 => [V1, V2, V3, V4, V5, V6, V7].join(" "),
        1 => [V2, V3, V4, V5, V6, V7].join(" "),
        2 => [V3, V4, V5, V6, V7].join(" "),
        3 => [V4, V5, V6, V7].join(" "),
        4 => [V5, V6, V7].join(" "),
        5 => [V6, V7].join(" "),
        6 => V7.to_owned(),
        _ => return Ok(Version::Current),
    };
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {steps} COMMIT;"))?;
    Ok(Version::Current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(conn: &Connection) -> Vec<(String, i64)> {
        let mut stmt = conn
            .prepare("SELECT state, n FROM state_counts WHERE n > 0 ORDER BY state")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn insert(conn: &Connection, id: &str, state: &str) {
        conn.execute(
            "INSERT INTO tasks (id, type, payload, priority, state, created_ms, updated_ms) \
             VALUES (?1, 'echo', '1', 10, ?2, 0, 0)",
            [id, state],
        )
        .unwrap();
    }

    #[test]
    fn the_waiting_tasks_are_read_through_their_index_not_a_scan() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let plan = crate::test_support::plan(&conn, crate::overlay::WAITING);
        assert!(
            plan.iter().any(|step| step.contains("tasks_ready")),
            "{plan:?}"
        );
    }

    fn full_counts(conn: &Connection) -> Vec<(String, i64)> {
        conn.prepare("SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn triggers(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_1_store_gets_its_counts() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        insert(&conn, "a", "queued");
        insert(&conn, "b", "queued");
        insert(&conn, "c", "succeeded");
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert_eq!(
            counts(&conn),
            [("queued".to_owned(), 2), ("succeeded".to_owned(), 1)]
        );
        assert_eq!(counts(&conn), full_counts(&conn));
        assert_eq!(triggers(&conn), 0);
    }

    #[test]
    fn a_version_2_store_keeps_its_counts_and_drops_its_triggers() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        insert(&conn, "a", "queued");
        insert(&conn, "b", "ok");
        assert_eq!(triggers(&conn), 3);
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert_eq!(triggers(&conn), 0);
        assert_eq!(
            counts(&conn),
            [("ok".to_owned(), 1), ("queued".to_owned(), 1)]
        );
    }

    fn indexes(conn: &Connection) -> Vec<String> {
        crate::test_support::column(
            conn,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
    }

    /// The ids the index of dead letters holds.
    fn dead(conn: &Connection) -> Vec<String> {
        crate::test_support::column(conn, crate::ops::DEAD_LETTERS)
    }

    #[test]
    fn a_version_3_store_ends_with_the_index_of_ready_tasks_and_of_dead_letters() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&[V1, V2, V3].join(" ")).unwrap();
        for (id, state) in [
            ("a", "queued"),
            ("b", "running"),
            ("c", "ok"),
            ("d", "dead_letter"),
        ] {
            insert(&conn, id, state);
        }
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert_eq!(indexes(&conn), ["tasks_dead", "tasks_ready"]);
        assert_eq!(dead(&conn), ["d"]);
    }

    /// Schema 6 drops `tasks_at_rest` (each row a checkpoint writes paid for
    /// it) and indexes only the dead letters; the rows stay.
    #[test]
    fn a_version_5_store_trades_the_index_of_tasks_at_rest_for_one_of_dead_letters() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&[V1, V2, V3, V4, V5].join(" ")).unwrap();
        insert(&conn, "a", "ok");
        insert(&conn, "b", "dead_letter");
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert_eq!(indexes(&conn), ["tasks_dead", "tasks_ready"]);
        assert_eq!(dead(&conn), ["b"]);
        assert_eq!(full_counts(&conn).len(), 2);
    }

    /// Schema 7 keeps the mark of the numbers, starting one past a version
    /// 6 store's highest row: once those rows are deleted, the next task
    /// still gets a number past theirs.
    #[test]
    fn a_version_6_store_gets_the_mark_of_its_numbers() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&[V1, V2, V3, V4, V5, V6].join(" "))
            .unwrap();
        insert(&conn, "a", "ok");
        insert(&conn, "b", "queued");
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert_eq!(
            crate::test_support::column::<i64>(&conn, "SELECT next_seq FROM seq_mark"),
            [3]
        );
        conn.execute_batch("DELETE FROM tasks").unwrap();
        assert_eq!(crate::numbers::next(&conn).unwrap(), 3);
    }

    #[test]
    fn only_a_dead_letter_is_in_the_index_of_dead_letters() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        insert(&conn, "a", "queued");
        insert(&conn, "b", "ok");
        assert_eq!(dead(&conn), Vec::<String>::new());
        conn.execute("UPDATE tasks SET state = 'dead_letter' WHERE id = 'a'", [])
            .unwrap();
        assert_eq!(dead(&conn), ["a"]);
        conn.execute("UPDATE tasks SET state = 'queued' WHERE id = 'a'", [])
            .unwrap();
        assert_eq!(dead(&conn), Vec::<String>::new());
    }

    /// Each names the index: a condition that no longer implies the index's
    /// fails to prepare ("no query solution").
    #[test]
    fn the_dead_letters_queries_can_use_their_index() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        for sql in [
            crate::ops::DEAD_LETTERS,
            crate::ops::DEAD_LETTER_SEQS,
            crate::ops::PURGE_DEAD,
        ] {
            if let Err(e) = conn.prepare(sql) {
                panic!("{sql}: {e}");
            }
        }
    }

    #[test]
    fn a_store_of_this_version_is_left_as_it_is() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        insert(&conn, "a", "queued");
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let newer = SCHEMA_VERSION + 1;
        conn.execute_batch(&format!("PRAGMA user_version = {newer}"))
            .unwrap();
        assert_eq!(migrate(&conn).unwrap(), Version::Newer(newer));
    }

    #[test]
    fn a_version_4_store_gets_an_empty_journal_and_keeps_its_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&[V1, V2, V3, V4].join(" ")).unwrap();
        insert(&conn, "a", "queued");
        insert(&conn, "b", "ok");
        assert_eq!(migrate(&conn).unwrap(), Version::Current);
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let journal: i64 = conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, 0);
        assert_eq!(full_counts(&conn).len(), 2);
    }
}
