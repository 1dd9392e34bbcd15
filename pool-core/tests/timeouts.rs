//! A timed-out attempt kills and replaces its worker, and the task never runs again
//! after its caller was told.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::{Failure, FinalStatus, PoolConfig, RetryPolicy};

#[tokio::test(start_paused = true)]
async fn a_timeout_kills_the_worker_replaces_it_and_retries_elsewhere() {
    let (pool, recorder) =
        common::start(common::config(1), common::first_attempt(MockAction::Hang)).await;
    let task = common::task("slow", 5).with_timeout(Duration::from_secs(2));
    let out = pool.submit(task).await.unwrap().await.unwrap();
    assert_eq!(out.attempts, 2);
    let started = recorder.started();
    assert_eq!(started.len(), 2);
    assert_ne!(
        started[0].worker, started[1].worker,
        "the hung worker was replaced"
    );
    assert_eq!(recorder.launches(), 2);
    let metrics = pool.metrics();
    assert_eq!(metrics.tasks.timed_out, 1);
    assert_eq!(metrics.workers.total, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_always_times_out_settles_once_and_never_runs_again() {
    let config = PoolConfig {
        retry: RetryPolicy::new(1, Duration::from_millis(100), Duration::from_secs(1), false)
            .unwrap(),
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let task = common::task("stuck", 1).with_timeout(Duration::from_secs(1));
    let err = pool.submit(task).await.unwrap().await.unwrap_err();
    assert_eq!(err.status, FinalStatus::DeadLettered);
    assert_eq!(err.attempts, 2);
    assert_eq!(
        err.failure,
        Failure::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    let runs = recorder.started().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        recorder.started().len(),
        runs,
        "no ghost execution after settlement"
    );
    assert_eq!(runs, 2);
    assert!(recorder.replies().is_empty());
    pool.shutdown().await;
}

/// Tasks sharing a worker share its deadline timer: a later task with a shorter
/// timeout still times out on its own deadline, and the longer one it shared the
/// worker with is re-queued without losing an attempt.
#[tokio::test(start_paused = true)]
async fn a_shorter_timeout_behind_a_longer_one_on_the_same_worker_fires_first() {
    let config = PoolConfig {
        worker_concurrency: 2,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| {
        if t.worker == "worker-0" {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    let long = pool
        .submit(common::task("long", 1).with_timeout(Duration::from_secs(600)))
        .await
        .unwrap();
    let short = pool
        .submit(common::task("short", 2).with_timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(short.await.unwrap().attempts, 2, "timed out once, then ran");
    let out = long.await.unwrap();
    assert_eq!(out.attempts, 1, "the collateral attempt did not count");
    // Paused clock: virtual time, deterministic.
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "the short deadline fired before the long one"
    );
    assert_eq!(pool.metrics().tasks.timed_out, 1);
    assert_eq!(recorder.started().len(), 4);
    pool.shutdown().await;
}

/// A task that completes leaves its worker's timer armed for the others: the one
/// still hanging times out on its own deadline, the finished one is unaffected.
#[tokio::test(start_paused = true)]
async fn a_completed_task_does_not_disarm_the_deadline_of_one_still_running() {
    let config = PoolConfig {
        worker_concurrency: 2,
        retry: RetryPolicy::new(0, Duration::from_millis(100), Duration::from_secs(1), false)
            .unwrap(),
        ..common::config(1)
    };
    let (pool, _recorder) = common::start(config, |t| match t.task_type.as_str() {
        "fast" => MockAction::EchoAfter(Duration::from_millis(500)),
        _ => MockAction::Hang,
    })
    .await;
    let fast = pool
        .submit(common::task("fast", 1).with_timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    let hung = pool
        .submit(common::task("hung", 2).with_timeout(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(fast.await.unwrap().attempts, 1);
    let err = hung.await.unwrap_err();
    assert_eq!(
        err.failure,
        Failure::TimedOut {
            after: Duration::from_secs(3)
        }
    );
    assert_eq!(pool.metrics().tasks.timed_out, 1);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_huge_timeout_or_grace_saturates_instead_of_panicking_the_pool() {
    let config = PoolConfig {
        task_timeout: Duration::MAX,
        shutdown_timeout: Duration::MAX,
        kill_grace: Duration::MAX,
        cancel_grace: Duration::MAX,
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |_| MockAction::Echo).await;
    // `"timeout_ms": 68719476735` from the reproduction, and the pool's
    // own default of `Duration::MAX`.
    let huge = common::task("work", 1).with_timeout(Duration::from_millis(68_719_476_735));
    let first = pool.submit(huge).await.unwrap();
    let second = pool.submit(common::task("work", 2)).await.unwrap();
    assert_eq!(first.await.unwrap().decode::<u32>().unwrap(), 1);
    assert_eq!(second.await.unwrap().decode::<u32>().unwrap(), 2);
    let third = pool.submit(common::task("work", 3)).await.unwrap();
    assert_eq!(third.await.unwrap().decode::<u32>().unwrap(), 3);
    pool.shutdown().await;
    assert_eq!(pool.metrics().workers.total, 0, "the pool stopped cleanly");
}

/// Two tasks on one worker whose deadlines pass together both fail as timed
/// out when the worker (killed for the first) is reaped: the second is not
/// taken for a bystander, put back and run again.
#[tokio::test(start_paused = true)]
async fn tasks_that_time_out_together_on_one_worker_both_time_out() {
    let config = PoolConfig {
        worker_concurrency: 2,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let limit = Duration::from_millis(100);
    let mut handles = Vec::new();
    for n in 0..2 {
        let task = common::task("slow", n)
            .with_timeout(limit)
            .with_max_retries(0);
        handles.push(pool.submit(task).await.unwrap());
    }
    for h in handles {
        let err = h.await.unwrap_err();
        assert!(matches!(err.failure, Failure::TimedOut { .. }), "{err}");
    }
    assert_eq!(recorder.started().len(), 2, "each ran once");
    assert_eq!(pool.metrics().tasks.timed_out, 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_timeout_above_the_longest_is_cut_to_it_in_a_refusal_and_in_a_dead_letter() {
    let config = PoolConfig {
        retry: RetryPolicy::new(0, Duration::from_millis(100), Duration::from_secs(1), false)
            .unwrap(),
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |_| MockAction::Fail { retryable: true }).await;
    let endless = |task: pool_core::Task| {
        let mut task = task;
        task.timeout = Some(Duration::MAX);
        task
    };
    let refused = pool
        .submit(endless(common::task("work", 1).with_priority(101)))
        .await
        .unwrap_err()
        .into_task();
    assert_eq!(refused.timeout, Some(pool_core::task::MAX_TIMEOUT));
    let err = pool
        .submit(endless(common::task("work", 2)))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.status, FinalStatus::DeadLettered);
    let dead = pool.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task.timeout, Some(pool_core::task::MAX_TIMEOUT));
    pool.shutdown().await;
}
