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

/// Connects to the queue the settings name, holding at most
/// [`max_in_flight`] tasks at once.
///
/// # Errors
/// The connection's or the streams' failure, as text.
pub(crate) async fn open(queue: &QueueSettings, settings: &Settings) -> Result<NatsSource, String> {
    let mut config = queue.config.clone();
    config.result_ttl = settings.store.result_ttl;
    config.max_in_flight = max_in_flight(&settings.pool);
    NatsSource::connect(config).await.map_err(|e| e.to_string())
}

/// Tasks a worker's prefetch window counts for here at most: what a pool
/// writes to a worker before it knows the tasks' pace (its window then
/// follows the pace, up to `prefetch`). More would keep messages unacked in
/// this daemon that another daemon's idle workers could take.
const PREFETCH_PER_WORKER: u32 = pool_core::PoolConfig::FIRST_PREFETCH;

/// The most tasks a daemon holds: what its pool can start now (the worker
/// slots) plus what its workers may prefetch (`prefetch` per worker, at most
/// [`PREFETCH_PER_WORKER`]), and at least one waiting task per slot, so a
/// worker that finishes has its next task at hand while the finished one is
/// stored and acked.
fn max_in_flight(pool: &pool_core::PoolConfig) -> usize {
    let slots = pool
        .max_workers
        .saturating_mul(pool.worker_concurrency.max(1) as usize);
    let prefetch = pool
        .max_workers
        .saturating_mul(pool.prefetch.min(PREFETCH_PER_WORKER) as usize);
    slots.saturating_add(prefetch.max(slots))
}

#[cfg(test)]
mod tests {
    use super::max_in_flight;

    #[test]
    fn a_daemon_holds_its_slots_plus_its_bounded_prefetch_and_at_least_one_more_per_slot() {
        let mut pool = pool_core::PoolConfig {
            max_workers: 2,
            worker_concurrency: 1,
            prefetch: 0,
            ..pool_core::PoolConfig::default()
        };
        assert_eq!(max_in_flight(&pool), 4);
        pool.worker_concurrency = 4;
        assert_eq!(max_in_flight(&pool), 16);
        pool.worker_concurrency = 1;
        pool.prefetch = 8;
        assert_eq!(max_in_flight(&pool), 2 + 16);
        pool.prefetch = 1024;
        assert_eq!(max_in_flight(&pool), 2 + 2 * 64, "64 a worker at most");
    }
}
