//! Many tasks in parallel: a batch submitted at once is spread over the workers and
//! runs concurrently, and every caller gets its own result.
//!
//! The original's `exampleMultipleTasks` (five tasks through `Promise.all`), scaled
//! up: 100 echo tasks with mixed priorities, then 8 sleeping tasks on 4 workers that
//! finish in about two rounds instead of eight.

mod common;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cortex_pool::balance::LeastLoaded;
use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Pool, PoolConfig, Task};
use serde_json::json;

const WORKERS: usize = 4;

fn main() -> ExitCode {
    common::main(example)
}

async fn example() -> common::Result {
    let config = PoolConfig {
        pool_size: WORKERS,
        min_workers: 1,
        task_timeout: Duration::from_secs(60),
        ..PoolConfig::default()
    };
    let pool = Pool::builder(StdioTransport::new(), common::worker_command())
        .config(config)
        .policy(LeastLoaded::new())
        .start()
        .await?;

    // 100 tasks in one batch; each handle resolves to its own task's result.
    let tasks = (0..100u32)
        .map(|i| {
            Task::msgpack("echo", &json!({ "n": i })).map(|t| t.with_priority((i % 3 + 1) as u8))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let handles = pool.submit_many(tasks).await?;
    let mut workers = HashSet::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let output = handle.await?;
        assert_eq!(output.decode::<serde_json::Value>()?, json!({ "n": i }));
        workers.insert(output.worker);
    }
    println!("100 echo tasks ran on {} workers", workers.len());
    assert!(
        workers.len() > 1,
        "the batch was spread over several workers"
    );

    // 8 tasks of 300 ms on 4 workers: about 600 ms in parallel, 2.4 s one by one.
    let nap = Duration::from_millis(300);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let task = Task::msgpack("sleep", &json!({ "ms": nap.as_millis() as u64 }))?;
        handles.push(pool.submit(task).await?);
    }
    for handle in handles {
        assert_eq!(handle.await?.decode::<String>()?, "ok");
    }
    let elapsed = started.elapsed();
    println!("8 × {nap:?} on {WORKERS} workers took {elapsed:?}");
    assert!(
        elapsed < nap * 6,
        "tasks ran in parallel ({elapsed:?}, one by one would be {:?})",
        nap * 8
    );

    let metrics = pool.metrics();
    assert_eq!(metrics.tasks.completed, 108);
    assert_eq!(
        metrics.performance.workers_spawned, WORKERS as u64,
        "no worker was spawned per task"
    );
    pool.shutdown().await;
    println!("many_tasks: ok");
    Ok(())
}
