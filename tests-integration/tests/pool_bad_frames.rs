//! A worker that writes garbage, an oversized frame, an array body or a field of the
//! wrong type gets a typed protocol failure and is replaced; the pool keeps serving.

use std::time::Duration;

use pool_core::{FinalStatus, Pool, PoolConfig, RetryPolicy, Task, WorkerCommand};
use transport_ipc::StdioTransport;

async fn pool() -> Pool {
    let config = PoolConfig {
        pool_size: 2,
        min_workers: 1,
        retry: RetryPolicy::new(1, Duration::from_millis(10), Duration::from_secs(1), false)
            .expect("valid"),
        ..PoolConfig::default()
    };
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_conformance-worker"));
    Pool::builder(StdioTransport::new(), worker)
        .config(config)
        .start()
        .await
        .expect("pool starts")
}

#[tokio::test]
async fn garbage_and_oversized_frames_fail_the_attempt_replace_the_worker_and_the_pool_serves_on() {
    let watchdog = Duration::from_secs(60);
    tokio::time::timeout(watchdog, async {
        let pool = pool().await;
        for kind in ["garbage", "oversized", "array_result", "wrong_types"] {
            let err = pool
                .submit(Task::new(kind, b"x".to_vec()))
                .await
                .unwrap()
                .await
                .unwrap_err();
            assert_eq!(err.status, FinalStatus::DeadLettered, "{kind}: {err}");
            assert_eq!(err.attempts, 2);
            assert_eq!(err.failure.kind(), "protocol", "{kind}: {err}");
        }
        let out = pool
            .submit(Task::new("echo", b"still here".to_vec()))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(&out.payload[..], b"still here");
        let m = pool.metrics();
        assert_eq!(m.performance.workers_restarted, 8, "{:?}", m.performance);
        assert_eq!(
            m.performance.workers_crashed, 0,
            "protocol kills are not crashes"
        );
        pool.shutdown().await;
        assert_eq!(pool.metrics().workers.total, 0);
    })
    .await
    .expect("no hang");
}
