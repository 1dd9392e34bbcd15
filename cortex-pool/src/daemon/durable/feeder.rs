//! The feeder: claims ready tasks from the source, runs each claimed attempt
//! once on the pool (no pool-level retries), and settles it: ok, failed, or,
//! for a retryable failure, a retry after the policy's backoff until the
//! retries run out and it is dead-lettered. Settlements of tasks that end
//! together are committed together, in the same transaction as the next claim.
//!
//! The pool sees every attempt as its first (pool-core has no way to set the
//! attempt number a worker sees); the attempt count lives in the source and is
//! what look-ups and result lines show.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foldhash::HashMap;
use pool_core::{Completion, CompletionSink, Completions, Failure, FinalStatus, SubmitError, Task};
use task_source::{now_ms, Claimed, ErrorInfo, Outcome, Settlement, TaskState};

use super::pace::Pace;
use super::unsaved::Unsaved;
use crate::cli::output;
use crate::daemon::state::Daemon;

/// How an attempt on the pool ended.
enum Ran {
    Done(Completion),
    /// The pool did not take it (it is stopping): back to the queue.
    NotTaken,
    /// The pool refused the task itself (its payload, encoded, is larger than
    /// a frame may be): it could never run, so it fails.
    Refused(SubmitError),
}

struct Attempt {
    claimed: Claimed,
    /// When it was handed to the pool.
    started: Instant,
    ran: Ran,
}

/// An attempt the pool took: its claim and when it was handed over, by the
/// pool's id of the task.
type Running = HashMap<u64, (Claimed, Instant)>;

/// Outcomes taken from the pool at once, at most.
const OUTCOMES_AT_ONCE: usize = 1024;

/// Tasks in the pool at once: what it finishes while the next claim waits
/// for the store's commit ([`Pace`]), few enough that a crash re-runs little
/// and a task of higher priority submitted later waits behind few of them.
/// Its slots are those of the workers the pool holds or is growing to (its
/// target, which a `scale` lowers), whichever are more.
fn window(daemon: &Daemon, pace: &Pace) -> usize {
    let workers = daemon
        .pool
        .worker_count()
        .max(daemon.pool.target_size())
        .max(1);
    let workers = usize::try_from(workers).unwrap_or(usize::MAX);
    daemon.setting(|s| {
        let slots = workers.saturating_mul(s.pool.worker_concurrency as usize);
        pace.window(slots, s.pool.max_queue_len)
    })
}

/// How long the feeder waits before it asks the source again to re-queue the
/// tasks the last daemon left running.
const RECOVER_AGAIN: Duration = Duration::from_millis(500);

