//! The SQLite source through its trait: idempotent accept, claim, settle,
//! recovery after a crash, the DLQ, and the refusals (newer schema, corrupt file).

use std::path::PathBuf;

use store_sqlite::{Durability, OpenError, SqliteSource};
use task_source::{
    Admission, Claimed, ErrorInfo, Filter, ListFrom, ListOrder, NewTask, Outcome, Pager, Requeue,
    Settlement, SourceError, TaskRecord, TaskSource, TaskState, TaskStatus,
};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("store-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("store.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn task(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        task_type: "echo".into(),
        payload: format!("{{\"n\":\"{id}\"}}"),
        priority: 10,
        timeout_ms: None,
    }
}

/// A listing of the tasks in `state`.
/// The claimed attempt `c`, settled ok with an empty line.
fn ok(c: Claimed) -> Settlement {
    Settlement {
        id: c.task.id,
        attempt: c.attempt,
        outcome: Outcome::Settled {
            state: TaskState::Ok,
            line: "{}".into(),
            error: None,
        },
    }
}

fn in_state(state: TaskState) -> Filter {
    Filter {
        state: Some(state),
        ..Filter::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tasks_survive_a_reopen_and_running_ones_are_requeued_as_interrupted() {
    let dir = Dir::new("reopen");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        let a = s
            .accept(vec![task("a"), task("b"), task("a")])
            .await
            .unwrap();
        assert_eq!(
            a,
            vec![
                Admission::Accepted,
                Admission::Accepted,
                Admission::Known(TaskState::Queued)
            ]
        );
        let claimed = s.claim(1, task_source::now_ms()).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].task.id, "a");
        assert_eq!(claimed[0].attempt, 1);
    });
    // "Crash": the source is dropped with `a` running; reopen.
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        assert_eq!(s.recover().await.unwrap(), 1);
        let claimed = s.claim(10, task_source::now_ms()).await.unwrap();
        let ids: Vec<&str> = claimed.iter().map(|c| c.task.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            claimed[0].attempt, 1,
            "the attempt a crash interrupted is given back"
        );
        s.settle(vec![
            Settlement {
                id: "a".into(),
                attempt: 1,
                outcome: Outcome::Settled {
                    state: TaskState::Ok,
                    line: "{\"id\":\"a\",\"status\":\"ok\"}".into(),
                    error: None,
                },
            },
            // A stale settlement (another attempt) is ignored.
            Settlement {
                id: "a".into(),
                attempt: 2,
                outcome: Outcome::Interrupted,
            },
            Settlement {
                id: "b".into(),
                attempt: 1,
                outcome: Outcome::Retry {
                    due_ms: task_source::now_ms() + 60_000,
                    error: ErrorInfo {
                        kind: "handler".into(),
                        message: "boom".into(),
                    },
                },
            },
        ])
        .await
        .unwrap();
        let got = s
            .get(vec!["a".into(), "b".into(), "zz".into()])
            .await
            .unwrap();
        let a = got[0].as_ref().unwrap();
        assert_eq!(a.state, TaskState::Ok);
        assert_eq!(a.attempts, 1);
        let events: Vec<&str> = a.history.iter().map(|h| h.event.as_str()).collect();
        assert_eq!(events, ["attempt", "interrupted", "attempt", "ok"]);
        assert_eq!(got[1].as_ref().unwrap().state, TaskState::Retrying);
        assert!(got[2].is_none());
        let status = s
            .status(vec!["a".into(), "b".into(), "zz".into()])
            .await
            .unwrap();
        let want: Vec<Option<TaskStatus>> = got.into_iter().map(|r| r.map(Into::into)).collect();
        assert_eq!(
            status, want,
            "status is the record's state, attempts and line"
        );
        assert_eq!(
            status[0].as_ref().unwrap().line.as_deref(),
            Some("{\"id\":\"a\",\"status\":\"ok\"}")
        );
        // Not due yet: nothing to claim.
        assert!(s.claim(10, task_source::now_ms()).await.unwrap().is_empty());
        let stats = s.stats().await.unwrap();
        assert_eq!(stats.rows["ok"], 1);
        assert_eq!(stats.rows["retrying"], 1);
        assert!(stats.commits > 0);
    });
}

