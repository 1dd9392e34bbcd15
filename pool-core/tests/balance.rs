//! The balance policy picks among idle workers; a busy worker's lane refills it
//! from the queue without asking the policy.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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

/// Counts the tasks in the queue each time it is asked for a worker, and
/// picks the first candidate.
#[derive(Debug, Clone, Default)]
struct QueueWatcher {
    pool: Arc<Mutex<Option<Pool>>>,
    queued_at_picks: Arc<Mutex<Vec<u64>>>,
}

impl BalancePolicy for QueueWatcher {
    fn name(&self) -> &'static str {
        "queue-watcher"
    }

    fn pick(&mut self, _candidates: &[WorkerSnapshot]) -> usize {
        let pool = self.pool.lock().expect("not poisoned").clone();
        if let Some(pool) = pool {
            let bands = pool.metrics().queue.by_priority;
            let queued = bands.high + bands.normal + bands.low;
            self.queued_at_picks
                .lock()
                .expect("not poisoned")
                .push(queued);
        }
        0
    }
}

/// A task leaves the queue only under the lock of the book it goes into, so
/// the policy is asked while the task it places is still queued (the actor
/// placing a retry): a caller or a lane taking the head meanwhile takes that
/// task, never one queued behind it (with `prefetch` 0, a break of priority
/// order). A new task submitted while nothing is queued is never queued: its
/// caller hands it straight to the idle worker, past no queued task.
#[tokio::test(start_paused = true)]
async fn the_policy_is_asked_while_the_task_it_places_is_still_queued() {
    let watcher = QueueWatcher::default();
    let config = PoolConfig {
        worker_concurrency: 1,
        prefetch: 0,
        retry: common::quick_retries(1),
        ..common::config(1)
    };
    let (transport, _) =
        MockTransport::new(common::first_attempt(MockAction::Fail { retryable: true }));
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(config)
        .policy(watcher.clone())
        .start()
        .await
        .expect("pool starts");
    *watcher.pool.lock().expect("not poisoned") = Some(pool.clone());
    let output = pool
        .submit(common::task("flaky", 1))
        .await
        .expect("accepted")
        .await
        .expect("its retry succeeds");
    assert_eq!(output.attempts, 2);
    let picks = watcher
        .queued_at_picks
        .lock()
        .expect("not poisoned")
        .clone();
    assert_eq!(
        picks,
        [0, 1],
        "asked for the first attempt (by its caller, with nothing queued) and \
         for the retry (by the actor, with the task in the queue)"
    );
    watcher.pool.lock().expect("not poisoned").take();
    pool.shutdown().await;
}
