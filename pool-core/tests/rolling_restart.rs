//! Rolling restarts: every worker is replaced, each replacement ready before the
//! worker it replaces retires, and no task is lost.

mod common;

use std::time::Duration;

use pool_core::testing::{MockAction, MockTransport};
use pool_core::{Pool, PoolConfig, PoolEvent, WorkerCommand};

#[tokio::test(start_paused = true)]
async fn every_worker_is_replaced_replacement_first_and_no_task_is_lost() {
    let (pool, recorder) = common::start(common::config(3), |_| {
        MockAction::EchoAfter(Duration::from_millis(30))
    })
    .await;
    let mut events = pool.events();
    let mut handles = Vec::new();
    for n in 0..60u32 {
        handles.push(pool.submit(common::task("work", n)).await.unwrap());
    }
    let rolled = pool.roll_workers(None).await.unwrap();
    assert_eq!(rolled, 3);
    for (n, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap().decode::<u32>().unwrap(), n as u32);
    }
    assert_eq!(recorder.launches(), 6);
    // Capacity never dipped: before each retirement, one more worker was ready
    // than were retired so far, on top of the original three.
    let (mut ready, mut retired) = (3usize, 0usize);
    while let Ok(event) = events.try_recv() {
        match event {
            PoolEvent::WorkerReady { .. } => ready += 1,
            PoolEvent::WorkerRecycled { reason, .. } => {
                assert_eq!(reason, "rolling restart");
                retired += 1;
                assert!(ready - retired >= 3, "ready {ready}, retired {retired}");
            }
            _ => {}
        }
    }
    assert_eq!(retired, 3);
    let m = pool.metrics();
    assert_eq!(m.tasks.completed, 60);
    assert_eq!(m.performance.workers_crashed, 0);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_command_is_used_by_the_replacements_and_a_second_roll_is_refused() {
    let (pool, recorder) = common::start(common::config(2), |_| MockAction::Echo).await;
    let (first, second) = tokio::join!(
        pool.roll_workers(Some(WorkerCommand::new("mock-worker-v2"))),
        pool.roll_workers(None)
    );
    assert!(second.is_err());
    assert_eq!(first.unwrap(), 2);
    assert_eq!(recorder.launches(), 4);
    runs_a_task(&pool).await;
    assert_eq!(pool.metrics().workers.total, 2);
    assert_eq!(pool.worker_count(), 2);
    pool.shutdown().await;
}

/// A due worker that dies while the roll's replacement starts is replaced
/// as any dead worker is; the roll then ends with the pool at its size, not
/// one over it (and over `max_workers`) for good.
#[tokio::test(start_paused = true)]
async fn a_worker_that_dies_during_a_roll_leaves_the_pool_at_its_size() {
    let (transport, recorder) = MockTransport::new(common::first_attempt(MockAction::Crash(3)));
    recorder.delay_ready_of("worker-1", Duration::from_secs(1));
    let config = PoolConfig {
        max_workers: 1,
        ..common::config(1)
    };
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(config)
        .start()
        .await
        .expect("pool starts");
    let crashing = async {
        let handle = pool.submit(common::task("echo", 1)).await.unwrap();
        handle.await
    };
    let (rolled, ran) = tokio::join!(pool.roll_workers(None), crashing);
    rolled.expect("the roll ends");
    assert_eq!(ran.expect("the task ran again").attempts, 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.worker_count(), 1, "the pool is back at its size");
    pool.shutdown().await;
}

/// A worker still starting when a roll begins was launched with the old
/// command: it is due as well, and retired once ready, so that every worker
/// runs the new command when the roll ends.
#[tokio::test(start_paused = true)]
async fn a_worker_still_starting_when_a_roll_begins_is_rolled_too() {
    let (pool, recorder) = common::start(common::config(1), |_| MockAction::Echo).await;
    recorder.delay_ready_of("worker-1", Duration::from_secs(1));
    assert_eq!(pool.scale_to(2).await.expect("scales"), 2);
    let rolled = pool
        .roll_workers(Some(WorkerCommand::new("mock-worker-v2")))
        .await
        .expect("the roll ends");
    assert_eq!(rolled, 2, "the ready worker and the starting one");
    let workers = pool.workers().await;
    let serving: Vec<&str> = workers
        .iter()
        .filter(|w| w.state != "retiring" && w.state != "killing")
        .map(|w| w.id.as_str())
        .collect();
    assert_eq!(serving.len(), 2, "{workers:?}");
    for worker in serving {
        assert_eq!(
            recorder.program_of(worker).as_deref(),
            Some("mock-worker-v2"),
            "{worker} runs the new command"
        );
    }
    pool.shutdown().await;
}

/// A scale during a roll's surge sets the pool's target, whatever size it
/// names (here the surged size itself): the roll's extra worker is its own,
/// and the pool ends at the size asked for.
#[tokio::test(start_paused = true)]
async fn a_scale_during_a_rolls_surge_is_kept() {
    let config = PoolConfig {
        max_workers: 6,
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Echo).await;
    // The roll's first replacement is slow to start: the scale comes while
    // the pool surges to three.
    recorder.delay_ready_of("worker-2", Duration::from_secs(1));
    let scale = async {
        while recorder.launches() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pool.scale_to(3).await
    };
    let (rolled, scaled) = tokio::join!(pool.roll_workers(None), scale);
    assert_eq!(scaled.expect("scales"), 3);
    assert_eq!(rolled.expect("the roll ends"), 2);
    assert_eq!(pool.target_size(), 3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.worker_count(), 3, "the pool is at the size asked for");
    pool.shutdown().await;
}

