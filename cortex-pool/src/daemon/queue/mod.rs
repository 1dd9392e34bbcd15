//! The daemon on a NATS JetStream queue (`queue = "nats://…"`): many daemons
//! on many hosts share one work queue through [`source_nats::NatsSource`]
//! instead of the local store.
//!
//! - `settings` — the `queue*` keys.
//! - `cli` — `submit`, `result`, `wait`, `dlq list|retry` with `--queue URL`,
//!   acting on the shared state directly.
//! - `metrics` — lag, redeliveries, fetch batch sizes (JSON and Prometheus).

pub(crate) mod cli;
pub(crate) mod metrics;
mod settings;

pub(crate) use settings::{QueueSettings, RawQueue};
use source_nats::NatsSource;

use super::config::Settings;

/// Connects to the queue the settings name, holding at most the pool's worker
/// slots times two (one prefetched task per slot) at once.
///
/// # Errors
/// The connection's or the streams' failure, as text.
pub(crate) async fn open(queue: &QueueSettings, settings: &Settings) -> Result<NatsSource, String> {
    let mut config = queue.config.clone();
    config.result_ttl = settings.store.result_ttl;
    let slots = settings.pool.max_workers * settings.pool.worker_concurrency.max(1) as usize;
    config.max_in_flight = slots * 2;
    NatsSource::connect(config).await.map_err(|e| e.to_string())
}