#[test]
fn dead_letters_are_requeued_by_id_and_purged() {
    let dir = Dir::new("dlq");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(vec![task("x"), task("y")]).await.unwrap();
        for c in s.claim(10, 0).await.unwrap() {
            s.settle(vec![Settlement {
                id: c.task.id.clone(),
                attempt: c.attempt,
                outcome: Outcome::Settled {
                    state: TaskState::DeadLetter,
                    line: "{}".into(),
                    error: Some(ErrorInfo {
                        kind: "k".into(),
                        message: "m".into(),
                    }),
                },
            }])
            .await
            .unwrap();
        }
        let dead = s.list(in_state(TaskState::DeadLetter)).await.unwrap();
        assert_eq!(dead.len(), 2);
        let r = s
            .requeue_dead(Some(vec!["x".into(), "nope".into()]))
            .await
            .unwrap();
        assert_eq!(r[0], ("x".into(), Requeue::Requeued));
        assert_eq!(r[1], ("nope".into(), Requeue::Unknown));
        let again = s.claim(10, 0).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 1, "attempts are reset");
        assert_eq!(s.purge_dead().await.unwrap(), vec!["y".to_owned()]);
    });
}

#[test]
fn a_newer_schema_and_a_corrupt_file_are_refused_clearly() {
    let dir = Dir::new("refuse");
    drop(SqliteSource::open(&dir.db(), Durability::Fsync).unwrap());
    {
        let c = rusqlite_free_bump(&dir.db());
        assert!(c);
    }
    let err = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("newer than this cortex-pool supports"));

    let bad = dir.0.join("bad.db");
    std::fs::write(&bad, vec![b'x'; 8192]).unwrap();
    let err = SqliteSource::open(&bad, Durability::Fsync).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("is corrupt"), "{err}");
}

