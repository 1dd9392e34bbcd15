//! The core of cortex-pool: a pool of long-lived worker processes fed with tasks.
//!
//! This crate holds what every other crate builds on:
//! - the three traits: [`Transport`] (how a worker is launched and reached),
//!   [`BalancePolicy`] (which worker gets the next task) and [`HealthProbe`]
//!   (whether a worker is fit to keep working);
//! - the wire [`protocol`]: `u32` big-endian length prefix + MessagePack body;
//! - the task queue, retries, the dead-letter queue, and the pool manager.
//!
//! Most programs use it through the `cortex-pool` facade, which adds transports,
//! policies and a CLI.
//!
//! # Examples
//! Encoding and decoding one frame of the protocol:
//! ```
//! use bytes::BytesMut;
//! use pool_core::protocol::{decode_to_worker, encode_frame, FrameCodec, ToWorker};
//! use tokio_util::codec::Decoder;
//!
//! let mut buf = BytesMut::new();
//! encode_frame(&ToWorker::Cancel { id: 7 }, &mut buf, 1024)?;
//! let body = FrameCodec::new(1024).decode(&mut buf)?.expect("a whole frame");
//! assert_eq!(decode_to_worker(&body)?, ToWorker::Cancel { id: 7 });
//! # Ok::<(), pool_core::protocol::FrameError>(())
//! ```
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::unwrap_used)]

pub mod balance;
pub mod error;
pub mod health;
pub mod manager;
pub mod process;
pub mod protocol;
pub mod queue;
pub mod task;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod transport;

pub use balance::{BalancePolicy, WorkerSnapshot};
pub use error::{ConfigError, StartError, SubmitError, TASK_FRAME_OVERHEAD};
pub use health::{HealthProbe, ProbeKind, Verdict, Vitals};
pub use manager::{
    Completion, CompletionSink, Completions, Failure, FinalStatus, HealthStatus, Pool, PoolBuilder,
    PoolConfig, PoolEvent, PoolMetrics, PoolSettings, TaskError, TaskHandle, TaskOutput,
    WorkerCommand, MAX_EVENT_CAPACITY, MAX_QUEUE_LEN, MAX_WORKERS,
};
pub use queue::RetryPolicy;
pub use task::Task;
pub use transport::{LaunchError, Link, Transport, WorkerSpec};
