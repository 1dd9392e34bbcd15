//! Helpers shared by the manager's tests: a pool over the mock transport.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use pool_core::testing::{MockAction, MockRecorder, MockTask, MockTransport};
use pool_core::{
    Pool, PoolConfig, RetryPolicy, Task, TaskError, TaskHandle, TaskOutput, WorkerCommand,
};

/// What a task handle resolves to.
pub type Outcome = Result<TaskOutput, TaskError>;

/// A small, fast configuration: `workers` workers, 3 retries at 1 s base.
pub fn config(workers: usize) -> PoolConfig {
    PoolConfig {
        pool_size: workers,
        min_workers: 1,
        max_workers: 16,
        heartbeat_interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(400),
        zombie_after: Duration::from_millis(800),
        task_timeout: Duration::from_secs(60),
        kill_grace: Duration::from_millis(200),
        retry: RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(30), false)
            .expect("valid retry policy"),
        ..PoolConfig::default()
    }
}

/// Starts a pool whose mock workers follow `script`.
pub async fn start(
    config: PoolConfig,
    script: impl Fn(&MockTask) -> MockAction + Send + Sync + 'static,
) -> (Pool, Arc<MockRecorder>) {
    let (transport, recorder) = MockTransport::new(script);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(config)
        .start()
        .await
        .expect("pool starts");
    (pool, recorder)
}

/// Starts a pool whose mock workers follow `script` and say in `ready` that
/// they batch replies.
pub async fn start_batched(
    config: PoolConfig,
    script: impl Fn(&MockTask) -> MockAction + Send + Sync + 'static,
) -> (Pool, Arc<MockRecorder>) {
    let (transport, recorder) = MockTransport::new(script);
    let pool = Pool::builder(transport.with_batched_replies(), WorkerCommand::new("mock"))
        .config(config)
        .start()
        .await
        .expect("pool starts");
    (pool, recorder)
}

/// A task of `task_type` whose payload is `n` as MessagePack.
pub fn task(task_type: &str, n: u32) -> Task {
    Task::msgpack(task_type, &n).expect("a u32 encodes")
}

/// The numbers (payloads made by [`task`]) of every task a worker started,
/// one entry a start, in ascending order.
pub fn started_numbers(recorder: &MockRecorder) -> Vec<u32> {
    let mut started: Vec<u32> = recorder
        .started()
        .iter()
        .map(|t| rmp_serde::from_slice(&t.payload).expect("a u32 payload"))
        .collect();
    started.sort_unstable();
    started
}

/// `retries` retries, 10 ms apart (the tests' pools wait a second by default).
pub fn quick_retries(retries: u32) -> RetryPolicy {
    RetryPolicy::new(
        retries,
        Duration::from_millis(10),
        Duration::from_millis(10),
        false,
    )
    .expect("a valid retry policy")
}

/// A script whose workers do `first` on a task's first attempt and echo after.
pub fn first_attempt(first: MockAction) -> impl Fn(&MockTask) -> MockAction + Send + Sync {
    move |t| {
        if t.attempt == 1 {
            first.clone()
        } else {
            MockAction::Echo
        }
    }
}

/// A script whose `blocker` tasks hold their worker for a second; others echo.
pub fn blocker_then_echo(t: &MockTask) -> MockAction {
    if t.task_type == "blocker" {
        MockAction::EchoAfter(Duration::from_secs(1))
    } else {
        MockAction::Echo
    }
}

/// A guard against a pool that never settles (virtual time: it costs nothing).
pub const WATCHDOG: Duration = Duration::from_secs(3600);

/// The outcomes of `handles`, in order, all settled within [`WATCHDOG`].
pub async fn outcomes(handles: Vec<TaskHandle>) -> Vec<Outcome> {
    tokio::time::timeout(WATCHDOG, async {
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await);
        }
        outcomes
    })
    .await
    .expect("every task settles")
}

/// Checks that every task of `outcomes` but `culprit` succeeded at its first
/// attempt, and that `culprit` failed after `attempts`; its error.
pub fn only_the_culprit_failed(outcomes: Vec<Outcome>, culprit: u64, attempts: u32) -> TaskError {
    let mut failed = None;
    for outcome in outcomes {
        match outcome {
            Ok(out) => assert_eq!(out.attempts, 1, "task {} lost no attempt", out.id),
            Err(e) => {
                assert_eq!(e.id, culprit, "only task {culprit} fails: {e}");
                assert_eq!(e.attempts, attempts, "its attempts: {e}");
                failed = Some(e);
            }
        }
    }
    failed.expect("the culprit fails")
}
