//! The one thread that owns the connection: it takes every pending job, runs the
//! writes of all of them in one transaction (group commit), answers them once
//! the commit is durable, then serves the reads.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::{Connection, ErrorCode};
use task_source::{SourceError, SourceHealth};

/// Answers one write job once its transaction ended: `None` committed, else the error.
pub(crate) type Finish = Box<dyn FnOnce(Option<SourceError>) + Send>;

/// A write job: runs its statements (or, given no connection, only returns its
/// answer) and returns how to answer it and the error of its statements.
pub(crate) type WriteJob =
    Box<dyn FnOnce(Option<&Connection>) -> (Finish, Option<rusqlite::Error>) + Send>;

/// A read job: runs on the connection outside any write transaction.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// A job for the writer thread.
pub(crate) enum Job {
    Write(WriteJob),
    Read(ReadJob),
}

/// Most jobs taken into one transaction.
const MAX_BATCH: usize = 4096;

/// What the writer thread shares with the rest: health and commit figures.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) health: Mutex<SourceHealth>,
    pub(crate) commits: Mutex<Commits>,
}

/// Commit counts and latencies.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Commits {
    pub(crate) count: u64,
    pub(crate) last_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) sum_ms: f64,
}

impl Shared {
    pub(crate) fn new(health: SourceHealth) -> Self {
        Self {
            health: Mutex::new(health),
            commits: Mutex::new(Commits::default()),
        }
    }

    fn set_health(&self, health: SourceHealth) {
        let mut guard = match self.health.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if *guard != health {
            match &health {
                SourceHealth::Ok => tracing::info!("the task store writes again"),
                SourceHealth::Failing { reason } => {
                    tracing::error!(%reason, "the task store cannot write; new tasks are refused");
                }
            }
            *guard = health;
        }
    }

    fn committed(&self, ms: f64) {
        let mut c = match self.commits.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        c.count += 1;
        c.last_ms = ms;
        c.max_ms = c.max_ms.max(ms);
        c.sum_ms += ms;
    }
}

/// Maps an SQLite error to the source's error, naming the cause.
pub(crate) fn classify(e: &rusqlite::Error) -> SourceError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => SourceError::Unwritable(format!("disk full ({e})")),
        Some(ErrorCode::ReadOnly) => SourceError::Unwritable(format!("read-only ({e})")),
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
            SourceError::Unwritable(format!("I/O error ({e})"))
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            SourceError::Unwritable(format!("the store is corrupt ({e})"))
        }
        _ => SourceError::Backend(e.to_string()),
    }
}

/// Serves jobs until every sender is gone.
pub(crate) fn serve(conn: Connection, jobs: Receiver<Job>, shared: Arc<Shared>) {
    while let Ok(first) = jobs.recv() {
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut take = |job| match job {
            Job::Write(w) => writes.push(w),
            Job::Read(r) => reads.push(r),
        };
        take(first);
        for _ in 1..MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => take(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if !writes.is_empty() {
            commit(&conn, writes, &shared);
        }
        if !reads.is_empty() {
            read_all(&conn, reads);
        }
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

/// Runs one statement of transaction control, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn commit(conn: &Connection, writes: Vec<WriteJob>, shared: &Shared) {
    let started = Instant::now();
    if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
        let error = classify(&e);
        note_failure(shared, &error);
        for w in writes {
            let (finish, _) = w(None);
            finish(Some(error.clone()));
        }
        return;
    }
    let changes_before = conn.total_changes();
    let mut finishes = Vec::with_capacity(writes.len());
    let mut failed = None;
    for w in writes {
        let (finish, error) = w(Some(conn));
        finishes.push(finish);
        if failed.is_none() {
            failed = error;
        }
    }
    let result = match failed {
        None => run(conn, "COMMIT"),
        Some(e) => Err(e),
    };
    match result {
        Ok(()) => {
            // Only a commit that wrote something proves the store writes again.
            if conn.total_changes() != changes_before {
                shared.committed(started.elapsed().as_secs_f64() * 1000.0);
                shared.set_health(SourceHealth::Ok);
            }
            for finish in finishes {
                finish(None);
            }
        }
        Err(e) => {
            let _ = run(conn, "ROLLBACK");
            let error = classify(&e);
            note_failure(shared, &error);
            for finish in finishes {
                finish(Some(error.clone()));
            }
        }
    }
}

fn note_failure(shared: &Shared, error: &SourceError) {
    match error {
        SourceError::Unwritable(reason) => shared.set_health(SourceHealth::Failing {
            reason: reason.clone(),
        }),
        other => tracing::warn!(error = %other, "a task store transaction failed"),
    }
}
