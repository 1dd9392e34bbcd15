//! Priority order and FIFO within a priority, through a real pool (mock workers).

mod common;

use std::time::Duration;

use pool_core::testing::{MockAction, MockRecorder};
use pool_core::{SubmitError, TaskHandle};

/// Waits for the blockers, then for every handle, and gives the numbers of
/// the `work` tasks in the order the worker started them.
async fn work_order(
    blockers: Vec<TaskHandle>,
    handles: Vec<TaskHandle>,
    recorder: &MockRecorder,
) -> Vec<u32> {
    for blocker in blockers {
        blocker.await.unwrap();
    }
    for h in handles {
        h.await.unwrap();
    }
    recorder
        .started()
        .iter()
        .filter(|t| t.task_type == "work")
        .map(|t| rmp_serde::from_slice(&t.payload).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn priorities_are_served_lowest_number_first_and_fifo_within_a_level() {
    // Strict priority order is what `prefetch: 0` promises.
    let config = pool_core::PoolConfig {
        prefetch: 0,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, common::blocker_then_echo).await;
    let blocker = pool.submit(common::task("blocker", 0)).await.unwrap();
    tokio::task::yield_now().await;
    let plan = [
        (20, 1),
        (0, 2),
        (10, 3),
        (0, 4),
        (20, 5),
        (10, 6),
        (100, 7),
        (0, 8),
    ];
    let mut handles = Vec::new();
    for (priority, n) in plan {
        let task = common::task("work", n).with_priority(priority);
        handles.push(pool.submit(task).await.unwrap());
    }
    let order = work_order(vec![blocker], handles, &recorder).await;
    assert_eq!(order, [2, 4, 8, 3, 6, 1, 5, 7]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_a_prefetch_window_a_task_waits_behind_at_most_the_window() {
    let config = pool_core::PoolConfig {
        prefetch: 2,
        ..common::config(1)
    };
    let (pool, recorder) = common::start(config, common::blocker_then_echo).await;
    let blocker = pool.submit(common::task("blocker", 0)).await.unwrap();
    tokio::task::yield_now().await;
    let mut handles = Vec::new();
    for (priority, n) in [(50, 1), (50, 2), (50, 3), (50, 4), (0, 5)] {
        let task = common::task("work", n).with_priority(priority);
        handles.push(pool.submit(task).await.unwrap());
        // Each arrives on its own: the actor hands it out before the next one
        // (a burst would be ordered by priority before anything is written).
        tokio::task::yield_now().await;
    }
    let order = work_order(vec![blocker], handles, &recorder).await;
    // 1 and 2 were already in the worker's window when 5 arrived; 5 overtakes the
    // rest of the queue.
    assert_eq!(order, [1, 2, 5, 3, 4]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_priority_above_100_is_refused_with_the_task() {
    let (pool, _) = common::start(common::config(1), |_| MockAction::Echo).await;
    let err = pool
        .submit(common::task("work", 1).with_priority(101))
        .await
        .unwrap_err();
    assert!(matches!(err, SubmitError::InvalidPriority(_)));
    assert_eq!(err.into_task().priority, 101);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn try_submit_gives_the_task_back_when_the_queue_is_full() {
    let config = pool_core::PoolConfig {
        max_queue_len: 2,
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |_| MockAction::EchoAfter(Duration::from_secs(5))).await;
    let running = pool.try_submit(common::task("work", 1)).unwrap();
    tokio::task::yield_now().await;
    // Let the actor dispatch the first task so its queue slot is freed.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let q1 = pool.try_submit(common::task("work", 2)).unwrap();
    let q2 = pool.try_submit(common::task("work", 3)).unwrap();
    let err = pool.try_submit(common::task("work", 4)).unwrap_err();
    assert!(matches!(err, SubmitError::QueueFull(_)), "{err:?}");
    assert_eq!(err.into_task().payload, common::task("work", 4).payload);
    for h in [running, q1, q2] {
        h.await.unwrap();
    }
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_count_every_worker_as_soon_as_start_returns() {
    let (pool, _) = common::start(common::config(4), |_| MockAction::Echo).await;
    let m = pool.metrics();
    assert_eq!((m.workers.total, m.workers.ready), (4, 4));
    assert_eq!(m.health.status, pool_core::HealthStatus::Healthy);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn queue_slots_come_back_when_queued_tasks_are_cancelled_or_dispatched() {
    let config = pool_core::PoolConfig {
        max_queue_len: 2,
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |_| MockAction::EchoAfter(Duration::from_secs(1))).await;
    let running = pool.try_submit(common::task("work", 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let a = pool.try_submit(common::task("work", 1)).unwrap();
    let b = pool.try_submit(common::task("work", 2)).unwrap();
    assert!(matches!(
        pool.try_submit(common::task("work", 3)),
        Err(SubmitError::QueueFull(_))
    ));
    a.cancel();
    assert!(a.await.is_err());
    let c = pool
        .try_submit(common::task("work", 4))
        .expect("the cancelled task's slot");
    for h in [running, b, c] {
        h.await.unwrap();
    }
    for n in 5..7 {
        pool.try_submit(common::task("work", n))
            .expect("slots free again");
    }
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_show_queue_depth_by_priority_band() {
    let config = pool_core::PoolConfig {
        prefetch: 0,
        ..common::config(1)
    };
    let (pool, _recorder) = common::start(config, common::blocker_then_echo).await;
    let blocker = pool.submit(common::task("blocker", 0)).await.unwrap();
    // The actor hands the blocker out before the others queue (it would
    // otherwise start the priority-0 task first).
    tokio::task::yield_now().await;
    let mut handles = Vec::new();
    for (n, priority) in [0, 33, 34, 50, 66, 67, 100].into_iter().enumerate() {
        let task = common::task("work", n as u32).with_priority(priority);
        handles.push(pool.submit(task).await.unwrap());
    }
    // `workers()` is answered by the pool's actor after it took in every submission.
    let _ = pool.workers().await;
    let queue = pool.metrics().queue;
    assert_eq!(
        (
            queue.by_priority.high,
            queue.by_priority.normal,
            queue.by_priority.low
        ),
        (2, 3, 2)
    );
    assert_eq!((queue.queue_depth, queue.retrying), (7, 0));
    blocker.await.unwrap();
    for h in handles {
        h.await.unwrap();
    }
    let queue = pool.metrics().queue;
    assert_eq!(
        (
            queue.by_priority.high,
            queue.by_priority.normal,
            queue.by_priority.low
        ),
        (0, 0, 0)
    );
    pool.shutdown().await;
}

/// The order in which one worker (`worker_concurrency` blockers running, a
/// window of `prefetch` tasks beyond them, the queue in `shards` shards)
/// started `work` tasks submitted while it ran the blockers, each batch of
/// `(priority, number)` from a thread of its own: threads are dealt shards in
/// turn, so each batch waits in its own shard. The worker answers what is
/// done together (batched replies), so once the blockers are answered its
/// lane refills several tasks at once.
async fn started_from_threads(
    (concurrency, prefetch, shards): (u32, u32, usize),
    batches: Vec<Vec<(u8, u32)>>,
) -> Vec<u32> {
    let config = pool_core::PoolConfig {
        worker_concurrency: concurrency,
        prefetch,
        queue_shards: shards,
        ..common::config(1)
    };
    let (pool, recorder) = common::start_batched(config, common::blocker_then_echo).await;
    let blockers = pool
        .submit_many((0..concurrency).map(|n| common::task("blocker", n)))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let mut handles = Vec::new();
    for batch in batches {
        let caller = pool.clone();
        let submitted = std::thread::spawn(move || {
            batch
                .into_iter()
                .map(|(priority, n)| {
                    caller
                        .try_submit(common::task("work", n).with_priority(priority))
                        .expect("room in the queue")
                })
                .collect::<Vec<_>>()
        })
        .join()
        .expect("the submitting thread");
        handles.extend(submitted);
    }
    let order = work_order(blockers, handles, &recorder).await;
    pool.shutdown().await;
    order
}

#[tokio::test(start_paused = true)]
async fn in_a_sharded_queue_tasks_added_from_several_threads_are_served_by_priority() {
    // The worker takes the first head across the shards.
    let batches = vec![
        vec![(50, 1), (50, 2), (50, 3)],
        vec![(0, 4), (0, 5), (0, 6)],
        vec![(10, 7), (10, 8), (10, 9)],
    ];
    let order = started_from_threads((1, 1, 3), batches).await;
    assert_eq!(order, [4, 5, 6, 7, 8, 9, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_refill_of_several_tasks_hands_over_to_a_shard_whose_head_comes_first() {
    // Four blockers answered together leave room for four: after the last
    // priority-0 task of the first shard, the refill goes on with the second
    // shard's priority 10 before the first shard's priority 50.
    let mut first: Vec<(u8, u32)> = (1..=9).map(|n| (0, n)).collect();
    first.extend((20..=23).map(|n| (50, n)));
    let second = (30..=33).map(|n| (10, n)).collect();
    let order = started_from_threads((4, 8, 2), vec![first, second]).await;
    let expected: Vec<u32> = (1..=9).chain(30..=33).chain(20..=23).collect();
    assert_eq!(order, expected);
}

#[tokio::test(start_paused = true)]
async fn a_worker_moves_on_among_shards_of_equal_heads_so_none_is_left_behind() {
    // Two threads' tasks of one priority wait in two shards; the worker's
    // refills take from each in turn rather than emptying one first.
    let batch = |first: u32| (first..first + 8).map(|n| (10, n)).collect();
    let order = started_from_threads((1, 1, 2), vec![batch(100), batch(200)]).await;
    assert_eq!(order.len(), 16);
    let (first_half, _) = order.split_at(8);
    let from = |base: u32| {
        first_half
            .iter()
            .filter(|&&n| (base..base + 8).contains(&n))
            .count()
    };
    assert!(from(100) >= 3 && from(200) >= 3, "{order:?}");
}
