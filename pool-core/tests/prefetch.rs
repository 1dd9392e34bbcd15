//! The prefetch window: tasks written beyond a worker's concurrency wait in it
//! without their timeout running, and go back to the queue unharmed when their
//! worker dies before they start.

mod common;

use std::time::Duration;

use pool_core::testing::MockAction;
use pool_core::PoolConfig;

#[tokio::test(start_paused = true)]
async fn a_task_waiting_in_the_window_is_timed_from_its_run_start() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |_| {
        MockAction::EchoAfter(Duration::from_millis(800))
    })
    .await;
    // Later than the pool's start: a task's queue time counts from its own
    // queueing.
    tokio::time::advance(Duration::from_millis(100)).await;
    let timeout = Duration::from_secs(1);
    let mut handles = Vec::new();
    for n in 0..3 {
        let task = common::task("work", n).with_timeout(timeout);
        handles.push(pool.submit(task).await.unwrap());
    }
    for (n, h) in (0..).zip(handles) {
        let out = h.await.expect("each task runs 0.8 s of its own 1 s");
        assert_eq!(out.attempts, 1);
        assert_eq!(out.run_time, Duration::from_millis(800));
        assert_eq!(
            out.queue_time,
            Duration::from_millis(800 * n),
            "task {n} waited for the runs before it"
        );
    }
    assert_eq!(pool.metrics().tasks.timed_out, 0);
    assert_eq!(recorder.launches(), 1, "no worker was killed");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_prefetched_task_of_a_crashed_worker_is_requeued_without_losing_an_attempt() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| match t.task_type.as_str() {
        "crash" if t.attempt == 1 => MockAction::Crash(3),
        "slow" => MockAction::EchoAfter(Duration::from_millis(100)),
        _ => MockAction::Echo,
    })
    .await;
    let crash = pool.submit(common::task("crash", 0)).await.unwrap();
    let behind = pool
        .submit(common::task("work", 1).with_max_retries(0))
        .await
        .unwrap();
    let out = behind
        .await
        .expect("the waiting task is not the crash's victim");
    assert_eq!(out.attempts, 1, "it lost no attempt");
    let crashed = crash.await.expect("the crash task succeeds on its retry");
    assert_eq!(crashed.attempts, 2);
    let work: Vec<u32> = recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "work")
        .map(|t| t.attempt)
        .collect();
    assert_eq!(work, [1], "it ran once, as its first attempt");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_runs_at_most_its_concurrency_while_its_window_is_full() {
    let config = PoolConfig {
        worker_concurrency: 2,
        prefetch: 6,
        ..common::config(2)
    };
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(10))).await;
    let handles = pool
        .submit_many((0..40).map(|n| common::task("work", n)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let m = pool.metrics();
    assert_eq!(m.tasks.in_flight, 16, "both windows are full: 2 × (2 + 6)");
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(recorder.max_concurrent(), 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn large_tasks_wait_in_a_window_only_while_those_waiting_weigh_under_prefetch_bytes() {
    let config = PoolConfig {
        worker_concurrency: 2,
        prefetch: 6,
        prefetch_bytes: 1_000,
        ..common::config(2)
    };
    // 1 ms a task: the pace alone would let 10 wait.
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(1))).await;
    let handles = pool
        .submit_many((0..40).map(|_| pool_core::Task::new("work", vec![7u8; 600])))
        .await
        .unwrap();
    // Each worker: 2 running, and 2 waiting (the first weighed 600 bytes, under
    // 1 000, so a second joined it; 1 200 is not under). The actor filled the
    // windows first; each lane refills as its worker answers.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_micros(100)).await;
        assert_eq!(
            pool.metrics().tasks.in_flight,
            8,
            "round {round}: 2 × (2 running + 2 waiting)"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for h in handles {
        assert_eq!(h.await.unwrap().payload.len(), 600);
    }
    assert_eq!(recorder.max_concurrent(), 2);
    pool.shutdown().await;
}

/// Tasks in flight on one worker of concurrency 1 and `prefetch` 8 after
/// each of its first 18 answers, 24 tasks of 100 ms submitted at once.
async fn in_flight_after_each_answer_of_100_ms_tasks(config: PoolConfig) -> Vec<u64> {
    let (pool, _recorder) = common::start(config, |_| {
        MockAction::EchoAfter(Duration::from_millis(100))
    })
    .await;
    let handles = pool
        .submit_many((0..24).map(|n| common::task("work", n)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        pool.metrics().tasks.in_flight,
        9,
        "before its pace is known a worker's window fills by count: 1 + 8"
    );
    let mut in_flight = Vec::new();
    for _ in 0..18 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_flight.push(pool.metrics().tasks.in_flight);
    }
    for h in handles {
        h.await.unwrap();
    }
    pool.shutdown().await;
    in_flight
}

#[tokio::test(start_paused = true)]
async fn a_window_holds_about_five_milliseconds_of_its_worker_pace() {
    let config = PoolConfig {
        prefetch: 8,
        ..common::config(1)
    };
    // It answers one task each 100 ms. The lane's first refill starts the
    // pace's first interval and tops the window up by count; from the
    // second on, the pace is 100 ms a task: no refill while it holds more
    // than its paced window (1 running, 1 waiting), and from the eighth
    // answer on it holds exactly that.
    let in_flight = in_flight_after_each_answer_of_100_ms_tasks(config).await;
    let expected: Vec<u64> = (1..=18u64)
        .map(|n| 10u64.saturating_sub(n).max(2))
        .collect();
    assert_eq!(in_flight, expected);
}

#[tokio::test(start_paused = true)]
async fn a_pool_whose_probes_judge_each_completion_paces_its_windows_too() {
    // A memory bound makes the lanes forward results to the actor, which
    // judges the worker first and refills its window itself.
    let config = PoolConfig {
        prefetch: 8,
        max_rss_bytes: Some(u64::MAX),
        ..common::config(1)
    };
    let in_flight = in_flight_after_each_answer_of_100_ms_tasks(config).await;
    assert!(in_flight.iter().all(|&n| n <= 9), "{in_flight:?}");
    assert!(
        in_flight.windows(2).all(|w| w[1] <= w[0]),
        "it never takes more once its pace is known: {in_flight:?}"
    );
    assert!(
        in_flight[8..].iter().all(|&n| n == 2),
        "1 running, 1 waiting from the ninth answer on: {in_flight:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_gets_a_task_before_any_window_is_filled() {
    let config = PoolConfig {
        prefetch: 8,
        ..common::config(2)
    };
    let (pool, recorder) =
        common::start(config, |_| MockAction::EchoAfter(Duration::from_millis(10))).await;
    let a = pool.submit(common::task("work", 0)).await.unwrap();
    let b = pool.submit(common::task("work", 1)).await.unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let workers: Vec<String> = recorder.started().into_iter().map(|t| t.worker).collect();
    assert_eq!(workers, ["worker-0", "worker-1"]);
    pool.shutdown().await;
}

/// Tasks before and behind a crash task in one full window. Running one task
/// at a time, each task loses as many attempts as the mock worker really
/// started it, and no more. Running two at once, the death beside another
/// task is nobody's: the crash task is charged only for its deaths alone, and
/// every other task succeeds at its first attempt.
async fn crash_in_a_full_window(worker_concurrency: u32) {
    let config = PoolConfig {
        worker_concurrency,
        prefetch: 12,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| match t.task_type.as_str() {
        "crash" => MockAction::Crash(3),
        _ => MockAction::EchoAfter(Duration::from_millis(10)),
    })
    .await;
    let mut tasks: Vec<_> = (0..4).map(|n| common::task("work", n)).collect();
    tasks.push(common::task("crash", 4));
    tasks.extend((5..13).map(|n| common::task("work", n)));
    let tasks = tasks.into_iter().map(|t| t.with_max_retries(1));
    let handles = pool.submit_many(tasks).await.unwrap();
    let crash_id = handles[4].id();
    let mut charged = Vec::new();
    for h in handles {
        match h.await {
            Ok(out) => charged.push((out.id, out.attempts)),
            Err(e) => {
                assert_eq!(
                    (e.id, e.attempts),
                    (crash_id, 2),
                    "only the crash task fails: {e}"
                );
                assert!(
                    matches!(e.failure, pool_core::Failure::WorkerDied { .. }),
                    "{e}"
                );
                charged.push((e.id, e.attempts));
            }
        }
    }
    let started = recorder.started();
    for (id, attempts) in charged {
        let runs = started.iter().filter(|t| t.id == id).count();
        if worker_concurrency == 1 {
            assert_eq!(
                attempts as usize, runs,
                "task {id} is charged the attempts it really started"
            );
        } else if id != crash_id {
            assert_eq!(
                attempts, 1,
                "task {id} lost no attempt to the crash beside it"
            );
        }
    }
    let crash_runs = started.iter().filter(|t| t.task_type == "crash").count();
    let expected = if worker_concurrency == 1 { 2 } else { 3 };
    assert_eq!(
        crash_runs, expected,
        "the crash task ran out of its two attempts"
    );
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_in_a_full_window_charges_only_the_running_task() {
    crash_in_a_full_window(1).await;
}

#[tokio::test(start_paused = true)]
async fn with_concurrency_two_a_crash_in_a_full_window_charges_only_the_crash_task_alone() {
    crash_in_a_full_window(2).await;
}

/// A task whose frame alone kills a worker (it dies as it reads the task,
/// here waiting in the prefetch window behind a running task) takes the blame
/// after two free requeues: it then runs alone and runs out of its own
/// attempts, and the tasks that were running beside it all succeed (each
/// loses at most the attempts of the crashes it was running through).
#[tokio::test(start_paused = true)]
async fn a_task_that_kills_workers_from_their_window_runs_alone_and_takes_the_blame() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, |t| match t.task_type.as_str() {
        "poison" => MockAction::CrashOnReceipt(3),
        _ => MockAction::EchoAfter(Duration::from_millis(10)),
    })
    .await;
    let mut tasks: Vec<_> = (0..6)
        .map(|n| common::task("work", n).with_priority(0))
        .collect();
    tasks.push(common::task("poison", 6).with_priority(50));
    let handles = pool.submit_many(tasks).await.unwrap();
    let poison = handles[6].id();
    for h in handles {
        match h.await {
            Ok(out) => assert_ne!(out.id, poison),
            Err(e) => {
                assert_eq!(e.id, poison, "an innocent task failed: {e}");
                assert!(
                    matches!(e.failure, pool_core::Failure::WorkerDied { .. }),
                    "{e}"
                );
            }
        }
    }
    // The first worker, and one for each crash: two while the poison went
    // free (a task ran beside it), then its own four attempts (three retries).
    let launches = recorder.launches();
    assert_eq!(
        launches, 7,
        "the poison went free while others took the blame"
    );
    pool.shutdown().await;
}
