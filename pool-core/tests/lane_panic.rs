//! A worker's lane (the task that reads, settles and writes for it) that
//! panics, as a bug would, loses nothing: its worker is killed and reaped, its
//! tasks settle (through a handle or a `Completions` channel alike), a
//! replacement starts, and the pool still shuts down; tasks it took from the
//! queue and had not added to its book go back to the queue, also the one it
//! was starting.

mod common;

use std::time::Duration;

use pool_core::testing::{panic_lanes, panic_lanes_in_refill, panic_lanes_in_start, MockAction};
use pool_core::{FinalStatus, PoolConfig};

#[tokio::test]
async fn a_panicked_lane_settles_its_tasks_and_its_worker_is_replaced() {
    let config = PoolConfig {
        prefetch: 0,
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |t| {
        if t.task_type == "hang" {
            MockAction::Hang
        } else {
            MockAction::Echo
        }
    })
    .await;
    let once = |n| {
        let mut task = common::task("hang", n);
        task.max_retries = Some(0);
        task.dead_letter = false;
        task
    };
    let by_handle = pool.submit(once(1)).await.expect("accepted");
    let mut done = pool_core::Completions::new();
    let ids = pool.submit_each_to([once(2)], &done.sink()).await;
    let by_channel = *ids[0].as_ref().expect("accepted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.started().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "both tasks start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let launched = recorder.launches();

    panic_lanes(&pool);

    let err = tokio::time::timeout(Duration::from_secs(10), by_handle)
        .await
        .expect("the handle's task ends once its lane panicked")
        .expect_err("it never finished");
    assert_eq!(err.status, FinalStatus::Exhausted, "{err:?}");
    assert_eq!(err.failure.kind(), "protocol");
    assert!(
        err.failure
            .to_string()
            .contains("its reader panicked (panic requested by pool_core::testing::panic_lanes)"),
        "{}",
        err.failure
    );
    let mut outcomes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), done.recv_many(&mut outcomes, 8))
        .await
        .expect("the channel's task ends once its lane panicked");
    let err = outcomes[0].as_ref().expect_err("it never finished");
    assert_eq!((err.id, err.failure.kind()), (by_channel, "protocol"));

    // Both workers are replaced, and the replacements work.
    let echoed = tokio::time::timeout(
        Duration::from_secs(10),
        pool.submit(common::task("echo", 3))
            .await
            .expect("accepted"),
    )
    .await
    .expect("a replacement runs it")
    .expect("echoed");
    assert_eq!(echoed.payload, common::task("echo", 3).payload);
    assert_eq!(recorder.launches(), launched + 2);
    let m = pool.metrics();
    assert_eq!(m.tasks.failed, 2);
    assert_eq!(
        m.performance.workers_crashed, 0,
        "the pool killed them: not a crash"
    );
    tokio::time::timeout(Duration::from_secs(10), pool.shutdown())
        .await
        .expect("the pool shuts down");
}

/// A lane that panics in a refill, after it took tasks from the queue and
/// before it started them, loses none of them: they go back to the queue,
/// still holding their queue slots, and run on the replacement worker.
#[tokio::test]
async fn a_lane_that_panics_in_a_refill_puts_the_tasks_it_took_back() {
    panic_in_a_refill(panic_lanes_in_refill).await;
}

/// As [`a_lane_that_panics_in_a_refill_puts_the_tasks_it_took_back`], with
/// the panic inside the first task's start: its frame was written into the
/// worker's batch, the task was not yet in the book. That task goes back to
/// the queue too, and runs once (the recorder sees each task's first attempt
/// start once: the stranded frame never reached the dying worker).
#[tokio::test]
async fn a_lane_that_panics_while_starting_a_task_puts_it_back() {
    panic_in_a_refill(panic_lanes_in_start).await;
}

/// Submits a full queue of tasks to one worker, makes its lane panic (as
/// `panic` asks) in its next refill, and checks that every task ran once on
/// a worker and every queue slot came back.
async fn panic_in_a_refill(panic: fn(&pool_core::Pool)) {
    const TASKS: usize = 30;
    let config = PoolConfig {
        worker_concurrency: 1,
        prefetch: 4,
        max_queue_len: TASKS,
        retry: common::quick_retries(3),
        ..common::config(1)
    };
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(5))).await;
    let handles = pool
        .submit_many((0..TASKS as u32).map(|n| common::task("echo", n)))
        .await
        .expect("accepted");

    panic(&pool);

    let mut first_attempts = Vec::new();
    for (n, handle) in (0u32..).zip(handles) {
        let out = tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("each task ends")
            .expect("each task runs, on the replacement when not before");
        assert_eq!(out.payload, common::task("echo", n).payload);
        if out.attempts == 1 {
            first_attempts.push(out.id);
        }
    }
    assert_eq!(recorder.launches(), 2, "the worker was replaced once");
    // A task the dying worker ran is retried (a second attempt); one that
    // went back to the queue untouched ran once, on its first attempt.
    let started = recorder.started();
    for id in first_attempts {
        let runs = started.iter().filter(|t| t.id == id).count();
        assert_eq!(
            runs, 1,
            "task {id}, answered on its first attempt, ran once"
        );
    }
    // Every queue slot came back: a full queue is accepted again at once.
    let again: Vec<_> = (0..TASKS as u32)
        .map(|n| pool.try_submit(common::task("echo", n)).expect("room"))
        .collect();
    for handle in again {
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("ends")
            .expect("runs");
    }
    tokio::time::timeout(Duration::from_secs(10), pool.shutdown())
        .await
        .expect("the pool shuts down");
}
