//! Health monitoring: the metrics' `health` section, each worker's status, a worker
//! that crashes mid-task and is replaced, and workers recycled after a task count.
//!
//! The original's `exampleHealthMonitoring`, which printed `health.status`, capacity
//! and an undefined `workers.healthy` on a timer. Here every number is checked.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Failure, Pool, PoolConfig, PoolEvent, Task};
use serde_json::json;

const WORKERS: usize = 3;
const MAX_TASKS_PER_WORKER: u64 = 4;

fn main() -> ExitCode {
    common::main(example)
}

async fn example() -> common::Result {
    let config = PoolConfig {
        pool_size: WORKERS,
        min_workers: 1,
        heartbeat_interval: Duration::from_millis(200),
        suspect_after: Duration::from_secs(1),
        zombie_after: Duration::from_secs(2),
        restart_backoff_base: Duration::from_millis(10),
        max_tasks_per_worker: Some(MAX_TASKS_PER_WORKER),
        ..PoolConfig::default()
    };
    let pool = Pool::builder(StdioTransport::new(), common::worker_command())
        .config(config)
        .start()
        .await?;
    let mut events = pool.events();

    // 1. A fresh pool: every worker ready and healthy. (`workers()` asks the pool's
    //    actor; `metrics()` reads counters it publishes after each change, so read
    //    it after `workers()` to see the same moment.)
    let workers = pool.workers().await;
    for w in &workers {
        println!(
            "{} pid {} state {} tasks done {}",
            w.id, w.pid, w.state, w.tasks_done
        );
        assert_eq!(w.state, "ready");
        assert!(w.pid > 0);
    }
    assert_eq!(workers.len(), WORKERS);
    let metrics = pool.metrics();
    println!("health: {}", serde_json::to_string(&metrics.health)?);
    assert_eq!(metrics.health.status, cortex_pool::HealthStatus::Healthy);
    assert_eq!(
        (metrics.workers.healthy, metrics.workers.unhealthy),
        (WORKERS as u64, 0)
    );

    // 2. A worker dies in the middle of a task: the task fails with the real cause
    //    and a replacement is started.
    let task = Task::msgpack("crash", &json!({ "code": 7 }))?.with_max_retries(0);
    let err = pool
        .submit(task)
        .await?
        .await
        .expect_err("the worker crashed");
    println!("crash: {err}");
    assert!(
        matches!(&err.failure, Failure::WorkerDied { exit, .. } if exit.contains("exit code 7"))
    );
    let metrics = common::until(&pool, "the crashed worker replaced", |m| {
        m.performance.workers_restarted == 1 && m.workers.ready == WORKERS as u64
    })
    .await?;
    assert_eq!(metrics.performance.workers_crashed, 1);
    assert_eq!(
        metrics.health.status,
        cortex_pool::HealthStatus::Healthy,
        "back to full strength"
    );

    // 3. Recycling: after about MAX_TASKS_PER_WORKER tasks a worker is replaced,
    //    bounding leaks in long-lived workers. It keeps serving until its
    //    replacement is ready (capacity never dips), then finishes and exits.
    for i in 0..(WORKERS as u64 * MAX_TASKS_PER_WORKER + 2) {
        pool.submit(Task::msgpack("echo", &i)?).await?.await?;
    }
    let metrics = common::until(&pool, "a worker recycled and replaced", |m| {
        m.performance.workers_recycled >= 1 && m.workers.ready == WORKERS as u64
    })
    .await?;
    println!(
        "performance: {}",
        serde_json::to_string(&metrics.performance)?
    );
    let recycled = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await?? {
            PoolEvent::WorkerRecycled { worker, reason } => break (worker, reason),
            _ => continue,
        }
    };
    println!("{} recycled: {}", recycled.0, recycled.1);
    assert_eq!(
        metrics.performance.workers_crashed, 1,
        "recycling is not a crash"
    );
    for w in pool.workers().await {
        assert!(
            w.tasks_done <= MAX_TASKS_PER_WORKER || matches!(w.state, "recycling" | "retiring"),
            "{} ran {} tasks and is not being replaced",
            w.id,
            w.tasks_done
        );
    }
    assert_eq!(
        pool.metrics().health.status,
        cortex_pool::HealthStatus::Healthy
    );

    pool.shutdown().await;
    println!("health_monitoring: ok");
    Ok(())
}