/// A store another process holds locked is not called corrupt (moving it
/// aside, as a corrupt store's error advises, would lose its tasks): the
/// error says what holds it, and the store opens once it is let go.
#[test]
fn a_locked_store_is_refused_as_held_not_as_corrupt() {
    let dir = Dir::new("locked");
    drop(SqliteSource::open(&dir.db(), Durability::Fsync).unwrap());
    let holder = rusqlite::Connection::open(dir.db()).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let err = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap_err();
    assert!(matches!(err, OpenError::File { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("another process holds it"), "{text}");
    assert!(!text.contains("corrupt"), "{text}");
    drop(holder);
    drop(SqliteSource::open(&dir.db(), Durability::Fsync).unwrap());
}

/// Sets `user_version` to 99 by editing the header (bytes 60..64, big-endian).
fn rusqlite_free_bump(path: &std::path::Path) -> bool {
    set_user_version(path, 99)
}

/// Sets `user_version` to `version` by editing the header of a closed store.
fn set_user_version(path: &std::path::Path, version: u32) -> bool {
    // Checkpointed on close, so the main file holds the header.
    let mut bytes = std::fs::read(path).unwrap();
    if bytes.len() < 100 {
        return false;
    }
    bytes[60..64].copy_from_slice(&version.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
    true
}

/// A file this thread may not write while the guard lives: mode 0400, and
/// for root, whom a file's mode does not stop, this thread (and the threads
/// it starts meanwhile: the store's writer) without `CAP_DAC_OVERRIDE` and
/// `CAP_DAC_READ_SEARCH` in its effective set. Dropping a capability needs
/// none, so this works in a default container too.
struct ReadOnly {
    path: PathBuf,
    /// The thread's capabilities before, put back on drop.
    capabilities: Option<rustix::thread::CapabilitySets>,
}

impl ReadOnly {
    fn new(path: &std::path::Path) -> Self {
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let before = capabilities(None).expect("capget");
        let overriding = CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
        let capabilities = before.effective.intersects(overriding).then(|| {
            let mut fewer = before;
            fewer.effective.remove(overriding);
            set_capabilities(None, fewer).expect("a thread may drop its own capabilities");
            before
        });
        Self {
            path: path.to_owned(),
            capabilities,
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(before) = self.capabilities.take() {
            let _ = rustix::thread::set_capabilities(None, before);
        }
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
    }
}

#[test]
fn a_read_only_store_is_read_at_the_current_schema_and_refused_at_an_older_one() {
    let dir = Dir::new("read-only");
    drop(rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        s.accept(vec![task("a")]).await.unwrap();
        s
    }));
    {
        let _read_only = ReadOnly::new(&dir.db());
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        assert!(
            matches!(s.health(), task_source::SourceHealth::Failing { reason } if reason.contains("read-only")),
            "{:?}",
            s.health()
        );
        let status = rt().block_on(s.status(vec!["a".into()])).unwrap();
        assert_eq!(status[0].as_ref().map(|s| s.state), Some(TaskState::Queued));
    }
    assert!(set_user_version(&dir.db(), 5));
    let _read_only = ReadOnly::new(&dir.db());
    let err = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::OlderReadOnly {
                found: 5,
                supported: 6,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is read-only and has schema version 5"),
        "{err}"
    );
}

/// A read-only store at schema 6 is read as it is: what schema 7 added (the
/// mark of the numbers) matters only to a store that accepts tasks.
#[test]
fn a_read_only_store_at_schema_6_is_read() {
    let dir = Dir::new("read-only-6");
    drop(rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        s.accept(vec![task("a")]).await.unwrap();
        s
    }));
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.execute_batch(
        "DROP TABLE seq_mark; PRAGMA user_version = 6; PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    drop(conn);
    let _read_only = ReadOnly::new(&dir.db());
    let s = SqliteSource::open(&dir.db(), Durability::Fsync).expect("schema 6 is read");
    let status = rt().block_on(s.status(vec!["a".into()])).unwrap();
    assert_eq!(status[0].as_ref().map(|s| s.state), Some(TaskState::Queued));
}

#[test]
fn a_prune_larger_than_one_step_removes_every_task_due() {
    let dir = Dir::new("prune-steps");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        // More than one prune step (10 000 deletions a transaction).
        let n = 10_050;
        let tasks: Vec<NewTask> = (0..n).map(|i| task(&format!("t{i}"))).collect();
        s.accept(tasks).await.unwrap();
        let claimed = s.claim(n, task_source::now_ms()).await.unwrap();
        assert_eq!(claimed.len(), n);
        let settled = claimed.into_iter().map(ok).collect();
        s.settle(settled).await.unwrap();
        let removed = s.prune(task_source::now_ms() + 1, None).await.unwrap();
        assert_eq!(removed, n as u64);
        assert_eq!(s.stats().await.unwrap().rows["ok"], 0);
    });
}

/// Admissions made at the same time never pass the limit together: the count
/// and the inserts are one transaction. Each of 8 callers offers 10 new tasks
/// with room for 25; exactly 25 are stored, the others refused `queue_full`,
/// and an id already stored is answered with its state, not refused.
#[test]
fn admissions_at_the_same_time_never_pass_the_limit() {
    let dir = Dir::new("within");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let s = std::sync::Arc::new(SqliteSource::open(&dir.db(), Durability::Fsync).unwrap());
        let callers: Vec<_> = (0..8)
            .map(|c| {
                let s = std::sync::Arc::clone(&s);
                tokio::spawn(async move {
                    let tasks = (0..10).map(|i| task(&format!("c{c}-{i}"))).collect();
                    s.accept_within(tasks, 25).await.unwrap()
                })
            })
            .collect();
        let mut admissions = Vec::new();
        let mut stored = None;
        for (c, caller) in callers.into_iter().enumerate() {
            let answered = caller.await.unwrap();
            if answered[0] == Admission::Accepted {
                stored = Some(format!("c{c}-0"));
            }
            admissions.extend(answered);
        }
        let accepted = admissions
            .iter()
            .filter(|a| **a == Admission::Accepted)
            .count();
        assert_eq!(accepted, 25, "{admissions:?}");
        assert!(admissions.iter().all(|a| match a {
            Admission::Accepted => true,
            Admission::Refused(why) => why.starts_with("queue_full: 25 tasks"),
            Admission::Known(_) => false,
        }));
        assert_eq!(s.unsettled().await.unwrap(), 25);
        let again = s
            .accept_within(vec![task(&stored.unwrap()), task("new")], 25)
            .await
            .unwrap();
        assert_eq!(
            again,
            vec![
                Admission::Known(TaskState::Queued),
                Admission::queue_full(25, 25)
            ]
        );
    });
}

