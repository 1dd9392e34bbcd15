//! The pool manager: one actor task owns the queue, the worker table and the
//! in-flight map; [`Pool`] handles talk to it over channels.

mod actor;
mod alert_kind;
mod alerts;
mod autoscale;
mod bell;
mod clock;
mod completions;
mod config;
mod crash_streak;
mod dispatch;
mod event_stream;
mod events;
mod failure;
mod handle;
mod handoff;
mod health_check;
mod health_status;
mod histogram;
mod keeper;
mod lane;
mod ledger;
mod lifecycle;
mod link_output;
mod metrics;
mod outbox;
mod outcome_cell;
mod panic_message;
mod pool;
mod probe_set;
mod read_codec;
mod reply_timing;
mod reserve;
mod roll;
mod routing;
mod scaling;
mod shutdown;
mod tally;
mod task_record;
mod worker_io;
mod worker_life;

#[cfg(feature = "test-util")]
pub(crate) use actor::Command;
pub use alert_kind::AlertKind;
pub use alerts::{Alert, CRITICAL_WINDOW};
pub use autoscale::Autoscale;
pub use completions::{Completion, CompletionSink, Completions};
pub use config::{
    AutoscaleSettings, PoolConfig, PoolSettings, MAX_EVENT_CAPACITY, MAX_QUEUE_LEN, MAX_WORKERS,
};
pub use events::{AlertSeverity, PoolEvent};
pub use failure::Failure;
pub use handle::{FinalStatus, TaskError, TaskHandle, TaskOutput};
pub use health_status::HealthStatus;
pub use histogram::{LatencySummary, Percentiles};
#[cfg(feature = "test-util")]
pub(crate) use lane::link_ahead::set_test_bound;
#[cfg(feature = "test-util")]
pub(crate) use lane::PanicPoint;
pub use metrics::{
    AlertCounts, BandDepths, CapacitySection, HealthSummary, HealthWorkers, LatencySection,
    PerformanceSection, PoolMetrics, PoolSection, QueueSection, TasksSection, WorkerStatus,
    WorkersSection,
};
pub use pool::{Pool, PoolBuilder, WorkerCommand};
