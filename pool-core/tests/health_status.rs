//! Health summary rules, alerts, memory recycling and bounded histories.

mod common;

use std::time::Duration;

use pool_core::manager::AlertSeverity;
use pool_core::testing::MockAction;
use pool_core::{PoolConfig, PoolEvent};

const MIB: u64 = 1024 * 1024;

fn drain(events: &mut tokio::sync::broadcast::Receiver<PoolEvent>) -> Vec<PoolEvent> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_fresh_pool_and_a_fully_busy_pool_are_healthy() {
    let (pool, _) = common::start(common::config(2), |_| MockAction::Hang).await;
    let h = pool.health();
    assert_eq!(
        (h.status, h.capacity.capacity_percent),
        (pool_core::HealthStatus::Healthy, 100)
    );
    let _a = pool.submit(common::task("busy", 1)).await.unwrap();
    let _b = pool.submit(common::task("busy", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let h = pool.health();
    assert_eq!(
        h.status,
        pool_core::HealthStatus::Healthy,
        "utilisation is load, not health"
    );
    assert_eq!(h.capacity.utilization_percent, 100);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_zombie_raises_one_critical_alert_that_keeps_the_pool_critical_for_five_minutes() {
    let (pool, _) =
        common::start(common::config(2), common::first_attempt(MockAction::Freeze)).await;
    pool.submit(common::task("work", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    let alerts = pool.alerts().await;
    let zombies: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == "zombie-detected")
        .collect();
    assert_eq!(zombies.len(), 1, "{alerts:?}");
    assert_eq!(zombies[0].severity, AlertSeverity::Critical);
    assert_eq!(zombies[0].worker_id.as_deref(), Some("worker-0"));
    assert!(alerts.iter().any(|a| a.kind == "missed-heartbeat"));
    let h = pool.health();
    assert_eq!(
        (h.status, h.alerts.critical),
        (pool_core::HealthStatus::Critical, 1)
    );
    tokio::time::sleep(Duration::from_secs(301)).await;
    let h = pool.health();
    assert_eq!(
        (h.status, h.alerts.critical),
        (pool_core::HealthStatus::Healthy, 0),
        "{h:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_over_its_rss_limit_is_replaced_first_then_retired_with_no_task_lost() {
    let config = PoolConfig {
        max_rss_bytes: Some(100 * MIB),
        ..common::config(2)
    };
    let (pool, _) = common::start(config, |t| {
        if t.task_type == "grow" {
            MockAction::Bloat(200 * MIB)
        } else {
            MockAction::EchoAfter(Duration::from_millis(5))
        }
    })
    .await;
    let mut events = pool.events();
    let grow = pool
        .submit(common::task("grow", 0))
        .await
        .unwrap()
        .await
        .unwrap();
    let bloated = grow.worker.clone();
    let handles = pool
        .submit_many((1..=200).map(|n| common::task("work", n)))
        .await
        .unwrap();
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().decode::<u32>().unwrap(), n as u32 + 1);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = drain(&mut events);
    let pos = |pred: &dyn Fn(&PoolEvent) -> bool| events.iter().position(pred);
    let recycled =
        pos(&|e| matches!(e, PoolEvent::WorkerRecycled { worker, .. } if **worker == *bloated))
            .expect("the bloated worker was recycled");
    let replacement_ready =
        pos(&|e| matches!(e, PoolEvent::WorkerReady { worker, .. } if *worker == "worker-2"))
            .expect("a replacement became ready");
    let exited = pos(&|e| matches!(e, PoolEvent::WorkerExited { worker, expected: true, .. } if **worker == *bloated))
        .expect("the bloated worker exited");
    assert!(
        recycled < replacement_ready && replacement_ready < exited,
        "{events:#?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, PoolEvent::HighMemory { rss_bytes, .. } if *rss_bytes == 200 * MIB)));
    let m = pool.metrics();
    assert_eq!((m.workers.total, m.performance.workers_recycled), (2, 1));
    assert_eq!(m.tasks.completed, 201);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn histories_stay_bounded_over_100_000_tasks() {
    let config = PoolConfig {
        dlq_capacity: 100,
        retry: pool_core::RetryPolicy::default().with_max_retries(0),
        ..common::config(4)
    };
    let (pool, _) = common::start(config, |t| {
        if t.id % 10 == 0 {
            MockAction::Fail { retryable: true }
        } else {
            MockAction::Echo
        }
    })
    .await;
    for batch in 0..100u32 {
        let handles = pool
            .submit_many((0..1000).map(|n| common::task("work", batch * 1000 + n)))
            .await
            .unwrap();
        for h in handles {
            let _ = h.await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = pool.metrics();
    assert_eq!(m.tasks.submitted, 100_000);
    assert_eq!(m.tasks.dead_lettered, 10_000);
    assert_eq!(m.queue.dlq_size, 100);
    assert_eq!(m.queue.dlq_evicted, 9_900);
    assert!(pool.alerts().await.len() <= 1000);
    for w in pool.workers().await {
        assert!(w.heartbeats_seen <= 100, "{w:?}");
    }
    assert_eq!(m.latency.run_time.lifetime.count, 90_000);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_soft_rss_limit_is_checked_on_each_heartbeat_not_only_on_the_health_tick() {
    // The health tick runs every second (suspect_after / 4, at most 1 s); the
    // heartbeat every 50 ms.
    let config = PoolConfig {
        max_rss_bytes: Some(100 * MIB),
        heartbeat_interval: Duration::from_millis(50),
        suspect_after: Duration::from_secs(20),
        zombie_after: Duration::from_secs(40),
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |t| {
        if t.task_type == "grow" {
            MockAction::Bloat(200 * MIB)
        } else {
            MockAction::Echo
        }
    })
    .await;
    // Past the tick that fires at start.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut events = pool.events();
    pool.submit(common::task("grow", 0))
        .await
        .unwrap()
        .await
        .unwrap();
    let recycled = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            match events.recv().await {
                Ok(PoolEvent::WorkerRecycled { worker, .. }) => break worker,
                Ok(_) => {}
                Err(e) => panic!("events lost: {e}"),
            }
        }
    })
    .await
    .expect("recycled at the next heartbeat, well before the next health tick");
    assert_eq!(recycled, "worker-0");
    pool.shutdown().await;
}
