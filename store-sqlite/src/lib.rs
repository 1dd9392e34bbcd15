//! A durable [`TaskSource`]: one SQLite file in WAL mode.
//!
//! One thread owns the connection. Every request becomes a job on its queue; the
//! thread takes all pending jobs, runs their writes in one transaction and
//! answers them when the commit returns (group commit: one sync per batch, not
//! per task). With [`Durability::Fsync`] a commit is synced to the device
//! (`synchronous = FULL`); with [`Durability::Relaxed`] it survives a crash of
//! the process but not of the machine (`synchronous = NORMAL`).
//!
//! The schema version is kept in `PRAGMA user_version`; a store written by a
//! newer version is refused, and so is a corrupt one.
//!
//! ```
//! use store_sqlite::{Durability, SqliteSource};
//! use task_source::{Admission, NewTask, TaskSource};
//!
//! let dir = std::env::temp_dir().join(format!("store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("store.db");
//! let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! rt.block_on(async {
//!     let store = SqliteSource::open(&path, Durability::Relaxed).unwrap();
//!     let task = NewTask {
//!         id: "a".into(),
//!         task_type: "echo".into(),
//!         payload: "1".into(),
//!         priority: 10,
//!         timeout_ms: None,
//!     };
//!     assert_eq!(store.accept(vec![task]).await.unwrap(), vec![Admission::Accepted]);
//! });
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod counts;
mod journal;
mod known_ids;
mod live;
mod numbers;
mod ops;
mod overlay;
mod schema;
#[cfg(test)]
mod test_support;
mod writer;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use task_source::{
    now_ms, Admission, Claimed, Filter, ListFrom, ListOrder, ListPage, NewTask, Requeue,
    Settlement, SourceError, SourceHealth, SourceStats, TaskRecord, TaskSource, TaskState,
    TaskStatus,
};
use tokio::sync::oneshot;

use overlay::Overlay;
pub use schema::SCHEMA_VERSION;

/// The most bytes of memory [`SqliteSource::open`]'s unwritten records hold
/// (64 MiB: about 200 000 waiting 64 B tasks).
pub const DEFAULT_MEMORY_BYTES: usize = overlay::MEMORY_BYTES;
use writer::{classify, Finish, Job, Shared, Store, WriteJob};

/// How durable an accepted task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is synced to the device: survives a power cut.
    Fsync,
    /// Commits reach the operating system, not the device: survives a crash of
    /// the process, not of the machine.
    Relaxed,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be created or checked.
    #[error("the task store {path}: {message}")]
    File {
        /// The store's path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is not a readable SQLite database, or fails its integrity check.
    #[error("the task store {path} is corrupt: {detail}; move it aside (the daemon then starts with an empty store) or restore a backup")]
    Corrupt {
        /// The store's path.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The file is read-only and its schema older than this version's: it
    /// cannot be brought up to date, and its tasks cannot be read as they are.
    #[error("the task store {path} is read-only and has schema version {found}, older than this cortex-pool reads ({supported}); make it writable once so it is brought up to date, or open it with the cortex-pool that wrote it")]
    OlderReadOnly {
        /// The store's path.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// The oldest version this cortex-pool reads in a read-only store.
        supported: i64,
    },
    /// A newer cortex-pool wrote it.
    #[error("the task store {path} has schema version {found}, newer than this cortex-pool supports ({supported}); run the newer version or move the store aside")]
    NewerSchema {
        /// The store's path.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
}

/// The SQLite task source.
#[derive(Debug)]
pub struct SqliteSource {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteSource {
    /// Closes the store: the writer finishes its jobs and checkpoints the log.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Write(_) => "Write",
            Job::WriteAlone(_) => "WriteAlone",
            Job::Read(_) => "Read",
            Job::Close(_) => "Close",
        })
    }
}

