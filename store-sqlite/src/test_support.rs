//! What this crate's tests share.

use rusqlite::types::FromSql;
use rusqlite::Connection;

/// The first column of every row `sql` returns, in order.
pub(crate) fn column<T: FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The steps of SQLite's plan for `sql` (`EXPLAIN QUERY PLAN`'s details).
pub(crate) fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map([], |r| r.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}
