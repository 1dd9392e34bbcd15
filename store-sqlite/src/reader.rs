//! The thread that owns the reading connection: look-ups, listings and counts
//! run here, beside the writer's transactions instead of between them (WAL
//! lets one writer and readers work at once). A read sees every commit that
//! ended before it began, so a caller that awaited a write reads what it wrote.

use std::sync::mpsc::Receiver;

use rusqlite::Connection;

use crate::writer::{run, MAX_BATCH};

/// A read job: runs on the reading connection, inside a read transaction.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Serves read jobs until every sender is gone, all the pending ones in one
/// read transaction at a time.
pub(crate) fn serve(conn: Connection, jobs: Receiver<ReadJob>) {
    while let Ok(first) = jobs.recv() {
        let reads: Vec<ReadJob> = std::iter::once(first)
            .chain(jobs.try_iter().take(MAX_BATCH - 1))
            .collect();
        read_all(&conn, reads);
    }
}

/// Runs the reads in one read transaction: a statement outside one opens and
/// ends its own, taking and releasing the log's shared-memory locks (system
/// calls) for every row a look-up reads.
fn read_all(conn: &Connection, reads: Vec<ReadJob>) {
    // Without the transaction each read still works on its own.
    let began = run(conn, "BEGIN").is_ok();
    for read in reads {
        read(conn);
    }
    if began && run(conn, "COMMIT").is_err() {
        let _ = run(conn, "ROLLBACK");
    }
}
