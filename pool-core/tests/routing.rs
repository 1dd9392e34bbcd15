//! Routing by task type: workers that list their types in `ready` get only those
//! tasks; a task no worker takes fails `unroutable`; a task that waits for its
//! type does not hold up the tasks behind it.

mod common;

use std::time::Duration;

use pool_core::testing::{MockAction, MockRecorder, MockTask, MockTransport};
use pool_core::{FinalStatus, Pool, PoolConfig, Task, TaskHandle, WorkerCommand};

/// Starts a pool of mock workers that list the types `types_for` gives.
async fn start(
    config: PoolConfig,
    types_for: impl Fn(&str) -> Vec<String> + Send + Sync + 'static,
    script: impl Fn(&MockTask) -> MockAction + Send + Sync + 'static,
) -> (Pool, std::sync::Arc<MockRecorder>) {
    let (transport, recorder) = MockTransport::new(script);
    let pool = Pool::builder(
        transport.with_task_types(types_for),
        WorkerCommand::new("mock-worker"),
    )
    .config(config)
    .start()
    .await
    .expect("pool starts");
    (pool, recorder)
}

fn types(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

/// worker-0 takes `echo`, every other worker `upper`.
fn echo_then_upper(worker: &str) -> Vec<String> {
    if worker == "worker-0" {
        types(&["echo"])
    } else {
        types(&["upper"])
    }
}

async fn submit_all(pool: &Pool, task_type: &str, n: u32) -> Vec<TaskHandle> {
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(pool.submit(common::task(task_type, i)).await.unwrap());
    }
    handles
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_lists_its_types_is_sent_only_tasks_of_those_types() {
    let (pool, recorder) = start(common::config(2), echo_then_upper, |_| MockAction::Echo).await;
    let mut handles = submit_all(&pool, "upper", 20).await;
    handles.extend(submit_all(&pool, "echo", 20).await);
    for h in handles {
        h.await.expect("every task has a worker that takes it");
    }
    let started = recorder.started();
    assert_eq!(started.len(), 40);
    for t in started {
        let expected = if t.task_type == "echo" {
            "worker-0"
        } else {
            "worker-1"
        };
        assert_eq!(t.worker, expected, "{t:?}");
    }
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_lists_no_types_takes_every_task() {
    let types_for = |worker: &str| {
        if worker == "worker-0" {
            Vec::new()
        } else {
            types(&["echo"])
        }
    };
    let (pool, recorder) = start(common::config(2), types_for, |_| MockAction::Echo).await;
    let mut handles = submit_all(&pool, "upper", 10).await;
    handles.extend(submit_all(&pool, "echo", 10).await);
    for h in handles {
        h.await
            .expect("the untyped worker takes what the other does not");
    }
    let upper_on: Vec<String> = recorder
        .started()
        .into_iter()
        .filter(|t| t.task_type == "upper")
        .map(|t| t.worker)
        .collect();
    assert_eq!(upper_on, vec!["worker-0".to_owned(); 10]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_no_worker_takes_fails_unroutable_at_once_naming_the_types() {
    let types_for = |_: &str| types(&["echo", "sleep"]);
    let (pool, recorder) = start(common::config(2), types_for, |_| MockAction::Echo).await;
    let upper = pool.submit(common::task("upper", 1)).await.unwrap();
    let echoes = submit_all(&pool, "echo", 5).await;
    let started = tokio::time::Instant::now();
    let err = upper.await.expect_err("no worker takes `upper`");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "concluded at once, not at a timeout"
    );
    assert_eq!(err.failure.kind(), "unroutable");
    assert_eq!((err.status, err.attempts), (FinalStatus::Failed, 0));
    let message = err.failure.to_string();
    assert_eq!(
        message,
        "no worker takes task type `upper` (the workers take: echo, sleep)"
    );
    for h in echoes {
        h.await.expect("echo tasks still run");
    }
    assert!(recorder.started().iter().all(|t| t.task_type == "echo"));
    let m = pool.metrics();
    assert_eq!(
        (m.tasks.failed, m.tasks.queued, m.tasks.in_flight),
        (1, 0, 0)
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_for_a_busy_worker_of_its_type_does_not_hold_up_the_tasks_behind_it() {
    // worker-1 (`upper`) is busy for 10 s; the `upper` tasks queued ahead of the
    // `echo` tasks wait for it, and the echoes run on worker-0 meanwhile.
    let config = PoolConfig {
        prefetch: 0,
        ..common::config(2)
    };
    let script = |t: &MockTask| {
        if t.task_type == "upper" {
            MockAction::EchoAfter(Duration::from_secs(10))
        } else {
            MockAction::Echo
        }
    };
    let (pool, recorder) = start(config, echo_then_upper, script).await;
    let uppers = submit_all(&pool, "upper", 4).await;
    let echoes = submit_all(&pool, "echo", 50).await;
    let before = tokio::time::Instant::now();
    for h in echoes {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("echo tasks are not stuck behind the upper tasks")
            .expect("echo tasks succeed");
    }
    assert!(before.elapsed() < Duration::from_secs(10));
    assert_eq!(
        pool.metrics().tasks.queued,
        3,
        "the three waiting upper tasks count as queued"
    );
    for h in uppers {
        h.await.expect("upper tasks run on their worker in turn");
    }
    assert_eq!(
        before.elapsed(),
        Duration::from_secs(40),
        "one after another"
    );
    let upper_order: Vec<u32> = recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "upper")
        .map(|t| rmp_serde::from_slice(&t.payload).unwrap())
        .collect();
    assert_eq!(upper_order, [0, 1, 2, 3], "FIFO within the type");
    assert_eq!(pool.metrics().tasks.queued, 0);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_waits_for_a_worker_still_starting_that_takes_its_type() {
    let (pool, recorder) = start(common::config(1), echo_then_upper, |_| MockAction::Echo).await;
    // The next worker's first launch fails: its replacement comes after the
    // restart backoff, and only it takes `upper`.
    recorder.fail_next_launches(1);
    pool.scale_to(2).await.expect("scale up");
    let upper = pool.submit(common::task("upper", 7)).await.unwrap();
    let out = upper.await.expect("the upper task waits for its worker");
    assert_eq!(&*out.worker, "worker-2");
    assert_eq!(out.decode::<u32>().unwrap(), 7);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_waits_for_a_starting_worker_at_most_its_timeout() {
    let (pool, recorder) = start(common::config(1), echo_then_upper, |_| MockAction::Echo).await;
    recorder.fail_next_launches(u32::MAX);
    pool.scale_to(2).await.expect("scale up");
    let task = Task::msgpack("upper", &1u32)
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    let before = tokio::time::Instant::now();
    let err = pool
        .submit(task)
        .await
        .unwrap()
        .await
        .expect_err("no worker that takes `upper` ever starts");
    let waited = before.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(err.failure.kind(), "unroutable");
    assert_eq!(
        err.failure.to_string(),
        "no worker took task type `upper` within the task's timeout (3000 ms) (the workers take: echo)"
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_task_can_be_cancelled_and_fails_at_shutdown() {
    let (pool, recorder) = start(common::config(1), echo_then_upper, |_| MockAction::Echo).await;
    recorder.fail_next_launches(u32::MAX);
    pool.scale_to(2).await.expect("scale up");
    let cancelled = pool.submit(common::task("upper", 1)).await.unwrap();
    let dropped = pool.submit(common::task("upper", 2)).await.unwrap();
    // An echo makes sure both upper tasks went through a dispatch pass.
    pool.submit(common::task("echo", 3))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(pool.metrics().tasks.queued, 2);
    cancelled.cancel();
    let err = cancelled.await.expect_err("cancelled");
    assert_eq!(err.status, FinalStatus::Cancelled);
    pool.shutdown().await;
    let err = dropped.await.expect_err("the pool shut down");
    assert_eq!(err.failure.kind(), "shutting_down");
    let m = pool.metrics();
    assert_eq!((m.tasks.queued, m.tasks.cancelled), (0, 1));
}
