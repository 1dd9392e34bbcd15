//! Error handling: retries with backoff, per-task timeouts, worker crashes, the
//! dead-letter queue, non-retryable errors and cancellation, each with its real cause.
//!
//! The original's `exampleErrorHandling` submitted a task with no handler and looked
//! at the DLQ; it got a timeout after 10 s and an empty DLQ. Here every way a task can
//! end without a result is shown and checked, using the demo tasks `fail`, `hang` and
//! `crash`.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Failure, FinalStatus, Pool, PoolConfig, PoolEvent, RetryPolicy, Task};
use serde_json::{json, Value};

fn main() -> ExitCode {
    common::main(example)
}

async fn example() -> common::Result {
    let config = PoolConfig {
        pool_size: 2,
        min_workers: 1,
        // Two retries after the first attempt, 20 ms then 40 ms apart.
        retry: RetryPolicy::new(2, Duration::from_millis(20), Duration::from_secs(1), false)?,
        restart_backoff_base: Duration::from_millis(10),
        ..PoolConfig::default()
    };
    let pool = Pool::builder(StdioTransport::new(), common::worker_command())
        .config(config)
        .start()
        .await?;
    let mut events = pool.events();

    // A transient failure: attempts 1 and 2 fail, the third succeeds.
    let flaky = pool
        .submit(Task::msgpack("fail", &json!({ "times": 2 }))?)
        .await?
        .await?;
    assert_eq!(flaky.attempts, 3);
    assert_eq!(flaky.decode::<Value>()?, json!({ "attempt": 3 }));
    println!("flaky task succeeded on attempt {}", flaky.attempts);

    // A persistent failure: every attempt fails, the task goes to the dead-letter
    // queue and its handle carries the handler's last error.
    let doomed = pool
        .submit(Task::msgpack("fail", &json!({ "times": 100 }))?)
        .await?;
    let doomed_id = doomed.id();
    let err = doomed.await.expect_err("it always fails");
    println!("{err}");
    assert_eq!((err.status, err.attempts), (FinalStatus::DeadLettered, 3));
    assert_eq!(err.failure.kind(), "handler");
    assert!(err.failure.to_string().contains("attempt 3 of 100"));

    // A timeout: the attempt that runs past it is abandoned and its worker killed
    // (it cannot be trusted); with no retries left the task is dead-lettered.
    let stuck = Task::msgpack("hang", &())?
        .with_timeout(Duration::from_millis(200))
        .with_max_retries(0);
    let err = pool
        .submit(stuck)
        .await?
        .await
        .expect_err("it never answers");
    println!("{err}");
    assert!(
        matches!(err.failure, Failure::TimedOut { after } if after == Duration::from_millis(200))
    );
    assert_eq!(err.status, FinalStatus::DeadLettered);

    // A crash: the worker process dies mid-task; the task is retried on a new worker,
    // and the error keeps the exit status and the worker's last stderr lines.
    let poison = Task::msgpack("crash", &json!({ "code": 3 }))?.with_max_retries(1);
    let err = pool
        .submit(poison)
        .await?
        .await
        .expect_err("it crashes every time");
    println!("{err}");
    assert_eq!((err.status, err.attempts), (FinalStatus::DeadLettered, 2));
    assert!(
        matches!(&err.failure, Failure::WorkerDied { exit, .. } if exit.contains("exit code 3"))
    );

    // A task type no worker serves (the original's `risky-operation`) fails at
    // once: the workers listed their task types, so it is never sent to one
    // (`unroutable`, no attempt), no retry, no dead letter.
    let err = pool
        .submit(Task::msgpack("risky-operation", &())?)
        .await?
        .await
        .expect_err("no handler");
    println!("{err}");
    assert_eq!((err.status, err.attempts), (FinalStatus::Failed, 0));
    assert_eq!(err.failure.kind(), "unroutable");

    // Cancellation: the worker is told to stop; the handle resolves as cancelled.
    let hang = pool.submit(Task::msgpack("hang", &())?).await?;
    let hang_id = hang.id();
    loop {
        // Cancel once it runs on a worker (a queued task would simply be dropped).
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await?? {
            PoolEvent::TaskAssigned { task, .. } if task == hang_id => break,
            _ => continue,
        }
    }
    hang.cancel();
    let err = hang.await.expect_err("cancelled");
    assert_eq!(err.status, FinalStatus::Cancelled);
    println!("{err}");

    // The dead-letter queue: inspect, then clear.
    let dead = pool.dead_letters().await;
    for entry in &dead {
        println!(
            "dead letter: task {} ({}) after {} attempts: {}",
            entry.id, entry.task.task_type, entry.attempts, entry.failure
        );
    }
    let kinds: Vec<&str> = dead.iter().map(|d| d.failure.kind()).collect();
    assert_eq!(kinds, ["handler", "timeout", "worker_crashed"]);
    assert_eq!(dead[0].id, doomed_id);
    let metrics = pool.metrics();
    assert_eq!(
        (
            metrics.tasks.dlq,
            metrics.tasks.timed_out,
            metrics.tasks.cancelled
        ),
        (3, 1, 1)
    );
    assert_eq!(pool.clear_dead_letters().await, 3);
    assert!(pool.dead_letters().await.is_empty());

    // Through all of it the pool kept its workers and still serves.
    let ok = pool.submit(Task::msgpack("echo", "fine")?).await?.await?;
    assert_eq!(ok.decode::<String>()?, "fine");
    pool.shutdown().await;
    println!("error_handling: ok");
    Ok(())
}
