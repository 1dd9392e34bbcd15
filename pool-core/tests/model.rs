//! A model test of the task path: seeded random sequences of submit, cancel,
//! complete, handler error, worker crash, timeout, recycle, scale and shutdown
//! against the mock transport with paused time. Every case asserts that each task
//! settles exactly once, that a task never starts again after its caller was told
//! it failed, and that the metrics add up; a second property checks priority order
//! with `prefetch: 0`.
//!
//! A failing case prints its seed; `MODEL_SEED=N` reruns just that one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::testing::{MockAction, MockTask};
use pool_core::{FinalStatus, PoolConfig, RetryPolicy, Task};
use tokio::sync::oneshot;

/// Cases of the task-path model per run.
const CASES: u64 = 1000;
/// Cases of the priority property per run.
const PRIORITY_CASES: u64 = 200;

/// What the test saw, in order: task starts (from the mock workers) and
/// settlements (from the callers' handles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Started(u32),
    Settled { task: u32, ok: bool },
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn push(log: &Log, seen: Seen) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(seen);
}

/// The behaviour of one task, chosen by the generator and carried in its type.
const KINDS: [&str; 8] = [
    "ok", "ok", "slow", "err", "fatal", "crash1", "crash", "hang",
];

fn script(log: Log) -> impl Fn(&MockTask) -> MockAction + Send + Sync + 'static {
    move |t| {
        let n: u32 = rmp_serde::from_slice(&t.payload).unwrap_or(u32::MAX);
        push(&log, Seen::Started(n));
        match t.task_type.as_str() {
            "slow" => MockAction::EchoAfter(Duration::from_millis(30)),
            "err" if t.attempt == 1 => MockAction::Fail { retryable: true },
            "fatal" => MockAction::Fail { retryable: false },
            "crash1" if t.attempt == 1 => MockAction::Crash(3),
            "crash" => MockAction::Crash(4),
            "hang" => MockAction::Hang,
            _ => MockAction::Echo,
        }
    }
}

fn seeds(cases: u64) -> Vec<u64> {
    match std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..cases).collect(),
    }
}

#[test]
fn every_task_settles_exactly_once_and_never_runs_after_it_failed() {
    for seed in seeds(CASES) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let outcome = tokio::time::timeout(Duration::from_secs(120), one_case(seed)).await;
            assert!(outcome.is_ok(), "seed {seed}: the case did not finish");
        });
    }
}

async fn one_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let workers = rng.usize(1..=3);
    let config = PoolConfig {
        worker_concurrency: rng.u32(1..=2),
        prefetch: rng.u32(0..=3),
        task_timeout: Duration::from_millis(200),
        cancel_grace: Duration::from_millis(100),
        max_tasks_per_worker: if rng.bool() {
            Some(rng.u64(3..10))
        } else {
            None
        },
        retry: RetryPolicy::new(
            rng.u32(0..=2),
            Duration::from_millis(5),
            Duration::from_millis(50),
            false,
        )
        .expect("a valid retry policy"),
        restart_backoff_base: Duration::from_millis(5),
        restart_backoff_cap: Duration::from_millis(50),
        max_workers: 4,
        ..common::config(workers)
    };
    let log: Log = Arc::default();
    let (pool, _) = common::start(config, script(log.clone())).await;
    let mut settlers = Vec::new();
    let mut handles = Vec::new();
    let steps = rng.usize(5..40);
    let mut next = 0u32;
    let mut shut = false;
    for _ in 0..steps {
        match rng.u8(0..100) {
            0..=59 => {
                let kind = KINDS[rng.usize(0..KINDS.len())];
                let task = Task::msgpack(kind, &next)
                    .expect("a u32 encodes")
                    .with_priority(rng.u8(0..=100));
                match pool.submit(task).await {
                    Ok(handle) => {
                        let (cancel, watcher) = watch(&log, next, handle);
                        handles.push(cancel);
                        settlers.push(watcher);
                        next += 1;
                    }
                    Err(e) => assert!(shut, "seed {seed}: refused while running: {e}"),
                }
            }
            60..=69 => {
                if !handles.is_empty() {
                    let i = rng.usize(0..handles.len());
                    if let Some(cancel) = handles[i].take() {
                        let _ = cancel.send(());
                    }
                }
            }
            70..=74 => {
                let _ = pool.scale_to(rng.usize(1..=4)).await;
            }
            75..=77 => {
                let _ = pool.roll_workers(None).await;
            }
            78..=79 => {
                pool.shutdown().await;
                shut = true;
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.u64(1..80))).await,
        }
    }
    for settler in settlers {
        settler.await.expect("a watcher does not panic");
    }
    pool.shutdown().await;
    check(seed, &log, next, &pool.metrics());
}

