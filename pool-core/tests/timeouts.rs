//! A timed-out attempt kills and replaces its worker, and the task never runs again
//! after its caller was told.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{Failure, FinalStatus, PoolConfig, RetryPolicy};

#[tokio::test(start_paused = true)]
async fn a_timeout_kills_the_worker_replaces_it_and_retries_elsewhere() {
    let (pool, recorder) = common::start(common::config(1), |t| {
        if t.attempt == 1 {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    let task = common::task("slow", 5).with_timeout(Duration::from_secs(2));
    let out = pool.submit(task).await.unwrap().await.unwrap();
    assert_eq!(out.attempts, 2);
    let started = recorder.started();
    assert_eq!(started.len(), 2);
    assert_ne!(
        started[0].worker, started[1].worker,
        "the hung worker was replaced"
    );
    assert_eq!(recorder.launches(), 2);
    let metrics = pool.metrics();
    assert_eq!(metrics.tasks.timed_out, 1);
    assert_eq!(metrics.workers.total, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_always_times_out_settles_once_and_never_runs_again() {
    let config = PoolConfig {
        retry: RetryPolicy::new(1, Duration::from_millis(100), Duration::from_secs(1), false)
            .unwrap(),
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let task = common::task("stuck", 1).with_timeout(Duration::from_secs(1));
    let err = pool.submit(task).await.unwrap().await.unwrap_err();
    assert_eq!(err.status, FinalStatus::DeadLettered);
    assert_eq!(err.attempts, 2);
    assert_eq!(
        err.failure,
        Failure::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    let runs = recorder.started().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        recorder.started().len(),
        runs,
        "no ghost execution after settlement"
    );
    assert_eq!(runs, 2);
    assert!(recorder.replies().is_empty());
    pool.shutdown().await;
}
