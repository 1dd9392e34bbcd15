//! What the SDK end-to-end tests (`python_worker.rs`, `node_worker.rs`) share: a
//! scratch directory for the FIFOs, the pool configuration they drive a worker
//! with, and running a scenario on its own runtime with a bound.
#![allow(unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cortex_pool::{PoolConfig, RetryPolicy};

/// A private directory for the FIFOs, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory under the target's temporary directory.
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pool the SDK scenarios run: `workers` workers, 2 fast retries, quick
/// restarts, a long cancel grace (a cancelled task must stop on its own).
pub fn config(workers: usize) -> PoolConfig {
    PoolConfig {
        pool_size: workers,
        min_workers: 1,
        retry: RetryPolicy::new(2, Duration::from_millis(10), Duration::from_secs(1), false)
            .expect("a valid retry policy"),
        restart_backoff_base: Duration::from_millis(10),
        cancel_grace: Duration::from_secs(20),
        ..PoolConfig::default()
    }
}

/// Runs `scenario` on a 2-thread runtime; it must finish within `secs`.
pub fn run_bounded(secs: u64, scenario: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), scenario)
            .await
            .unwrap_or_else(|_| panic!("the scenario finishes within {secs} s"));
    });
}
