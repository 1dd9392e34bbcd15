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

/// A small echo task with id `id`, priority 10.
pub(crate) fn new_task(id: &str) -> task_source::NewTask {
    task_source::NewTask {
        id: id.to_owned(),
        task_type: "echo".to_owned(),
        payload: "1".to_owned(),
        priority: 10,
        timeout_ms: None,
    }
}

/// The record of [`new_task`]`(id)`, just accepted.
pub(crate) fn accepted(id: &str) -> Box<crate::live::Live> {
    Box::new(crate::live::Live::accepted(new_task(id), 0))
}

/// An empty store in memory, at the current schema, and its overlay.
pub(crate) fn empty_overlay() -> (Connection, crate::overlay::Overlay) {
    let conn = Connection::open_in_memory().unwrap();
    crate::schema::migrate(&conn).unwrap();
    let overlay = crate::overlay::Overlay::load(&conn, None).unwrap();
    (conn, overlay)
}