/// Runs until the daemon drains and every attempt it started has settled and
/// been recorded. `recovered`: whether the tasks the last daemon left running
/// were re-queued; if not, that is tried again until it works, and nothing is
/// claimed before (a recovery re-queues every running task, those this daemon
/// runs too).
pub(crate) async fn run(daemon: Arc<Daemon>, recovered: bool) {
    if !recovered && !recover(&daemon).await {
        return;
    }
    // Every attempt's outcome arrives in one channel: no handle, future or
    // wake-up per task.
    let mut done = Completions::new();
    let sink = done.sink();
    let mut running = Running::default();
    let mut outcomes = Vec::new();
    let mut unsaved = Unsaved::default();
    let mut claim_failed_at: Option<Instant> = None;
    let mut pace = Pace::new(Instant::now());
    loop {
        let draining = daemon.draining.is_cancelled();
        if draining && running.is_empty() {
            // Every outcome is recorded before the feeder ends: the service
            // waits for it (up to its stop budget); a daemon stopped before
            // runs those tasks again.
            unsaved.save_all(&daemon).await;
            break;
        }
        let window = window(&daemon, &pace);
        // A pool that stopped working takes nothing: claimed tasks stay queued
        // in the store for the next daemon.
        let may_claim = claim_failed_at.is_none_or(|t| t.elapsed() > Duration::from_millis(500))
            && daemon.pool.failure().is_none();
        let in_flight = running.len();
        // Outcomes a source keeps failing to record hold claims back: what
        // waits to be recorded stays within what one round gathers.
        let recorded = unsaved.len() <= OUTCOMES_AT_ONCE + window;
        let claim = !draining && may_claim && recorded && in_flight <= window / 2;
        // The outcomes gathered since the last round and the next claim go to
        // the source together, so a store commits them in one transaction.
        let (claimed, ()) = tokio::join!(
            async {
                if claim {
                    let asked = Instant::now();
                    let claimed = daemon.source.claim(window - in_flight, now_ms()).await;
                    pace.claimed(asked.elapsed());
                    Some(claimed)
                } else {
                    None
                }
            },
            async {
                // Outcomes a failed commit kept (a store that could not write,
                // a queue whose connection dropped) are tried again each round.
                if !unsaved.is_empty() {
                    unsaved.save(&daemon).await;
                }
            }
        );
        match claimed {
            Some(Ok(claimed)) => {
                claim_failed_at = None;
                start(&daemon, claimed, &sink, &mut running, &mut unsaved).await;
            }
            Some(Err(e)) => {
                if claim_failed_at.is_none() {
                    tracing::error!(error = %e, "cannot claim tasks from the store");
                }
                claim_failed_at = Some(Instant::now());
            }
            None => {}
        }
        let mut finished = 0;
        tokio::select! {
            _ = done.recv_many(&mut outcomes, OUTCOMES_AT_ONCE), if !running.is_empty() => {
                // Asked once a batch (a broker's answer may be a copy of its
                // server's description), not once a task.
                let max_line = Some(line_limit(daemon.source.max_line_bytes()));
                finished = outcomes.len();
                for outcome in outcomes.drain(..) {
                    let id = match &outcome {
                        Ok(out) => out.id,
                        Err(err) => err.id,
                    };
                    // Each accepted task's outcome arrives once.
                    if let Some((claimed, started)) = running.remove(&id) {
                        let ran = Ran::Done(outcome);
                        let attempt = Attempt { claimed, started, ran };
                        unsaved.push(settlement(&daemon, attempt, max_line));
                    }
                }
            }
            () = daemon.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = daemon.draining.cancelled(), if !draining => {}
        }
        // A round with no outcome while tasks run counts too: the pace of a
        // pool busy with slow tasks falls, and so does the window.
        pace.finished(finished, !running.is_empty(), Instant::now());
    }
}

/// Submits the claimed attempts to the pool in one call: those it took run
/// (their outcomes arrive through `sink`), those it refused because it is
/// stopping are settled as not taken, and one it refused for itself (too
/// large) as failed.
async fn start(
    daemon: &Daemon,
    claimed: Vec<Claimed>,
    sink: &CompletionSink,
    running: &mut Running,
    unsaved: &mut Unsaved,
) {
    if claimed.is_empty() {
        return;
    }
    let started = Instant::now();
    let tasks: Vec<Task> = claimed.iter().map(task).collect();
    let taken = daemon.pool.submit_each_to(tasks, sink).await;
    for (claimed, taken) in claimed.into_iter().zip(taken) {
        match taken {
            Ok(id) => {
                running.insert(id, (claimed, started));
            }
            Err(refused) => {
                let ran = match refused {
                    SubmitError::ShuttingDown(_) | SubmitError::Failed { .. } => Ran::NotTaken,
                    refused => Ran::Refused(refused),
                };
                // Interrupted, or a short refusal: no line to fit.
                let attempt = Attempt {
                    claimed,
                    started,
                    ran,
                };
                unsaved.push(settlement(daemon, attempt, None));
            }
        }
    }
}

/// The time since the source accepted a task at `submitted_ms` (ms since
/// the Unix epoch): what its outcome's `duration_ms` says, across its
/// attempts, retries' backoffs and daemon restarts, as `run` counts from a
/// task's submission. Nothing when the clock says it was accepted later
/// (a clock stepped back, or another host's clock, on a NATS queue).
fn since_submitted(submitted_ms: u64) -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(submitted_ms))
}

/// What the outcome of a task accepted at `submitted_ms` whose last
/// attempt was handed to the pool at `started` says it took: the time since
/// its acceptance, and never less than that attempt's own time (the wall
/// clock may have stepped back since the task was accepted, or, on a NATS
/// queue, the server's clock that stamped it may run ahead of this host's).
fn duration(submitted_ms: u64, started: Instant) -> Duration {
    since_submitted(submitted_ms).max(started.elapsed())
}

