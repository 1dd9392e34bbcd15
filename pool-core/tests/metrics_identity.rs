//! The metrics identity holds after a mixed run, and the gauges read right as
//! soon as the last task settled.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{PoolConfig, RetryPolicy};

#[tokio::test(start_paused = true)]
async fn submitted_equals_the_sum_of_every_ending_after_a_mixed_run() {
    let config = PoolConfig {
        retry: RetryPolicy::new(2, Duration::from_millis(10), Duration::from_secs(1), false)
            .unwrap(),
        task_timeout: Duration::from_millis(500),
        ..common::config(3)
    };
    let (pool, _) = common::start(config, |t| match t.task_type.as_str() {
        "fail" => MockAction::Fail { retryable: true },
        "fatal" => MockAction::Fail { retryable: false },
        "crash" if t.attempt == 1 => MockAction::Crash(2),
        "hang" => MockAction::Hang,
        _ => MockAction::Echo,
    })
    .await;
    let kinds = ["ok", "fail", "fatal", "crash", "hang", "ok", "ok"];
    let mut handles = Vec::new();
    for n in 0..70u32 {
        handles.push(
            pool.submit(common::task(kinds[n as usize % kinds.len()], n))
                .await
                .unwrap(),
        );
    }
    let cancelled = pool.submit(common::task("hang", 70)).await.unwrap();
    cancelled.cancel();
    let _ = cancelled.await;
    for h in handles {
        let _ = h.await;
    }
    let m = pool.metrics();
    let t = &m.tasks;
    assert_eq!(t.submitted, 71);
    assert_eq!(
        t.submitted,
        t.completed + t.failed + t.dead_lettered + t.cancelled + t.queued + t.in_flight,
        "{t:?}"
    );
    assert_eq!(t.completed, 40, "ok and crash-then-ok tasks");
    assert_eq!(t.failed, 10, "fatal tasks");
    assert_eq!(t.dead_lettered, 20, "fail and hang tasks");
    assert_eq!(t.cancelled, 1);
    assert_eq!(
        t.timed_out,
        10 * 3,
        "each attempt of the ten hang tasks, once"
    );
    assert!(m.performance.worker_reuse_ratio > 0.5);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_queued_read_zero_as_soon_as_the_last_task_settled() {
    let (pool, _) = common::start(common::config(2), |_| MockAction::Echo).await;
    for round in 0..300u32 {
        let handle = pool.submit(common::task("work", round)).await.unwrap();
        handle.await.unwrap();
        let t = pool.metrics().tasks;
        assert_eq!((t.in_flight, t.queued), (0, 0), "round {round}: {t:?}");
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_busy_read_right_as_soon_as_the_last_task_settled() {
    let (pool, _) = common::start(common::config(2), |_| MockAction::Echo).await;
    for round in 0..300u32 {
        let handle = pool.submit(common::task("work", round)).await.unwrap();
        handle.await.unwrap();
        let w = pool.metrics().workers;
        assert_eq!((w.ready, w.busy), (2, 0), "round {round}: {w:?}");
    }
    pool.shutdown().await;
}
