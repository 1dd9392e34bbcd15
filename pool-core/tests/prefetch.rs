//! The prefetch window: tasks written beyond a worker's concurrency wait in it
//! without their timeout running, and go back to the queue unharmed when their
//! worker dies before they start.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::PoolConfig;

#[tokio::test(start_paused = true)]
async fn a_task_waiting_in_the_window_is_timed_from_its_run_start() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| {
        MockAction::EchoAfter(Duration::from_millis(800))
    })
    .await;
    let timeout = Duration::from_secs(1);
    let mut handles = Vec::new();
    for n in 0..3 {
        let task = common::task("work", n).with_timeout(timeout);
        handles.push(pool.submit(task).await.unwrap());
    }
    for h in handles {
        let out = h.await.expect("each task runs 0.8 s of its own 1 s");
        assert_eq!(out.attempts, 1);
        assert_eq!(out.run_time, Duration::from_millis(800));
    }
    assert_eq!(pool.metrics().tasks.timed_out, 0);
    assert_eq!(recorder.launches(), 1, "no worker was killed");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_prefetched_task_of_a_crashed_worker_is_requeued_without_losing_an_attempt() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| match t.task_type.as_str() {
        "crash" if t.attempt == 1 => MockAction::Crash(3),
        "slow" => MockAction::EchoAfter(Duration::from_millis(100)),
        _ => MockAction::Echo,
    })
    .await;
    let crash = pool.submit(common::task("crash", 0)).await.unwrap();
    let behind = pool
        .submit(common::task("work", 1).with_max_retries(0))
        .await
        .unwrap();
    let out = behind
        .await
        .expect("the waiting task is not the crash's victim");
    assert_eq!(out.attempts, 1, "it lost no attempt");
    let crashed = crash.await.expect("the crash task succeeds on its retry");
    assert_eq!(crashed.attempts, 2);
    let work: Vec<u32> = recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "work")
        .map(|t| t.attempt)
        .collect();
    assert_eq!(work, [1], "it ran once, as its first attempt");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_runs_at_most_its_concurrency_while_its_window_is_full() {
    let config = PoolConfig {
        worker_concurrency: 2,
        prefetch: 6,
        ..common::config(2)
    };
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(10))).await;
    let handles = pool
        .submit_many((0..40).map(|n| common::task("work", n)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let m = pool.metrics();
    assert_eq!(m.tasks.in_flight, 16, "both windows are full: 2 × (2 + 6)");
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(recorder.max_concurrent(), 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_gets_a_task_before_any_window_is_filled() {
    let config = PoolConfig {
        prefetch: 8,
        ..common::config(2)
    };
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(10))).await;
    let a = pool.submit(common::task("work", 0)).await.unwrap();
    let b = pool.submit(common::task("work", 1)).await.unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let workers: Vec<String> = recorder.started().into_iter().map(|t| t.worker).collect();
    assert_eq!(workers, ["worker-0", "worker-1"]);
    pool.shutdown().await;
}
