//! Event monitoring: subscribe to the pool's typed event stream and watch workers
//! start and tasks get assigned, retried and completed.
//!
//! The original's `exampleMonitoring` (listeners for `task-completed`, `task-failed`,
//! …). `PoolBuilder::subscribe` sees start-up events too; `Pool::events` subscribes
//! from now on. Each event serialises as JSON with a kebab-case `event` field.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Pool, PoolConfig, PoolEvent, RetryPolicy, Task};
use serde_json::json;

const WORKERS: usize = 3;
const TASKS: usize = 10;

fn main() -> ExitCode {
    common::main(example)
}

async fn example() -> common::Result {
    let config = PoolConfig {
        pool_size: WORKERS,
        min_workers: 1,
        retry: RetryPolicy::new(3, Duration::from_millis(10), Duration::from_secs(1), false)?,
        ..PoolConfig::default()
    };
    let mut builder = Pool::builder(StdioTransport::new(), common::worker_command()).config(config);
    let mut startup = builder.subscribe();
    let pool = builder.start().await?;
    let mut events = pool.events();

    // Start-up: every worker was spawned and completed its handshake.
    let mut ready = 0;
    while ready < WORKERS {
        match startup.recv().await? {
            PoolEvent::WorkerReady { worker, pid } => {
                println!("{worker} is ready (pid {pid})");
                ready += 1;
            }
            other => println!("start-up: {}", serde_json::to_string(&other)?),
        }
    }

    // Nine tasks that succeed at once, one that fails once and is retried.
    let mut handles = Vec::new();
    for i in 0..TASKS - 1 {
        handles.push(
            pool.submit(Task::msgpack("echo", &json!({ "n": i }))?)
                .await?,
        );
    }
    handles.push(
        pool.submit(Task::msgpack("fail", &json!({ "times": 1 }))?)
            .await?,
    );
    for handle in handles {
        handle.await?;
    }

    // Every event about them is already in the stream: read until the last completion.
    let (mut queued, mut assigned, mut completed, mut failed, mut retried) = (0, 0, 0, 0, 0);
    while completed < TASKS {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await??;
        println!("{}", serde_json::to_string(&event)?);
        match event {
            PoolEvent::TaskQueued { .. } => queued += 1,
            PoolEvent::TaskAssigned { .. } => assigned += 1,
            PoolEvent::TaskCompleted { .. } => completed += 1,
            PoolEvent::TaskAttemptFailed {
                kind, will_retry, ..
            } => {
                assert_eq!((kind.as_str(), will_retry), ("handler", true));
                failed += 1;
            }
            PoolEvent::TaskRetried { next_attempt, .. } => {
                assert_eq!(next_attempt, 2);
                retried += 1;
            }
            _ => {}
        }
    }
    assert_eq!(queued, TASKS, "one task-queued per submission");
    assert_eq!(assigned, TASKS + 1, "one task-assigned per attempt");
    assert_eq!(
        (failed, retried),
        (1, 1),
        "the failing task failed once and was retried"
    );

    pool.shutdown().await;
    // The last event says the pool is gone.
    loop {
        if let PoolEvent::PoolShutdown = events.recv().await? {
            break;
        }
    }
    println!("event_monitoring: ok");
    Ok(())
}
