//! A worker's frames run at most a pipe's worth ahead of its link: large
//! tasks beyond that stay in the queue (where another worker, or a task of
//! higher priority, may come first) until the link took what waits, and the
//! lane then fills the worker's free run slots without waiting for an answer.

mod common;

use std::time::Duration;

use bytes::Bytes;
use pool_core::testing::{MockAction, MockTransport};
use pool_core::{Failure, HealthProbe, Pool, PoolConfig, Task, Verdict, Vitals, WorkerCommand};

const MIB: usize = 1 << 20;

/// One worker with `concurrency` run slots and no prefetch, which never
/// counts as silent while a test looks, nor wakes the pool's actor with a
/// heartbeat or a health tick (ticks come a second apart at most): what
/// happens within [`settle_down`] is the lane's own doing.
fn one_worker(concurrency: u32) -> PoolConfig {
    PoolConfig {
        worker_concurrency: concurrency,
        prefetch: 0,
        heartbeat_interval: Duration::from_secs(600),
        suspect_after: Duration::from_secs(3600),
        zombie_after: Duration::from_secs(7200),
        ..common::config(1)
    }
}

fn large(task_type: &str, n: u8) -> Task {
    Task::new(task_type, Bytes::from(vec![n; MIB]))
}

/// Lets every task of the test's runtime run until none can go on (paused
/// time moves on only then), and 100 ms more: less than the actor's health
/// tick.
async fn settle_down() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn large_tasks_fill_every_run_slot_without_an_answer() {
    // Each frame after the first waited for the link to take the one before;
    // no task was answered, and the actor was not woken by a heartbeat or a
    // tick: the lane filled the run slots as its link took each frame.
    let (pool, recorder) = common::start(one_worker(8), |_| MockAction::Hang).await;
    fills_every_run_slot(&pool, &recorder).await;
}

#[tokio::test(start_paused = true)]
async fn large_tasks_wait_in_the_queue_while_the_link_is_full() {
    let (pool, recorder) = common::start(one_worker(64), |t| match t.task_type.as_str() {
        "freeze" => MockAction::Freeze,
        _ => MockAction::Echo,
    })
    .await;
    let frozen = pool.submit(large("freeze", 0)).await.expect("accepted");
    settle_down().await;
    assert_eq!(recorder.started().len(), 1, "the worker stopped reading");
    let mut behind = Vec::new();
    for n in 1..=6 {
        behind.push(pool.submit(large("echo", n)).await.expect("accepted"));
    }
    settle_down().await;
    // The worker reads no more: what its link (a 1 MiB pipe) and its reader
    // hold is the worker's; the rest stays queued, although 63 run slots are
    // free.
    let tasks = pool.metrics().tasks;
    assert_eq!(tasks.in_flight + tasks.queued, 7);
    assert!(
        tasks.queued >= 3,
        "{} of 6 tasks left the queue for a link that takes nothing",
        6 - tasks.queued
    );
    pool.shutdown_now().await;
    assert!(frozen.await.is_err());
    for handle in behind {
        assert!(handle.await.is_err(), "ends with the pool");
    }
}

/// Starts 8 hung 1 MiB tasks on `pool` and checks every one reached the
/// worker within [`settle_down`] (no answer, heartbeat or health tick came).
async fn fills_every_run_slot(pool: &Pool, recorder: &pool_core::testing::MockRecorder) {
    let mut handles = Vec::new();
    for n in 0..8 {
        handles.push(pool.submit(large("hang", n)).await.expect("accepted"));
    }
    settle_down().await;
    assert_eq!(recorder.started().len(), 8, "every run slot has its task");
    pool.shutdown_now().await;
    for handle in handles {
        assert!(handle.await.is_err(), "a hung task ends with the pool");
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_the_actor_feeds_is_filled_as_its_link_takes_each_frame() {
    // A task limit: the actor counts the worker's tasks and feeds it.
    let config = PoolConfig {
        max_tasks_per_worker: Some(1000),
        ..one_worker(8)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    fills_every_run_slot(&pool, &recorder).await;
}

/// Judges each completion, so results go to the actor, which feeds the worker.
#[derive(Debug)]
struct EveryCompletion;

impl HealthProbe for EveryCompletion {
    fn name(&self) -> &'static str {
        "every-completion"
    }

    fn check(&self, _vitals: &Vitals) -> Verdict {
        Verdict::Healthy
    }

    fn wants_completions(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_results_a_probe_judges_is_filled_by_the_actor() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Hang);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(one_worker(8))
        .probe(EveryCompletion)
        .start()
        .await
        .expect("pool starts");
    fills_every_run_slot(&pool, &recorder).await;
}

#[tokio::test(start_paused = true)]
async fn a_task_the_link_let_in_later_keeps_its_own_deadline() {
    let config = PoolConfig {
        retry: common::quick_retries(0),
        ..one_worker(8)
    };
    let (pool, _recorder) = common::start(config, |_| MockAction::Hang).await;
    let first = pool
        .submit(large("hang", 0).with_timeout(Duration::from_secs(600)))
        .await
        .expect("accepted");
    // Written, and the actor's timer for the worker armed for its deadline.
    settle_down().await;
    let second = pool
        .submit(large("hang", 1).with_timeout(Duration::from_secs(600)))
        .await
        .expect("accepted");
    // Queued behind the second's frame until the link took it; whoever
    // starts it then (the actor's pass, or the refill of the lane's writer,
    // whose report carries the deadline: `lane/tests.rs`), the actor's timer
    // must be armed again, for this one's earlier deadline.
    let short = pool
        .submit(large("hang", 2).with_timeout(Duration::from_secs(2)))
        .await
        .expect("accepted");
    let ended = tokio::time::timeout(Duration::from_secs(30), short)
        .await
        .expect("the short task times out long before the first one's deadline");
    let failed = ended.expect_err("it hangs");
    assert!(
        matches!(failed.failure, Failure::TimedOut { .. }),
        "{:?}",
        failed.failure
    );
    pool.shutdown_now().await;
    assert!(first.await.is_err());
    assert!(second.await.is_err());
}

#[tokio::test(start_paused = true)]
async fn small_tasks_are_not_held_back_by_the_link() {
    let (pool, recorder) = common::start(one_worker(64), |_| MockAction::Hang).await;
    let handles = pool
        .submit_many((0..64).map(|n| common::task("hang", n)))
        .await
        .expect("accepted");
    settle_down().await;
    assert_eq!(recorder.started().len(), 64);
    pool.shutdown_now().await;
    for handle in handles {
        assert!(handle.await.is_err());
    }
}
