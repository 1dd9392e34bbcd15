//! Basic usage: start a pool of worker processes, run one task, read the metrics,
//! shut down.
//!
//! The original's `exampleBasicUsage`. The workers are this very executable started
//! with `--worker` (see `common/mod.rs`), so `cargo run -p cortex-pool --example
//! basic_usage` needs nothing else.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Pool, PoolConfig, Task};
use serde_json::{json, Value};

fn main() -> ExitCode {
    common::main(example)
}

async fn example() -> common::Result {
    let config = PoolConfig {
        pool_size: 2,
        min_workers: 1,
        max_workers: 4,
        task_timeout: Duration::from_secs(30),
        ..PoolConfig::default()
    };
    // `start` returns once every worker has completed its handshake.
    let pool = Pool::builder(StdioTransport::new(), common::worker_command())
        .config(config)
        .start()
        .await?;
    assert_eq!(pool.workers().await.len(), 2);

    let request = json!({ "task": "implementation", "spec": "add a README" });
    let task = Task::msgpack("echo", &request)?.with_priority(5);
    // `submit` queues the task and hands back a handle; awaiting it gives the outcome.
    let output = pool.submit(task).await?.await?;
    let result: Value = output.decode()?;
    println!("result from {}: {result}", output.worker);
    assert_eq!(result, request, "the echo worker returns its payload");
    assert_eq!(output.attempts, 1);
    assert!(output.worker.starts_with("worker-"));

    let metrics = pool.metrics();
    println!("{}", serde_json::to_string_pretty(&metrics)?);
    assert_eq!(metrics.tasks.submitted, 1);
    assert_eq!(metrics.tasks.completed, 1);
    assert_eq!(metrics.health.status, cortex_pool::HealthStatus::Healthy);

    // Queued tasks fail, running ones finish, workers exit and are reaped.
    pool.shutdown().await;
    assert_eq!(pool.metrics().workers.total, 0, "every worker is gone");
    println!("basic_usage: ok");
    Ok(())
}