/// Creates the file 0600 without following a symlink, or checks an existing
/// one: a regular file owned by us; group and other bits are removed.
fn prepare_file(path: &Path) -> Result<(), OpenError> {
    let fail = |message: String| OpenError::File {
        path: path.to_owned(),
        message,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .or_else(|e| {
            // A read-only file is opened read-only: the store then refuses writes.
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(path)
            } else {
                Err(e)
            }
        })
        .map_err(|e| match rustix::io::Errno::from_io_error(&e) {
            Some(rustix::io::Errno::LOOP) => {
                fail("is a symbolic link; refusing to follow it".into())
            }
            _ => fail(e.to_string()),
        })?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(fail(format!(
            "belongs to uid {}, not to this user (uid {me}); refusing to use it",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o700))
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// Why a step of opening the store failed: it cannot be used now (`doing`,
/// then the reason: locked by another process, an I/O error, a full disk,
/// read-only, out of memory, no permission), which moving it aside would not
/// mend; or else what it holds is not a store this version can read
/// (corrupt, not a database, tables or data not as they should be).
fn open_failure(path: &Path, e: &rusqlite::Error, doing: &str) -> OpenError {
    use rusqlite::ErrorCode;
    let reason = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "{e}: another process holds it (a daemon already running on this store?); \
             stop that process, then start again"
        ),
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed,
        ) => match classify(e) {
            SourceError::Unwritable(reason) => reason,
            _ => e.to_string(),
        },
        _ => {
            return OpenError::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            }
        }
    };
    OpenError::File {
        path: path.to_owned(),
        message: format!("{doing}{reason}"),
    }
}

