//! One task per worker by default, more when configured; balance policies are used.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::PoolConfig;

#[tokio::test(start_paused = true)]
async fn no_worker_ever_runs_two_tasks_at_once_with_concurrency_one() {
    let (pool, recorder) = common::start(common::config(4), |t| {
        let n: u32 = rmp_serde::from_slice(&t.payload).unwrap();
        MockAction::EchoAfter(Duration::from_millis(u64::from(n % 7) * 3 + 1))
    })
    .await;
    let handles = pool
        .submit_many((0..200).map(|n| common::task("work", n)))
        .await
        .unwrap();
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().decode::<u32>().unwrap(), n as u32);
    }
    assert_eq!(recorder.max_concurrent(), 1);
    let workers: std::collections::HashSet<_> =
        recorder.started().into_iter().map(|t| t.worker).collect();
    assert_eq!(workers.len(), 4, "all workers took part");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_multiplexing_worker_gets_up_to_its_concurrency() {
    let config = PoolConfig {
        worker_concurrency: 3,
        ..common::config(1)
    };
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(50))).await;
    let handles = pool
        .submit_many((0..12).map(|n| common::task("work", n)))
        .await
        .unwrap();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(recorder.max_concurrent(), 3);
    pool.shutdown().await;
}

/// Callers on many threads hand tasks to idle workers themselves (and the
/// actor hands out what they leave): none of them puts a second task on a
/// worker whose one run slot is taken when there is no prefetch window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_racing_to_idle_workers_never_overfill_one() {
    let config = PoolConfig {
        prefetch: 0,
        ..common::config(3)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Hang).await;
    let submitters: Vec<_> = (0..24)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.submit(common::task("hang", n)).await })
        })
        .collect();
    let mut handles = Vec::new();
    for submitter in submitters {
        handles.push(submitter.await.expect("joined").expect("accepted"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.started().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three tasks start, one per worker"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_flight: Vec<u32> = pool.workers().await.iter().map(|w| w.in_flight).collect();
    assert_eq!(in_flight, [1, 1, 1], "each worker holds exactly one task");
    assert_eq!(
        pool.metrics().queue.queue_depth,
        21,
        "the rest wait in the queue"
    );
    assert_eq!(recorder.started().len(), 3);
    pool.shutdown_now().await;
    drop(handles);
}

/// Callers on many threads add their tasks to a queue in several shards
/// while the lanes take from theirs and from each other's: every task runs
/// once, answers its own caller, and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_on_many_threads_and_a_sharded_queue_run_every_task_once() {
    let config = PoolConfig {
        worker_concurrency: 2,
        prefetch: 4,
        queue_shards: 4,
        ..common::config(4)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Echo).await;
    let callers: Vec<_> = (0..8u32)
        .map(|caller| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let numbers: Vec<u32> = (0..200).map(|i| caller * 1000 + i).collect();
                let tasks: Vec<_> = numbers.iter().map(|&n| common::task("work", n)).collect();
                let handles = pool.submit_many(tasks).await.expect("accepted");
                for (n, handle) in numbers.into_iter().zip(handles) {
                    let got: u32 = handle.await.expect("answered").decode().expect("a number");
                    assert_eq!(got, n, "each caller hears its own task's result");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("the caller");
    }
    let mut started = common::started_numbers(&recorder);
    let before = started.len();
    started.dedup();
    assert_eq!(
        (before, started.len()),
        (1600, 1600),
        "each task started once"
    );
    let metrics = pool.metrics();
    assert_eq!(metrics.queue.queue_depth, 0);
    assert_eq!(metrics.queue.shards, 4);
    assert_eq!(metrics.tasks.completed, 1600);
    pool.shutdown().await;
}
