//! `Pool::shutdown_now`: every worker's group is killed at once, also workers
//! that ignore `cancel`, `shutdown` and SIGTERM, before or during a graceful
//! shutdown; and both shutdowns return only once the pool let go of everything.

mod common;

use std::sync::Arc;
use std::time::Duration;

use pool_core::process::GroupSignal;
use pool_core::testing::{MockAction, MockReceived, MockRecorder, MockTransport};
use pool_core::{Failure, FinalStatus, Pool, PoolConfig, TaskHandle, Transport, WorkerCommand};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Two workers whose tasks never answer and which only SIGKILL ends, no
/// prefetch (a task beyond the two running ones waits in the queue), and a
/// drain deadline of `shutdown_timeout`.
async fn stubborn_pool(shutdown_timeout: Duration) -> (Pool, Arc<MockRecorder>) {
    let config = PoolConfig {
        prefetch: 0,
        shutdown_timeout,
        cancel_grace: Duration::from_secs(3600),
        ..common::config(2)
    };
    common::start(config, |_| MockAction::Stubborn).await
}

/// Submits `n` tasks and lets the first two reach their workers.
async fn submit(pool: &Pool, n: u32) -> Vec<TaskHandle> {
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(pool.submit(common::task("stuck", i)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.metrics().tasks.in_flight, 2, "one task on each worker");
    handles
}

/// What `worker` received besides its tasks.
fn received_by(recorder: &MockRecorder, worker: &str) -> Vec<MockReceived> {
    recorder
        .received(worker)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// What each of the two workers received besides its tasks.
fn received(recorder: &MockRecorder) -> [Vec<MockReceived>; 2] {
    ["worker-0", "worker-1"].map(|w| received_by(recorder, w))
}

/// Both workers received SIGKILL and nothing else.
fn assert_only_killed(recorder: &MockRecorder) {
    let only_kill = vec![MockReceived::Signal(GroupSignal::Kill)];
    assert_eq!(received(recorder), [only_kill.clone(), only_kill]);
}

/// Calls `shutdown_now` and checks that it, and then the graceful shutdown
/// `graceful` running alongside if any, returned without waiting any grace.
async fn shutdown_now_at_once(pool: &Pool, graceful: Option<JoinHandle<()>>) {
    let began = Instant::now();
    pool.shutdown_now().await;
    if let Some(graceful) = graceful {
        graceful.await.unwrap();
    }
    assert!(
        began.elapsed() < Duration::from_millis(20),
        "no grace is waited: {:?}",
        began.elapsed()
    );
}

/// A graceful shutdown of `pool` running on its own task.
fn shutdown_in_background(pool: &Pool) -> JoinHandle<()> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.shutdown().await })
}

/// `handle`'s task ended without an answer, with `status` and `failure`.
async fn assert_ends_as(handle: TaskHandle, status: FinalStatus, failure: Failure) {
    let err = handle.await.expect_err("the task never answered");
    assert_eq!((err.status, err.failure), (status, failure));
}

