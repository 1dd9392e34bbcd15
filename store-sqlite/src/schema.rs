//! The store's schema and its version (`PRAGMA user_version`).

use rusqlite::Connection;

/// The schema version this build writes. A store with a higher version was
/// written by a newer cortex-pool and is refused.
pub const SCHEMA_VERSION: i64 = 1;

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
    if version == 0 {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {V1} COMMIT;"))?;
    }
    Ok(Version::Current)
}