/// The pool's task for one claimed attempt.
fn task(claimed: &Claimed) -> Task {
    let mut task = Task::new(
        claimed.task.task_type.as_str(),
        msgpack(&claimed.task.payload),
    )
    .with_priority(claimed.task.priority)
    .with_max_retries(0)
    // The source keeps the retries and the dead-letter queue: a failed
    // attempt is not a dead letter of the pool's (no entry, no alert).
    .with_dead_letter(false)
    .with_attempts_before(claimed.attempt.saturating_sub(1));
    if let Some(ms) = claimed.task.timeout_ms {
        task = task.with_timeout(Duration::from_millis(ms));
    }
    task
}

/// MessagePack's `nil`.
const MSGPACK_NIL: u8 = 0xc0;

/// The MessagePack encoding of a stored payload (JSON text), transcoded with no
/// tree of values in between, as `run` does: a map keeps its keys in the
/// order they were submitted in; a string with no escape in it is written as
/// it is (as `run` does). A payload that is not JSON (the store holds only
/// checked ones) is sent as `nil`.
fn msgpack(json: &str) -> Vec<u8> {
    if let Some(encoded) = crate::cli::input::plain_msgpack(json) {
        return encoded;
    }
    let mut out = Vec::with_capacity(json.len() + 8);
    let mut from = serde_json::Deserializer::from_str(json);
    let mut to = rmp_serde::Serializer::new(&mut out).with_struct_map();
    if serde_transcode::transcode(&mut from, &mut to).is_err() || from.end().is_err() {
        return vec![MSGPACK_NIL];
    }
    out
}

/// The settlement of one attempt; a line longer than `max_line` (the
/// source's [`max_line_bytes`](task_source::TaskSource::max_line_bytes)) is
/// replaced as [`fitted`] says.
fn settlement(daemon: &Daemon, a: Attempt, max_line: Option<usize>) -> Settlement {
    let id = a.claimed.task.id.clone();
    let attempt = a.claimed.attempt;
    let elapsed = duration(a.claimed.submitted_ms, a.started);
    let ms = elapsed.as_secs_f64() * 1000.0;
    // The attempts that ran before this one (one given back unstarted is
    // not counted): a line's `attempts` counts those that ran, this one
    // only if the pool ran it (an unroutable task's never did).
    let ran_before = attempt.saturating_sub(1);
    let outcome = match a.ran {
        Ran::NotTaken => Outcome::NotStarted,
        Ran::Refused(refused) => Outcome::Settled {
            state: TaskState::Failed,
            line: output::refused_after(&id, &refused, ran_before, ms).into_text(),
            error: Some(ErrorInfo {
                kind: output::refused_kind(&refused).to_owned(),
                message: refused.to_string(),
            }),
        },
        Ran::Done(Ok(out)) => {
            daemon.latency.observe(elapsed.as_secs_f64());
            Outcome::Settled {
                state: TaskState::Ok,
                line: output::ok_after(&id, &out, attempt, ms).into_text(),
                error: None,
            }
        }
        Ran::Done(Err(err)) => match (&err.status, &err.failure) {
            // Stopped by the pool's end: an attempt the pool never started
            // (it counts none) is given back.
            (FinalStatus::Cancelled, _) | (_, Failure::ShuttingDown | Failure::Cancelled) => {
                if err.attempts == 0 {
                    Outcome::NotStarted
                } else {
                    Outcome::Interrupted
                }
            }
            (FinalStatus::Exhausted, failure) => {
                let retry = daemon.setting(|s| s.pool.retry);
                let error = ErrorInfo {
                    kind: failure.kind().to_owned(),
                    message: failure.to_string(),
                };
                if attempt <= retry.max_retries() {
                    let due = now_ms() + retry.backoff(attempt).as_millis() as u64;
                    Outcome::Retry { due_ms: due, error }
                } else {
                    daemon.latency.observe(elapsed.as_secs_f64());
                    Outcome::Settled {
                        state: TaskState::DeadLetter,
                        line: output::failed_after(&id, &err, ran_before + err.attempts, ms)
                            .into_text(),
                        error: Some(error),
                    }
                }
            }
            (_, failure) => {
                daemon.latency.observe(elapsed.as_secs_f64());
                Outcome::Settled {
                    state: TaskState::Failed,
                    line: output::failed_after(&id, &err, ran_before + err.attempts, ms)
                        .into_text(),
                    error: Some(ErrorInfo {
                        kind: failure.kind().to_owned(),
                        message: failure.to_string(),
                    }),
                }
            }
        },
    };
    let outcome = fitted(max_line, &id, attempt, ms, outcome);
    Settlement {
        id,
        attempt,
        outcome,
    }
}

