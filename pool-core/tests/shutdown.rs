//! Graceful shutdown: queued tasks are rejected, in-flight ones finish within the
//! deadline, and every worker is gone afterwards.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{Failure, FinalStatus, PoolConfig, SubmitError};

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_flight_work_and_rejects_the_queue() {
    let (pool, recorder) = common::start(common::config(1), |_| {
        MockAction::EchoAfter(Duration::from_secs(2))
    })
    .await;
    let running = pool.submit(common::task("work", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let queued: Vec<_> = futures_like_collect(&pool, 3).await;
    pool.shutdown().await;
    assert_eq!(running.await.unwrap().decode::<u32>().unwrap(), 1);
    for handle in queued {
        let err = handle.await.unwrap_err();
        assert_eq!(
            (err.status, err.failure),
            (FinalStatus::Failed, Failure::ShuttingDown)
        );
        assert_eq!(err.attempts, 0);
    }
    assert_eq!(recorder.started().len(), 1);
    let m = pool.metrics();
    assert_eq!(m.workers.total, 0, "no worker is left");
    assert!(m.pool.shutting_down);
    let refused = pool.submit(common::task("late", 9)).await.unwrap_err();
    assert!(matches!(refused, SubmitError::ShuttingDown(_)));
}

async fn futures_like_collect(pool: &pool_core::Pool, n: u32) -> Vec<pool_core::TaskHandle> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            pool.submit(common::task("queued", 10 + i))
                .await
                .expect("accepted"),
        );
    }
    out
}

#[tokio::test(start_paused = true)]
async fn in_flight_work_past_the_deadline_is_abandoned_and_its_worker_killed() {
    let config = PoolConfig {
        shutdown_timeout: Duration::from_secs(1),
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let stuck = pool.submit(common::task("stuck", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    pool.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded shutdown"
    );
    let err = stuck.await.unwrap_err();
    assert_eq!(err.failure, Failure::ShuttingDown);
    assert_eq!(pool.metrics().workers.total, 0);
    assert!(recorder.replies().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_shutdown_caller_waits_for_the_same_completion() {
    let (pool, _) = common::start(common::config(2), |_| MockAction::Echo).await;
    let other = pool.clone();
    let (a, b) = tokio::join!(pool.shutdown(), other.shutdown());
    let ((), ()) = (a, b);
    assert_eq!(pool.metrics().workers.total, 0);
    pool.shutdown().await;
}
