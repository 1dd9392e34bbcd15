//! Shared helpers of the benches and the `pool-bench` driver: the echo worker's
//! path, echo tasks, pool construction, and `RESULT` lines in the format of
//! `shared/perf` (see `docs/benchmarks.md`).
//!
//! Nothing here asserts a timing: the benches measure, people judge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pool_core::{Pool, PoolConfig, StartError, Task, Transport, WorkerCommand};

/// Encodes `len` bytes as a MessagePack `bin` value: what the `echo` handler of
/// `bench-worker` takes and returns.
pub fn msgpack_bin(len: usize) -> Bytes {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::with_capacity(len + 5);
    rmp_serde::encode::write(&mut out, serde_bytes::Bytes::new(&data)).expect("encode bin");
    Bytes::from(out)
}

/// CPU-bound work with no memory traffic and no system call: `iterations`
/// rounds of a xorshift generator, each depending on the last (what
/// `bench-worker`'s `spin` handler runs, and what `pool-bench cpu` times in
/// its own process for the ideal rate).
pub fn spin(iterations: u64) -> u64 {
    let mut x = std::hint::black_box(0x9E37_79B9_7F4A_7C15_u64);
    let mut sum = 0u64;
    for _ in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(x);
    }
    sum
}

/// An `echo` task that shares `payload`'s buffer (no copy per task).
pub fn echo(payload: &Bytes) -> Task {
    Task::new("echo", payload.clone())
}

/// A program next to the running executable (`target/<profile>/NAME`); benches
/// run from `target/<profile>/deps`, so its parent is tried too.
pub fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir").to_path_buf();
    let here = dir.join(name);
    if here.exists() {
        return here;
    }
    dir.parent().map(|p| p.join(name)).unwrap_or(here)
}

/// Which transport a bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Worker stdin/stdout (`transport-ipc`).
    Stdio,
    /// A pair of named FIFOs (`transport-fifo`).
    Fifo,
}

impl Link {
    /// Parses `stdio` or `fifo`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdio" => Some(Self::Stdio),
            "fifo" => Some(Self::Fifo),
            _ => None,
        }
    }

    /// The transport object.
    pub fn transport(self) -> Arc<dyn Transport> {
        match self {
            Self::Stdio => Arc::new(transport_ipc::StdioTransport::new()),
            Self::Fifo => Arc::new(transport_fifo::FifoTransport::new().expect("fifo transport")),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Fifo => "fifo",
        }
    }
}

/// The value of environment variable `key`, or `default` when it is unset or
/// does not parse.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pool configuration of every bench: `workers` workers, `concurrency` tasks in
/// flight per worker, a queue deep enough for any bench, no retries, no
/// heartbeat noise; the queue in `QUEUE_SHARDS` shards (default 0: the pool's
/// choice).
pub fn config(workers: usize, concurrency: u32) -> PoolConfig {
    PoolConfig {
        pool_size: workers,
        min_workers: 1,
        max_workers: workers.max(1),
        worker_concurrency: concurrency,
        max_queue_len: 20_000_000,
        task_timeout: Duration::from_secs(600),
        queue_shards: env_or("QUEUE_SHARDS", 0),
        prefetch: env_or("PREFETCH", PoolConfig::default().prefetch),
        ..PoolConfig::default()
    }
}

/// Starts a pool of `bench-worker`s (found at `worker`).
///
/// # Errors
/// When a worker cannot start.
pub async fn start_pool(
    link: Link,
    worker: PathBuf,
    config: PoolConfig,
) -> Result<Pool, StartError> {
    start_pool_command(link, WorkerCommand::new(worker), config).await
}

/// Starts a pool of workers run by `command`.
///
/// # Errors
/// When a worker cannot start.
pub async fn start_pool_command(
    link: Link,
    command: WorkerCommand,
    config: PoolConfig,
) -> Result<Pool, StartError> {
    Pool::builder_arc(link.transport(), command)
        .config(config)
        .start()
        .await
}

/// Prints one `RESULT` line (the format of `shared/perf`'s `summarize.py`).
pub fn result(bench: &str, metric: &str, value: f64, unit: &str) {
    println!(
        "RESULT {{\"bench\":\"{bench}\",\"metric\":\"{metric}\",\"value\":{value:.3},\"unit\":\"{unit}\"}}"
    );
}

/// Prints p50 and p99 of `ns` (nanoseconds) in microseconds.
pub fn report_latency(bench: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1000.0;
    result(bench, "p50", p(0.50), "us");
    result(bench, "p99", p(0.99), "us");
}

/// The resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