/// A roll whose command cannot start a worker is aborted once
/// `max_start_failures` of its workers in a row failed to start: its caller
/// is told why, the workers not yet rolled keep serving, a worker that dies
/// later is replaced with the pool's previous command, and another roll may
/// begin.
#[tokio::test(start_paused = true)]
async fn a_roll_whose_workers_cannot_start_is_aborted_and_the_old_command_kept() {
    let script = |t: &pool_core::testing::MockTask| {
        if t.task_type == "crash" {
            MockAction::Crash(3)
        } else {
            MockAction::Echo
        }
    };
    let (pool, recorder) = common::start(common::config(2), script).await;
    let max_start_failures = PoolConfig::default().max_start_failures;
    recorder.fail_next_launches(1_000_000);
    let rolled = tokio::time::timeout(
        Duration::from_secs(600),
        pool.roll_workers(Some(WorkerCommand::new("mock-worker-bad"))),
    )
    .await
    .expect("the roll ends");
    let error = rolled.expect_err("the roll is aborted");
    assert_eq!(error.key, "worker");
    assert!(
        error.message.contains("rolling restart aborted")
            && error.message.contains("0 of 2 workers were replaced"),
        "{error}"
    );
    assert_eq!(
        recorder.launches(),
        2 + max_start_failures,
        "no launch after the roll gave up"
    );
    recorder.fail_next_launches(0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let serving = |workers: Vec<pool_core::manager::WorkerStatus>| -> Vec<String> {
        workers
            .into_iter()
            .filter(|w| w.state != "retiring" && w.state != "killing")
            .map(|w| w.id)
            .collect()
    };
    assert_eq!(
        serving(pool.workers().await),
        ["worker-0", "worker-1"],
        "the workers not rolled keep serving"
    );
    assert_eq!(recorder.launches(), 2 + max_start_failures);

    // A worker that dies now is replaced with the command the pool ran
    // before the roll.
    let crashed = pool.submit(common::task("crash", 1)).await.unwrap().await;
    assert!(crashed.is_err(), "the crash task ran out of attempts");
    let replacements: Vec<String> = (2 + max_start_failures..recorder.launches())
        .map(|n| format!("worker-{n}"))
        .collect();
    assert!(!replacements.is_empty(), "the dead workers were replaced");
    for worker in &replacements {
        assert_eq!(
            recorder.program_of(worker).as_deref(),
            Some("mock-worker"),
            "{worker} runs the old command"
        );
    }

    // Another roll may begin, and ends.
    let rolled = pool
        .roll_workers(Some(WorkerCommand::new("mock-worker-v2")))
        .await
        .expect("a new roll ends");
    assert_eq!(rolled, 2);
    for worker in serving(pool.workers().await) {
        assert_eq!(
            recorder.program_of(&worker).as_deref(),
            Some("mock-worker-v2"),
            "{worker} runs the fixed command"
        );
    }
    runs_a_task(&pool).await;
    pool.shutdown().await;
}

/// An aborted roll keeps the workers it already replaced (they started and
/// serve) and says how many it replaced.
#[tokio::test(start_paused = true)]
async fn an_aborted_roll_keeps_the_workers_it_replaced() {
    let (pool, recorder) = common::start(common::config(3), |_| MockAction::Echo).await;
    let max_start_failures = PoolConfig::default().max_start_failures;
    // The first replacement starts; the ones after it do not.
    recorder.delay_ready_of("worker-3", Duration::from_secs(1));
    let fail_after_first = async {
        while recorder.launches() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        recorder.fail_next_launches(1_000_000);
    };
    let (rolled, ()) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(600),
            pool.roll_workers(Some(WorkerCommand::new("mock-worker-v2")))
        ),
        fail_after_first
    );
    let error = rolled
        .expect("the roll ends")
        .expect_err("the roll is aborted");
    assert!(
        error.message.contains("1 of 3 workers were replaced"),
        "{error}"
    );
    assert_eq!(recorder.launches(), 4 + max_start_failures);
    recorder.fail_next_launches(0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut serving: Vec<(String, Option<String>)> = pool
        .workers()
        .await
        .into_iter()
        .filter(|w| w.state != "retiring" && w.state != "killing")
        .map(|w| {
            let program = recorder.program_of(&w.id);
            (w.id, program)
        })
        .collect();
    serving.sort();
    assert_eq!(
        serving,
        [
            ("worker-1".to_owned(), Some("mock-worker".to_owned())),
            ("worker-2".to_owned(), Some("mock-worker".to_owned())),
            ("worker-3".to_owned(), Some("mock-worker-v2".to_owned())),
        ]
    );
    pool.shutdown().await;
}

/// Checks that `pool` runs a task.
async fn runs_a_task(pool: &pool_core::Pool) {
    let out = pool
        .submit(common::task("work", 7))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.decode::<u32>().unwrap(), 7);
}
