//! Workers that batch their replies (`ready.batches_replies`): when one dies
//! holding several unanswered tasks, which of them ran is unknown, so none
//! loses an attempt and each runs its next attempt alone; the task at fault is
//! then found and charged on its own.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{Failure, PoolConfig};

use common::WATCHDOG;

#[tokio::test(start_paused = true)]
async fn a_crash_with_several_tasks_unanswered_charges_only_the_task_that_crashes_alone() {
    let config = PoolConfig {
        prefetch: 12,
        ..common::config(2)
    };
    let (pool, recorder) = common::start_batched(config, |t| match t.task_type.as_str() {
        "crash" => MockAction::Crash(3),
        _ => MockAction::EchoAfter(Duration::from_millis(10)),
    })
    .await;
    // Enough work that the queue still holds tasks for every worker's window
    // when the crash task runs again.
    let mut tasks: Vec<_> = (0..60).map(|n| common::task("work", n)).collect();
    tasks.insert(2, common::task("crash", 99));
    let tasks = tasks.into_iter().map(|t| t.with_max_retries(1));
    let handles = pool.submit_many(tasks).await.unwrap();
    let crash_id = handles[2].id();
    // Charged for its two lone deaths only.
    let failed = common::only_the_culprit_failed(common::outcomes(handles).await, crash_id, 2);
    assert!(
        matches!(failed.failure, Failure::WorkerDied { .. }),
        "{failed}"
    );
    // Three deaths, two charged: the first (among others) was not, and the next
    // two were charged because the task was its worker's only unanswered one.
    let crash_runs = recorder
        .started()
        .iter()
        .filter(|t| t.id == crash_id)
        .count();
    assert_eq!(crash_runs, 3, "one run among others, two alone");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_timeout_with_several_tasks_unanswered_costs_the_others_nothing() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(1)
    };
    let (pool, recorder) = common::start_batched(config, |t| match t.task_type.as_str() {
        "hang" => MockAction::Hang,
        _ => MockAction::Echo,
    })
    .await;
    let hang = common::task("hang", 0)
        .with_timeout(Duration::from_secs(1))
        .with_max_retries(0);
    let hang = pool.submit(hang).await.unwrap();
    let behind = pool
        .submit_many((1..4).map(|n| common::task("work", n).with_max_retries(0)))
        .await
        .unwrap();
    let failed = tokio::time::timeout(WATCHDOG, hang)
        .await
        .expect("settles")
        .expect_err("the hanging task times out");
    assert!(
        matches!(failed.failure, Failure::TimedOut { .. }),
        "{failed}"
    );
    assert_eq!(failed.attempts, 1, "charged only when it hung alone");
    for h in behind {
        let out = h.await.expect("the tasks behind it succeed");
        assert_eq!(out.attempts, 1);
    }
    let hang_runs = recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "hang")
        .count();
    assert_eq!(hang_runs, 2, "it timed out among others, then alone");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_dies_with_one_task_unanswered_charges_it_at_once() {
    let (pool, recorder) =
        common::start_batched(common::config(1), |t| match t.task_type.as_str() {
            "crash" => MockAction::Crash(3),
            _ => MockAction::Echo,
        })
        .await;
    let task = common::task("crash", 0).with_max_retries(0);
    let failed = pool
        .submit(task)
        .await
        .unwrap()
        .await
        .expect_err("the crash task fails");
    assert_eq!(failed.attempts, 1);
    assert_eq!(
        recorder.started().len(),
        1,
        "it ran once: the death was its own"
    );
    pool.shutdown().await;
}
