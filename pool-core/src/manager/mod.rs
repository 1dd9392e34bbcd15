//! The pool manager: one actor task owns the queue, the worker table and the
//! in-flight map; [`Pool`] handles talk to it over channels.

mod actor;
mod config;
mod dispatch;
mod events;
mod failure;
mod handle;
mod lifecycle;
mod metrics;
mod pool;
mod roll;
mod worker_io;

pub use config::PoolConfig;
pub use events::{AlertSeverity, PoolEvent};
pub use failure::Failure;
pub use handle::{FinalStatus, TaskError, TaskHandle, TaskOutput};
pub use metrics::{PoolMetrics, WorkerStatus};
pub use pool::{Pool, PoolBuilder, WorkerCommand};
