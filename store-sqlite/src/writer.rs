//! The one thread that owns the connection: it takes every pending job, runs the
//! writes of all of them in one transaction (group commit), answers them once
//! the commit is durable, then serves the reads.
//!
//! One job whose statements fail fails its whole batch: it is rolled back,
//! every job of it is answered with that error (the daemon keeps outcomes
//! and claims again; a refused submission says why), and the jobs after the
//! failed one are not run (SQLite ends the transaction itself on some errors,
//! such as a full disk, and a job run after that would commit one statement
//! at a time while being answered with the error). A savepoint per job would
//! let the others commit, at about 2 % more instructions a task (SQLite
//! journals every page a job first touches); no job but retention's (which
//! commits apart) fails on its own often enough to pay for that.

use std::sync::mpsc::Receiver;
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
    /// Committed with the other writes pending at the time.
    Write(WriteJob),
    /// Committed in a transaction of its own, after the writes sent before it
    /// (retention's deletes: however many they are, they hold up no other
    /// request's commit, and their failure fails no other request).
    WriteAlone(WriteJob),
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
        let taken = std::iter::once(first).chain(jobs.try_iter().take(MAX_BATCH - 1));
        for job in taken {
            match job {
                Job::Write(w) => writes.push(w),
                Job::WriteAlone(w) => {
                    if !writes.is_empty() {
                        commit(&conn, std::mem::take(&mut writes), &shared);
                    }
                    commit(&conn, vec![w], &shared);
                }
                Job::Read(r) => reads.push(r),
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
        // After a failure nothing more runs: the batch is rolled back.
        let (finish, error) = w(failed.is_none().then_some(conn));
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
            // A no-op when SQLite ended the transaction itself.
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// What a test job saw: whether its statements ran, and its answer.
    type Seen = mpsc::Receiver<(bool, Option<SourceError>)>;

    /// A job that runs `sql` (a failing statement fails the job).
    fn job(sql: &'static str) -> (WriteJob, Seen) {
        let (tx, rx) = mpsc::channel();
        let job: WriteJob = Box::new(move |conn| {
            let ran = conn.is_some();
            let error = conn.and_then(|c| c.execute_batch(sql).err());
            let finish: Finish = Box::new(move |answer| {
                let _ = tx.send((ran, answer));
            });
            (finish, error)
        });
        (job, rx)
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_failing_job_fails_its_batch_and_no_job_after_it_runs() {
        let conn = table();
        let shared = Shared::new(SourceHealth::Ok);
        let (a, seen_a) = job("INSERT INTO t VALUES (1)");
        let (b, seen_b) = job("INSERT INTO t VALUES (2); INSERT INTO nowhere VALUES (3)");
        let (c, seen_c) = job("INSERT INTO t VALUES (4)");
        commit(&conn, vec![a, b, c], &shared);
        assert_eq!(rows(&conn), Vec::<i64>::new(), "the batch is rolled back");
        let (ran, answer) = seen_a.recv().unwrap();
        assert!(ran);
        assert!(
            matches!(&answer, Some(SourceError::Backend(m)) if m.contains("nowhere")),
            "{answer:?}"
        );
        assert!(seen_b.recv().unwrap().1.is_some());
        let (ran, answer) = seen_c.recv().unwrap();
        assert!(!ran, "not run after the failure");
        assert!(answer.is_some());
        assert!(conn.is_autocommit(), "the transaction ended");
    }

    /// SQLite ends the whole transaction itself on some errors (a full disk):
    /// a job after it would otherwise commit on its own, one statement at a
    /// time, while being answered with the error.
    #[test]
    fn a_failure_that_ended_the_transaction_fails_every_job_and_runs_no_more() {
        let conn = table();
        let shared = Shared::new(SourceHealth::Ok);
        let (a, seen_a) = job("INSERT INTO t VALUES (1)");
        let (b, seen_b) = job("ROLLBACK; INSERT INTO nowhere VALUES (2)");
        let (c, seen_c) = job("INSERT INTO t VALUES (3)");
        commit(&conn, vec![a, b, c], &shared);
        assert_eq!(rows(&conn), Vec::<i64>::new(), "nothing committed");
        let (ran, answer) = seen_a.recv().unwrap();
        assert!(
            ran && answer.is_some(),
            "its rows went with the transaction"
        );
        assert!(seen_b.recv().unwrap().1.is_some());
        let (ran, answer) = seen_c.recv().unwrap();
        assert!(!ran, "not run after the transaction ended");
        assert!(answer.is_some());
    }

    #[test]
    fn a_job_sent_alone_runs_after_the_writes_before_it_committed() {
        let db =
            TempDb(std::env::temp_dir().join(format!("writer-alone-{}.db", std::process::id())));
        let path = db.0.clone();
        let file = Connection::open(&path).unwrap();
        file.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .unwrap();
        let (jobs, rx) = mpsc::channel();
        let (a, seen_a) = job("INSERT INTO t VALUES (1)");
        // What another connection sees while the lone job runs.
        let (tx, seen_alone) = mpsc::channel();
        let other_path = path.clone();
        let alone: WriteJob = Box::new(move |_| {
            let other = Connection::open(&other_path).unwrap();
            let _ = tx.send(rows(&other));
            (Box::new(|_| {}), None)
        });
        let (c, seen_c) = job("INSERT INTO t VALUES (3)");
        for j in [Job::Write(a), Job::WriteAlone(alone), Job::Write(c)] {
            jobs.send(j).unwrap();
        }
        drop(jobs);
        serve(file, rx, Arc::new(Shared::new(SourceHealth::Ok)));
        assert_eq!(
            seen_alone.recv().unwrap(),
            [1],
            "the write before it committed"
        );
        assert!(matches!(seen_a.recv().unwrap(), (true, None)));
        assert!(matches!(seen_c.recv().unwrap(), (true, None)));
        assert_eq!(rows(&Connection::open(&path).unwrap()), [1, 3]);
    }

    /// A database file and its log, removed however the test ends.
    struct TempDb(std::path::PathBuf);

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }
}
