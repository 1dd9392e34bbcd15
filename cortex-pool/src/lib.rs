//! cortex-pool: keep a pool of long-lived worker processes and feed them tasks, so
//! programs stop paying a fork+exec (and a runtime start-up) for every job.
//!
//! This facade re-exports the core ([`Pool`], [`Task`], [`PoolConfig`], …) and,
//! behind features, the transports and balance policies:
//!
//! | feature   | what it adds                                                   |
//! |-----------|----------------------------------------------------------------|
//! | `ipc`     | [`ipc::StdioTransport`]: the worker's stdin/stdout as the link |
//! | `fifo`    | `fifo::FifoTransport`: a pair of named FIFOs per worker (Unix)  |
//! | `balance` | [`balance`]: round-robin, least-loaded, power-of-two choices   |
//! | `cli`     | the `cortex-pool` binary (`run`, the demo `worker`)            |
//!
//! # Examples
//! Run tasks on workers written with `worker-sdk` (here the binary's own built-in
//! demo worker; any program that speaks `docs/PROTOCOL.md` works):
//! ```no_run
//! use cortex_pool::{balance::LeastLoaded, ipc::StdioTransport, Pool, PoolConfig, Task, WorkerCommand};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = WorkerCommand::new("cortex-pool").args(["worker"]);
//! let pool = Pool::builder(StdioTransport::new(), worker)
//!     .config(PoolConfig { pool_size: 4, min_workers: 1, ..PoolConfig::default() })
//!     .policy(LeastLoaded::new())
//!     .start()
//!     .await?;
//! let output = pool.submit(Task::msgpack("echo", "hello")?).await?.await?;
//! assert_eq!(output.decode::<String>()?, "hello");
//! pool.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::unwrap_used)]

pub use pool_core::{
    error, health, manager, protocol, queue, task, transport, BalancePolicy, ConfigError, Failure,
    FinalStatus, HealthProbe, HealthStatus, Pool, PoolBuilder, PoolConfig, PoolEvent, PoolMetrics,
    PoolSettings, RetryPolicy, StartError, SubmitError, Task, TaskError, TaskHandle, TaskOutput,
    Transport, WorkerCommand,
};

/// The stdio-pipe transport.
#[cfg(feature = "ipc")]
#[cfg_attr(docsrs, doc(cfg(feature = "ipc")))]
pub use transport_ipc as ipc;

/// The named-FIFO transport.
#[cfg(all(unix, feature = "fifo"))]
#[cfg_attr(docsrs, doc(cfg(all(unix, feature = "fifo"))))]
pub use transport_fifo as fifo;

/// Balance policies.
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use policy_balance as balance;

/// The code blocks of the repository's `README.md`, compiled by `cargo test --doc`
/// so the README's library and worker examples cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The Rust blocks of `docs/integration.md`, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/integration.md")]
pub struct IntegrationGuideDoctests;
