//! The library on real worker processes (the binary's demo worker): shutdown
//! rejects the queue and leaves no child process; timeouts kill the real process.

use std::path::Path;
use std::time::Duration;

use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Failure, FinalStatus, Pool, PoolConfig, RetryPolicy, Task, WorkerCommand};

async fn demo_pool(workers: usize, retries: u32) -> Pool {
    let config = PoolConfig {
        pool_size: workers,
        min_workers: 1,
        retry: RetryPolicy::new(
            retries,
            Duration::from_millis(10),
            Duration::from_secs(1),
            false,
        )
        .expect("valid"),
        shutdown_timeout: Duration::from_secs(10),
        ..PoolConfig::default()
    };
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_cortex-pool")).args(["worker"]);
    Pool::builder(StdioTransport::new(), worker)
        .config(config)
        .start()
        .await
        .expect("pool starts")
}

fn task(kind: &str, payload: serde_json::Value) -> Task {
    Task::msgpack(kind, &payload).expect("encodes")
}

/// Whether the process still exists (a zombie counts: it is not reaped).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn shutdown_finishes_running_work_rejects_the_queue_and_reaps_every_worker() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let pool = demo_pool(1, 0).await;
        let pids: Vec<u32> = pool.workers().await.iter().map(|w| w.pid).collect();
        assert_eq!(pids.len(), 1);
        let running = pool
            .submit(task("sleep", serde_json::json!({"ms": 300})))
            .await
            .unwrap();
        let mut queued = Vec::new();
        for i in 0..5 {
            queued.push(
                pool.submit(task("echo", serde_json::json!(i)))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.shutdown().await;
        assert_eq!(running.await.unwrap().decode::<String>().unwrap(), "ok");
        for h in queued {
            let err = h.await.unwrap_err();
            assert_eq!(err.failure, Failure::ShuttingDown);
        }
        for pid in pids {
            assert!(!exists(pid), "worker {pid} is gone and reaped");
        }
    })
    .await
    .expect("no hang");
}

#[tokio::test]
async fn a_timed_out_attempt_kills_the_real_worker_process() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let pool = demo_pool(1, 0).await;
        let first = pool.workers().await[0].pid;
        let stuck = task("hang", serde_json::Value::Null).with_timeout(Duration::from_millis(200));
        let err = pool.submit(stuck).await.unwrap().await.unwrap_err();
        assert_eq!(err.status, FinalStatus::DeadLettered);
        assert_eq!(err.failure.kind(), "timeout");
        assert!(!exists(first), "the hung worker was killed and reaped");
        let out = pool
            .submit(task("echo", serde_json::json!("after")))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_ne!(&*out.worker, "worker-0");
        pool.shutdown().await;
    })
    .await
    .expect("no hang");
}
