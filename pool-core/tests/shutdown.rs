//! Graceful shutdown: queued tasks are rejected, in-flight ones finish within the
//! deadline, and every worker is gone afterwards.

mod common;

use std::time::Duration;

use pool_core::process::GroupSignal;
use pool_core::testing::{MockAction, MockReceived};
use pool_core::{Failure, FinalStatus, PoolConfig, SubmitError};

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_flight_work_and_rejects_the_queue() {
    let (pool, recorder) = common::start(common::config(1), |_| {
        MockAction::EchoAfter(Duration::from_secs(2))
    })
    .await;
    let running = pool.submit(common::task("work", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let queued: Vec<_> = futures_like_collect(&pool, 3).await;
    pool.shutdown().await;
    assert_eq!(running.await.unwrap().decode::<u32>().unwrap(), 1);
    for handle in queued {
        let err = handle.await.unwrap_err();
        assert_eq!(
            (err.status, err.failure),
            (FinalStatus::Failed, Failure::ShuttingDown)
        );
        assert_eq!(err.attempts, 0);
    }
    assert_eq!(recorder.started().len(), 1);
    let m = pool.metrics();
    assert_eq!(m.workers.total, 0, "no worker is left");
    assert!(m.pool.shutting_down);
    let refused = pool.submit(common::task("late", 9)).await.unwrap_err();
    assert!(matches!(refused, SubmitError::ShuttingDown(_)));
}

/// A task submitted right before `shutdown()` is handed out before the queue
/// is drained, whichever of the two the actor hears first: it runs.
#[tokio::test(start_paused = true)]
async fn a_task_submitted_just_before_shutdown_runs() {
    for n in 0..20 {
        let (pool, _recorder) = common::start(common::config(1), |_| MockAction::Echo).await;
        let handle = pool.submit(common::task("work", n)).await.unwrap();
        pool.shutdown().await;
        let out = handle.await.unwrap_or_else(|e| panic!("round {n}: {e}"));
        assert_eq!(out.decode::<u32>().unwrap(), n);
    }
}

async fn futures_like_collect(pool: &pool_core::Pool, n: u32) -> Vec<pool_core::TaskHandle> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            pool.submit(common::task("queued", 10 + i))
                .await
                .expect("accepted"),
        );
    }
    out
}

