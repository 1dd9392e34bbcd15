//! Scaling within bounds while tasks run, none lost.

mod common;

use std::time::Duration;

use pool_core::testing::{MockAction, MockTransport};
use pool_core::{Pool, WorkerCommand};

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

#[tokio::test(start_paused = true)]
async fn scale_up_and_down_by_steps_respect_the_bounds() {
    let (pool, _) = common::start(common::config(2), |_| MockAction::Echo).await;
    assert_eq!(pool.scale_up(3).await.unwrap(), 5);
    assert_eq!(pool.scale_down(4).await.unwrap(), 1);
    assert!(pool.scale_down(1).await.is_err(), "below min_workers");
    assert!(pool.scale_up(16).await.is_err(), "above max_workers");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pool.metrics().workers.total, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_autoscaler_grows_under_a_backlog_and_shrinks_when_idle() {
    // No prefetch window: the backlog waits in the shared queue, where new
    // workers take it (one window of the first worker would hold all 60, and
    // the autoscaler does not grow for tasks no new worker could take).
    let config = pool_core::PoolConfig {
        prefetch: 0,
        ..autoscaled(Duration::from_secs(5))
    };
    let (pool, _) = common::start(config, |_| {
        MockAction::EchoAfter(Duration::from_millis(200))
    })
    .await;
    let handles = pool
        .submit_many((0..60).map(|n| common::task("work", n)))
        .await
        .unwrap();
    let mut peak = 0;
    for h in handles {
        h.await.unwrap();
        peak = peak.max(pool.metrics().pool.target_size);
    }
    assert_eq!(peak, 4, "grew to max_workers under the backlog");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let m = pool.metrics();
    assert_eq!(
        (m.pool.target_size, m.workers.total),
        (1, 1),
        "shrank back when idle"
    );
    pool.shutdown().await;
}

/// A scale down that follows a scale up before the new workers are ready
/// keeps the ready workers serving (it retired them, leaving the pool with
/// none ready until the new ones started, if ever), and the late ones are
/// retired as they come.
#[tokio::test(start_paused = true)]
async fn a_scale_down_keeps_ready_workers_over_ones_still_starting() {
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    for worker in ["worker-2", "worker-3"] {
        recorder.delay_ready_of(worker, Duration::from_secs(1));
    }
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(2))
        .start()
        .await
        .expect("pool starts");
    pool.scale_to(4).await.unwrap();
    pool.scale_to(2).await.unwrap();
    let handle = pool.submit(common::task("work", 7)).await.unwrap();
    let out = tokio::time::timeout(Duration::from_millis(500), handle)
        .await
        .expect("a ready worker ran it at once")
        .unwrap();
    assert_eq!(out.decode::<u32>().unwrap(), 7);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.worker_count(), 2, "the late workers were retired");
    pool.shutdown().await;
}

/// While the restart breaker is open the autoscaler does not grow the pool
/// for the backlog an empty pool builds: the new workers would fail to start
/// as the others do.
#[tokio::test(start_paused = true)]
async fn the_autoscaler_does_not_grow_while_the_breaker_is_open() {
    let config = pool_core::PoolConfig {
        max_start_failures: 3,
        ..autoscaled(Duration::from_secs(60))
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Crash(1)).await;
    recorder.fail_next_launches(1000);
    let _handles = pool
        .submit_many((0..20).map(|n| common::task("work", n)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(pool.metrics().health.restart_breaker_open);
    assert_eq!(
        pool.metrics().pool.target_size,
        1,
        "no growth for a backlog no worker serves"
    );
    pool.shutdown_now().await;
}

/// One worker to start, autoscaled from 1 to 4: growing after 500 ms of more
/// than two tasks a worker waiting, shrinking after `idle_after` idle.
fn autoscaled(idle_after: Duration) -> pool_core::PoolConfig {
    pool_core::PoolConfig {
        min_workers: 1,
        max_workers: 4,
        autoscale: Some(pool_core::manager::Autoscale {
            queue_per_worker: 2,
            sustain: Duration::from_millis(500),
            idle_after,
            ..Default::default()
        }),
        ..common::config(1)
    }
}

/// A pool on `config` whose workers take a second a task, and the handles of
/// 40 tasks submitted to it at once.
async fn forty_second_long_tasks(
    config: pool_core::PoolConfig,
) -> (
    pool_core::Pool,
    std::sync::Arc<pool_core::testing::MockRecorder>,
    Vec<pool_core::TaskHandle>,
) {
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_secs(1))).await;
    let handles = pool
        .submit_many((0..40).map(|n| common::task("work", n)))
        .await
        .unwrap();
    (pool, recorder, handles)
}

/// A task written to a worker's prefetch window is never taken back, so a new
/// worker could take none of it: the autoscaler does not grow the pool for
/// tasks that wait in windows, only for those in the shared queue. Here one
/// worker's first window takes all 40 tasks of a second: growing would add
/// workers that sit idle while the first works through them.
#[tokio::test(start_paused = true)]
async fn the_autoscaler_does_not_grow_for_tasks_waiting_in_windows() {
    let config = pool_core::PoolConfig {
        max_workers: 8,
        ..autoscaled(Duration::from_secs(60))
    };
    let (pool, recorder, handles) = forty_second_long_tasks(config).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let m = pool.metrics();
    assert_eq!(m.tasks.queued, 0, "every task is in worker-0's window");
    assert_eq!(
        (m.pool.target_size, recorder.launches()),
        (1, 1),
        "no worker added for tasks it could not take"
    );
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().decode::<u32>().unwrap(), n as u32);
    }
    pool.shutdown().await;
}

/// Tasks that wait in the shared queue (no window holds them: `prefetch` 0)
/// are what new workers take: the autoscaler grows for them, and every
/// worker it adds runs some.
#[tokio::test(start_paused = true)]
async fn the_autoscaler_grows_for_tasks_waiting_in_the_queue_and_new_workers_take_them() {
    let config = pool_core::PoolConfig {
        max_workers: 8,
        prefetch: 0,
        ..autoscaled(Duration::from_secs(60))
    };
    let (pool, recorder, handles) = forty_second_long_tasks(config).await;
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().decode::<u32>().unwrap(), n as u32);
    }
    assert_eq!(pool.metrics().pool.target_size, 8, "grew to max_workers");
    let mut ran_on: Vec<String> = recorder
        .replies_by_worker()
        .into_iter()
        .map(|(_, _, worker)| worker)
        .collect();
    ran_on.sort();
    ran_on.dedup();
    assert_eq!(ran_on.len(), 8, "every worker added ran tasks: {ran_on:?}");
    pool.shutdown().await;
}
