//! `submit_each` and `submit_many`: batches larger than the queue make progress,
//! a refused task in a batch leaves the others alone, and a large batch is
//! queued in groups while it is made.

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
    assert_eq!(
        common::started_numbers(&recorder),
        (0..50).collect::<Vec<u32>>()
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn submit_each_to_delivers_every_outcome_once_to_the_shared_channel() {
    let (pool, _) = common::start(small_queue(), |t| {
        if t.payload == common::task("work", 7).payload {
            MockAction::Fail { retryable: false }
        } else {
            MockAction::Echo
        }
    })
    .await;
    let mut done = pool_core::Completions::new();
    let mut tasks: Vec<Task> = (0..50).map(work).collect();
    tasks.insert(3, oversized());
    let results = pool.submit_each_to(tasks, &done.sink()).await;
    assert_eq!(results.len(), 51);
    assert!(matches!(
        results[3],
        Err(SubmitError::PayloadTooLarge { .. })
    ));
    let ids: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ids.len(), 50);
    let mut outcomes = Vec::new();
    while outcomes.len() < ids.len() {
        done.recv_many(&mut outcomes, 16).await;
    }
    assert!(done.try_recv().is_none(), "nothing arrives twice");
    let mut settled: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            Ok(out) => out.id,
            Err(err) => err.id,
        })
        .collect();
    settled.sort_unstable();
    let mut expected = ids.clone();
    expected.sort_unstable();
    assert_eq!(settled, expected);
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status, pool_core::FinalStatus::Failed);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_submitted_to_a_shared_channel_can_be_cancelled_by_id() {
    let config = pool_core::PoolConfig {
        prefetch: 0,
        ..small_queue()
    };
    let (pool, recorder) = common::start(config, common::blocker_then_echo).await;
    let mut done = pool_core::Completions::new();
    let tasks = [
        common::task("blocker", 0),
        common::task("blocker", 1),
        work(2),
    ];
    let ids: Vec<u64> = pool
        .submit_each_to(tasks, &done.sink())
        .await
        .into_iter()
        .map(|r| r.expect("accepted"))
        .collect();
    // Both workers hold a blocker; the third task waits in the queue.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    pool.cancel(ids[2]);
    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        done.recv_many(&mut outcomes, 8).await;
    }
    let cancelled: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].id, ids[2]);
    assert_eq!(cancelled[0].status, pool_core::FinalStatus::Cancelled);
    assert!(recorder.started().iter().all(|t| t.task_type == "blocker"));
    pool.shutdown().await;
}

/// A pool with room for large batches, and a batch of `n` tasks whose iterator
/// records how many tasks the pool had counted as submitted when it made its
/// task `at` (the batch is made while it is being submitted).
fn watched_batch(
    pool: &pool_core::Pool,
    n: u32,
    at: u32,
) -> (
    impl Iterator<Item = Task>,
    std::sync::Arc<std::sync::Mutex<Option<u64>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let watcher = pool.clone();
    let batch = (0..n).map(move |i| {
        if i == at {
            let submitted = watcher.metrics().tasks.submitted;
            *record.lock().expect("not poisoned") = Some(submitted);
        }
        work(i)
    });
    (batch, seen)
}

/// Asserts that the pool had counted at least 768 (three groups of 256) of
/// the first 1000 tasks as submitted when the batch made its task 1000.
fn assert_queued_while_made(seen: &std::sync::Mutex<Option<u64>>) {
    let submitted = seen
        .lock()
        .expect("not poisoned")
        .expect("task 1000 was made");
    assert!(
        submitted >= 768,
        "only {submitted} of the first 1000 tasks were queued before the batch was made"
    );
}

fn roomy_queue() -> pool_core::PoolConfig {
    pool_core::PoolConfig {
        max_queue_len: 10_000,
        ..common::config(2)
    }
}

#[tokio::test(start_paused = true)]
async fn submit_many_queues_a_large_batch_in_groups_while_it_is_made() {
    let (pool, _) = common::start(roomy_queue(), |_| MockAction::Echo).await;
    let (batch, seen) = watched_batch(&pool, 1200, 1000);
    let handles = pool.submit_many(batch).await.expect("accepted");
    assert_queued_while_made(&seen);
    for handle in handles {
        handle.await.expect("echoed");
    }
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn submit_each_queues_a_large_batch_in_groups_while_it_is_made() {
    let (pool, _) = common::start(roomy_queue(), |_| MockAction::Echo).await;
    let (batch, seen) = watched_batch(&pool, 1200, 1000);
    let results = pool.submit_each(batch).await;
    assert_queued_while_made(&seen);
    for result in results {
        result.expect("accepted").await.expect("echoed");
    }
    pool.shutdown().await;
}