/// An attempt that never started (the pool did not take the task, or
/// withdrew it unstarted as it stopped) goes back to the queue with its
/// attempt given back, so a restart does not use up a retry; it is recorded
/// as `withdrawn`. An interrupted attempt (the pool stopped it) is given back
/// too, recorded as `interrupted`: the interruption was not the task's doing.
#[test]
fn attempts_that_never_started_or_were_interrupted_are_given_back() {
    let dir = Dir::new("withdrawn");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        s.accept(vec![task("w"), task("i")]).await.unwrap();
        assert_eq!(s.claim(2, task_source::now_ms()).await.unwrap().len(), 2);
        s.settle(vec![
            Settlement {
                id: "w".into(),
                attempt: 1,
                outcome: Outcome::NotStarted,
            },
            Settlement {
                id: "i".into(),
                attempt: 1,
                outcome: Outcome::Interrupted,
            },
        ])
        .await
        .unwrap();
        let got = s.get(vec!["w".into(), "i".into()]).await.unwrap();
        let (w, i) = (got[0].as_ref().unwrap(), got[1].as_ref().unwrap());
        assert_eq!((w.state, w.attempts), (TaskState::Queued, 0));
        assert_eq!((i.state, i.attempts), (TaskState::Queued, 0));
        let events =
            |r: &TaskRecord| -> Vec<String> { r.history.iter().map(|h| h.event.clone()).collect() };
        assert_eq!(events(w), ["attempt", "withdrawn"]);
        assert_eq!(events(i), ["attempt", "interrupted"]);
        let again = s.claim(2, task_source::now_ms()).await.unwrap();
        let attempts: Vec<(String, u32)> =
            again.into_iter().map(|c| (c.task.id, c.attempt)).collect();
        assert_eq!(attempts, [("w".to_owned(), 1), ("i".to_owned(), 1)]);
        assert_eq!(s.stats().await.unwrap().rows["running"], 2);
    });
}

/// A closed store answers nothing more, and letting go of it later writes
/// nothing: a daemon started on the same file after the close keeps what it
/// wrote, though the closed store's last handle goes only after.
#[test]
fn a_closed_store_writes_nothing_more_and_its_drop_leaves_the_next_ones_changes() {
    let dir = Dir::new("close");
    rt().block_on(async {
        let old = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        old.accept(vec![task("a")]).await.unwrap();
        assert_eq!(old.claim(1, task_source::now_ms()).await.unwrap().len(), 1);
        old.close().await;
        assert!(matches!(
            old.accept(vec![task("late")]).await,
            Err(SourceError::Closed)
        ));
        let next = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        assert_eq!(
            next.recover().await.unwrap(),
            1,
            "the close wrote a's claim"
        );
        next.accept(vec![task("b")]).await.unwrap();
        drop(old);
        let ids: Vec<String> = next
            .claim(10, task_source::now_ms())
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.task.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        drop(next);
        let last = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        let got = last
            .get(vec!["a".into(), "b".into(), "late".into()])
            .await
            .unwrap();
        let states: Vec<Option<TaskState>> =
            got.iter().map(|r| r.as_ref().map(|r| r.state)).collect();
        assert_eq!(
            states,
            [Some(TaskState::Running), Some(TaskState::Running), None]
        );
    });
}

