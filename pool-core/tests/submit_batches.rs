//! `submit_each` and `submit_many`: batches larger than the queue make progress,
//! and a refused task in a batch leaves the others alone.

mod common;

use pool_core::testing::MockAction;
use pool_core::{SubmitError, Task};

fn work(n: u32) -> Task {
    common::task("work", n)
}

/// A task whose frame is larger than the pool's `max_frame` (4 KiB here).
fn oversized() -> Task {
    Task::new("work", vec![0u8; 8192])
}

fn small_queue() -> pool_core::PoolConfig {
    pool_core::PoolConfig {
        max_queue_len: 4,
        max_frame: 4096,
        ..common::config(2)
    }
}

#[tokio::test(start_paused = true)]
async fn submit_each_answers_every_task_of_a_batch_larger_than_the_queue() {
    let (pool, recorder) = common::start(small_queue(), |_| MockAction::Echo).await;
    let results = pool.submit_each((0..100).map(work)).await;
    assert_eq!(results.len(), 100);
    for (n, result) in results.into_iter().enumerate() {
        let out = result.expect("accepted").await.expect("echoed");
        let back: u32 = out.decode().expect("a u32");
        assert_eq!(back as usize, n);
    }
    assert_eq!(recorder.started().len(), 100);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn submit_each_refuses_only_the_bad_task_and_gives_it_back() {
    let (pool, recorder) = common::start(small_queue(), |_| MockAction::Echo).await;
    let tasks = [work(1), oversized(), work(2).with_priority(101), work(3)];
    let mut results = pool.submit_each(tasks).await.into_iter();
    let first = results.next().expect("four results");
    let too_large = results.next().expect("four results");
    let bad_priority = results.next().expect("four results");
    let last = results.next().expect("four results");
    assert!(results.next().is_none());
    match too_large {
        Err(SubmitError::PayloadTooLarge { task, max_frame }) => {
            assert_eq!((task.payload.len(), max_frame), (8192, 4096));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(matches!(bad_priority, Err(SubmitError::InvalidPriority(_))));
    for (handle, n) in [(first, 1u32), (last, 3)] {
        let out = handle.expect("accepted").await.expect("echoed");
        assert_eq!(out.decode::<u32>().expect("a u32"), n);
    }
    assert_eq!(recorder.started().len(), 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn submit_each_after_shutdown_refuses_every_task() {
    let (pool, _) = common::start(small_queue(), |_| MockAction::Echo).await;
    pool.shutdown().await;
    let results = pool.submit_each((0..3).map(work)).await;
    assert_eq!(results.len(), 3);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(SubmitError::ShuttingDown(_)))));
}

#[tokio::test(start_paused = true)]
async fn submit_many_sends_the_tasks_before_a_refused_one_and_none_after() {
    let (pool, recorder) = common::start(small_queue(), |_| MockAction::Echo).await;
    let mut batch: Vec<Task> = (0..10).map(work).collect();
    batch.push(oversized());
    batch.push(work(99));
    let err = pool
        .submit_many(batch)
        .await
        .expect_err("the oversized task");
    assert!(
        matches!(err, SubmitError::PayloadTooLarge { .. }),
        "{err:?}"
    );
    let all = pool
        .submit_many((10..50).map(work))
        .await
        .expect("accepted");
    for handle in all {
        handle.await.expect("echoed");
    }
    let mut started: Vec<u32> = recorder
        .started()
        .iter()
        .map(|t| rmp_serde::from_slice(&t.payload).expect("a u32"))
        .collect();
    started.sort_unstable();
    assert_eq!(started, (0..50).collect::<Vec<u32>>());
    pool.shutdown().await;
}
