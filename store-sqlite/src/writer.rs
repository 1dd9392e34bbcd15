//! The one thread that owns the connection and the [`Overlay`]: it takes every
//! pending job, runs the writes of all of them in one transaction with their
//! journal entries (group commit), answers them once the commit is durable,
//! then serves the reads; and it checkpoints the overlay when one is due.
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

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use task_source::{SourceError, SourceHealth};

use crate::journal;
use crate::overlay::{Checkpoint, MemoryBound, Overlay, CHECKPOINT_AFTER};

/// Answers one write job once its transaction ended: `None` committed, else the error.
pub(crate) type Finish = Box<dyn FnOnce(Option<SourceError>) + Send>;

/// A write job: runs its statements and changes (or, given nothing, only
/// returns its answer) and returns how to answer it and the error of its
/// statements.
pub(crate) type WriteJob = Box<
    dyn FnOnce(Option<(&Connection, &mut Overlay)>) -> (Finish, Option<rusqlite::Error>) + Send,
>;

/// A read job: runs outside any write transaction, given the connection and
/// the overlay, or why the overlay could not be loaded.
pub(crate) type ReadJob = Box<dyn FnOnce(Result<(&Connection, &Overlay), rusqlite::Error>) + Send>;

/// The connection and the tasks' overlay, owned by the writer thread.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Connection,
    overlay: Overlay,
    /// A transaction failed since the overlay was loaded: what it changed in
    /// memory was not stored, so the overlay is loaded again before its next use.
    stale: bool,
    /// The checkpoints that failed since the last one that did not.
    failed_checkpoints: Option<FailedCheckpoints>,
    /// [`JOURNAL_ROW_BYTES`], smaller in tests.
    journal_row_bytes: usize,
}

impl Store {
    /// Takes the connection and loads the overlay over its rows and journal.
    pub(crate) fn open(conn: Connection, memory: MemoryBound) -> rusqlite::Result<Self> {
        let mut overlay = Overlay::load(&conn, None)?;
        overlay.bound_memory(memory);
        Ok(Self {
            conn,
            overlay,
            stale: false,
            failed_checkpoints: None,
            journal_row_bytes: JOURNAL_ROW_BYTES,
        })
    }

    /// The connection and the overlay, loaded again first if a transaction
    /// failed since it was.
    fn parts(&mut self) -> rusqlite::Result<(&Connection, &mut Overlay)> {
        if self.stale {
            // Should the load fail, the filter is gone with the old overlay
            // and the next load builds one.
            let known = self.overlay.take_known();
            let memory = self.overlay.memory_bound();
            self.overlay = Overlay::load(&self.conn, known)?;
            self.overlay.bound_memory(memory);
            self.stale = false;
        }
        Ok((&self.conn, &mut self.overlay))
    }

    /// How long to wait for a request before a slice of rows is written
    /// (none once `idle`); `None` when no row waits. An overlay a failed
    /// transaction left stale is loaded again first (what it says is not
    /// what is stored); should that fail, the next try is a while away.
    /// After failed checkpoints, the next is tried at its time whatever the
    /// overlay says (see [`idle_checkpoint`](Self::idle_checkpoint)).
    fn checkpoint_in(&mut self, idle: bool) -> Option<Duration> {
        let due = match self.parts() {
            Ok((_, overlay)) => overlay.checkpoint_in(idle),
            Err(_) => Some(CHECKPOINT_AFTER),
        };
        match &self.failed_checkpoints {
            Some(failed) => {
                let retry = failed.retry_at.saturating_duration_since(Instant::now());
                Some(due.map_or(retry, |due| due.max(retry)))
            }
            None => due,
        }
    }

    /// The checkpoint due now, if one is: after failed ones, none before the
    /// retry's time.
    fn checkpoint_due(&self) -> Option<Checkpoint> {
        self.overlay.checkpoint_due().filter(|_| {
            self.failed_checkpoints
                .as_ref()
                .is_none_or(|failed| Instant::now() >= failed.retry_at)
        })
    }

    /// The checkpoint to run once no request came: after failed ones, a full
    /// one (only a checkpoint that leaves nothing unwritten shows the rows can
    /// be written again), else the overlay's.
    fn idle_checkpoint(&self) -> Checkpoint {
        if self.failed_checkpoints.is_some() {
            Checkpoint::Full
        } else {
            self.overlay.idle_checkpoint()
        }
    }
}

/// Checkpoints that failed in a row (each for a reason the transaction's
/// error logged), and when to try the next.
#[derive(Debug, Clone, Copy)]
struct FailedCheckpoints {
    in_a_row: u32,
    retry_at: Instant,
}

/// Checkpoints failed in a row past which the store reports itself failing:
/// its journal grows, and each request replays it, until one succeeds.
const FAILING_AFTER_CHECKPOINTS: u32 = 3;

