//! A pool whose actor panicked lets its workers go: their inputs are closed,
//! so a worker that sends no heartbeats (nothing its lane would fail to pass
//! on) still reads EOF and exits.

use std::time::Duration;

use pool_core::testing::panic_actor;
use pool_core::{Pool, PoolConfig, Task, WorkerCommand};
use transport_ipc::StdioTransport;

#[tokio::test]
async fn workers_of_a_pool_whose_actor_panicked_read_eof_and_exit() {
    let config = PoolConfig {
        pool_size: 2,
        min_workers: 1,
        ..PoolConfig::default()
    };
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_conformance-worker"));
    let pool = Pool::builder(StdioTransport::new(), worker)
        .config(config)
        .start()
        .await
        .expect("pool starts");
    let out = pool
        .submit(Task::new("echo", b"hi".to_vec()))
        .await
        .expect("accepted")
        .await
        .expect("echoed");
    assert_eq!(&out.payload[..], b"hi");
    let pids: Vec<u32> = pool.workers().await.iter().map(|w| w.pid).collect();
    assert_eq!(pids.len(), 2);

    panic_actor(&pool);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for pid in pids {
        let proc_dir = format!("/proc/{pid}");
        while std::path::Path::new(&proc_dir).exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {pid} is still running after its pool's actor panicked"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), pool.shutdown())
        .await
        .expect("shutdown of a failed pool returns");
}