#[tokio::test(start_paused = true)]
async fn in_flight_work_past_the_deadline_is_abandoned_and_its_worker_stopped() {
    let config = PoolConfig {
        shutdown_timeout: Duration::from_secs(1),
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let stuck = pool.submit(common::task("stuck", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    pool.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded shutdown"
    );
    let err = stuck.await.unwrap_err();
    assert_eq!(err.failure, Failure::ShuttingDown);
    assert_eq!(pool.metrics().workers.total, 0);
    assert_eq!(pool.worker_count(), 0);
    assert!(recorder.replies().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_shutdown_caller_waits_for_the_same_completion() {
    let (pool, _) = common::start(common::config(2), |_| MockAction::Echo).await;
    let other = pool.clone();
    let (a, b) = tokio::join!(pool.shutdown(), other.shutdown());
    let ((), ()) = (a, b);
    assert_eq!(pool.metrics().workers.total, 0);
    pool.shutdown().await;
}

/// A pool of one worker doing `action` with one task running when the drain
/// deadline (1 s) passes; returns the task's outcome, when it settled (from the
/// shutdown's start), and what the worker was sent besides its task.
async fn shut_down_busy(
    action: MockAction,
) -> (
    Result<pool_core::TaskOutput, pool_core::TaskError>,
    Duration,
    Vec<(tokio::time::Instant, MockReceived)>,
    tokio::time::Instant,
) {
    let config = PoolConfig {
        shutdown_timeout: Duration::from_secs(1),
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, move |_| action.clone()).await;
    let busy = pool.submit(common::task("busy", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let began = tokio::time::Instant::now();
    let stopping = pool.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let outcome = busy.await;
    let settled = began.elapsed();
    shutdown.await.unwrap();
    assert_eq!(pool.metrics().workers.total, 0);
    let received = recorder.received("worker-0");
    (outcome, settled, received, began)
}

#[tokio::test(start_paused = true)]
async fn at_the_drain_deadline_a_busy_worker_gets_cancel_shutdown_term_then_kill_a_grace_apart() {
    let grace = common::config(1).kill_grace;
    let (outcome, settled, received, began) = shut_down_busy(MockAction::Stubborn).await;
    let err = outcome.unwrap_err();
    assert_eq!(err.failure, Failure::ShuttingDown);
    let what: Vec<MockReceived> = received.iter().map(|(_, w)| *w).collect();
    assert_eq!(
        what,
        [
            MockReceived::Cancel(err.id),
            MockReceived::Shutdown,
            MockReceived::Signal(GroupSignal::Terminate),
            MockReceived::Signal(GroupSignal::Kill),
        ]
    );
    let at: Vec<Duration> = received.iter().map(|(t, _)| *t - began).collect();
    assert!(at[0] >= Duration::from_secs(1), "{at:?}");
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= grace && gap < grace + Duration::from_millis(20),
            "steps are kill_grace ({grace:?}) apart: {at:?}"
        );
    }
    // The worker went on running the task after its cancel: its caller is
    // told only once the worker is gone, never while the task may still run.
    assert!(
        settled >= at[3],
        "the task ends when its worker is reaped, after the SIGKILL at {:?}, not at the drain deadline: {settled:?}",
        at[3]
    );
}

/// A task still running at the drain deadline whose worker finishes it
/// before the stop steps end gives its caller its result: the caller is not
/// told "shutting down" for a task that completed.
#[tokio::test(start_paused = true)]
async fn a_task_that_finishes_after_the_drain_deadline_gives_its_caller_its_result() {
    let (outcome, settled, received, _) =
        shut_down_busy(MockAction::EchoAfter(Duration::from_millis(1100))).await;
    let out = outcome.expect("the task completed");
    assert_eq!(out.decode::<u32>().unwrap(), 1);
    assert!(settled >= Duration::from_secs(1), "{settled:?}");
    let what: Vec<MockReceived> = received.iter().map(|(_, w)| *w).collect();
    assert_eq!(
        what.first(),
        Some(&MockReceived::Cancel(out.id)),
        "its cancel was sent at the deadline: {what:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_exits_after_cancel_is_never_signalled() {
    let (outcome, _, received, _) = shut_down_busy(MockAction::ExitOnCancel).await;
    let err = outcome.unwrap_err();
    assert_eq!(err.failure, Failure::ShuttingDown);
    let what: Vec<MockReceived> = received.iter().map(|(_, w)| *w).collect();
    assert_eq!(what, [MockReceived::Cancel(err.id)]);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_answers_the_cancel_is_sent_shutdown_at_once_and_never_signalled() {
    let (outcome, _, received, _) = shut_down_busy(MockAction::UntilCancelled).await;
    let err = outcome.unwrap_err();
    assert_eq!(err.failure, Failure::ShuttingDown);
    let what: Vec<MockReceived> = received.iter().map(|(_, w)| *w).collect();
    assert_eq!(what, [MockReceived::Cancel(err.id), MockReceived::Shutdown]);
    assert!(
        received[1].0 - received[0].0 < Duration::from_millis(20),
        "no grace is waited once the worker answered: {received:?}"
    );
}

/// A task withdrawn from a worker's prefetch window at the drain deadline
/// never ran: it ends with no attempt and no worker named, while the task
/// that was running names its worker.
/// One worker, and a drain of 1 s.
fn one_worker_one_second_drain() -> PoolConfig {
    PoolConfig {
        shutdown_timeout: Duration::from_secs(1),
        ..common::config(1)
    }
}

/// Shuts `pool` down while one task runs on its worker and one waits in the
/// worker's window; the outcomes of `running` and `waiting`.
async fn outcomes_at_the_deadline(
    pool: &pool_core::Pool,
    running: pool_core::TaskHandle,
    waiting: pool_core::TaskHandle,
) -> (pool_core::TaskError, pool_core::TaskError) {
    assert_eq!(
        pool.metrics().tasks.in_flight,
        2,
        "one running, one in the window"
    );
    let stopping = pool.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let ran = running.await.unwrap_err();
    let never = waiting.await.unwrap_err();
    shutdown.await.unwrap();
    (ran, never)
}

#[tokio::test(start_paused = true)]
async fn a_task_withdrawn_from_the_window_at_the_deadline_names_no_worker() {
    let (pool, _recorder) =
        common::start(one_worker_one_second_drain(), |_| MockAction::Stubborn).await;
    let running = pool.submit(common::task("busy", 1)).await.unwrap();
    let waiting = pool.submit(common::task("busy", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (ran, never) = outcomes_at_the_deadline(&pool, running, waiting).await;
    assert_eq!((ran.attempts, ran.worker.as_deref()), (1, Some("worker-0")));
    assert_eq!(never.failure, Failure::ShuttingDown);
    assert_eq!((never.attempts, never.worker.as_deref()), (0, None));
}

/// A task whose first attempt failed on a worker and whose retry was
/// withdrawn from a window at the drain deadline names the worker of the
/// attempt that counts.
#[tokio::test(start_paused = true)]
async fn a_withdrawn_retry_names_the_worker_of_the_attempt_that_counts() {
    let (pool, _recorder) = common::start(one_worker_one_second_drain(), |t| {
        match (t.task_type.as_str(), t.attempt) {
            ("flaky", 1) => MockAction::Fail { retryable: true },
            ("flaky", _) => MockAction::Echo,
            _ => MockAction::Stubborn,
        }
    })
    .await;
    let flaky = pool.submit(common::task("flaky", 1)).await.unwrap();
    // Its first attempt fails at once; its retry waits out the backoff.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let busy = pool.submit(common::task("busy", 2)).await.unwrap();
    // The retry lands in the window, behind the task that never ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, err) = outcomes_at_the_deadline(&pool, busy, flaky).await;
    assert_eq!(err.failure, Failure::ShuttingDown);
    assert_eq!((err.attempts, err.worker.as_deref()), (1, Some("worker-0")));
}

/// A caller's cancel of a task past the drain deadline ends it as cancelled
/// without cutting its worker's stop steps short: no second `cancel`, no
/// SIGKILL after the cancel's own grace.
#[tokio::test(start_paused = true)]
async fn a_cancel_after_the_drain_deadline_ends_the_task_cancelled_and_keeps_the_stop_steps() {
    let config = PoolConfig {
        cancel_grace: Duration::from_millis(100),
        ..one_worker_one_second_drain()
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Stubborn).await;
    let busy = pool.submit(common::task("busy", 1)).await.unwrap();
    let id = busy.id();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopping = pool.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pool.cancel(id);
    let err = busy.await.unwrap_err();
    assert_eq!(
        (err.status, err.failure),
        (FinalStatus::Cancelled, Failure::Cancelled)
    );
    shutdown.await.unwrap();
    let what: Vec<MockReceived> = recorder
        .received("worker-0")
        .iter()
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(
        what,
        [
            MockReceived::Cancel(id),
            MockReceived::Shutdown,
            MockReceived::Signal(GroupSignal::Terminate),
            MockReceived::Signal(GroupSignal::Kill),
        ]
    );
}

/// A task whose own timeout runs out after the drain deadline fails as timed
/// out, as the pool's count of timeouts says, not as "shutting down".
#[tokio::test(start_paused = true)]
async fn a_task_timing_out_after_the_drain_deadline_fails_as_timed_out() {
    let (pool, _recorder) =
        common::start(one_worker_one_second_drain(), |_| MockAction::Stubborn).await;
    let task = common::task("busy", 1).with_timeout(Duration::from_millis(1100));
    let busy = pool.submit(task).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopping = pool.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let err = busy.await.unwrap_err();
    shutdown.await.unwrap();
    assert!(
        matches!(err.failure, Failure::TimedOut { .. }),
        "{:?}",
        err.failure
    );
    assert_eq!(pool.metrics().tasks.timed_out, 1);
}