impl SqliteSource {
    /// Opens (creating if needed) the store at `path` and starts its writer
    /// thread, its unwritten records bounded by [`DEFAULT_MEMORY_BYTES`].
    ///
    /// # Errors
    /// When the file cannot be made or used, is corrupt, or has a newer schema.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, OpenError> {
        Self::open_with_memory(path, durability, DEFAULT_MEMORY_BYTES)
    }

    /// As [`open`](Self::open), with the most bytes of memory the records of
    /// tasks changed since their rows were written may hold after each
    /// commit (at least 1 MiB; running tasks' records aside): past it, the
    /// settled tasks' rows are written, then those of the waiting tasks
    /// that are claimed last, whose records leave memory, so a backlog of
    /// any size keeps its records in the file; memory still holds its ready
    /// order (8 to 40 bytes a waiting task) and the filter of known ids
    /// (about 2.5 bytes a task).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_memory(
        path: &Path,
        durability: Durability,
        memory_bytes: usize,
    ) -> Result<Self, OpenError> {
        prepare_file(path)?;
        let failed = |e: rusqlite::Error| open_failure(path, &e, "");
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| OpenError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(failed)?;
        let check: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(failed)?;
        if check != "ok" {
            return Err(OpenError::Corrupt {
                path: path.to_owned(),
                detail: check,
            });
        }
        let read_only = conn
            .is_readonly(rusqlite::DatabaseName::Main)
            .unwrap_or(false);
        let mut health = SourceHealth::Ok;
        if read_only {
            health = SourceHealth::Failing {
                reason: format!("{} is read-only", path.display()),
            };
        } else {
            let sync = match durability {
                Durability::Fsync => "FULL",
                Durability::Relaxed => "NORMAL",
            };
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
            ))
            .map_err(failed)?;
            match schema::migrate(&conn) {
                Ok(schema::Version::Current) => {}
                Ok(schema::Version::Newer(found)) => {
                    return Err(OpenError::NewerSchema {
                        path: path.to_owned(),
                        found,
                        supported: SCHEMA_VERSION,
                    })
                }
                // A store left at an older schema could never take a write
                // (its statements name what is not there): refused now, not
                // opened to fail later.
                Err(e) => {
                    let doing = format!("cannot bring it to schema version {SCHEMA_VERSION}: ");
                    return Err(open_failure(path, &e, &doing));
                }
            }
        }
        if read_only {
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(failed)?;
            if version > SCHEMA_VERSION {
                return Err(OpenError::NewerSchema {
                    path: path.to_owned(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            // It cannot be brought up to date, and its tasks are read with
            // the current schema's columns and tables (what schema 7 added,
            // the mark of the numbers, matters only to a store that accepts).
            if version < schema::READ_ONLY_FROM {
                return Err(OpenError::OlderReadOnly {
                    path: path.to_owned(),
                    found: version,
                    supported: schema::READ_ONLY_FROM,
                });
            }
        }
        // Room for every statement the operations prepare, so the ones each
        // task goes through are never evicted and prepared again.
        conn.set_prepared_statement_cache_capacity(64);
        // The changes the journal holds, replayed over the rows.
        let memory = overlay::MemoryBound(memory_bytes.max(1 << 20));
        let store = Store::open(conn, memory).map_err(failed)?;
        let shared = Arc::new(Shared::new(health));
        let (jobs, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("task-store".into())
            .spawn(move || writer::serve(store, rx, thread_shared))
            .map_err(|e| OpenError::File {
                path: path.to_owned(),
                message: format!("cannot start the store's thread: {e}"),
            })?;
        Ok(Self {
            path: path.to_owned(),
            jobs,
            shared,
            thread: Some(thread),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store takes writes now.
    pub fn health(&self) -> SourceHealth {
        match self.shared.health.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Runs `f` in the transaction of the writes pending with it.
    async fn write<T, F>(&self, f: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Overlay) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write_as(Job::Write, f).await
    }

    /// Runs `f` in a transaction of its own, after every changed task's row
    /// was written in it and the journal emptied: what `f`'s statements read
    /// or delete is all in the rows, and no journal entry refers to a row
    /// they delete.
    async fn write_checkpointed<T, F>(&self, f: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write_as(Job::WriteAlone, move |conn, overlay| {
            overlay.on_rows(conn, f)
        })
        .await
    }

    /// Runs `f` as a job of `kind` ([`Job::Write`] or [`Job::WriteAlone`]).
    async fn write_as<T, F>(&self, kind: fn(WriteJob) -> Job, f: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Overlay) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, SourceError>>();
        let job = kind(Box::new(move |parts| {
            let Some((conn, overlay)) = parts else {
                let finish: Finish = Box::new(move |e| {
                    let _ = tx.send(Err(e.unwrap_or(SourceError::Closed)));
                });
                return (finish, None);
            };
            match f(conn, overlay) {
                Ok(value) => {
                    let finish: Finish = Box::new(move |e| {
                        let _ = tx.send(match e {
                            None => Ok(value),
                            Some(e) => Err(e),
                        });
                    });
                    (finish, None)
                }
                Err(e) => {
                    let finish: Finish = Box::new(move |err| {
                        let _ = tx.send(Err(err.unwrap_or(SourceError::Closed)));
                    });
                    (finish, Some(e))
                }
            }
        }));
        self.jobs.send(job).map_err(|_| SourceError::Closed)?;
        rx.await.map_err(|_| SourceError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Overlay) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, SourceError>>();
        let job = Job::Read(Box::new(move |parts| {
            let answer = parts.and_then(|(conn, overlay)| f(conn, overlay));
            let _ = tx.send(answer.map_err(|e| classify(&e)));
        }));
        self.jobs.send(job).map_err(|_| SourceError::Closed)?;
        rx.await.map_err(|_| SourceError::Closed)?
    }

    fn file_size(&self) -> u64 {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            total += std::fs::metadata(&p).map_or(0, |m| m.len());
        }
        total
    }
}

#[async_trait]
impl TaskSource for SqliteSource {
    async fn accept(&self, tasks: Vec<NewTask>) -> Result<Vec<Admission>, SourceError> {
        let now = now_ms();
        // A store that failed earlier may write again (space freed): always try.
        self.write(move |c, o| o.accept(c, tasks, now, None)).await
    }

    /// Counts and stores in one transaction: never past `max_unsettled`.
    async fn accept_within(
        &self,
        tasks: Vec<NewTask>,
        max_unsettled: u64,
    ) -> Result<Vec<Admission>, SourceError> {
        let now = now_ms();
        self.write(move |c, o| {
            let stored = ops::unsettled(c)?;
            o.accept(c, tasks, now, Some((stored, max_unsettled)))
        })
        .await
    }

    async fn claim(&self, max: usize, now_ms: u64) -> Result<Vec<Claimed>, SourceError> {
        self.write(move |c, o| o.claim(c, max, now_ms)).await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), SourceError> {
        let now = now_ms();
        self.write(move |c, o| o.settle(c, settlements, now)).await
    }

    async fn recover(&self) -> Result<u64, SourceError> {
        // Tried whatever the last write did, as `accept` is: a store that
        // could not write (a full disk) writes again once there is room.
        let now = now_ms();
        self.write(move |c, o| o.recover(c, now)).await
    }

    async fn get(&self, ids: Vec<String>) -> Result<Vec<Option<TaskRecord>>, SourceError> {
        self.read(move |c, o| o.get(c, &ids)).await
    }

    async fn status(&self, ids: Vec<String>) -> Result<Vec<Option<TaskStatus>>, SourceError> {
        self.read(move |c, o| o.status(c, &ids)).await
    }

    async fn list(&self, filter: Filter) -> Result<Vec<TaskRecord>, SourceError> {
        let found = self.read(move |c, o| o.list(c, &filter, ListOrder::NewestFirst, None));
        Ok(found.await?.into_iter().map(|(_, record)| record).collect())
    }

    /// A page is one read job: the store's other requests wait for no more
    /// than a page.
    async fn list_page(
        &self,
        filter: Filter,
        order: ListOrder,
        from: Option<ListFrom>,
        page: usize,
    ) -> Result<ListPage, SourceError> {
        let page = ListPage::size(filter.limit, page);
        let filter = Filter {
            limit: page,
            ..filter
        };
        let found = self
            .read(move |c, o| o.list(c, &filter, order, from))
            .await?;
        let places = found
            .into_iter()
            .map(|(seq, record)| (u64::try_from(seq).unwrap_or(0), record));
        Ok(ListPage::of(places, page))
    }

    async fn requeue_dead(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(String, Requeue)>, SourceError> {
        let now = now_ms();
        self.write(move |c, o| o.requeue_dead(c, ids, now)).await
    }

    async fn purge_dead(&self) -> Result<Vec<String>, SourceError> {
        // A dead letter requeued since its row was written is one in its
        // row still: its row is written first.
        self.write_checkpointed(ops::purge_dead).await
    }

    async fn prune(
        &self,
        settled_before_ms: u64,
        max_bytes: Option<u64>,
    ) -> Result<u64, SourceError> {
        // In transactions of their own, each walking a bounded range of the
        // tasks and deleting a bounded number: however much is due, no other
        // request waits behind all of it, and the log is checkpointed between
        // them. Each step starts where the last one ended.
        let mut removed = 0;
        let mut from = 0;
        loop {
            let (step, next) = self
                .write_checkpointed(move |c| {
                    ops::prune(c, settled_before_ms, max_bytes, ops::PRUNE_STEP, from)
                })
                .await?;
            removed += step;
            match next {
                Some(next) => from = next,
                None => return Ok(removed),
            }
        }
    }

    async fn unsettled(&self) -> Result<u64, SourceError> {
        self.read(|c, o| Ok(o.unsettled(ops::unsettled(c)?))).await
    }

    /// Ends the writer thread after the requests sent before: every row
    /// written, the journal emptied, the file closed.
    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            // An error: the writer ended already.
            let _ = closed.await;
        }
    }

    async fn stats(&self) -> Result<SourceStats, SourceError> {
        let counted = self.read(|c, o| Ok(o.rows(ops::rows(c)?))).await?;
        let mut rows: std::collections::BTreeMap<String, u64> = TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        rows.extend(counted);
        let c = match self.shared.commits.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        Ok(SourceStats {
            backend: "sqlite".to_owned(),
            path: Some(self.path.display().to_string()),
            health: self.health(),
            size_bytes: self.file_size(),
            rows,
            commits: c.count,
            commit_ms_last: c.last_ms,
            commit_ms_max: c.max_ms,
            commit_ms_sum: c.sum_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store marked failing by an earlier write (a full disk) still tries
    /// the recovery of the tasks the last daemon left running, so they run
    /// again once it can write, whatever wrote last.
    #[test]
    fn a_store_marked_failing_still_tries_to_recover() {
        let dir = std::env::temp_dir().join(format!("store-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let recovered = runtime.block_on(async {
            let store = SqliteSource::open(&dir.join("store.db"), Durability::Fsync).unwrap();
            let task = task_source::NewTask {
                id: "left".into(),
                task_type: "echo".into(),
                payload: "1".into(),
                priority: 10,
                timeout_ms: None,
            };
            store.accept(vec![task]).await.unwrap();
            assert_eq!(
                store.claim(1, task_source::now_ms()).await.unwrap().len(),
                1
            );
            *store.shared.health.lock().unwrap() = SourceHealth::Failing {
                reason: "disk full".into(),
            };
            store.recover().await
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(recovered.unwrap(), 1, "the running task was re-queued");
    }

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn a_schema_that_cannot_be_written_refuses_the_store_naming_why() {
        let path = Path::new("/var/lib/cortex/store.db");
        let full = sqlite_error(rusqlite::ffi::SQLITE_FULL);
        let doing = "cannot bring it to schema version 4: ";
        match open_failure(path, &full, doing) {
            OpenError::File { path: p, message } => {
                assert_eq!(p, path);
                assert!(
                    message.starts_with("cannot bring it to schema version 4: disk full"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let corrupt = sqlite_error(rusqlite::ffi::SQLITE_CORRUPT);
        assert!(matches!(
            open_failure(path, &corrupt, ""),
            OpenError::Corrupt { .. }
        ));
        // A table that is not there: not a store this version reads.
        assert!(matches!(
            open_failure(path, &sqlite_error(rusqlite::ffi::SQLITE_ERROR), ""),
            OpenError::Corrupt { .. }
        ));
        // Busy or locked: held by another process, not corrupt.
        for code in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED] {
            match open_failure(path, &sqlite_error(code), "") {
                OpenError::File { message, .. } => {
                    assert!(message.contains("another process holds it"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