/// A listing is a read: it shows every task as it stands, those whose rows
/// are not written yet too, newest first, within its limit.
#[test]
fn a_listing_shows_tasks_not_yet_in_their_rows() {
    let dir = Dir::new("list");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(vec![task("a"), task("b"), task("c")])
            .await
            .unwrap();
        assert_eq!(s.claim(1, 0).await.unwrap()[0].task.id, "a");
        let ids = |records: Vec<task_source::TaskRecord>| -> Vec<(String, TaskState)> {
            records.into_iter().map(|r| (r.task.id, r.state)).collect()
        };
        let all = s.list(Filter::default()).await.unwrap();
        assert_eq!(
            ids(all),
            [
                ("c".to_owned(), TaskState::Queued),
                ("b".to_owned(), TaskState::Queued),
                ("a".to_owned(), TaskState::Running)
            ]
        );
        let running = s.list(in_state(TaskState::Running)).await.unwrap();
        assert_eq!(ids(running), [("a".to_owned(), TaskState::Running)]);
        let newest = s
            .list(Filter {
                limit: 2,
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0].task.id, "c");
    });
}

/// A listing read a page at a time, either way, is what one read gives:
/// tasks whose rows are written (a purge writes every row first), tasks only
/// the store's memory holds yet, and a task in both whose row is out of
/// date, in order, within the limit and the filter.
#[test]
fn a_listing_read_in_pages_mixes_rows_and_unwritten_tasks_in_order() {
    let dir = Dir::new("pages");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        let first: Vec<String> = (0..7).map(|n| format!("t{n}")).collect();
        s.accept(first.iter().map(|id| task(id)).collect())
            .await
            .unwrap();
        let done = s.claim(2, 0).await.unwrap();
        s.settle(done.into_iter().map(ok).collect()).await.unwrap();
        s.purge_dead().await.unwrap();
        // t2 runs: its record is in memory, its row still says queued.
        assert_eq!(s.claim(1, 0).await.unwrap()[0].task.id, "t2");
        let later: Vec<String> = (7..12).map(|n| format!("t{n}")).collect();
        s.accept(later.iter().map(|id| task(id)).collect())
            .await
            .unwrap();
        let all: Vec<String> = first.iter().chain(&later).cloned().collect();
        let newest: Vec<String> = all.iter().rev().cloned().collect();
        let read = |filter: Filter, order: ListOrder, page: usize| {
            let pager = Pager::new(filter, order, page);
            let s = &s;
            async move {
                let records = pager.all(s).await.unwrap();
                records.into_iter().map(|r| r.task.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(
            read(Filter::default(), ListOrder::NewestFirst, 3).await,
            newest
        );
        assert_eq!(
            read(Filter::default(), ListOrder::OldestFirst, 5).await,
            all
        );
        let ten = Filter {
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(read(ten, ListOrder::NewestFirst, 4).await, newest[..10]);
        assert_eq!(
            read(in_state(TaskState::Ok), ListOrder::OldestFirst, 1).await,
            ["t0", "t1"]
        );
        assert_eq!(
            read(in_state(TaskState::Running), ListOrder::NewestFirst, 2).await,
            ["t2"]
        );
        // t2's row says queued, its record running: left out, and the page
        // filled from the rows after it.
        let queued: Vec<String> = all[3..].to_vec();
        assert_eq!(
            read(in_state(TaskState::Queued), ListOrder::OldestFirst, 2).await,
            queued
        );
        let mut pager = Pager::new(Filter::default(), ListOrder::NewestFirst, 4);
        let mut sizes = Vec::new();
        while let Some(records) = pager.next(&s).await.unwrap() {
            sizes.push(records.len());
        }
        assert_eq!(sizes, [4, 4, 4, 0], "a read of at most a page each");
    });
}

/// An id known only from its row (its record written and gone from memory,
/// and after a reopen) is still answered as known, not stored twice.
#[test]
fn an_id_known_only_from_its_row_is_not_stored_again() {
    let dir = Dir::new("known-row");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(vec![task("a")]).await.unwrap();
        let c = s.claim(1, 0).await.unwrap().remove(0);
        s.settle(vec![ok(c)]).await.unwrap();
        // Every row written (a purge writes them first), the record gone from memory.
        s.purge_dead().await.unwrap();
        assert_eq!(
            s.accept(vec![task("a"), task("b")]).await.unwrap(),
            vec![Admission::Known(TaskState::Ok), Admission::Accepted]
        );
    });
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        assert_eq!(
            s.accept(vec![task("a"), task("b"), task("c")])
                .await
                .unwrap(),
            vec![
                Admission::Known(TaskState::Ok),
                Admission::Known(TaskState::Queued),
                Admission::Accepted
            ]
        );
    });
}

