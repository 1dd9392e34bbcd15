//! A worker's frames run at most a pipe's worth ahead of its link: large
//! tasks beyond that stay in the queue (where another worker, or a task of
//! higher priority, may come first) until the link took what waits, and the
//! lane then fills the worker's free run slots without waiting for an answer.

mod common;

use std::time::Duration;

use bytes::Bytes;
use pool_core::testing::MockAction;
use pool_core::{PoolConfig, Task};

const MIB: usize = 1 << 20;

/// One worker with `concurrency` run slots and no prefetch, which never
/// counts as silent while a test looks, nor wakes the pool's actor with a
/// heartbeat or a health tick (ticks come a second apart at most): what
/// happens within [`settle_down`] is the lane's own doing.
fn one_worker(concurrency: u32) -> PoolConfig {
    PoolConfig {
        worker_concurrency: concurrency,
        prefetch: 0,
        heartbeat_interval: Duration::from_secs(600),
        suspect_after: Duration::from_secs(3600),
        zombie_after: Duration::from_secs(7200),
        ..common::config(1)
    }
}

fn large(task_type: &str, n: u8) -> Task {
    Task::new(task_type, Bytes::from(vec![n; MIB]))
}

/// Lets every task of the test's runtime run until none can go on (paused
/// time moves on only then), and 100 ms more: less than the actor's health
/// tick.
async fn settle_down() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn large_tasks_fill_every_run_slot_without_an_answer() {
    let (pool, recorder) = common::start(one_worker(8), |_| MockAction::Hang).await;
    let mut handles = Vec::new();
    for n in 0..8 {
        handles.push(pool.submit(large("hang", n)).await.expect("accepted"));
    }
    settle_down().await;
    // Each frame after the first waited for the link to take the one before;
    // no task was answered, and the actor was not woken: the lane filled the
    // run slots as its link took each frame.
    assert_eq!(recorder.started().len(), 8, "every run slot has its task");
    assert_eq!(pool.metrics().tasks.in_flight, 8);
    assert_eq!(pool.metrics().tasks.queued, 0);
    pool.shutdown_now().await;
    for handle in handles {
        assert!(handle.await.is_err(), "a hung task ends with the pool");
    }
}

#[tokio::test(start_paused = true)]
async fn large_tasks_wait_in_the_queue_while_the_link_is_full() {
    let (pool, recorder) = common::start(one_worker(64), |t| match t.task_type.as_str() {
        "freeze" => MockAction::Freeze,
        _ => MockAction::Echo,
    })
    .await;
    let frozen = pool.submit(large("freeze", 0)).await.expect("accepted");
    settle_down().await;
    assert_eq!(recorder.started().len(), 1, "the worker stopped reading");
    let mut behind = Vec::new();
    for n in 1..=6 {
        behind.push(pool.submit(large("echo", n)).await.expect("accepted"));
    }
    settle_down().await;
    // The worker reads no more: what its link (a 1 MiB pipe) and its reader
    // hold is the worker's; the rest stays queued, although 63 run slots are
    // free.
    let tasks = pool.metrics().tasks;
    assert_eq!(tasks.in_flight + tasks.queued, 7);
    assert!(
        tasks.queued >= 3,
        "{} of 6 tasks left the queue for a link that takes nothing",
        6 - tasks.queued
    );
    pool.shutdown_now().await;
    assert!(frozen.await.is_err());
    for handle in behind {
        assert!(handle.await.is_err(), "ends with the pool");
    }
}

#[tokio::test(start_paused = true)]
async fn small_tasks_are_not_held_back_by_the_link() {
    let (pool, recorder) = common::start(one_worker(64), |_| MockAction::Hang).await;
    let handles = pool
        .submit_many((0..64).map(|n| common::task("hang", n)))
        .await
        .expect("accepted");
    settle_down().await;
    assert_eq!(recorder.started().len(), 64);
    pool.shutdown_now().await;
    for handle in handles {
        assert!(handle.await.is_err());
    }
}