/// Room kept in a reply to a client beside a task's line (its framing and
/// the keys around it).
const REPLY_OVERHEAD: usize = 4 * 1024;

/// The longest result line the daemon keeps: what its source stores (a
/// queue's message limit) and what one reply to a client can carry (`result`
/// and `wait` answer a task's line in one reply; a longer one could never be
/// answered).
fn line_limit(source: Option<usize>) -> usize {
    let reply = crate::daemon::protocol::MAX_REPLY - REPLY_OVERHEAD;
    source.map_or(reply, |s| s.min(reply))
}

/// `outcome`, or, when its line is longer than the source stores (`max`),
/// the task failed for that reason: a line the source cannot take would be
/// tried again forever and never settle.
fn fitted(max: Option<usize>, id: &str, attempt: u32, ms: f64, outcome: Outcome) -> Outcome {
    match (max, outcome) {
        (Some(max), Outcome::Settled { line, .. }) if line.len() > max => Outcome::Settled {
            state: TaskState::Failed,
            line: output::too_large(id, attempt, line.len(), max, ms).into_text(),
            error: Some(ErrorInfo {
                kind: output::TOO_LARGE.to_owned(),
                message: output::too_large_message(line.len(), max),
            }),
        },
        (_, outcome) => outcome,
    }
}