/// Every task of `handles` failed because the pool was shutting down.
async fn assert_shutting_down(handles: Vec<TaskHandle>) {
    for handle in handles {
        assert_ends_as(handle, FinalStatus::Failed, Failure::ShuttingDown).await;
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_now_kills_workers_that_ignore_shutdown_and_term_and_returns_at_once() {
    let (pool, recorder) = stubborn_pool(Duration::from_secs(60)).await;
    let handles = submit(&pool, 3).await;
    shutdown_now_at_once(&pool, None).await;
    assert_only_killed(&recorder);
    assert_shutting_down(handles).await;
    let m = pool.metrics();
    assert_eq!(
        (m.workers.total, m.tasks.in_flight, m.tasks.queued),
        (0, 0, 0)
    );
    assert!(m.pool.shutting_down);
    // Later calls of either kind return at once.
    pool.shutdown_now().await;
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_now_during_the_drain_kills_at_once_and_ends_the_graceful_shutdown_too() {
    let (pool, recorder) = stubborn_pool(Duration::from_secs(60)).await;
    let handles = submit(&pool, 2).await;
    let graceful = shutdown_in_background(&pool);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !graceful.is_finished(),
        "the drain waits for the stuck tasks"
    );
    shutdown_now_at_once(&pool, Some(graceful)).await;
    assert_only_killed(&recorder);
    assert_shutting_down(handles).await;
    assert_eq!(pool.metrics().workers.total, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_now_between_stop_steps_kills_at_once_and_skips_the_steps_still_due() {
    let grace = common::config(2).kill_grace;
    let (pool, recorder) = stubborn_pool(Duration::from_secs(1)).await;
    let handles = submit(&pool, 2).await;
    let graceful = shutdown_in_background(&pool);
    // Past the drain deadline (cancel) and one grace more (`shutdown`); SIGTERM
    // would follow one grace later.
    tokio::time::sleep(Duration::from_secs(1) + grace + grace / 2).await;
    shutdown_now_at_once(&pool, Some(graceful)).await;
    let ids: Vec<u64> = {
        let mut ids: Vec<u64> = recorder.started().iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids
    };
    let got = received(&recorder);
    for steps in &got {
        let MockReceived::Cancel(id) = steps[0] else {
            panic!("the drain deadline sent cancel first: {got:?}");
        };
        assert!(ids.contains(&id));
        assert_eq!(
            steps[1..],
            [
                MockReceived::Shutdown,
                MockReceived::Signal(GroupSignal::Kill)
            ],
            "no SIGTERM: {got:?}"
        );
    }
    assert_shutting_down(handles).await;
}

#[tokio::test(start_paused = true)]
async fn a_task_its_caller_cancelled_ends_cancelled_when_shutdown_now_kills_its_worker() {
    let (pool, _recorder) = stubborn_pool(Duration::from_secs(60)).await;
    let mut handles = submit(&pool, 2).await;
    let cancelled = handles.remove(0);
    cancelled.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
    pool.shutdown_now().await;
    assert_ends_as(cancelled, FinalStatus::Cancelled, Failure::Cancelled).await;
    assert_shutting_down(handles).await;
}

/// Starts two echo workers over a transport the test keeps a clone of, runs a
/// task, stops the pool with `stop`, and checks the pool let go of the
/// transport by the time `stop` returned.
async fn transport_is_let_go_after(stop: impl AsyncFnOnce(&Pool)) {
    let (transport, _recorder) = MockTransport::new(|_| MockAction::Echo);
    let transport: Arc<dyn Transport> = Arc::new(transport);
    let pool = Pool::builder_arc(transport.clone(), WorkerCommand::new("mock-worker"))
        .config(common::config(2))
        .start()
        .await
        .expect("pool starts");
    assert!(
        Arc::strong_count(&transport) > 1,
        "the running pool holds it"
    );
    let done = pool.submit(common::task("echo", 7)).await.unwrap();
    assert_eq!(done.await.unwrap().decode::<u32>().unwrap(), 7);
    stop(&pool).await;
    assert_eq!(
        Arc::strong_count(&transport),
        1,
        "the actor and every worker task let go before the shutdown returned"
    );
}

// On several threads, so a worker task still ending on one thread while the
// actor returns on another would be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_returns_the_pool_holds_no_clone_of_the_transport() {
    transport_is_let_go_after(async |pool: &Pool| pool.shutdown().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_now_returns_the_pool_holds_no_clone_of_the_transport() {
    transport_is_let_go_after(async |pool: &Pool| pool.shutdown_now().await).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_still_starting_when_shutdown_now_comes_is_killed_once_ready() {
    let (pool, recorder) = common::start(common::config(1), |_| MockAction::Echo).await;
    // Both commands reach the actor before the new worker's task first runs.
    let (scaled, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(pool.scale_to(2), pool.shutdown_now())
    })
    .await
    .expect("the pool stops although a worker became ready during the stop");
    assert_eq!(scaled.expect("within the bounds"), 2);
    assert_eq!(recorder.launches(), 2, "the second worker was launched");
    assert_eq!(
        received_by(&recorder, "worker-1"),
        [MockReceived::Signal(GroupSignal::Kill)]
    );
    assert_eq!(pool.metrics().workers.total, 0);
}
