//! What every part of a running daemon shares.

use std::sync::Arc;
use std::time::Instant;

use pool_core::Pool;
use prometheus_client::metrics::histogram::Histogram;
use task_source::TaskSource;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::durable::waiters::Waiters;

use super::config::SharedSettings;

/// The running daemon's shared state.
#[derive(Debug)]
pub(crate) struct Daemon {
    /// The pool.
    pub(crate) pool: Pool,
    /// The current settings (replaced on reload).
    pub(crate) settings: SharedSettings,
    /// When the daemon started.
    pub(crate) started: Instant,
    /// A name this daemon keeps for its whole life and no other has (drawn at
    /// random), so that a client watching the socket (`top`) tells a new
    /// daemon from the one it watched, even under the same pid (a
    /// container's first process). Opaque: only compared.
    pub(crate) instance: String,
    /// Latency of tasks submitted through the socket, claim to end, in seconds.
    pub(crate) latency: Histogram,
    /// Where the tasks live: the only source of truth for their state.
    pub(crate) source: Arc<dyn TaskSource>,
    /// Who waits for which task id.
    pub(crate) waiters: Waiters,
    /// Tells the feeder that new tasks are ready.
    pub(crate) wake: Notify,
    /// Cancelled when the daemon starts to drain: the feeder claims no more.
    pub(crate) draining: CancellationToken,
    /// The NATS queue `source` is, when the daemon runs on one (its metrics).
    pub(crate) queue: std::sync::OnceLock<source_nats::NatsSource>,
    /// What the feeder's last try left unrecorded.
    pub(crate) unrecorded: super::durable::unsaved::Unrecorded,
}

impl Daemon {
    /// State around a started pool.
    pub(crate) fn new(pool: Pool, settings: SharedSettings, source: Arc<dyn TaskSource>) -> Self {
        Self {
            source,
            waiters: Waiters::default(),
            wake: Notify::new(),
            draining: CancellationToken::new(),
            queue: std::sync::OnceLock::new(),
            unrecorded: Default::default(),
            pool,
            settings,
            started: Instant::now(),
            instance: format!("{:016x}", fastrand::u64(..)),
            latency: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        }
    }

    /// A copy of one value of the current settings.
    pub(crate) fn setting<T>(&self, f: impl FnOnce(&super::config::Settings) -> T) -> T {
        match self.settings.read() {
            Ok(guard) => f(&guard),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
}
