//! Task-count recycling: workers retire after their limit, replacements start
//! first, no task is lost.

mod common;

use pool_core::testing::MockAction;
use pool_core::{PoolConfig, PoolEvent};

#[tokio::test(start_paused = true)]
async fn workers_are_recycled_after_their_task_limit_without_losing_tasks() {
    let config = PoolConfig {
        max_tasks_per_worker: Some(10),
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| MockAction::Echo).await;
    let mut events = pool.events();
    for n in 0..100u32 {
        let out = pool
            .submit(common::task("work", n))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(out.decode::<u32>().unwrap(), n);
        assert!(pool.metrics().workers.total >= 1);
    }
    let m = pool.metrics();
    assert!(m.performance.workers_recycled >= 5, "{:?}", m.performance);
    assert!(recorder.launches() >= 7);
    let mut per_worker = std::collections::HashMap::<String, u32>::new();
    for t in recorder.started() {
        *per_worker.entry(t.worker).or_default() += 1;
    }
    assert!(per_worker.values().all(|n| *n <= 10), "{per_worker:?}");
    let mut recycled = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, PoolEvent::WorkerRecycled { .. }) {
            recycled += 1;
        }
    }
    assert!(recycled >= 5);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_is_never_handed_more_than_max_tasks_per_worker() {
    let config = pool_core::PoolConfig {
        max_tasks_per_worker: Some(10),
        ..common::config(2)
    };
    let (pool, recorder) = common::start(config, |_| {
        MockAction::EchoAfter(std::time::Duration::from_millis(1))
    })
    .await;
    let handles = pool
        .submit_many((0..200).map(|n| common::task("work", n)))
        .await
        .unwrap();
    for h in handles {
        assert_eq!(h.await.unwrap().attempts, 1);
    }
    let mut per_worker = std::collections::HashMap::<String, u32>::new();
    for t in recorder.started() {
        *per_worker.entry(t.worker).or_default() += 1;
    }
    assert!(
        per_worker.values().all(|&n| n <= 10),
        "a worker ran past its limit: {per_worker:?}"
    );
    // 200 tasks at 9 or 10 per worker: 20 to 23 workers, plus at most the two
    // replacements started ahead for the last ones.
    let launches = recorder.launches();
    assert!((20..=25).contains(&launches), "{launches} launches");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn every_recycled_worker_retires_and_the_pool_settles_back_to_its_size() {
    let config = pool_core::PoolConfig {
        max_tasks_per_worker: Some(4),
        ..common::config(3)
    };
    // Tasks outlast a replacement's start, so a retiree is still finishing its
    // last task when the next worker's replacement becomes ready.
    let (pool, _recorder) = common::start(config, |_| {
        MockAction::EchoAfter(std::time::Duration::from_millis(50))
    })
    .await;
    for _ in 0..8 {
        let handles = pool
            .submit_many((0..3).map(|n| common::task("work", n)))
            .await
            .unwrap();
        for h in handles {
            h.await.unwrap();
        }
    }
    // Long past every replacement's start and every retiree's exit.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let workers = pool.workers().await;
    let states: Vec<_> = workers.iter().map(|w| (w.id.clone(), w.state)).collect();
    assert_eq!(workers.len(), 3, "{states:?}");
    assert!(workers.iter().all(|w| w.state == "ready"), "{states:?}");
    assert_eq!(pool.metrics().workers.total, 3);
    pool.shutdown().await;
}