/// A job for the writer thread.
pub(crate) enum Job {
    /// Committed with the other writes pending at the time.
    Write(WriteJob),
    /// Committed in a transaction of its own, after the writes sent before it
    /// (retention's deletes: however many they are, they hold up no other
    /// request's commit, and their failure fails no other request).
    WriteAlone(WriteJob),
    Read(ReadJob),
    /// Ends the writer once the jobs sent before it are answered: the rows
    /// written, the connection closed, then the sender told. Jobs sent after
    /// it fail as closed.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// Most jobs taken into one transaction.
const MAX_BATCH: usize = 4096;

/// The size past which a transaction's journal entries so far go in a row of
/// their own, the rest in the next (a job's entries stay in one row): well
/// under SQLite's 1 GB limit on a value, with one request's entries on top.
const JOURNAL_ROW_BYTES: usize = 256 << 20;

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

/// Serves jobs until every sender is gone, then checkpoints. Rows are
/// written while no job waits, a slice at a time (`overlay/checkpoint.rs`).
pub(crate) fn serve(mut store: Store, jobs: Receiver<Job>, shared: Arc<Shared>) {
    // No job came since the last slice was written: the next one follows at once.
    let mut idle = false;
    let closed_by = loop {
        let first = match store.checkpoint_in(idle) {
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break None,
            },
            Some(wait) => match jobs.recv_timeout(wait) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    idle = true;
                    let which = store.idle_checkpoint();
                    checkpoint(&mut store, &shared, which);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break None,
            },
        };
        idle = false;
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut close = None;
        let taken = std::iter::once(first).chain(jobs.try_iter().take(MAX_BATCH - 1));
        for job in taken {
            match job {
                Job::Write(w) => writes.push(w),
                Job::WriteAlone(w) => {
                    if !writes.is_empty() {
                        commit(&mut store, std::mem::take(&mut writes), &shared);
                    }
                    commit(&mut store, vec![w], &shared);
                }
                Job::Read(r) => reads.push(r),
                Job::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
        }
        if !writes.is_empty() {
            commit(&mut store, writes, &shared);
        }
        if !reads.is_empty() {
            read_all(&mut store, reads);
        }
        if close.is_some() {
            break close;
        }
        if let Some(which) = store.checkpoint_due() {
            checkpoint(&mut store, &shared, which);
        }
    };
    // Closed: every row written, the journal empty (as the store holds them:
    // an overlay a failed transaction left stale is loaded again first).
    if store
        .parts()
        .is_ok_and(|(_, overlay)| overlay.has_unwritten())
    {
        checkpoint(&mut store, &shared, Checkpoint::Full);
    }
    // The file let go before the closer hears of it; jobs still queued (sent
    // after the close) fail as closed with the channel.
    drop(store);
    drop(jobs);
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

/// Writes the rows of the changed tasks `which` says in a transaction of its
/// own; after a failure the next is tried no sooner than `CHECKPOINT_AFTER`,
/// and past [`FAILING_AFTER_CHECKPOINTS`] failures in a row the store's
/// health says so until a checkpoint leaves nothing unwritten (a slice that
/// succeeds proves only its own rows).
fn checkpoint(store: &mut Store, shared: &Shared, which: Checkpoint) {
    let job: WriteJob = Box::new(move |parts| {
        let error = parts.and_then(|(conn, overlay)| overlay.checkpoint(conn, which).err());
        let finish: Finish = Box::new(|_| {});
        (finish, error)
    });
    if commit(store, vec![job], shared) {
        if store.overlay.has_unwritten() {
            return;
        }
        if store
            .failed_checkpoints
            .take()
            .is_some_and(|f| f.in_a_row >= FAILING_AFTER_CHECKPOINTS)
        {
            shared.set_health(SourceHealth::Ok);
        }
        return;
    }
    let in_a_row = store.failed_checkpoints.map_or(0, |f| f.in_a_row) + 1;
    store.failed_checkpoints = Some(FailedCheckpoints {
        in_a_row,
        retry_at: Instant::now() + CHECKPOINT_AFTER,
    });
    if in_a_row >= FAILING_AFTER_CHECKPOINTS {
        shared.set_health(SourceHealth::Failing {
            reason: format!(
                "{in_a_row} checkpoints in a row failed to write the tasks' rows (see the \
                 log): the journal grows until one succeeds"
            ),
        });
    }
}

/// Runs the reads in one read transaction: a statement outside one opens and
/// ends its own, taking and releasing the log's shared-memory locks (system
/// calls) for every row a look-up reads.
fn read_all(store: &mut Store, reads: Vec<ReadJob>) {
    // Without the transaction each read still works on its own.
    let began = run(&store.conn, "BEGIN").is_ok();
    for read in reads {
        match store.parts() {
            Ok((conn, overlay)) => read(Ok((conn, overlay))),
            Err(e) => read(Err(e)),
        }
    }
    if began && run(&store.conn, "COMMIT").is_err() {
        let _ = run(&store.conn, "ROLLBACK");
    }
}

/// Runs one statement of transaction control, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `writes` in one transaction with their journal row and answers each;
/// `true` when it committed.
fn commit(store: &mut Store, writes: Vec<WriteJob>, shared: &Shared) -> bool {
    let started = Instant::now();
    let row_bytes = store.journal_row_bytes;
    // Failing checkpoints keep the store failing whatever else it writes.
    let checkpoints_write = store
        .failed_checkpoints
        .is_none_or(|f| f.in_a_row < FAILING_AFTER_CHECKPOINTS);
    let (conn, overlay) = match store.parts() {
        Ok(parts) => parts,
        Err(e) => {
            fail_all(writes, &classify(&e), shared);
            return false;
        }
    };
    if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
        fail_all(writes, &classify(&e), shared);
        return false;
    }
    let changes_before = conn.total_changes();
    let mut finishes = Vec::with_capacity(writes.len());
    let mut failed = None;
    for w in writes {
        // After a failure nothing more runs: the batch is rolled back.
        let parts = match failed {
            None => Some((conn, &mut *overlay)),
            Some(_) => None,
        };
        let (finish, error) = w(parts);
        finishes.push(finish);
        if failed.is_none() {
            failed = error;
        }
        // A journal row holds what the jobs so far changed once it passes
        // its size: SQLite refuses a value past 1 GB, and a batch of large
        // submissions together could pass that.
        if failed.is_none() && overlay.pending_bytes() >= row_bytes {
            if let Some((row, entries)) = overlay.take_pending() {
                failed = journal::append(conn, row, &entries).err();
            }
        }
    }
    if let Some((row, entries)) = overlay.take_pending() {
        if failed.is_none() {
            failed = journal::append(conn, row, &entries).err();
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
                if checkpoints_write {
                    shared.set_health(SourceHealth::Ok);
                }
            }
            for finish in finishes {
                finish(None);
            }
            true
        }
        Err(e) => {
            // A no-op when SQLite ended the transaction itself.
            let _ = run(conn, "ROLLBACK");
            // What the jobs changed in memory was not stored.
            store.stale = true;
            let error = classify(&e);
            note_failure(shared, &error);
            for finish in finishes {
                finish(Some(error.clone()));
            }
            false
        }
    }
}

