//! Every listed event is emitted, at the right moment relative to the others.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{PoolConfig, PoolEvent, RetryPolicy};

const MIB: u64 = 1024 * 1024;

fn name(e: &PoolEvent) -> String {
    serde_json::to_value(e).unwrap()["event"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn every_event_is_emitted_in_order() {
    let config = PoolConfig {
        max_rss_bytes: Some(100 * MIB),
        retry: RetryPolicy::new(1, Duration::from_millis(10), Duration::from_secs(1), false)
            .unwrap(),
        ..common::config(2)
    };
    let (transport, _) = pool_core::testing::MockTransport::new(|t| match t.task_type.as_str() {
        "flaky" if t.attempt == 1 => MockAction::Fail { retryable: true },
        "poison" => MockAction::Fail { retryable: true },
        "slow" => MockAction::Hang,
        "freeze" if t.attempt == 1 => MockAction::Freeze,
        "grow" => MockAction::Bloat(200 * MIB),
        "crash" if t.attempt == 1 => MockAction::Crash(1),
        _ => MockAction::Echo,
    });
    let mut builder =
        pool_core::Pool::builder(transport, pool_core::WorkerCommand::new("mock")).config(config);
    let mut events = builder.subscribe();
    let pool = builder.start().await.unwrap();

    pool.submit(common::task("echo", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    pool.submit(common::task("flaky", 2))
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = pool.submit(common::task("poison", 3)).await.unwrap().await;
    let timeout = common::task("slow", 4).with_timeout(Duration::from_secs(1));
    let _ = pool.submit(timeout).await.unwrap().await;
    pool.submit(common::task("crash", 5))
        .await
        .unwrap()
        .await
        .unwrap();
    pool.submit(common::task("freeze", 6))
        .await
        .unwrap()
        .await
        .unwrap();
    pool.submit(common::task("grow", 7))
        .await
        .unwrap()
        .await
        .unwrap();
    let cancelled = pool.submit(common::task("slow", 8)).await.unwrap();
    cancelled.cancel();
    let _ = cancelled.await;
    pool.scale_to(3).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    pool.scale_to(2).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pool.shutdown().await;

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    let names: Vec<String> = seen.iter().map(name).collect();
    for expected in [
        "worker-spawned",
        "worker-ready",
        "worker-exited",
        "worker-restarted",
        "zombie-detected",
        "high-memory",
        "worker-recycled",
        "task-queued",
        "task-assigned",
        "task-completed",
        "task-attempt-failed",
        "task-retried",
        "task-timed-out",
        "task-dead-lettered",
        "task-cancelled",
        "pool-scaled-up",
        "pool-scaled-down",
        "alert",
        "pool-shutdown",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} in {names:?}"
        );
    }
    let first = |n: &str| names.iter().position(|x| x == n).unwrap();
    let last = |n: &str| names.iter().rposition(|x| x == n).unwrap();
    assert!(first("worker-spawned") < first("worker-ready"));
    assert!(first("task-queued") < first("task-assigned"));
    assert!(first("task-assigned") < first("task-completed"));
    assert!(first("task-attempt-failed") < first("task-retried"));
    let timed_out = first("task-timed-out");
    assert!(
        names[timed_out..]
            .iter()
            .position(|n| n == "task-attempt-failed")
            < names[timed_out..]
                .iter()
                .position(|n| n == "task-dead-lettered"),
        "a timed-out attempt fails before its task is dead-lettered"
    );
    assert!(first("worker-recycled") < last("worker-exited"));
    assert_eq!(
        last("pool-shutdown"),
        names.len() - 1,
        "pool-shutdown comes last"
    );
    // Per task: queued, then assigned, then exactly one ending.
    for task in 1..=8u64 {
        let of_task: Vec<&str> = seen
            .iter()
            .zip(&names)
            .filter(|(e, _)| serde_json::to_value(e).unwrap()["task"] == task)
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(
            of_task.first(),
            Some(&"task-queued"),
            "task {task}: {of_task:?}"
        );
        let endings = of_task
            .iter()
            .filter(|n| {
                matches!(
                    **n,
                    "task-completed" | "task-dead-lettered" | "task-cancelled"
                )
            })
            .count();
        assert_eq!(endings, 1, "task {task}: {of_task:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn notable_events_leave_out_the_routine_ones_of_each_task() {
    let (transport, _) = pool_core::testing::MockTransport::new(|t| match t.task_type.as_str() {
        "poison" => MockAction::Fail { retryable: false },
        _ => MockAction::Echo,
    });
    let mut builder = pool_core::Pool::builder(transport, pool_core::WorkerCommand::new("mock"))
        .config(common::config(1));
    let mut notable = builder.subscribe_notable();
    let pool = builder.start().await.unwrap();
    pool.submit(common::task("echo", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    let failed = pool.submit(common::task("poison", 2)).await.unwrap().await;
    assert!(failed.is_err());
    pool.shutdown().await;
    let mut names = Vec::new();
    while let Ok(e) = notable.try_recv() {
        names.push(name(&e));
    }
    for routine in ["task-queued", "task-assigned", "task-completed"] {
        assert!(
            !names.iter().any(|n| n == routine),
            "{routine} in {names:?}"
        );
    }
    for wanted in [
        "worker-spawned",
        "worker-ready",
        "task-attempt-failed",
        "pool-shutdown",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no {wanted} in {names:?}"
        );
    }
}