/// A task with a payload of about 300 bytes, at `priority`.
fn wide_task(n: usize, priority: u8) -> NewTask {
    NewTask {
        payload: format!("\"{n:0300}\""),
        priority,
        ..task(&format!("w{n:05}"))
    }
}

/// A backlog far past the memory bound (1 MiB) is written out in part, the
/// tasks claimed last first, and is claimed in the same order as with the
/// default bound, where it stays in memory; every task then settles, and a
/// reopened store holds them all.
#[test]
fn a_backlog_past_the_memory_bound_is_claimed_in_the_same_order_and_kept() {
    let dir = Dir::new("spill");
    let roomy_dir = Dir::new("spill-roomy");
    const TASKS: usize = 12_000;
    let orders = rt().block_on(async {
        let tight =
            SqliteSource::open_with_memory(&dir.db(), Durability::Relaxed, 1 << 20).unwrap();
        let roomy = SqliteSource::open(&roomy_dir.db(), Durability::Relaxed).unwrap();
        let mut orders = Vec::new();
        for s in [&tight, &roomy] {
            // Three priorities, accepted interleaved, 500 tasks a commit.
            let tasks: Vec<NewTask> = (0..TASKS)
                .map(|n| wide_task(n, [10, 50, 90][n % 3]))
                .collect();
            for batch in tasks.chunks(500) {
                let admitted = s.accept(batch.to_vec()).await.unwrap();
                assert!(admitted.iter().all(|a| *a == Admission::Accepted));
            }
            let mut order = Vec::new();
            loop {
                let claimed = s.claim(700, task_source::now_ms()).await.unwrap();
                if claimed.is_empty() {
                    break;
                }
                for c in &claimed {
                    assert_eq!(c.task.payload.len(), 302, "{} whole", c.task.id);
                }
                order.extend(claimed.iter().map(|c| c.task.id.clone()));
                s.settle(claimed.into_iter().map(ok).collect())
                    .await
                    .unwrap();
            }
            orders.push(order);
        }
        orders
    });
    assert_eq!(orders[0].len(), TASKS);
    assert_eq!(orders[0], orders[1], "the same order with either bound");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        let stats = s.stats().await.unwrap();
        assert_eq!(stats.rows["ok"], TASKS as u64);
        assert_eq!(stats.rows["queued"], 0);
    });
}