/// Answers every job of a batch that could not begin with `error`.
fn fail_all(writes: Vec<WriteJob>, error: &SourceError, shared: &Shared) {
    note_failure(shared, error);
    for w in writes {
        let (finish, _) = w(None);
        finish(Some(error.clone()));
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
    use crate::test_support::new_task;

    /// What a test job saw: whether its statements ran, and its answer.
    type Seen = mpsc::Receiver<(bool, Option<SourceError>)>;

    /// A job that runs `sql` (a failing statement fails the job).
    fn job(sql: &'static str) -> (WriteJob, Seen) {
        let (tx, rx) = mpsc::channel();
        let job: WriteJob = Box::new(move |parts| {
            let ran = parts.is_some();
            let error = parts.and_then(|(c, _)| c.execute_batch(sql).err());
            let finish: Finish = Box::new(move |answer| {
                let _ = tx.send((ran, answer));
            });
            (finish, error)
        });
        (job, rx)
    }

    /// A store in memory with a table `t` beside the tasks'.
    fn table() -> Store {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        Store::open(conn, MemoryBound::default()).unwrap()
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        crate::test_support::column(conn, "SELECT x FROM t ORDER BY x")
    }

    #[test]
    fn a_failing_job_fails_its_batch_and_no_job_after_it_runs() {
        let mut store = table();
        let shared = Shared::new(SourceHealth::Ok);
        let (a, seen_a) = job("INSERT INTO t VALUES (1)");
        let (b, seen_b) = job("INSERT INTO t VALUES (2); INSERT INTO nowhere VALUES (3)");
        let (c, seen_c) = job("INSERT INTO t VALUES (4)");
        commit(&mut store, vec![a, b, c], &shared);
        let conn = &store.conn;
        assert_eq!(rows(conn), Vec::<i64>::new(), "the batch is rolled back");
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
        let mut store = table();
        let shared = Shared::new(SourceHealth::Ok);
        let (a, seen_a) = job("INSERT INTO t VALUES (1)");
        let (b, seen_b) = job("ROLLBACK; INSERT INTO nowhere VALUES (2)");
        let (c, seen_c) = job("INSERT INTO t VALUES (3)");
        commit(&mut store, vec![a, b, c], &shared);
        assert_eq!(rows(&store.conn), Vec::<i64>::new(), "nothing committed");
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
        crate::schema::migrate(&file).unwrap();
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
        serve(
            Store::open(file, MemoryBound::default()).unwrap(),
            rx,
            Arc::new(Shared::new(SourceHealth::Ok)),
        );
        assert_eq!(
            seen_alone.recv().unwrap(),
            [1],
            "the write before it committed"
        );
        assert!(matches!(seen_a.recv().unwrap(), (true, None)));
        assert!(matches!(seen_c.recv().unwrap(), (true, None)));
        assert_eq!(rows(&Connection::open(&path).unwrap()), [1, 3]);
    }

    /// A write job that runs `f` on the connection and the overlay.
    fn op<T: Send + 'static>(
        f: impl FnOnce(&Connection, &mut Overlay) -> rusqlite::Result<T> + Send + 'static,
    ) -> (WriteJob, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel();
        let job: WriteJob = Box::new(move |parts| {
            let (value, error) = match parts.map(|(conn, overlay)| f(conn, overlay)) {
                Some(Ok(value)) => (Some(value), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            let finish: Finish = Box::new(move |answer| {
                if let (None, Some(value)) = (answer, value) {
                    let _ = tx.send(value);
                }
            });
            (finish, error)
        });
        (job, rx)
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// What the commits answered is in the journal only (no checkpoint ran,
    /// as after `kill -9`); opening the store again replays it.
    #[test]
    fn what_the_commits_answered_survives_a_crash_before_any_checkpoint() {
        use task_source::{ErrorInfo, Outcome, Settlement, TaskState};
        let db = StoreFile::new("crash");
        let open = || db.open();
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = open();
        let (accept, _) = op(|c, o| o.accept(c, ["a", "b", "c"].map(new_task).to_vec(), 1, None));
        commit(&mut store, vec![accept], &shared);
        let (claim, claimed) = op(|c, o| o.claim(c, 2, 2));
        commit(&mut store, vec![claim], &shared);
        let claimed: Vec<String> = claimed
            .recv()
            .unwrap()
            .into_iter()
            .map(|c| c.task.id)
            .collect();
        assert_eq!(claimed, ["a", "b"]);
        let error = ErrorInfo {
            kind: "boom".into(),
            message: "it broke".into(),
        };
        let outcomes = vec![
            settled("a", 1, TaskState::Ok, "{\"id\":\"a\"}"),
            Settlement {
                id: "b".into(),
                attempt: 1,
                outcome: Outcome::Retry { due_ms: 50, error },
            },
        ];
        let (settle, _) = op(move |c, o| o.settle(c, outcomes, 3));
        commit(&mut store, vec![settle], &shared);
        assert_eq!(count(&store.conn, "journal"), 3, "one row a commit");
        assert_eq!(count(&store.conn, "tasks"), 0, "no checkpoint ran");
        drop(store);

        let mut store = open();
        let ids = ["a", "b", "c", "d"].map(String::from);
        let (conn, overlay) = store.parts().unwrap();
        let seen = overlay.status(conn, &ids).unwrap();
        let states: Vec<_> = seen
            .iter()
            .map(|s| s.as_ref().map(|s| (s.state, s.attempts)))
            .collect();
        assert_eq!(
            states,
            [
                Some((TaskState::Ok, 1)),
                Some((TaskState::Retrying, 1)),
                Some((TaskState::Queued, 0)),
                None
            ]
        );
        assert_eq!(
            seen[0].as_ref().unwrap().line.as_deref(),
            Some("{\"id\":\"a\"}")
        );
        let claimed: Vec<(String, u32)> = overlay
            .claim(conn, 5, 100)
            .unwrap()
            .into_iter()
            .map(|c| (c.task.id, c.attempt))
            .collect();
        assert_eq!(
            claimed,
            [("b".to_owned(), 2), ("c".to_owned(), 1)],
            "the retry kept its place and its attempt count"
        );
        let (row, entries) = overlay.take_pending().unwrap();
        journal::append(conn, row, &entries).unwrap();
        overlay.checkpoint(conn, Checkpoint::Full).unwrap();
        assert_eq!(count(conn, "journal"), 0);
        assert_eq!(count(conn, "tasks"), 3);
    }

    /// Checkpoints that keep failing (here a trigger refuses every row) make
    /// the store report itself failing after a few in a row, whatever else
    /// it still commits meanwhile, until one leaves nothing unwritten.
    #[test]
    fn checkpoints_that_keep_failing_show_in_the_health_until_one_succeeds() {
        let db = StoreFile::new("jammed");
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = db.open();
        let failing = || matches!(*shared.health.lock().unwrap(), SourceHealth::Failing { .. });
        store
            .conn
            .execute_batch(
                "CREATE TEMP TRIGGER jam BEFORE INSERT ON main.tasks
                 BEGIN SELECT RAISE(ABORT, 'jammed'); END;",
            )
            .unwrap();
        for round in 1..=FAILING_AFTER_CHECKPOINTS {
            let id = format!("t{round}");
            let (accept, _) = op(move |c, o| o.accept(c, vec![new_task(&id)], 1, None));
            assert!(
                commit(&mut store, vec![accept], &shared),
                "the journal takes it"
            );
            assert!(
                !failing(),
                "round {round}: the commit proves nothing of the rows"
            );
            checkpoint(&mut store, &shared, Checkpoint::Full);
        }
        assert!(failing(), "{FAILING_AFTER_CHECKPOINTS} checkpoints failed");
        let (accept, _) = op(|c, o| o.accept(c, vec![new_task("more")], 1, None));
        assert!(commit(&mut store, vec![accept], &shared));
        assert!(failing(), "a commit of the journal does not clear it");
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert!(failing(), "a slice that succeeds leaves the rest unwritten");
        assert_eq!(store.idle_checkpoint(), Checkpoint::Full, "tried next");
        store.conn.execute_batch("DROP TRIGGER temp.jam").unwrap();
        checkpoint(&mut store, &shared, Checkpoint::Full);
        assert!(!failing(), "the rows are written again");
        assert_eq!(count(&store.conn, "journal"), 0);
    }

    /// A timeout or a retry's due time past SQLite's largest integer (a
    /// caller of the source's API, not the daemon, which caps both) is
    /// written as the largest: the checkpoint writes the row instead of
    /// failing on it for ever, and the task reads back as it was in effect.
    #[test]
    fn values_past_the_largest_integer_are_written_as_the_largest() {
        use task_source::{ErrorInfo, Outcome, Settlement, TaskState};
        let db = StoreFile::new("huge");
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = db.open();
        let task = task_source::NewTask {
            timeout_ms: Some(u64::MAX),
            ..new_task("far")
        };
        let (accept, _) = op(move |c, o| o.accept(c, vec![task], 1, None));
        commit(&mut store, vec![accept], &shared);
        let (claim, _) = op(|c, o| o.claim(c, 1, 2));
        commit(&mut store, vec![claim], &shared);
        let retry = Settlement {
            id: "far".into(),
            attempt: 1,
            outcome: Outcome::Retry {
                due_ms: u64::MAX,
                error: ErrorInfo {
                    kind: "later".into(),
                    message: "much later".into(),
                },
            },
        };
        let (settle, _) = op(move |c, o| o.settle(c, vec![retry], 3));
        commit(&mut store, vec![settle], &shared);
        let (conn, overlay) = store.parts().unwrap();
        overlay.checkpoint(conn, Checkpoint::Full).unwrap();
        assert_eq!(count(conn, "journal"), 0, "the row is written");
        let (due, timeout): (i64, i64) = conn
            .query_row("SELECT due_ms, timeout_ms FROM tasks", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((due, timeout), (i64::MAX, i64::MAX));
        drop(store);
        let mut store = db.open();
        let (conn, overlay) = store.parts().unwrap();
        let status = overlay.status(conn, &["far".to_owned()]).unwrap();
        assert_eq!(
            status[0].as_ref().map(|s| s.state),
            Some(TaskState::Retrying)
        );
        let now = task_source::now_ms();
        assert!(
            overlay.claim(conn, 1, now).unwrap().is_empty(),
            "not due yet"
        );
    }

    /// A transaction whose journal entries pass a row's size writes them in
    /// several rows, a job's entries whole in one; a replay after a crash
    /// reads them all back.
    #[test]
    fn a_large_transaction_writes_its_journal_in_several_rows() {
        let db = StoreFile::new("rows");
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = db.open();
        store.journal_row_bytes = 1_000;
        let ids: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
        let jobs: Vec<WriteJob> = ids
            .chunks(10)
            .map(|chunk| {
                let tasks: Vec<_> = chunk
                    .iter()
                    .map(|id| task_source::NewTask {
                        payload: "x".repeat(50),
                        ..new_task(id)
                    })
                    .collect();
                op(move |c, o| o.accept(c, tasks, 1, None)).0
            })
            .collect();
        assert!(commit(&mut store, jobs, &shared));
        let sizes: Vec<i64> =
            crate::test_support::column(&store.conn, "SELECT length(entries) FROM journal");
        assert_eq!(
            sizes.len(),
            2,
            "a row past 1 000 bytes, then the rest: {sizes:?}"
        );
        assert!(sizes[0] >= 1_000 && sizes[0] < 2_000, "{sizes:?}");
        drop(store);
        let mut store = db.open();
        let (conn, overlay) = store.parts().unwrap();
        let seen = overlay.status(conn, &ids).unwrap();
        assert!(seen.iter().all(Option::is_some), "every task came back");
    }

    /// A checkpoint of the settled tasks writes their rows and keeps the
    /// journal from the oldest change still unwritten; a replay after a crash
    /// skips the entries the rows hold, so no change is applied twice.
    #[test]
    fn a_replay_over_rows_written_since_applies_no_change_twice() {
        use task_source::{ErrorInfo, Outcome, Settlement, TaskState};
        let db = StoreFile::new("replay");
        let open = || db.open();
        let done = |id: &str, attempt: u32| {
            settled(id, attempt, TaskState::Ok, &format!("{{\"id\":\"{id}\"}}"))
        };
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = open();
        let steps: Vec<WriteJob> = vec![
            op(|c, o| o.accept(c, ["a", "b"].map(new_task).to_vec(), 1, None)).0,
            op(|c, o| o.claim(c, 2, 2)).0,
            op(move |c, o| {
                let retry = Settlement {
                    id: "b".into(),
                    attempt: 1,
                    outcome: Outcome::Retry {
                        due_ms: 0,
                        error: ErrorInfo {
                            kind: "boom".into(),
                            message: "again".into(),
                        },
                    },
                };
                o.settle(c, vec![done("a", 1), retry], 3)
            })
            .0,
        ];
        commit_each(&mut store, steps, &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert_eq!(
            count(&store.conn, "tasks"),
            1,
            "only the settled task's row"
        );
        assert_eq!(
            count(&store.conn, "journal"),
            3,
            "b's changes are in every row"
        );
        let steps: Vec<WriteJob> = vec![
            op(|c, o| o.claim(c, 2, 4)).0,
            op(move |c, o| o.settle(c, vec![done("b", 2)], 5)).0,
        ];
        commit_each(&mut store, steps, &shared);
        drop(store);

        let mut store = open();
        let (conn, overlay) = store.parts().unwrap();
        let records = overlay.get(conn, &["a".into(), "b".into()]).unwrap();
        let lives: Vec<_> = records
            .iter()
            .map(|r| {
                let r = r.as_ref().unwrap();
                let events: Vec<(&str, u32)> = r
                    .history
                    .iter()
                    .map(|h| (h.event.as_str(), h.attempt))
                    .collect();
                (r.state, r.attempts, events)
            })
            .collect();
        assert_eq!(
            lives,
            [
                (TaskState::Ok, 1, vec![("attempt", 1), ("ok", 1)]),
                (
                    TaskState::Ok,
                    2,
                    vec![("attempt", 1), ("retry", 1), ("attempt", 2), ("ok", 2)]
                ),
            ]
        );
        assert!(overlay.claim(conn, 5, 10).unwrap().is_empty());
        assert_eq!(overlay.unsettled(crate::ops::unsettled(conn).unwrap()), 0);
    }

    /// A dead letter requeued, run and dead-lettered again has its row
    /// written in that state while an older, unwritten task keeps the
    /// journal. The replayed requeue is older than the row, yet the row's
    /// state (a dead letter) would let it apply, and the run after it again:
    /// only the versions tell that the row holds them.
    #[test]
    fn a_replayed_requeue_older_than_the_row_is_not_applied_again() {
        use task_source::TaskState;
        let db = StoreFile::new("requeue");
        let open = || db.open();
        let dead = |attempt: u32| settled("a", attempt, TaskState::DeadLetter, "{\"id\":\"a\"}");
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = open();
        let steps: Vec<WriteJob> = vec![
            accept_a_then_b_at_a_lower_priority(),
            op(|c, o| o.claim(c, 1, 2)).0,
            op(move |c, o| o.settle(c, vec![dead(1)], 3)).0,
            op(|c, o| o.requeue_dead(c, Some(vec!["a".into()]), 4)).0,
            op(|c, o| o.claim(c, 1, 5)).0,
            op(move |c, o| o.settle(c, vec![dead(1)], 6)).0,
        ];
        commit_each(&mut store, steps, &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert_eq!(count(&store.conn, "tasks"), 1, "a's row, dead again");
        assert!(count(&store.conn, "journal") > 0, "kept for b");
        drop(store);

        let mut store = open();
        let (conn, overlay) = store.parts().unwrap();
        let seen = overlay.status(conn, &["a".into(), "b".into()]).unwrap();
        let states: Vec<_> = seen.iter().map(|s| s.as_ref().map(|s| s.state)).collect();
        assert_eq!(
            states,
            [Some(TaskState::DeadLetter), Some(TaskState::Queued)]
        );
        let claimed: Vec<String> = overlay
            .claim(conn, 5, 10)
            .unwrap()
            .into_iter()
            .map(|c| c.task.id)
            .collect();
        assert_eq!(claimed, ["b"], "the dead letter stays out of the queue");
        let record = overlay.get(conn, &["a".into()]).unwrap().remove(0).unwrap();
        let events: Vec<(&str, u32)> = record
            .history
            .iter()
            .map(|h| (h.event.as_str(), h.attempt))
            .collect();
        assert_eq!(
            events,
            [
                ("attempt", 1),
                ("dead_letter", 1),
                ("requeued", 0),
                ("attempt", 1),
                ("dead_letter", 1)
            ],
            "each change once"
        );
    }

    /// Retention deletes rows only after every row was written and the
    /// journal emptied: a replay after a crash finds no entry of a pruned
    /// task to bring it back, and its id can be used again.
    #[test]
    fn a_pruned_task_stays_gone_after_a_crash_and_its_id_is_new_again() {
        use task_source::{Admission, TaskState};
        let db = StoreFile::new("prune");
        let open = || db.open();
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = open();
        let done = settled("a", 1, TaskState::Ok, "{}");
        let steps: Vec<WriteJob> = vec![
            // `x` keeps running: its acceptance keeps the journal.
            op(|c, o| o.accept(c, ["x", "a"].map(new_task).to_vec(), 1, None)).0,
            op(|c, o| o.claim(c, 2, 2)).0,
            op(move |c, o| o.settle(c, vec![done], 3)).0,
        ];
        commit_each(&mut store, steps, &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        let (prune, pruned) = op(|c, o| {
            o.on_rows(c, |c| {
                crate::ops::prune(c, 10, None, 100, 0).map(|(n, _)| n)
            })
        });
        commit(&mut store, vec![prune], &shared);
        assert_eq!(pruned.recv().unwrap(), 1);
        drop(store);

        let mut store = open();
        let (conn, overlay) = store.parts().unwrap();
        let seen = overlay.status(conn, &["a".into(), "x".into()]).unwrap();
        let states: Vec<_> = seen.iter().map(|s| s.as_ref().map(|s| s.state)).collect();
        assert_eq!(states, [None, Some(TaskState::Running)]);
        assert_eq!(
            overlay.accept(conn, vec![new_task("a")], 4, None).unwrap(),
            [Admission::Accepted]
        );
    }

    /// Records a replay loaded from their rows and left unchanged do not stay
    /// in memory: a purge that deletes such a dead letter's row leaves no
    /// trace of it, and its id is new again.
    #[test]
    fn a_purged_dead_letter_leaves_nothing_in_memory() {
        use task_source::{Admission, TaskState};
        let db = StoreFile::new("purge");
        let open = || db.open();
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = open();
        let dead = settled("a", 1, TaskState::DeadLetter, "{}");
        let steps: Vec<WriteJob> = vec![
            accept_a_then_b_at_a_lower_priority(),
            op(|c, o| o.claim(c, 1, 2)).0,
            op(move |c, o| o.settle(c, vec![dead], 3)).0,
        ];
        commit_each(&mut store, steps, &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        drop(store);

        let mut store = open();
        let (purge, purged) = op(|c, o| o.on_rows(c, crate::ops::purge_dead));
        commit(&mut store, vec![purge], &shared);
        assert_eq!(purged.recv().unwrap(), ["a"]);
        let (conn, overlay) = store.parts().unwrap();
        assert_eq!(overlay.status(conn, &["a".into()]).unwrap(), [None]);
        assert_eq!(
            overlay
                .requeue_dead(conn, Some(vec!["a".into()]), 4)
                .unwrap(),
            [("a".to_owned(), task_source::Requeue::Unknown)]
        );
        assert_eq!(
            overlay.accept(conn, vec![new_task("a")], 5, None).unwrap(),
            [Admission::Accepted]
        );
    }

    /// The filter of known ids fills (it is small in these tests), is built
    /// again inside an acceptance, and is kept across a reload after a failed
    /// transaction: every id accepted before is still answered as known.
    #[test]
    fn ids_stay_known_across_the_filter_s_rebuilds_and_a_reload() {
        use task_source::{Admission, Settlement, TaskState};
        let mut store = table();
        let shared = Shared::new(SourceHealth::Ok);
        let ids: Vec<String> = (0..300).map(|i| format!("id-{i}")).collect();
        for chunk in ids.chunks(50) {
            let tasks: Vec<_> = chunk.iter().map(|id| new_task(id)).collect();
            let (accept, _) = op(move |c, o| o.accept(c, tasks, 1, None));
            commit(&mut store, vec![accept], &shared);
            // Half of each chunk run and settled, and written to its rows.
            let (claim, claimed) = op(|c, o| o.claim(c, 25, 2));
            commit(&mut store, vec![claim], &shared);
            let done: Vec<Settlement> = claimed
                .recv()
                .unwrap()
                .into_iter()
                .map(|c| settled(&c.task.id, c.attempt, TaskState::Ok, "{}"))
                .collect();
            let (settle, _) = op(move |c, o| o.settle(c, done, 3));
            commit(&mut store, vec![settle], &shared);
            checkpoint(&mut store, &shared, Checkpoint::Settled);
        }
        let (fail, _) = job("INSERT INTO nowhere VALUES (1)");
        commit(&mut store, vec![fail], &shared);
        let again: Vec<_> = ids.iter().map(|id| new_task(id)).collect();
        let (accept, answers) = op(move |c, o| o.accept(c, again, 4, None));
        commit(&mut store, vec![accept], &shared);
        let answers = answers.recv().unwrap();
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Admission::Known(TaskState::Ok | TaskState::Queued))),
            "{answers:?}"
        );
        assert_eq!(
            answers
                .iter()
                .filter(|a| **a == Admission::Known(TaskState::Ok))
                .count(),
            150
        );
    }

    /// A failed transaction's changes to the overlay are dropped with it: a
    /// task accepted in a batch that failed is not there afterwards.
    #[test]
    fn the_changes_of_a_failed_transaction_leave_the_overlay_too() {
        let mut store = table();
        let shared = Shared::new(SourceHealth::Ok);
        let (accept, accepted) = op(|c, o| o.accept(c, vec![new_task("x")], 1, None));
        let (fail, _) = job("INSERT INTO nowhere VALUES (1)");
        commit(&mut store, vec![accept, fail], &shared);
        assert!(accepted.try_recv().is_err(), "answered with the error");
        let (conn, overlay) = store.parts().unwrap();
        assert_eq!(overlay.status(conn, &["x".to_owned()]).unwrap(), [None]);
        assert!(overlay.claim(conn, 5, 2).unwrap().is_empty());
        assert_eq!(overlay.unsettled(0), 0);
    }

    /// The ids of `n` tasks, in the order they are accepted.
    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:05}")).collect()
    }

    /// `n` tasks (the ids of [`ids`]) of a 1 MiB payload each, at `priority`.
    fn megabyte_tasks(n: usize, priority: u8) -> Vec<task_source::NewTask> {
        let payload = format!("\"{}\"", "x".repeat(1 << 20));
        ids(n)
            .into_iter()
            .map(|id| task_source::NewTask {
                payload: payload.clone(),
                priority,
                ..new_task(&id)
            })
            .collect()
    }

    /// Accepts `n` tasks of 1 MiB (`megabyte_tasks`) and claims them, a
    /// commit each.
    fn run_megabyte_tasks(store: &mut Store, n: usize, shared: &Shared) {
        let tasks = megabyte_tasks(n, 10);
        let steps: Vec<WriteJob> = vec![
            op(move |c, o| o.accept(c, tasks, 1, None)).0,
            op(move |c, o| o.claim(c, n, 2)).0,
        ];
        commit_each(store, steps, shared);
    }

    /// Settles (`ok`) the running tasks `ids(n)` in one commit.
    fn settle_ok(store: &mut Store, n: usize, shared: &Shared) {
        let done: Vec<_> = ids(n)
            .iter()
            .map(|id| settled(id, 1, task_source::TaskState::Ok, "{}"))
            .collect();
        commit_each(store, vec![op(move |c, o| o.settle(c, done, 3)).0], shared);
    }

    /// Accepts, claims and settles (`ok`) the tasks `ids`, a commit each.
    fn run_to_ok(store: &mut Store, ids: &[String], shared: &Shared) {
        use task_source::TaskState;
        let tasks: Vec<_> = ids.iter().map(|id| new_task(id)).collect();
        let n = ids.len();
        let outcomes: Vec<_> = ids
            .iter()
            .map(|id| settled(id, 1, TaskState::Ok, "{}"))
            .collect();
        let steps: Vec<WriteJob> = vec![
            op(move |c, o| o.accept(c, tasks, 1, None)).0,
            op(move |c, o| o.claim(c, n, 2)).0,
            op(move |c, o| o.settle(c, outcomes, 3)).0,
        ];
        commit_each(store, steps, shared);
    }

    /// A checkpoint of the settled tasks writes a slice of them, the oldest
    /// first, and keeps the journal until the last slice; a crash between
    /// two slices loses nothing and the next checkpoint writes the rest.
    #[test]
    fn settled_rows_are_written_a_slice_at_a_time_and_a_crash_between_slices_loses_nothing() {
        use crate::overlay::SLICE;
        use task_source::TaskState;
        let db = StoreFile::new("slices");
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = db.open();
        let all = ids(SLICE + 10);
        run_to_ok(&mut store, &all, &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        let written: Vec<String> =
            crate::test_support::column(&store.conn, "SELECT id FROM tasks ORDER BY seq");
        assert_eq!(written, all[..SLICE], "the oldest slice");
        assert_eq!(count(&store.conn, "journal"), 3, "kept for the rest");
        drop(store);

        let mut store = db.open();
        {
            let (conn, overlay) = store.parts().unwrap();
            let seen = overlay.status(conn, &all).unwrap();
            assert!(
                seen.iter()
                    .all(|s| s.as_ref().is_some_and(|s| s.state == TaskState::Ok)),
                "every task settled after the replay"
            );
        }
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert_eq!(count(&store.conn, "tasks"), (SLICE + 10) as i64);
        assert_eq!(count(&store.conn, "journal"), 0, "the plan is done");
        assert!(!store.overlay.has_unwritten());
    }

    /// A full checkpoint in the middle of a plan writes the rest and ends
    /// the plan: the journal is emptied and no slice is left to write.
    #[test]
    fn a_full_checkpoint_in_the_middle_of_a_plan_writes_the_rest() {
        use crate::overlay::SLICE;
        let db = StoreFile::new("full-mid-plan");
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = db.open();
        run_to_ok(&mut store, &ids(SLICE + 10), &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert_eq!(count(&store.conn, "tasks"), SLICE as i64);
        checkpoint(&mut store, &shared, Checkpoint::Full);
        assert_eq!(count(&store.conn, "tasks"), (SLICE + 10) as i64);
        assert_eq!(count(&store.conn, "journal"), 0);
        assert_eq!(store.checkpoint_in(false), None, "nothing left to write");
        drop(store);
        let mut store = db.open();
        let (_, overlay) = store.parts().unwrap();
        assert!(!overlay.has_unwritten(), "the rows hold everything");
    }

    /// Only what a slice can write counts toward the busy bound: a large
    /// backlog of waiting tasks and a few settled ones do not make a slice
    /// follow every commit (they wait for the full checkpoint).
    #[test]
    fn waiting_tasks_do_not_make_a_slice_due() {
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = table();
        // 50 MiB of queued payloads, and one small task run to its end.
        let tasks = megabyte_tasks(50, 50);
        commit_each(
            &mut store,
            vec![op(move |c, o| o.accept(c, tasks, 1, None)).0],
            &shared,
        );
        run_to_ok(&mut store, &["small".to_owned()], &shared);
        assert_eq!(store.checkpoint_due(), None);
        assert!(
            store.checkpoint_in(false).is_some(),
            "it waits for an idle store"
        );
    }

    /// A few settled tasks wait for their rows until the store has been idle
    /// a while and the first of them settled a second ago; once many wait,
    /// only until it is idle; once it is idle, not at all. Requests that keep
    /// coming write no row.
    #[test]
    fn rows_wait_for_an_idle_store() {
        use crate::overlay::{IDLE, IDLE_TASKS};
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = table();
        assert_eq!(store.checkpoint_in(false), None, "nothing to write");
        let before = Instant::now();
        run_to_ok(&mut store, &ids(3), &shared);
        let wait = store.checkpoint_in(false).expect("rows to write");
        // A second from their settling, which came after `before`.
        assert!(
            wait <= CHECKPOINT_AFTER && wait >= CHECKPOINT_AFTER.saturating_sub(before.elapsed()),
            "{wait:?}"
        );
        store.overlay.age_settled(CHECKPOINT_AFTER);
        assert_eq!(store.checkpoint_in(false), Some(IDLE), "a second old");
        assert_eq!(store.checkpoint_in(true), Some(Duration::ZERO));
        assert_eq!(store.checkpoint_due(), None, "not while requests come");
        run_to_ok(&mut store, &ids(IDLE_TASKS + 3)[3..], &shared);
        assert_eq!(store.checkpoint_in(false), Some(IDLE));
        assert_eq!(store.checkpoint_due(), None);
    }

    /// Past the busy bound (the unwritten tasks' memory), a slice is due
    /// after each group commit even while requests keep coming.
    #[test]
    fn large_unwritten_tasks_are_written_while_requests_keep_coming() {
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = table();
        // 50 MiB of payloads: past the busy bound, short of the full one.
        run_megabyte_tasks(&mut store, 50, &shared);
        assert_eq!(store.checkpoint_due(), None, "none settled yet");
        settle_ok(&mut store, 50, &shared);
        assert_eq!(store.checkpoint_due(), Some(Checkpoint::Settled));
    }

    /// A store bounded to `mib` MiB of unwritten records.
    fn bounded_table(mib: usize) -> Store {
        let mut store = table();
        store.overlay.bound_memory(MemoryBound(mib << 20));
        store
    }

    /// `n` waiting tasks of 1 MiB named `{prefix}{i}`, accepted in one commit.
    fn accept_megabyte_tasks(store: &mut Store, prefix: &str, n: usize, shared: &Shared) {
        let tasks: Vec<_> = megabyte_tasks(n, 10)
            .into_iter()
            .enumerate()
            .map(|(i, task)| task_source::NewTask {
                id: format!("{prefix}{i}"),
                ..task
            })
            .collect();
        commit_each(
            store,
            vec![op(move |c, o| o.accept(c, tasks, 1, None)).0],
            shared,
        );
    }

    /// The ids of the rows, in order of acceptance.
    fn row_ids(store: &Store) -> Vec<String> {
        crate::test_support::column(&store.conn, "SELECT id FROM tasks ORDER BY seq")
    }

    /// Past the memory bound, the waiting tasks claimed last have their rows
    /// written and leave memory, until the records are back within the
    /// bound; a claim reads them back, in their order, whole.
    #[test]
    fn past_the_memory_bound_the_tasks_claimed_last_are_written_out() {
        use task_source::TaskState;
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = bounded_table(4);
        accept_megabyte_tasks(&mut store, "w", 10, &shared);
        assert_eq!(store.checkpoint_due(), Some(Checkpoint::Spill));
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        let last: Vec<String> = (3..10).map(|i| format!("w{i}")).collect();
        assert_eq!(row_ids(&store), last, "the last seven: 3 MiB stay");
        let states: Vec<String> =
            crate::test_support::column(&store.conn, "SELECT DISTINCT state FROM tasks");
        assert_eq!(states, ["queued"]);
        assert_eq!(store.checkpoint_due(), None, "back within the bound");
        let (read, status) = op(|c, o| o.status(c, &["w9".to_owned()]));
        commit_each(&mut store, vec![read], &shared);
        let status = status.recv().unwrap();
        assert_eq!(status[0].as_ref().map(|s| s.state), Some(TaskState::Queued));
        let (claim, claimed) = op(|c, o| o.claim(c, 10, 2));
        commit_each(&mut store, vec![claim], &shared);
        let claimed = claimed.recv().unwrap();
        let order: Vec<&str> = claimed.iter().map(|c| c.task.id.as_str()).collect();
        let all: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
        assert_eq!(order, all);
        assert!(claimed
            .iter()
            .all(|c| c.task.payload.len() == (1 << 20) + 2));
        assert_eq!(
            store.checkpoint_due(),
            None,
            "running tasks past the bound wait to settle"
        );
    }

    /// Past the memory bound, settled tasks are written before any waiting
    /// one is (a settled row is written once in any case) when they make up
    /// the excess, or a slice; fewer settled tasks wait for a slice while
    /// the waiting ones claimed last are written (a plan of settled tasks
    /// costs a look at every record).
    #[test]
    fn past_the_memory_bound_settled_rows_are_written_first() {
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = bounded_table(4);
        run_megabyte_tasks(&mut store, 3, &shared);
        settle_ok(&mut store, 3, &shared);
        accept_megabyte_tasks(&mut store, "w", 2, &shared);
        assert_eq!(store.checkpoint_due(), Some(Checkpoint::Spill));
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        assert_eq!(row_ids(&store), ["t00000", "t00001"], "settled ones only");
        assert_eq!(store.checkpoint_due(), None);
        accept_megabyte_tasks(&mut store, "x", 3, &shared);
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        // 2 MiB and a few hundred bytes past the bound, 1 MiB of them
        // settled: the waiting ones claimed last, until the excess is
        // covered (two whole tasks fall a few bytes short).
        assert_eq!(
            row_ids(&store),
            ["t00000", "t00001", "x0", "x1", "x2"],
            "the waiting ones claimed last; the settled one waits"
        );
        assert_eq!(store.checkpoint_due(), None);
    }

    /// A slice is bounded by bytes as well as by tasks: ten settled 1 MiB
    /// tasks are written four at a time (a request waits for one slice).
    #[test]
    fn a_slice_of_large_tasks_writes_a_few_megabytes() {
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = table();
        run_megabyte_tasks(&mut store, 10, &shared);
        settle_ok(&mut store, 10, &shared);
        for left in [6, 2, 0] {
            checkpoint(&mut store, &shared, Checkpoint::Settled);
            assert_eq!(store.overlay.settled_unwritten(), left);
        }
    }

    /// Retrying tasks waiting for their backoff count toward the memory
    /// bound and are spilled like queued ones, the last due first.
    #[test]
    fn retrying_tasks_past_the_memory_bound_are_spilled_too() {
        use task_source::{ErrorInfo, Outcome, Settlement};
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = bounded_table(4);
        run_megabyte_tasks(&mut store, 6, &shared);
        let retries: Vec<Settlement> = ids(6)
            .into_iter()
            .enumerate()
            .map(|(n, id)| Settlement {
                id,
                attempt: 1,
                outcome: Outcome::Retry {
                    due_ms: 1_000_000 + n as u64,
                    error: ErrorInfo {
                        kind: "handler".into(),
                        message: "again".into(),
                    },
                },
            })
            .collect();
        commit_each(
            &mut store,
            vec![op(move |c, o| o.settle(c, retries, 3)).0],
            &shared,
        );
        assert_eq!(store.checkpoint_due(), Some(Checkpoint::Spill));
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        assert_eq!(
            row_ids(&store),
            ["t00003", "t00004", "t00005"],
            "the last due"
        );
        assert_eq!(store.checkpoint_due(), None);
        let (claim, claimed) = op(|c, o| o.claim(c, 6, 2_000_000));
        commit_each(&mut store, vec![claim], &shared);
        assert_eq!(
            claimed.recv().unwrap().len(),
            6,
            "all come due, spilled or not"
        );
    }

    /// A commit far past the memory bound is spilled a few megabytes at a
    /// time: one spill after the commit, then back to back while no request
    /// comes, until the records are within the bound.
    #[test]
    fn a_commit_far_past_the_bound_is_spilled_back_to_back_while_idle() {
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = bounded_table(4);
        accept_megabyte_tasks(&mut store, "w", 30, &shared);
        assert_eq!(store.checkpoint_due(), Some(Checkpoint::Spill));
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        assert_eq!(count(&store.conn, "tasks"), 16, "16 MiB a spill");
        assert_eq!(
            store.checkpoint_in(false),
            Some(crate::overlay::IDLE),
            "more to spill"
        );
        assert_eq!(store.checkpoint_in(true), Some(Duration::ZERO));
        assert_eq!(store.overlay.idle_checkpoint(), Checkpoint::Spill);
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        assert_eq!(
            count(&store.conn, "tasks"),
            27,
            "30 less the 3 MiB that stay"
        );
        assert_eq!(store.checkpoint_in(true), None, "within the bound");
    }

    /// Running tasks past the memory bound make no checkpoint due (their
    /// rows would be written again at their settlement); once they settle,
    /// a spill writes the oldest until the records are within the bound,
    /// and the rest wait for slices.
    #[test]
    fn running_tasks_past_the_memory_bound_are_written_once_settled() {
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = table();
        // 70 MiB of payloads: past the memory bound.
        run_megabyte_tasks(&mut store, 70, &shared);
        assert_eq!(store.checkpoint_due(), None, "all 70 run");
        settle_ok(&mut store, 70, &shared);
        assert_eq!(store.checkpoint_due(), Some(Checkpoint::Spill));
        checkpoint(&mut store, &shared, Checkpoint::Spill);
        let first: Vec<String> = ids(7);
        assert_eq!(row_ids(&store), first, "6 MiB and a little past the bound");
        assert_eq!(
            store.checkpoint_due(),
            Some(Checkpoint::Settled),
            "within the bound, past the busy one"
        );
    }

    /// Once a plan is done, the settled tasks still unwritten count as old as
    /// the plan, not as the first task it wrote: under a steady load a slice
    /// does not follow every commit once the first tasks grew old.
    #[test]
    fn tasks_settled_after_a_plan_was_made_are_as_young_as_the_plan() {
        use crate::overlay::SLICE;
        let shared = Shared::new(SourceHealth::Ok);
        let mut store = table();
        run_to_ok(&mut store, &ids(SLICE + 1), &shared);
        store.overlay.age_settled(Duration::from_secs(11));
        assert_eq!(
            store.checkpoint_due(),
            Some(Checkpoint::Settled),
            "old enough"
        );
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert_eq!(
            store.checkpoint_due(),
            Some(Checkpoint::Settled),
            "one old task is left"
        );
        run_to_ok(&mut store, &["late".to_owned()], &shared);
        checkpoint(&mut store, &shared, Checkpoint::Settled);
        assert_eq!(
            count(&store.conn, "tasks"),
            (SLICE + 1) as i64,
            "the plan is done"
        );
        assert_eq!(store.checkpoint_due(), None, "the late task is young");
        assert!(
            store.checkpoint_in(false).is_some(),
            "and waits for an idle store"
        );
    }

    /// The writer thread writes the rows of settled tasks on its own once no
    /// request comes, without being closed.
    #[test]
    fn the_writer_writes_settled_rows_once_no_request_comes() {
        let db = StoreFile::new("idle");
        let (jobs, rx) = mpsc::channel();
        let store = db.open();
        let writer = std::thread::spawn(move || {
            serve(store, rx, Arc::new(Shared::new(SourceHealth::Ok)));
        });
        let all = ids(3);
        let tasks: Vec<_> = all.iter().map(|id| new_task(id)).collect();
        let done: Vec<_> = all
            .iter()
            .map(|id| settled(id, 1, task_source::TaskState::Ok, "{}"))
            .collect();
        let (accept, accepted) = op(move |c, o| o.accept(c, tasks, 1, None));
        let (claim, _) = op(|c, o| o.claim(c, 3, 2));
        let (settle, _) = op(move |c, o| o.settle(c, done, 3));
        for job in [accept, claim, settle] {
            jobs.send(Job::Write(job)).unwrap();
        }
        accepted.recv().unwrap();
        let other = Connection::open(&db.0 .0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(&other, "tasks") < 3 {
            assert!(Instant::now() < deadline, "no row written while idle");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(jobs);
        writer.join().unwrap();
    }

    /// Commits each of `steps` in a transaction of its own, in order.
    fn commit_each(store: &mut Store, steps: Vec<WriteJob>, shared: &Shared) {
        for step in steps {
            commit(store, vec![step], shared);
        }
    }

    /// A store file of a test's own, removed however the test ends.
    struct StoreFile(TempDb);

    impl StoreFile {
        fn new(name: &str) -> Self {
            Self(TempDb(
                std::env::temp_dir().join(format!("writer-{name}-{}.db", std::process::id())),
            ))
        }

        /// The store as the source opens it: the log, the schema, the overlay.
        fn open(&self) -> Store {
            let conn = Connection::open(&self.0 .0).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
            crate::schema::migrate(&conn).unwrap();
            Store::open(conn, MemoryBound::default()).unwrap()
        }
    }

    /// Accepts `a`, and `b` at a lower priority: `b` waits while `a` runs,
    /// and its acceptance keeps the journal from being forgotten.
    fn accept_a_then_b_at_a_lower_priority() -> WriteJob {
        op(|c, o| {
            let mut late = new_task("b");
            late.priority = 50;
            o.accept(c, vec![new_task("a"), late], 1, None)
        })
        .0
    }

    /// Attempt `attempt` of `id` settled for good in `state`.
    fn settled(
        id: &str,
        attempt: u32,
        state: task_source::TaskState,
        line: &str,
    ) -> task_source::Settlement {
        task_source::Settlement {
            id: id.into(),
            attempt,
            outcome: task_source::Outcome::Settled {
                state,
                line: line.into(),
                error: None,
            },
        }
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
