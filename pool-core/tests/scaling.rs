//! Scaling within bounds while tasks run, none lost.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;

#[tokio::test(start_paused = true)]
async fn scale_up_and_down_within_bounds_while_tasks_run() {
    let (pool, _) = common::start(common::config(2), |_| {
        MockAction::EchoAfter(Duration::from_millis(20))
    })
    .await;
    let handles = pool
        .submit_many((0..100).map(|n| common::task("work", n)))
        .await
        .unwrap();
    assert_eq!(pool.scale_to(6).await.unwrap(), 6);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.metrics().workers.total, 6);
    assert_eq!(pool.scale_to(1).await.unwrap(), 1);
    assert!(pool.scale_to(0).await.is_err(), "below min_workers");
    assert!(pool.scale_to(17).await.is_err(), "above max_workers");
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().decode::<u32>().unwrap(), n as u32);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = pool.metrics();
    assert_eq!((m.workers.total, m.pool.target_size), (1, 1));
    assert_eq!(m.tasks.completed, 100);
    pool.shutdown().await;
}
