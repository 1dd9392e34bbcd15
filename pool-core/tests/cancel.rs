//! Cancelling queued and running tasks.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{Failure, FinalStatus};

#[tokio::test(start_paused = true)]
async fn a_queued_task_is_cancelled_without_running() {
    let (pool, recorder) = common::start(common::config(1), common::blocker_then_echo).await;
    let blocker = pool.submit(common::task("blocker", 0)).await.unwrap();
    let queued = pool.submit(common::task("victim", 1)).await.unwrap();
    queued.cancel();
    let err = queued.await.unwrap_err();
    assert_eq!(
        (err.status, err.failure),
        (FinalStatus::Cancelled, Failure::Cancelled)
    );
    blocker.await.unwrap();
    assert!(recorder.started().iter().all(|t| t.task_type != "victim"));
    assert_eq!(pool.metrics().tasks.cancelled, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_task_that_ignores_cancel_has_its_worker_killed_after_the_grace() {
    let (pool, recorder) = common::start(common::config(1), |_| MockAction::Hang).await;
    let handle = pool.submit(common::task("stuck", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle.cancel();
    let err = handle.await.unwrap_err();
    assert_eq!(err.status, FinalStatus::Cancelled);
    assert_eq!(
        recorder.started().len(),
        1,
        "a cancelled task is not retried"
    );
    assert_eq!(
        recorder.launches(),
        2,
        "the worker that ignored the cancel was replaced"
    );
    pool.shutdown().await;
}

/// A task cancelled by its caller whose worker is then killed for another
/// task's fault (here that task's timeout) ends cancelled when the worker is
/// reaped: it is not put back in the queue to run again, its cancel forgotten.
#[tokio::test(start_paused = true)]
async fn a_cancelled_task_whose_worker_dies_for_another_task_ends_cancelled() {
    let config = pool_core::PoolConfig {
        worker_concurrency: 2,
        cancel_grace: Duration::from_secs(30),
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let slow = pool
        .submit(common::task("slow", 1).with_timeout(Duration::from_millis(100)))
        .await
        .unwrap();
    let victim = pool.submit(common::task("victim", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    victim.cancel();
    let err = victim.await.unwrap_err();
    assert_eq!(
        (err.status, err.failure),
        (FinalStatus::Cancelled, Failure::Cancelled)
    );
    let victims = recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "victim")
        .count();
    assert_eq!(victims, 1, "the cancelled task ran again");
    slow.cancel();
    drop(slow);
    pool.shutdown().await;
}
