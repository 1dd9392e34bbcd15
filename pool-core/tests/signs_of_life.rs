//! Any frame is a sign of life (`docs/PROTOCOL.md`): a worker that answers
//! tasks but sends no heartbeat is never taken for silent while it answers,
//! although its lane settles the results without waking the actor.

mod common;

use std::time::Duration;

use pool_core::testing::{MockAction, MockTransport};
use pool_core::{Pool, WorkerCommand};

#[tokio::test(start_paused = true)]
async fn a_worker_that_only_answers_is_never_taken_for_silent() {
    let (transport, _recorder) =
        MockTransport::new(|_| MockAction::EchoAfter(Duration::from_millis(100)));
    let pool = Pool::builder(transport.without_heartbeats(), WorkerCommand::new("mock"))
        .config(common::config(1))
        .start()
        .await
        .expect("pool starts");
    // 3 s of answers, one every 100 ms: far beyond `suspect_after` (400 ms)
    // and `zombie_after` (800 ms) of the test configuration.
    for n in 0..30u32 {
        pool.submit(common::task("work", n))
            .await
            .expect("accepted")
            .await
            .expect("answered");
        let m = pool.metrics();
        assert_eq!(
            (m.workers.unhealthy, m.performance.zombies_killed),
            (0, 0),
            "after task {n}: the answering worker was taken for silent"
        );
    }
    pool.shutdown().await;
}
