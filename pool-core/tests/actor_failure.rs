//! A pool whose actor panicked says so: `failure()`, health `failed` with the
//! reason, no workers in the gauges, submits refused with `pool_failed`, and the
//! tasks it held end instead of hanging.

mod common;

use std::time::Duration;

use pool_core::testing::{panic_actor, MockAction};
use pool_core::SubmitError;

#[tokio::test]
async fn a_panicked_actor_is_reported_and_refuses_new_tasks() {
    let (pool, _recorder) = common::start(common::config(4), |t| {
        if t.task_type == "hang" {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    pool.submit(common::task("echo", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(pool.failure(), None);
    assert_eq!(pool.metrics().workers.total, 4);
    let stuck = pool.submit(common::task("hang", 2)).await.unwrap();

    panic_actor(&pool);

    let err = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("a task the actor held ends when the actor is gone")
        .expect_err("it never got a result");
    assert_eq!(err.failure.kind(), "shutting_down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.failure().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failure is noticed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reason = pool.failure().unwrap();
    assert_eq!(
        reason,
        "the pool's actor panicked: panic requested by pool_core::testing::panic_actor"
    );
    let m = pool.metrics();
    assert_eq!(m.health.status, pool_core::HealthStatus::Failed);
    assert_eq!(m.health.failure.as_deref(), Some(reason.as_str()));
    assert_eq!(
        (m.workers.total, m.workers.ready, m.tasks.in_flight),
        (0, 0, 0)
    );
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["health"]["failure"], reason.as_str());

    match pool.submit(common::task("echo", 3)).await {
        Err(e @ SubmitError::Failed { .. }) => {
            assert_eq!(e.kind(), "pool_failed");
            assert_eq!(e.to_string(), format!("the pool stopped working: {reason}"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        pool.try_submit(common::task("echo", 4)),
        Err(SubmitError::Failed { .. })
    ));
    assert!(pool.workers().await.is_empty());
    // Shutting down a failed pool returns at once.
    tokio::time::timeout(Duration::from_secs(5), pool.shutdown())
        .await
        .expect("shutdown of a failed pool returns");
}

#[tokio::test]
async fn tasks_still_queued_when_the_actor_panics_end_shutting_down() {
    let config = pool_core::PoolConfig {
        prefetch: 0,
        ..common::config(1)
    };
    let (pool, _recorder) = common::start(config, |t| {
        if t.task_type == "hang" {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    let _running = pool.submit(common::task("hang", 1)).await.unwrap();
    tokio::task::yield_now().await;
    let queued = pool.submit(common::task("echo", 2)).await.unwrap();
    let mut done = pool_core::Completions::new();
    let queued_to = pool
        .submit_each_to([common::task("echo", 3)], &done.sink())
        .await;
    assert!(queued_to[0].is_ok());

    panic_actor(&pool);

    let err = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("a queued task ends when the actor is gone")
        .expect_err("it never ran");
    assert_eq!(err.failure.kind(), "shutting_down");
    let mut outcomes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), done.recv_many(&mut outcomes, 8))
        .await
        .expect("a queued task's completion arrives when the actor is gone");
    let err = outcomes[0].as_ref().expect_err("it never ran");
    assert_eq!(err.failure.kind(), "shutting_down");
}

#[tokio::test]
async fn a_healthy_pool_has_no_failure_in_its_health() {
    let (pool, _recorder) = common::start(common::config(1), |_| MockAction::Echo).await;
    let json = serde_json::to_value(pool.metrics()).unwrap();
    assert!(json["health"].get("failure").is_none(), "{json}");
    assert_eq!(json["health"]["status"], "healthy");
    pool.shutdown().await;
    assert_eq!(pool.failure(), None, "a shutdown is not a failure");
}

#[tokio::test]
async fn a_running_task_sent_to_a_completions_channel_ends_when_the_actor_panics() {
    let (pool, _recorder) = common::start(common::config(1), |t| {
        if t.task_type == "hang" {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    let mut done = pool_core::Completions::new();
    let ids = pool
        .submit_each_to([common::task("hang", 1)], &done.sink())
        .await;
    let id = *ids[0].as_ref().expect("accepted");
    // The task is on the worker (held by its lane's book), not in the queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.metrics().tasks.in_flight == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the task starts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    panic_actor(&pool);

    let mut outcomes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), done.recv_many(&mut outcomes, 8))
        .await
        .expect("a running task's completion arrives when the actor is gone");
    let err = outcomes[0].as_ref().expect_err("it never finished");
    assert_eq!((err.id, err.failure.kind()), (id, "shutting_down"));
}
