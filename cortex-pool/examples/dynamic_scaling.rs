//! Dynamic scaling: grow and shrink a running pool with `Pool::scale_to`, within
//! `min_workers..=max_workers`.
//!
//! The original's `exampleScaling` (`scaleUp(10)`, 50 tasks, `scaleDown(8)`), sized
//! for a laptop: 3 workers, up to 8, a batch of tasks, down to 2. Shrinking retires
//! idle workers first and lets busy ones finish their tasks.

mod common;

use std::collections::HashSet;
use std::process::ExitCode;

use cortex_pool::balance::LeastLoaded;
use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Pool, PoolConfig, Task};
use serde_json::json;

fn main() -> ExitCode {
    common::main(example)
}

async fn example() -> common::Result {
    let config = PoolConfig {
        pool_size: 3,
        min_workers: 2,
        max_workers: 10,
        ..PoolConfig::default()
    };
    let pool = Pool::builder(StdioTransport::new(), common::worker_command())
        .config(config)
        .policy(LeastLoaded::new())
        .start()
        .await?;
    assert_eq!(pool.workers().await.len(), 3);

    // Grow: the new workers start at once; wait until they have shaken hands.
    assert_eq!(pool.scale_to(8).await?, 8);
    let m = common::until(&pool, "8 ready workers", |m| m.workers.ready == 8).await?;
    println!("scaled up to {} workers", m.workers.total);
    assert_eq!(m.pool.target_size, 8);

    // A batch of concurrent tasks spreads over the bigger pool.
    let tasks = (0..40u32)
        .map(|_| Task::msgpack("sleep", &json!({ "ms": 20 })))
        .collect::<Result<Vec<_>, _>>()?;
    let mut workers = HashSet::new();
    for handle in pool.submit_many(tasks).await? {
        workers.insert(handle.await?.worker);
    }
    println!("40 tasks ran on {} workers", workers.len());
    assert!(workers.len() > 3, "the added workers took tasks");

    // Out of bounds: refused, nothing changes.
    let refused = pool
        .scale_to(11)
        .await
        .expect_err("11 is above max_workers");
    println!("scale_to(11) refused: {refused}");
    assert!(pool.scale_to(1).await.is_err(), "1 is below min_workers");
    assert_eq!(pool.metrics().pool.target_size, 8);

    // Shrink: surplus workers are retired and reaped.
    assert_eq!(pool.scale_to(2).await?, 2);
    let m = common::until(&pool, "2 workers left", |m| m.workers.total == 2).await?;
    println!("scaled down to {} workers", m.workers.total);
    assert_eq!(pool.workers().await.len(), 2);

    // The smaller pool still works, and retiring workers was not a crash.
    let output = pool
        .submit(Task::msgpack("echo", "still here")?)
        .await?
        .await?;
    assert_eq!(output.decode::<String>()?, "still here");
    assert_eq!(pool.metrics().performance.workers_crashed, 0);
    pool.shutdown().await;
    println!("dynamic_scaling: ok");
    Ok(())
}
