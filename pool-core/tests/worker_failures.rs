//! Workers that crash, break the protocol, go silent, or cannot start.

mod common;

use std::time::Duration;

use pool_core::testing::{MockAction, MockTransport};
use pool_core::{FinalStatus, Pool, PoolConfig, StartError, WorkerCommand};

#[tokio::test(start_paused = true)]
async fn a_crash_mid_task_requeues_the_task_on_another_worker() {
    let (pool, recorder) = common::start(
        common::config(2),
        common::first_attempt(MockAction::Crash(3)),
    )
    .await;
    let out = pool
        .submit(common::task("work", 9))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.attempts, 2);
    let started = recorder.started();
    assert_ne!(started[0].worker, started[1].worker);
    let m = pool.metrics();
    assert_eq!(m.performance.workers_crashed, 1);
    assert_eq!(m.workers.total, 2, "the crashed worker was replaced");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_poison_task_that_keeps_killing_workers_ends_in_the_dlq() {
    let (pool, recorder) = common::start(common::config(2), |t| {
        if t.task_type == "poison" {
            MockAction::Crash(7)
        } else {
            MockAction::Echo
        }
    })
    .await;
    let err = pool
        .submit(common::task("poison", 1))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.status, FinalStatus::DeadLettered);
    assert_eq!(err.attempts, 4);
    assert_eq!(err.failure.kind(), "worker_crashed");
    assert!(
        err.failure.to_string().contains("exit code 7"),
        "{}",
        err.failure
    );
    assert_eq!(pool.dead_letters().await.len(), 1);
    // The pool is still whole and serving.
    let ok = pool
        .submit(common::task("fine", 2))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.decode::<u32>().unwrap(), 2);
    assert_eq!(
        recorder
            .started()
            .iter()
            .filter(|t| t.task_type == "poison")
            .count(),
        4
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_malformed_frame_is_a_protocol_failure_and_the_worker_is_replaced() {
    let (pool, recorder) = common::start(
        common::config(1),
        common::first_attempt(MockAction::Garbage),
    )
    .await;
    let mut events = pool.events();
    let out = pool
        .submit(common::task("work", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(recorder.launches(), 2);
    let mut saw_protocol_failure = false;
    while let Ok(event) = events.try_recv() {
        if let pool_core::PoolEvent::TaskAttemptFailed { kind, .. } = event {
            saw_protocol_failure |= kind == "protocol";
        }
    }
    assert!(saw_protocol_failure);
    pool.shutdown().await;
}

/// A log sink for one test (the runtime is current-thread, so the default
/// subscriber set on this thread sees every task's events).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_protocol_kill_is_logged_at_warn_with_the_worker_reason_and_the_bytes_in_hex() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (pool, _) = common::start(
        common::config(1),
        common::first_attempt(MockAction::Garbage),
    )
    .await;
    pool.submit(common::task("work", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    pool.shutdown().await;
    let text =
        String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("broke the protocol"))
        .unwrap_or_else(|| panic!("no protocol kill logged: {text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("worker-0"), "{line}");
    assert!(line.contains("malformed message"), "{line}");
    // The mock's garbage body: three 0xc1 bytes (never used in MessagePack).
    assert!(line.contains("bytes=c1 c1 c1"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_killed_as_a_zombie_once_and_its_task_completes_elsewhere() {
    let (pool, recorder) =
        common::start(common::config(2), common::first_attempt(MockAction::Freeze)).await;
    let mut events = pool.events();
    let out = pool
        .submit(common::task("work", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(*out.worker, *recorder.started()[1].worker);
    let mut zombies = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, pool_core::PoolEvent::ZombieDetected { .. }) {
            zombies += 1;
        }
    }
    assert_eq!(zombies, 1);
    let m = pool.metrics();
    assert_eq!(m.performance.zombies_killed, 1);
    assert_eq!(
        recorder.launches(),
        3,
        "two workers plus exactly one replacement"
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_start_fails_start_without_a_respawn_storm() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    recorder.fail_next_launches(1);
    let result = Pool::builder(transport, WorkerCommand::new("/missing/worker"))
        .config(common::config(3))
        .start()
        .await;
    let err = result.unwrap_err();
    assert!(matches!(err, StartError::Worker { .. }), "{err}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        recorder.launches(),
        3,
        "no worker was launched after the failure"
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_start_failures_back_off_and_open_the_breaker() {
    let (pool, recorder) = failing_starts().await;
    let launches = recorder.launches();
    // 100, 200, 400 ms ... capped at 30 s: at most a handful in 10 s, never a storm.
    assert!(launches < 15, "{launches} launches in ~10 s");
    let m = pool.metrics();
    assert!(m.health.restart_breaker_open);
    assert_eq!(m.health.status, pool_core::HealthStatus::Critical);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn workers_that_die_with_no_task_open_the_breaker_instead_of_looping() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    // Every worker exits right after its handshake, before it is given any task.
    recorder.crash_next_after_ready(1000);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(1))
        .start()
        .await
        .expect("the first worker completes its handshake");
    tokio::time::sleep(Duration::from_secs(60)).await;
    // 100 ms, 200 ms, 400 ms, 800 ms, then the breaker: one start per 30 s.
    let launches = recorder.launches();
    assert!(
        (6..=7).contains(&launches),
        "{launches} launches in a minute"
    );
    let m = pool.metrics();
    assert!(m.health.restart_breaker_open);
    assert_eq!(m.health.status, pool_core::HealthStatus::Critical);
    let alerts = pool.alerts().await;
    assert!(
        alerts.iter().any(|a| a.kind == "restart-breaker-open"),
        "{alerts:?}"
    );
    pool.shutdown().await;
}

/// The reproduction: 30 tasks that crash their worker among 30 echo tasks,
/// 2 workers, one retry. Crashes caused by tasks are the tasks' failures: they go
/// to the DLQ after their attempts, each worker is replaced at once, and the echo
/// tasks are never starved behind the restart breaker.
#[tokio::test(start_paused = true)]
async fn crashing_tasks_go_to_the_dlq_and_never_starve_the_pool() {
    let config = PoolConfig {
        retry: pool_core::RetryPolicy::new(
            1,
            Duration::from_secs(1),
            Duration::from_secs(30),
            false,
        )
        .unwrap(),
        ..common::config(2)
    };
    let cap = config.restart_backoff_cap;
    let (pool, recorder) = common::start(config, |t| {
        if t.task_type == "crash" {
            MockAction::Crash(1)
        } else {
            MockAction::Echo
        }
    })
    .await;
    // Routine task events would overflow the buffer: the worker events are enough.
    let mut events = pool.notable_events();
    let began = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for n in 0..30 {
        handles.push((
            "crash",
            pool.submit(common::task("crash", n)).await.unwrap(),
        ));
        handles.push(("echo", pool.submit(common::task("echo", n)).await.unwrap()));
    }
    for (kind, handle) in handles {
        let outcome = handle.await;
        if kind == "echo" {
            let out = outcome.expect("an echo task succeeds");
            assert_eq!(out.attempts, 1, "an echo task was never hit by a crash");
        } else {
            let err = outcome.expect_err("a crash task fails");
            assert_eq!(err.status, FinalStatus::DeadLettered, "{err:?}");
            assert_eq!(err.failure.kind(), "worker_crashed");
            assert_eq!(err.attempts, 2);
        }
    }
    let took = began.elapsed();
    assert!(
        took < cap,
        "60 tasks took {took:?} of virtual time (restart_backoff_cap {cap:?})"
    );
    let m = pool.metrics();
    assert!(!m.health.restart_breaker_open);
    assert_eq!(m.performance.workers_crashed, 60);
    assert_eq!(m.tasks.dead_lettered, 30);
    assert_eq!(m.workers.total, 2, "the pool is back to its size");
    assert_eq!(recorder.launches(), 62, "one replacement per crash");
    let alerts = pool.alerts().await;
    assert!(
        alerts.iter().all(|a| a.kind != "restart-breaker-open"),
        "{alerts:?}"
    );
    let mut restarts = 0;
    loop {
        match events.try_recv() {
            Ok(pool_core::PoolEvent::WorkerRestarted { backoff_ms, .. }) => {
                restarts += 1;
                assert_eq!(backoff_ms, 0, "a task's crash delays no replacement");
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
            Err(e) => panic!("events lost: {e}"),
        }
    }
    assert_eq!(restarts, 60);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn replacements_inherit_the_slot_and_count_its_restarts() {
    let (pool, _) = common::start(common::config(2), |t| {
        if t.task_type == "crash" && t.attempt == 1 {
            MockAction::Crash(1)
        } else if t.task_type == "slow" && t.attempt == 1 {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    pool.submit(common::task("crash", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    let slow = common::task("slow", 2).with_timeout(Duration::from_secs(1));
    pool.submit(slow).await.unwrap().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let workers = pool.workers().await;
    let mut slots: Vec<(Option<u32>, u32)> = workers.iter().map(|w| (w.slot, w.restarts)).collect();
    slots.sort();
    assert_eq!(slots.len(), 2);
    assert_eq!(
        slots.iter().map(|s| s.0).collect::<Vec<_>>(),
        [Some(0), Some(1)],
        "replacements reuse the two slots: {workers:?}"
    );
    assert_eq!(slots.iter().map(|s| s.1).sum::<u32>(), 2, "{workers:?}");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_payload_above_max_frame_is_refused_at_submit_and_kills_no_worker() {
    let config = pool_core::PoolConfig {
        max_frame: 4096,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Echo).await;
    let big = pool_core::Task::new("work", vec![7u8; 8192]);
    let refused = pool.submit(big).await.unwrap_err();
    assert_eq!(refused.kind(), "payload_too_large");
    assert!(refused.to_string().contains("4096"), "{refused}");
    assert_eq!(
        refused.into_task().payload.len(),
        8192,
        "the task is given back"
    );
    let out = pool.submit(common::task("work", 1)).await.unwrap().await;
    assert_eq!(out.unwrap().decode::<u32>().unwrap(), 1);
    assert_eq!(recorder.launches(), 1, "no worker was killed");
    assert!(recorder.started().iter().all(|t| t.payload.len() < 4096));
    pool.shutdown().await;
}

/// An idle worker exits while a child of its holds its pipes: the pool hears
/// of the exit at once, but the end of the worker's output only once the child
/// lets go. A task submitted meanwhile waits for a worker that can run it
/// instead of being written into the dead one's pipe and charged an attempt
/// when it is reaped.
#[tokio::test(start_paused = true)]
async fn a_task_is_not_handed_to_a_worker_that_exited_while_its_pipes_are_held() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    recorder.crash_next_after_ready(1);
    recorder.pipes_outlive_next(1);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(1))
        .start()
        .await
        .expect("pool starts");
    // Paused time: the worker exits at CRASH_AFTER_READY, and the pool has
    // heard of it before the clock moves on.
    tokio::time::sleep(pool_core::testing::CRASH_AFTER_READY * 10).await;
    assert!(recorder.started().is_empty());
    let out = pool
        .submit(common::task("work", 1))
        .await
        .expect("accepted")
        .await
        .expect("it runs on the replacement");
    assert_eq!(out.attempts, 1, "no attempt lost to the dead worker");
    assert_eq!(&*out.worker, "worker-1", "the replacement of worker-0");
    let started = recorder.started();
    assert_eq!(started.len(), 1, "{started:?}");
    pool.shutdown().await;
}

/// A worker that stops reading its input (like SIGSTOP) while a large task's
/// frame is being written to it is killed as a zombie. The task after the
/// large one never reached it at all, so it runs again without losing an
/// attempt. The large one reached it in part (a worker may die reading a
/// frame): with the task the worker froze on, it was one of two running when
/// the worker was killed, so neither is charged and each runs alone next; the
/// freezing task is charged when it freezes a worker alone.
#[tokio::test(start_paused = true)]
async fn a_task_none_of_whose_frame_reached_its_killed_worker_loses_no_attempt() {
    let config = PoolConfig {
        worker_concurrency: 3,
        prefetch: 0,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| match (t.task_type.as_str(), t.attempt) {
        ("freeze", 1) => MockAction::Freeze,
        _ => MockAction::Echo,
    })
    .await;
    let frozen = pool
        .submit(common::task("freeze", 1))
        .await
        .expect("accepted");
    // Three times what the mock link's pipe holds: most of it is never written.
    let big = pool.submit(pool_core::Task::new("big", vec![7u8; 3 << 20]));
    let big = big.await.expect("accepted");
    let after = pool
        .submit(common::task("after", 3))
        .await
        .expect("accepted");
    let after = after.await.expect("it runs on the replacement");
    assert_eq!(
        after.attempts, 1,
        "none of its frame reached the frozen worker"
    );
    let big = big.await.expect("it runs again");
    assert_eq!(
        big.attempts, 1,
        "it was running beside the task the worker froze on"
    );
    assert_eq!(big.payload.len(), 3 << 20);
    let frozen = frozen.await.expect("it runs again");
    assert_eq!(frozen.attempts, 2, "charged once it froze a worker alone");
    assert_eq!(pool.metrics().performance.zombies_killed, 2);
    let starts = |kind: &str| {
        recorder
            .started()
            .iter()
            .filter(|t| t.task_type == kind)
            .count()
    };
    assert_eq!(starts("after"), 1, "the frozen worker never started it");
    pool.shutdown().await;
}

/// A worker that stops reading its input while its process lives on (it
/// closed its stdin) can be sent no task, `cancel` or `shutdown`: once a write
/// to it fails, what it still writes is read for a grace, then it is killed
/// and replaced, well before its task's timeout. The task it ran is charged
/// with its death; the one written into its window runs on the replacement
/// without losing an attempt.
#[tokio::test(start_paused = true)]
async fn a_worker_that_closed_its_input_is_killed_and_replaced() {
    let config = PoolConfig {
        worker_concurrency: 1,
        prefetch: 4,
        task_timeout: Duration::from_secs(3600),
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| {
        if t.task_type == "closes" && t.attempt == 1 {
            MockAction::CloseInput
        } else {
            MockAction::Echo
        }
    })
    .await;
    let began = tokio::time::Instant::now();
    let closes = pool.submit(common::task("closes", 1)).await.unwrap();
    while recorder.started().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Written after the worker closed its input: the write fails.
    let after = pool.submit(common::task("echo", 2)).await.unwrap();
    let (closes, after) = (closes.await.unwrap(), after.await.unwrap());
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "replaced after {:?}, not at the task's timeout",
        began.elapsed()
    );
    assert_eq!((closes.attempts, after.attempts), (2, 1));
    let started = recorder.started();
    assert_ne!(
        started[0].worker,
        started.last().unwrap().worker,
        "on a new worker"
    );
    assert_eq!(pool.metrics().tasks.timed_out, 0);
    pool.shutdown().await;
}

/// A worker that dies while the pool is still starting (another still in its
/// handshake) is replaced once the pool runs: the pool ran one short for
/// good, "degraded".
#[tokio::test(start_paused = true)]
async fn a_worker_that_dies_while_the_pool_starts_is_replaced() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    recorder.crash_next_after_ready(1);
    recorder.delay_ready_of("worker-1", Duration::from_secs(1));
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(2))
        .start()
        .await
        .expect("pool starts");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(recorder.launches(), 3, "the dead worker was replaced once");
    assert_eq!(pool.worker_count(), 2);
    pool.shutdown().await;
}

/// A worker retired by a roll while it runs a task, and frozen, is still a
/// zombie to the health check: it is killed and the task runs again, instead
/// of waiting out the task's timeout (60 s here).
#[tokio::test(start_paused = true)]
async fn a_retiring_worker_that_freezes_is_killed_and_its_task_runs_again() {
    let (pool, recorder) =
        common::start(common::config(1), common::first_attempt(MockAction::Freeze)).await;
    let handle = pool.submit(common::task("work", 1)).await.unwrap();
    while recorder.started().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pool.roll_workers(None).await.expect("the roll ends");
    let out = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("settled well before the task's timeout")
        .expect("it ran again");
    assert_eq!(out.attempts, 2);
    assert_eq!(pool.metrics().performance.zombies_killed, 1);
    pool.shutdown().await;
}

/// With the breaker open, one replacement at a time probes whether workers
/// live again: one launch a `restart_backoff_cap`, however many workers are
/// missing (not one for each of them).
#[tokio::test(start_paused = true)]
async fn with_the_breaker_open_one_replacement_a_cap_probes_for_every_missing_worker() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    // Every worker exits right after its handshake, before it is given any task.
    recorder.crash_next_after_ready(1000);
    let config = common::config(4);
    let cap = config.restart_backoff_cap;
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(config)
        .start()
        .await
        .expect("the first worker completes its handshake");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(pool.metrics().health.restart_breaker_open);
    let before = recorder.launches();
    tokio::time::sleep(cap * 4 + Duration::from_secs(1)).await;
    let probes = recorder.launches() - before;
    assert!(
        (4..=5).contains(&probes),
        "{probes} launches in four times the cap, four workers missing"
    );
    pool.shutdown().await;
}

/// Once a task succeeds on the breaker's probe, the breaker closes and every
/// worker it held back starts at once (not one a cap).
#[tokio::test(start_paused = true)]
async fn a_success_on_the_probe_closes_the_breaker_and_starts_every_missing_worker() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    // Every worker exits right after its handshake, until the breaker is open.
    recorder.crash_next_after_ready(1000);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(8))
        .start()
        .await
        .expect("the first worker completes its handshake");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(pool.metrics().health.restart_breaker_open);
    // Workers live again: the next probe (one a cap) comes up and stays.
    recorder.crash_next_after_ready(0);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(
        pool.metrics().health.restart_breaker_open,
        "no task succeeded yet"
    );
    let held_back = pool.metrics().workers.total;
    assert!(held_back < 8, "the breaker holds workers back: {held_back}");
    let out = pool
        .submit(common::task("echo", 1))
        .await
        .expect("accepted")
        .await
        .expect("the probe runs it");
    assert_eq!(out.attempts, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = pool.metrics();
    assert!(!m.health.restart_breaker_open);
    assert_eq!(m.workers.total, 8, "every missing worker started");
    pool.shutdown().await;
}

/// Growing the pool while its breaker is open starts no worker at once: the
/// new ones wait out the restart backoff as replacements do (each would fail
/// to start as the others did, a storm of launches), one at a time.
#[tokio::test(start_paused = true)]
async fn a_scale_up_while_the_breaker_is_open_waits_out_the_backoff() {
    let (pool, recorder) = failing_starts().await;
    assert!(pool.metrics().health.restart_breaker_open);
    let before = recorder.launches();
    pool.scale_to(8).await.expect("within the bounds");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(recorder.launches(), before, "no launch at once");
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        recorder.launches(),
        before + 1,
        "one launched after the backoff, not one for each new worker"
    );
    pool.shutdown().await;
}

/// A one-worker pool whose breaker opens after 3 failed starts, its worker
/// crashed by a task and every later start failing, 10 s on.
async fn failing_starts() -> (Pool, std::sync::Arc<pool_core::testing::MockRecorder>) {
    let config = PoolConfig {
        max_start_failures: 3,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Crash(1)).await;
    recorder.fail_next_launches(1000);
    let _handle = pool.submit(common::task("boom", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    (pool, recorder)
}