/// Awaits a handle and logs its settlement the moment it resolves; sending on
/// the returned trigger cancels the task.
fn watch(
    log: &Log,
    n: u32,
    mut handle: pool_core::TaskHandle,
) -> (Option<oneshot::Sender<()>>, tokio::task::JoinHandle<()>) {
    let log = log.clone();
    let (cancel, mut cancelled) = oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = &mut handle => outcome,
            Ok(()) = &mut cancelled => {
                handle.cancel();
                handle.await
            }
        };
        push(
            &log,
            Seen::Settled {
                task: n,
                ok: outcome.is_ok(),
            },
        );
    });
    (Some(cancel), watcher)
}

fn check(seed: u64, log: &Log, submitted: u32, metrics: &pool_core::PoolMetrics) {
    let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut settled = vec![0u32; submitted as usize];
    let mut failed_at = vec![None; submitted as usize];
    for (at, seen) in log.iter().enumerate() {
        match *seen {
            Seen::Settled { task, ok } => {
                settled[task as usize] += 1;
                if !ok {
                    failed_at[task as usize] = Some(at);
                }
            }
            Seen::Started(task) => {
                if let Some(Some(when)) = failed_at.get(task as usize) {
                    panic!("seed {seed}: task {task} started at {at}, after it failed at {when}");
                }
            }
        }
    }
    for (task, n) in settled.iter().enumerate() {
        assert_eq!(*n, 1, "seed {seed}: task {task} settled {n} times");
    }
    let t = &metrics.tasks;
    assert_eq!((t.queued, t.in_flight), (0, 0), "seed {seed}: {t:?}");
    assert_eq!(
        t.submitted,
        t.completed + t.failed + t.dead_lettered + t.cancelled,
        "seed {seed}: {t:?}"
    );
}

#[test]
fn with_prefetch_zero_tasks_start_in_priority_order() {
    for seed in seeds(PRIORITY_CASES) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(priority_case(seed));
    }
}

async fn priority_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let config = PoolConfig {
        prefetch: 0,
        ..common::config(1)
    };
    let log: Log = Arc::default();
    let (pool, _) = common::start(config, script(log.clone())).await;
    // Holds the only worker while the rest queue up.
    let blocker = pool
        .submit(Task::msgpack("slow", &0u32).expect("encodes"))
        .await
        .expect("accepted");
    tokio::task::yield_now().await;
    let count = rng.u32(1..30);
    let mut plan = Vec::new();
    let mut handles = Vec::new();
    for n in 1..=count {
        let priority = rng.u8(0..=100);
        plan.push((priority, n));
        let task = Task::msgpack("ok", &n)
            .expect("encodes")
            .with_priority(priority);
        handles.push(pool.submit(task).await.expect("accepted"));
    }
    blocker.await.expect("the blocker echoes");
    for h in handles {
        h.await.expect("an ok task succeeds");
    }
    pool.shutdown().await;
    plan.sort_by_key(|&(priority, n)| (priority, n));
    let expected: Vec<u32> = std::iter::once(0)
        .chain(plan.iter().map(|&(_, n)| n))
        .collect();
    let started: Vec<u32> = log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|s| match s {
            Seen::Started(n) => Some(*n),
            Seen::Settled { .. } => None,
        })
        .collect();
    assert_eq!(started, expected, "seed {seed}");
}

/// Found by the model (seed 0): a worker retiring after `max_tasks_per_worker`
/// that is killed because a task ran past its timeout must fail that task as
/// timed out, and give its bystander back to the queue without charging it an
/// attempt, as on any other worker: the kill's cause replaces the retirement's.
#[tokio::test(start_paused = true)]
async fn a_task_timing_out_on_a_retiring_worker_fails_as_timed_out() {
    let config = PoolConfig {
        max_tasks_per_worker: Some(2),
        worker_concurrency: 2,
        task_timeout: Duration::from_millis(200),
        retry: RetryPolicy::new(0, Duration::from_millis(5), Duration::from_millis(5), false)
            .expect("a valid retry policy"),
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |t| match t.task_type.as_str() {
        "hang" => MockAction::Hang,
        _ => MockAction::EchoAfter(Duration::from_millis(30)),
    })
    .await;
    let hang = pool
        .submit(common::task("hang", 0))
        .await
        .expect("accepted");
    let slow = pool
        .submit(common::task("slow", 1).with_timeout(Duration::from_secs(10)))
        .await
        .expect("accepted");
    let (hang, slow) = (hang.await, slow.await);
    pool.shutdown().await;
    let Err(e) = hang else {
        panic!("a hanging task succeeded");
    };
    assert_eq!(
        (e.status, e.failure.kind(), e.attempts),
        (FinalStatus::DeadLettered, "timeout", 1),
        "the task that timed out: {e}"
    );
    let out = slow.expect("the bystander runs again on the replacement");
    assert_eq!((out.attempts, out.decode::<u32>().ok()), (1, Some(1)));
}
