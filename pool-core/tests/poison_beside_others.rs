//! A worker that runs several tasks at once (`worker_concurrency` > 1) and
//! dies, or is killed as a zombie, while more than one of them runs: which one
//! killed it is unknown, so none loses an attempt and each runs its next
//! attempt alone. The poison task is then found and charged on its own; the
//! tasks that ran beside it are not dead-lettered with it.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{FinalStatus, PoolConfig};

#[tokio::test(start_paused = true)]
async fn tasks_running_beside_a_poison_task_are_not_dead_lettered_with_it() {
    let config = PoolConfig {
        worker_concurrency: 4,
        prefetch: 0,
        ..common::config(8)
    };
    let (pool, recorder) = common::start(config, |t| match t.task_type.as_str() {
        "poison" => MockAction::Crash(9),
        _ => MockAction::EchoAfter(Duration::from_millis(50)),
    })
    .await;
    let mut tasks = vec![common::task("poison", 0)];
    tasks.extend((1..4).map(|n| common::task("echo", n)));
    let handles = pool.submit_many(tasks).await.expect("accepted");
    let poison_id = handles[0].id();
    let failed = common::only_the_culprit_failed(common::outcomes(handles).await, poison_id, 4);
    assert_eq!(failed.status, FinalStatus::DeadLettered);
    assert_eq!(failed.failure.kind(), "worker_crashed");
    // The first death, among the others, was nobody's; the next four were the
    // poison task's alone.
    let poison_runs = recorder
        .started()
        .iter()
        .filter(|t| t.id == poison_id)
        .count();
    assert_eq!(poison_runs, 5, "one run among others, four alone");
    assert!(
        !pool.metrics().health.restart_breaker_open,
        "one poison task never opens the restart breaker"
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn tasks_running_beside_a_task_that_freezes_its_worker_lose_no_attempt() {
    let config = PoolConfig {
        worker_concurrency: 3,
        prefetch: 0,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| match t.task_type.as_str() {
        "freeze" => MockAction::Freeze,
        _ => MockAction::EchoAfter(Duration::from_secs(2)),
    })
    .await;
    // The slow tasks start first; the worker freezes as it starts the third.
    let mut tasks: Vec<_> = (1..3)
        .map(|n| common::task("slow", n).with_max_retries(0))
        .collect();
    tasks.push(common::task("freeze", 0).with_max_retries(1));
    let handles = pool.submit_many(tasks).await.expect("accepted");
    let freeze_id = handles[2].id();
    // Charged for its two lone freezes only.
    common::only_the_culprit_failed(common::outcomes(handles).await, freeze_id, 2);
    let slow_runs = recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "slow")
        .count();
    assert_eq!(slow_runs, 4, "each ran beside the freeze, then alone");
    assert_eq!(pool.metrics().performance.zombies_killed, 3);
    pool.shutdown().await;
}
