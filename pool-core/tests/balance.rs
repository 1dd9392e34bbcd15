//! The balance policy picks among idle workers; a busy worker's lane refills it
//! from the queue without asking the policy.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use pool_core::testing::{MockAction, MockTransport};
use pool_core::{BalancePolicy, Pool, PoolConfig, WorkerCommand, WorkerSnapshot};

/// Picks the last candidate (the highest worker number) and counts its picks.
#[derive(Debug, Clone, Default)]
struct LastCandidate {
    picks: Arc<AtomicUsize>,
}

impl BalancePolicy for LastCandidate {
    fn name(&self) -> &'static str {
        "last-candidate"
    }

    fn pick(&mut self, candidates: &[WorkerSnapshot]) -> usize {
        self.picks.fetch_add(1, Relaxed);
        candidates.len() - 1
    }
}

async fn start(config: PoolConfig, policy: LastCandidate) -> Pool {
    let (transport, _) = MockTransport::new(|_| MockAction::Echo);
    Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(config)
        .policy(policy)
        .start()
        .await
        .expect("pool starts")
}

#[tokio::test(start_paused = true)]
async fn a_user_policy_picks_the_worker_of_each_task_sent_to_idle_workers() {
    let policy = LastCandidate::default();
    let pool = start(common::config(3), policy.clone()).await;
    for n in 0..6 {
        let handle = pool
            .submit(common::task("echo", n))
            .await
            .expect("accepted");
        let output = handle.await.expect("echoed");
        assert_eq!(&*output.worker, "worker-2", "task {n} went elsewhere");
    }
    assert_eq!(policy.picks.load(Relaxed), 6, "one pick per task");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_worker_is_refilled_from_the_queue_without_the_policy() {
    let policy = LastCandidate::default();
    let config = PoolConfig {
        worker_concurrency: 1,
        prefetch: 0,
        ..common::config(1)
    };
    let pool = start(config, policy.clone()).await;
    let tasks: Vec<_> = (0..50).map(|n| common::task("echo", n)).collect();
    let handles = pool.submit_many(tasks).await.expect("accepted");
    for handle in handles {
        handle.await.expect("echoed");
    }
    let picks = policy.picks.load(Relaxed);
    assert!(
        picks < 10,
        "the policy was asked {picks} times for 50 tasks on one busy worker: \
         its lane should have refilled it from the queue"
    );
    pool.shutdown().await;
}
