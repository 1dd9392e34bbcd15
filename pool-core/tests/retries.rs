//! Retry count, backoff schedule, non-retryable errors and the dead-letter queue.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{FinalStatus, PoolConfig, RetryPolicy};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_failing_task_retries_three_times_with_1_2_4_second_backoff_then_dead_letters() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    let (pool, recorder) = common::start(common::config(2), move |t| {
        seen.lock().unwrap().push((t.attempt, Instant::now()));
        MockAction::Fail { retryable: true }
    })
    .await;
    let err = pool
        .submit(common::task("flaky", 1))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.status, FinalStatus::DeadLettered);
    assert_eq!(err.attempts, 4);
    assert_eq!(err.failure.kind(), "handler");
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1).as_millis())
        .collect();
    for (gap, expected) in gaps.iter().zip([1000u128, 2000, 4000]) {
        assert!(
            (expected..expected + 50).contains(gap),
            "backoff gaps {gaps:?}, expected about 1000/2000/4000 ms"
        );
    }
    assert_eq!(recorder.started().len(), 4);
    let dlq = pool.dead_letters().await;
    assert_eq!(dlq.len(), 1);
    assert_eq!((dlq[0].id, dlq[0].attempts), (err.id, 4));
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_one_attempt() {
    let config = PoolConfig {
        retry: RetryPolicy::default().with_max_retries(0),
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Fail { retryable: true }).await;
    let err = pool
        .submit(common::task("flaky", 1))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!((err.status, err.attempts), (FinalStatus::DeadLettered, 1));
    assert_eq!(recorder.started().len(), 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_keeps_its_own_dead_letters_ends_exhausted_with_no_entry_count_or_alert() {
    let (pool, recorder) =
        common::start(common::config(1), |_| MockAction::Fail { retryable: true }).await;
    let task = common::task("flaky", 1)
        .with_max_retries(1)
        .with_dead_letter(false);
    let err = pool.submit(task).await.unwrap().await.unwrap_err();
    assert_eq!((err.status, err.attempts), (FinalStatus::Exhausted, 2));
    assert_eq!(err.failure.kind(), "handler");
    assert_eq!(recorder.started().len(), 2);
    assert!(pool.dead_letters().await.is_empty());
    let m = pool.metrics();
    assert_eq!((m.tasks.dead_lettered, m.tasks.failed), (0, 1));
    let alerts = pool.alerts().await;
    assert!(
        alerts.iter().all(|a| a.kind != "task-dead-lettered"),
        "{alerts:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_per_task_retry_count_overrides_the_pool_default() {
    let (pool, recorder) =
        common::start(common::config(1), |_| MockAction::Fail { retryable: true }).await;
    let task = common::task("flaky", 1).with_max_retries(1);
    let err = pool.submit(task).await.unwrap().await.unwrap_err();
    assert_eq!(err.attempts, 2);
    assert_eq!(recorder.started().len(), 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_fails_at_once_and_skips_the_dlq() {
    let (pool, recorder) =
        common::start(common::config(1), |_| MockAction::Fail { retryable: false }).await;
    let err = pool
        .submit(common::task("bad", 1))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!((err.status, err.attempts), (FinalStatus::Failed, 1));
    assert_eq!(recorder.started().len(), 1);
    assert!(pool.dead_letters().await.is_empty());
    assert_eq!(pool.metrics().tasks.failed, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_fails_once_then_succeeds_reports_two_attempts() {
    let (pool, _) = common::start(
        common::config(1),
        common::first_attempt(MockAction::Fail { retryable: true }),
    )
    .await;
    let out = pool
        .submit(common::task("flaky", 7))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(out.decode::<u32>().unwrap(), 7);
    assert_eq!(pool.metrics().tasks.retried, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_dlq_is_bounded_evicts_the_oldest_and_can_be_retried_and_cleared() {
    let config = PoolConfig {
        dlq_capacity: 2,
        retry: RetryPolicy::default().with_max_retries(0),
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |t| {
        if t.task_type == "poison" {
            MockAction::Fail { retryable: true }
        } else {
            MockAction::Echo
        }
    })
    .await;
    let ids = dead_letter_poison(&pool, 3).await;
    let dlq = pool.dead_letters().await;
    assert_eq!(dlq.iter().map(|d| d.id).collect::<Vec<_>>(), ids[1..]);
    let metrics = pool.metrics();
    assert_eq!((metrics.queue.dlq_size, metrics.queue.dlq_evicted), (2, 1));
    let again = pool.retry_dead_letters(Some(vec![ids[2]])).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id(), ids[2]);
    let _ = again.into_iter().next().unwrap().await;
    assert_eq!(pool.clear_dead_letters().await, 2);
    assert!(pool.dead_letters().await.is_empty());
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_dispatched_as_soon_as_it_is_due_even_with_no_new_submissions() {
    let (pool, _) = common::start(common::config(1), |t| {
        if t.attempt < 3 {
            MockAction::Fail { retryable: true }
        } else {
            MockAction::Echo
        }
    })
    .await;
    let started = Instant::now();
    let out = pool
        .submit(common::task("flaky", 1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.attempts, 3);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
        "took {took:?}"
    );
    pool.shutdown().await;
}

/// Dead letters taken out to be submitted again go back to the queue when
/// the caller stops waiting for room (they were lost), in their order.
#[tokio::test(start_paused = true)]
async fn dead_letters_not_resubmitted_go_back_when_the_caller_stops_waiting() {
    let config = PoolConfig {
        retry: RetryPolicy::default().with_max_retries(0),
        max_queue_len: 1,
        prefetch: 0,
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |t| match t.task_type.as_str() {
        "poison" => MockAction::Fail { retryable: true },
        _ => MockAction::Hang,
    })
    .await;
    dead_letter_poison(&pool, 3).await;
    let letters =
        |dlq: Vec<pool_core::queue::DeadLetter>| dlq.iter().map(|d| d.id).collect::<Vec<_>>();
    let before = letters(pool.dead_letters().await);
    // One task runs and one fills the queue: no room for a retry.
    let _running = pool.submit(common::task("hang", 1)).await.unwrap();
    let _queued = pool.submit(common::task("hang", 2)).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(1), pool.retry_dead_letters(None)).await;
    assert!(waited.is_err(), "no room, so the retry waited");
    assert_eq!(letters(pool.dead_letters().await), before);
    assert_eq!(pool.metrics().queue.dlq_size, 3);
    pool.shutdown_now().await;
}

/// Submits `n` tasks of type `poison` (which a pool with no retries
/// dead-letters) one after another; their ids, each checked dead-lettered.
async fn dead_letter_poison(pool: &pool_core::Pool, n: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for k in 0..n {
        let err = pool
            .submit(common::task("poison", k))
            .await
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(err.status, FinalStatus::DeadLettered);
        ids.push(err.id);
    }
    ids
}