/// Past the memory bound, waiting tasks' rows are written before they run
/// (with the default bound, none would be), and those claimed first stay in
/// memory.
#[test]
fn a_backlog_past_the_memory_bound_leaves_memory_for_its_rows() {
    let dir = Dir::new("spill-rows");
    rt().block_on(async {
        let s = SqliteSource::open_with_memory(&dir.db(), Durability::Relaxed, 1 << 20).unwrap();
        let tasks: Vec<NewTask> = (0..12_000).map(|n| wide_task(n, 10)).collect();
        for batch in tasks.chunks(500) {
            s.accept(batch.to_vec()).await.unwrap();
        }
        // Served after the spill that followed the last commit.
        s.stats().await.unwrap();
        // A reader beside the store's own connection (WAL: it sees what
        // was committed).
        let reader = rusqlite::Connection::open(dir.db()).unwrap();
        let written: Vec<String> = reader
            .prepare("SELECT id FROM tasks WHERE state = 'queued' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // About 5.7 MB of records, at most 1.25 MiB of them kept.
        assert!(written.len() > 8_000, "{} rows written", written.len());
        assert!(
            written.iter().all(|id| id.as_str() >= "w02000"),
            "the first tasks to be claimed stay in memory: {:?}",
            written.first()
        );
    });
}

/// A task that ends ok after a retry keeps no error: its record (and, once
/// reopened, its row) says ok with none, not the retry's.
#[test]
fn an_ok_after_a_retry_leaves_no_error() {
    let dir = Dir::new("ok-after-retry");
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        s.accept(vec![task("r")]).await.unwrap();
        let first = s.claim(1, 0).await.unwrap().remove(0);
        s.settle(vec![Settlement {
            id: first.task.id.clone(),
            attempt: first.attempt,
            outcome: Outcome::Retry {
                due_ms: 0,
                error: ErrorInfo {
                    kind: "handler".into(),
                    message: "try again".into(),
                },
            },
        }])
        .await
        .unwrap();
        let second = s.claim(1, task_source::now_ms()).await.unwrap().remove(0);
        assert_eq!(second.attempt, 2);
        s.settle(vec![ok(second)]).await.unwrap();
        let record = s.get(vec!["r".into()]).await.unwrap().remove(0).unwrap();
        assert_eq!((record.state, record.error), (TaskState::Ok, None));
    });
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Fsync).unwrap();
        let record = s.get(vec!["r".into()]).await.unwrap().remove(0).unwrap();
        assert_eq!((record.state, record.error), (TaskState::Ok, None));
    });
}

/// The ids of a page of the listing in `order` after `from`.
async fn page_ids(s: &SqliteSource, order: ListOrder, from: Option<ListFrom>) -> Vec<String> {
    let page = s
        .list_page(Filter::default(), order, from, 10)
        .await
        .unwrap();
    page.records.into_iter().map(|r| r.task.id).collect()
}

/// A place in a listing handed out before the newest tasks were pruned is
/// not handed to a later task once the store is opened again: a task
/// accepted since comes after it, as every later task does.
#[test]
fn a_listing_s_place_stays_before_later_tasks_after_a_prune_and_a_reopen() {
    let dir = Dir::new("numbers-prune");
    let place = rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(["a", "b", "c"].map(task).to_vec()).await.unwrap();
        let page = s
            .list_page(Filter::default(), ListOrder::OldestFirst, None, 3)
            .await
            .unwrap();
        let place = page.next.expect("a full page says where the next starts");
        let done = s.claim(3, task_source::now_ms()).await.unwrap();
        s.settle(done.into_iter().map(ok).collect()).await.unwrap();
        assert_eq!(s.prune(task_source::now_ms() + 1, None).await.unwrap(), 3);
        place
    });
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(vec![task("d")]).await.unwrap();
        assert_eq!(
            page_ids(&s, ListOrder::OldestFirst, Some(place)).await,
            ["d"],
            "the task accepted since comes after the place"
        );
        assert_eq!(
            page_ids(&s, ListOrder::NewestFirst, Some(place)).await,
            Vec::<String>::new(),
            "nothing is older than the pruned tasks"
        );
    });
}

/// The same once the newest task was a dead letter that was purged.
#[test]
fn a_purged_dead_letter_s_place_stays_before_later_tasks_after_a_reopen() {
    let dir = Dir::new("numbers-purge");
    let place = rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(vec![task("x")]).await.unwrap();
        let c = s.claim(1, 0).await.unwrap().remove(0);
        s.settle(vec![Settlement {
            id: c.task.id,
            attempt: c.attempt,
            outcome: Outcome::Settled {
                state: TaskState::DeadLetter,
                line: "{}".into(),
                error: None,
            },
        }])
        .await
        .unwrap();
        let page = s
            .list_page(Filter::default(), ListOrder::NewestFirst, None, 1)
            .await
            .unwrap();
        assert_eq!(s.purge_dead().await.unwrap(), ["x"]);
        page.next.expect("a full page says where the next starts")
    });
    rt().block_on(async {
        let s = SqliteSource::open(&dir.db(), Durability::Relaxed).unwrap();
        s.accept(vec![task("y")]).await.unwrap();
        assert_eq!(
            page_ids(&s, ListOrder::OldestFirst, Some(place)).await,
            ["y"]
        );
    });
}