/// Re-queues the tasks the last daemon left running, again every
/// [`RECOVER_AGAIN`] until the source can; `false` when the daemon drained
/// first.
async fn recover(daemon: &Daemon) -> bool {
    let mut told = false;
    loop {
        tokio::select! {
            () = daemon.draining.cancelled() => return false,
            () = tokio::time::sleep(RECOVER_AGAIN) => {}
        }
        match daemon.source.recover().await {
            Ok(n) => {
                tracing::warn!(
                    tasks = n,
                    "re-queued tasks interrupted by the last daemon's end; claiming starts"
                );
                return true;
            }
            // Said once as a warning (nothing is claimed until it works),
            // then at debug level each try.
            Err(e) if !told => {
                told = true;
                tracing::warn!(error = %e, "cannot re-queue interrupted tasks yet; trying again");
            }
            Err(e) => tracing::debug!(error = %e, "cannot re-queue interrupted tasks yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_the_messagepack_of_its_json() {
        let json = r#"{"b":[1,-2,2.5,"x",null,true],"a":{"c":18446744073709551615}}"#;
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let decoded: serde_json::Value = rmp_serde::from_slice(&msgpack(json)).unwrap();
        assert_eq!(decoded, value);
        let long = "y".repeat(70_000);
        for text in [
            "x",
            "",
            "grüße 日本",
            "a \"quoted\" word",
            "tab\t",
            long.as_str(),
        ] {
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(msgpack(&json), rmp_serde::to_vec(&text).unwrap(), "{json}");
        }
        assert_eq!(msgpack("null"), [MSGPACK_NIL]);
        assert_eq!(msgpack("not json"), [MSGPACK_NIL]);
        assert_eq!(msgpack("1 2"), [MSGPACK_NIL]);
    }

    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use task_source::TaskSource;

    use crate::daemon::durable::unsaved::Outcomes;
    use crate::daemon::test_daemon::{daemon_set, daemon_with, task, TestSource};

    /// Waits until `done` holds (a guard of a minute against a hang, not a
    /// measure of time).
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(waited.await.is_ok(), "never: {what}");
    }

    async fn state(source: &TestSource, id: &str) -> Option<TaskState> {
        source.inner.status(vec![id.to_owned()]).await.unwrap()[0]
            .as_ref()
            .map(|s| s.state)
    }

    /// A claimed task the pool does not take because it is stopping goes back
    /// to the queue with its attempt given back: claims that never started
    /// do not use up the task's retries (each claim here is refused).
    /// The claim window follows a `scale` down: sized by the pool's target,
    /// not the `pool_size` it started with (20 workers' window kept ten
    /// times the claims of the 2 left running).
    #[tokio::test]
    async fn the_window_follows_a_scale_down() {
        let daemon = daemon_set(Arc::new(task_source::MemorySource::new()), |s| {
            s.pool.pool_size = 20;
            s.pool.min_workers = 1;
        })
        .await;
        let pace = Pace::new(Instant::now());
        let at_start = window(&daemon, &pace);
        daemon.pool.scale_to(2).await.unwrap();
        until("two workers", || daemon.pool.worker_count() == 2).await;
        let scaled = window(&daemon, &pace);
        assert!(scaled < at_start, "{at_start} then {scaled}");
        assert_eq!(scaled, Pace::new(Instant::now()).window(2, usize::MAX));
    }

    #[tokio::test]
    async fn claims_a_stopping_pool_does_not_take_give_their_attempts_back() {
        let source = Arc::new(TestSource::default());
        source.inner.accept(vec![task("t")]).await.unwrap();
        let daemon = daemon_with(source.clone()).await;
        daemon.pool.shutdown().await;
        let feeder = tokio::spawn(run(daemon.clone(), true));
        until("three claims", || source.claims.load(Ordering::SeqCst) >= 3).await;
        daemon.draining.cancel();
        feeder.await.unwrap();
        let record = source.inner.get(vec!["t".to_owned()]).await.unwrap()[0]
            .clone()
            .expect("its record");
        assert_eq!((record.state, record.attempts), (TaskState::Queued, 0));
    }

    /// A task's time counts from its acceptance, and is never less than its
    /// last attempt's when a clock says it was accepted later (skew).
    #[test]
    fn a_duration_counts_from_acceptance_and_covers_the_attempt() {
        let started = Instant::now()
            .checked_sub(Duration::from_millis(50))
            .expect("the clock is past 50 ms");
        let earlier = now_ms() - 10_000;
        assert!(duration(earlier, started) >= Duration::from_secs(10));
        let later = now_ms() + 60_000;
        let took = duration(later, started);
        assert!(took >= Duration::from_millis(50), "{took:?}");
    }

    /// A task the pool refuses for itself (its payload, encoded, is larger
    /// than a frame may be: JSON numbers such as `0.5` grow as MessagePack)
    /// settles as failed `invalid_input` with its attempt counted in the store
    /// (its line says none ran), instead of
    /// going back to the queue to be claimed and refused again for ever.
    #[tokio::test]
    async fn a_task_the_pool_refuses_for_itself_fails_instead_of_looping() {
        let source = Arc::new(TestSource::default());
        let daemon = daemon_set(source.clone(), |s| s.pool.max_frame = 1024).await;
        let floats = vec!["0.5"; 200].join(",");
        let big = task_source::NewTask {
            payload: format!("[{floats}]"),
            ..task("big")
        };
        assert!(big.payload.len() < 1024, "fits as JSON");
        source.inner.accept(vec![big, task("small")]).await.unwrap();
        let feeder = tokio::spawn(run(daemon.clone(), true));
        let settled = || async {
            let all = source
                .inner
                .status(vec!["big".to_owned(), "small".to_owned()])
                .await
                .unwrap();
            all.iter()
                .all(|s| s.as_ref().is_some_and(|s| s.state.is_settled()))
        };
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while !settled().await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(waited.await.is_ok(), "the refused task never settled");
        let big = source.inner.get(vec!["big".to_owned()]).await.unwrap()[0]
            .clone()
            .expect("its record");
        assert_eq!(big.state, TaskState::Failed);
        assert_eq!(big.attempts, 1);
        let line: serde_json::Value =
            serde_json::from_str(big.line.as_deref().unwrap_or("")).unwrap();
        assert_eq!(line["error"]["kind"], "invalid_input", "{line}");
        // Its line counts the attempts that ran, as `run`'s refused lines do.
        assert_eq!(line["attempts"], 0, "{line}");
        assert_eq!(state(&source, "small").await, Some(TaskState::Ok));
        daemon.draining.cancel();
        feeder.await.unwrap();
    }

    /// A line too long for one reply to a client fails its task as
    /// `result_too_large` even on a store with no limit of its own (`result`
    /// and `wait` could never answer it); a queue's smaller limit wins.
    #[test]
    fn a_line_longer_than_one_reply_carries_fails_its_task() {
        let limit = line_limit(None);
        assert!(limit < crate::daemon::protocol::MAX_REPLY);
        assert_eq!(line_limit(Some(1_000)), 1_000);
        let line = format!(
            r#"{{"id":"t","status":"ok","result":"{}"}}"#,
            "x".repeat(limit)
        );
        let outcome = Outcome::Settled {
            state: TaskState::Ok,
            line,
            error: None,
        };
        match fitted(Some(limit), "t", 1, 1.0, outcome) {
            Outcome::Settled { state, error, .. } => {
                assert_eq!(state, TaskState::Failed);
                assert_eq!(error.map(|e| e.kind).as_deref(), Some("result_too_large"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A line longer than the source stores settles the task as failed with
    /// `result_too_large` (the queue's server would drop the connection of a
    /// daemon that sent it, and the task would never settle); a line that
    /// fits, or a source without a limit, keeps its outcome.
    #[test]
    fn a_line_longer_than_the_source_stores_fails_the_task_saying_why() {
        let ok = |line: &str| Outcome::Settled {
            state: TaskState::Ok,
            line: line.to_owned(),
            error: None,
        };
        let long = format!(
            r#"{{"id":"t","status":"ok","result":"{}"}}"#,
            "x".repeat(200)
        );
        match fitted(Some(100), "t", 2, 1.5, ok(&long)) {
            Outcome::Settled { state, line, error } => {
                assert_eq!(state, TaskState::Failed);
                let line: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(line["status"], "failed");
                assert_eq!(line["id"], "t");
                assert_eq!(line["attempts"], 2);
                assert_eq!(line["error"]["kind"], "result_too_large");
                let message = line["error"]["message"].as_str().unwrap();
                assert!(message.contains(&long.len().to_string()), "{message}");
                assert!(message.contains("100"), "{message}");
                assert_eq!(error.map(|e| e.kind).as_deref(), Some("result_too_large"));
            }
            other => panic!("{other:?}"),
        }
        for (max, line) in [(Some(100), r#"{"id":"t"}"#), (None, long.as_str())] {
            match fitted(max, "t", 1, 1.0, ok(line)) {
                Outcome::Settled {
                    state, line: kept, ..
                } => {
                    assert_eq!(state, TaskState::Ok);
                    assert_eq!(kept, line);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Outcomes a failed commit kept are still recorded when the daemon
    /// drains, however many tries it takes, before the feeder ends.
    #[tokio::test]
    async fn outcomes_kept_from_a_failed_commit_are_recorded_before_the_feeder_ends() {
        let failing = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(AtomicU32::new(0));
        let source = Arc::new(TestSource {
            settle_fails: Some(Box::new({
                let (failing, failures) = (failing.clone(), failures.clone());
                move || {
                    let fails = failing.load(Ordering::SeqCst);
                    if fails {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    fails
                }
            })),
            ..TestSource::default()
        });
        let daemon = daemon_with(source.clone()).await;
        source.accept(vec![task("t")]).await.unwrap();
        let feeder = tokio::spawn(run(daemon.clone(), true));
        until("a commit failed", || failures.load(Ordering::SeqCst) >= 1).await;
        let before = failures.load(Ordering::SeqCst);
        daemon.draining.cancel();
        // Two more failures: at least one of them after the feeder saw the
        // drain with nothing running.
        until("two commits failed while draining", || {
            failures.load(Ordering::SeqCst) >= before + 2
        })
        .await;
        failing.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), feeder)
            .await
            .expect("the feeder ends once it recorded")
            .unwrap();
        assert_eq!(state(&source, "t").await, Some(TaskState::Ok));
    }

    /// One outcome the source keeps refusing on its own (a broker's denied
    /// subject) holds up neither the others nor the feeder; it is tried
    /// again after pauses that grow, not in a loop, and, once the daemon
    /// drains, every 0.2 s until the source takes it.
    #[tokio::test(start_paused = true)]
    async fn an_outcome_refused_apart_holds_up_nothing_and_is_retried_after_growing_pauses() {
        let refusing = Arc::new(AtomicBool::new(true));
        let tries = Arc::new(AtomicU32::new(0));
        let source = Arc::new(TestSource {
            refuses: Some(Box::new({
                let (refusing, tries) = (refusing.clone(), tries.clone());
                move |s: &Settlement| {
                    if s.id != "stuck" {
                        return false;
                    }
                    tries.fetch_add(1, Ordering::SeqCst);
                    refusing.load(Ordering::SeqCst)
                }
            })),
            ..TestSource::default()
        });
        let daemon = daemon_with(source.clone()).await;
        source
            .accept(vec![task("a"), task("stuck"), task("b")])
            .await
            .unwrap();
        let others = ["a".to_owned(), "b".to_owned()];
        let mut waiting = daemon.waiters.register_all(&others);
        let feeder = tokio::spawn(run(daemon.clone(), true));
        let mut told = Vec::new();
        let recorded = tokio::time::timeout(Duration::from_secs(60), async {
            while told.len() < 2 {
                waiting.recv_many(&mut told, 2).await;
            }
        });
        assert!(recorded.await.is_ok(), "the others' waiters were held up");
        for id in ["a", "b"] {
            assert_eq!(state(&source, id).await, Some(TaskState::Ok));
        }
        until("stuck was refused", || tries.load(Ordering::SeqCst) >= 1).await;
        let before = tries.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let again = tries.load(Ordering::SeqCst) - before;
        // Pauses of 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 s: at most six tries in ten
        // seconds (a try each feeder round would be fifty and more).
        assert!((1..=6).contains(&again), "{again} tries in 10 s");
        assert_eq!(state(&source, "stuck").await, Some(TaskState::Running));
        assert_eq!(
            daemon.unrecorded.get(),
            Outcomes {
                unrecorded: 1,
                refused: 1
            },
            "status and metrics show it unrecorded, refused apart"
        );
        // Draining, it is tried every 0.2 s, not after its grown pause: a
        // subject granted meanwhile is seen within the stop's budget.
        let stuck = ["stuck".to_owned()];
        let mut waiting_stuck = daemon.waiters.register_all(&stuck);
        daemon.draining.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!feeder.is_finished(), "an outcome is still refused");
        refusing.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(1), feeder)
            .await
            .expect("recorded at its next try, not after its pause")
            .unwrap();
        assert_eq!(state(&source, "stuck").await, Some(TaskState::Ok));
        assert_eq!(daemon.unrecorded.get(), Outcomes::default());
        let mut told = Vec::new();
        waiting_stuck.recv_many(&mut told, 1).await;
        assert_eq!(
            told[0].id, "stuck",
            "its waiter is told once it is recorded"
        );
    }

    /// A task the last daemon left running, with a store that cannot
    /// re-queue it at first, is re-queued once the store can, then runs; the
    /// feeder claims nothing before (a recovery re-queues every running task,
    /// its own too).
    #[tokio::test]
    async fn a_recovery_that_failed_at_start_is_tried_again_before_any_claim() {
        let source = Arc::new(TestSource {
            recover_failures: AtomicU32::new(2),
            ..TestSource::default()
        });
        source.inner.accept(vec![task("left")]).await.unwrap();
        assert_eq!(source.inner.claim(1, 0).await.unwrap().len(), 1);
        assert!(source.recover().await.is_err(), "the start's try");
        let daemon = daemon_with(source.clone()).await;
        let feeder = tokio::spawn(run(daemon.clone(), false));
        let mut settled = false;
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while !settled {
                settled = state(&source, "left").await == Some(TaskState::Ok);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(waited.await.is_ok(), "the task left running never ran");
        let record = source.inner.get(vec!["left".to_owned()]).await.unwrap();
        assert_eq!(
            record[0].as_ref().map(|r| r.attempts),
            Some(1),
            "the attempt the last daemon's end interrupted was given back"
        );
        assert_eq!(
            *source.claims_before_recovery.lock().unwrap(),
            Some(0),
            "no claim before the recovery"
        );
        daemon.draining.cancel();
        feeder.await.unwrap();
    }
}
