//! One snapshot of the daemon: the `status` reply (metrics and workers in one
//! round trip) and, only when the alert count moved, the recent alerts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::daemon::client::Client;
use crate::daemon::protocol::{Reply, Request};

/// Alerts asked for when the count moved (the log panel shows fewer).
const ALERTS_KEPT: usize = 50;
/// The longest a refresh may wait for the daemon.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What `top` knows about the pool at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The daemon's uptime, in milliseconds.
    pub(crate) uptime_ms: u64,
    /// The metrics.
    pub(crate) metrics: Metrics,
    /// Each live worker.
    pub(crate) workers: Vec<Worker>,
    /// The most recent alerts, oldest first.
    pub(crate) alerts: Vec<Alert>,
    /// Set when watching the shared queue (`--queue URL`) instead of a daemon.
    pub(crate) shared_queue: Option<SharedQueue>,
}

/// The shared queue being watched.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedQueue {
    /// Its URL.
    pub(crate) url: String,
    /// Whether the client is connected to it now.
    pub(crate) connected: bool,
}

/// The parts of `pool_core::PoolMetrics` shown (missing keys read as zero).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Metrics {
    pub(crate) pool: PoolPart,
    pub(crate) workers: WorkersPart,
    pub(crate) tasks: TasksPart,
    pub(crate) queue: QueuePart,
    pub(crate) health: HealthPart,
    pub(crate) latency: LatencyPart,
}

/// `pool` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PoolPart {
    pub(crate) size: u64,
    pub(crate) target_size: u64,
    pub(crate) shutting_down: bool,
}

/// `workers` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct WorkersPart {
    pub(crate) total: u64,
    pub(crate) ready: u64,
    pub(crate) healthy: u64,
}

/// `tasks` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TasksPart {
    pub(crate) submitted: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) queued: u64,
    pub(crate) dlq: u64,
    pub(crate) in_flight: u64,
    pub(crate) retried: u64,
}

/// `queue` of the metrics: where the waiting tasks are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct QueuePart {
    pub(crate) by_priority: Bands,
    pub(crate) retrying: u64,
}

/// Queued tasks by priority band (`pool_core::queue::PriorityBand`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Bands {
    pub(crate) high: u64,
    pub(crate) normal: u64,
    pub(crate) low: u64,
}

/// `health` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct HealthPart {
    pub(crate) status: pool_core::HealthStatus,
    pub(crate) restart_breaker_open: bool,
    pub(crate) alerts: AlertCounts,
    pub(crate) capacity: Capacity,
}

/// `health.alerts` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AlertCounts {
    pub(crate) total: u64,
    pub(crate) critical: u64,
}

/// `health.capacity` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Capacity {
    pub(crate) total: u64,
    pub(crate) healthy: u64,
    pub(crate) capacity_percent: u64,
}

/// `latency` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct LatencyPart {
    pub(crate) queue_wait: Latency,
    pub(crate) run_time: Latency,
}

/// One latency: `recent` covers the last one to two minutes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Latency {
    pub(crate) recent: Percentiles,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
}

/// One worker, as `workers --json` shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Worker {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pub(crate) state: String,
    pub(crate) in_flight: u32,
    pub(crate) tasks_done: u64,
    pub(crate) rss_bytes: u64,
    pub(crate) last_heard_ms: u64,
    pub(crate) slot: Option<u32>,
    pub(crate) restarts: u32,
    pub(crate) uptime_ms: u64,
}

/// One alert, as the `alerts` request returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Alert {
    pub(crate) id: String,
    pub(crate) severity: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) worker_id: Option<String>,
    pub(crate) message: String,
    pub(crate) timestamp: u64,
}

/// One dead letter, as `dlq list` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct DeadLetter {
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) task_type: String,
    pub(crate) attempts: u32,
    pub(crate) error: Option<DeadLetterError>,
}

/// Why a dead letter failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct DeadLetterError {
    pub(crate) kind: String,
    pub(crate) message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    uptime_ms: u64,
    metrics: Metrics,
    workers: Vec<Worker>,
}

/// Fetches snapshots over one kept connection (reconnecting after an error).
#[derive(Debug)]
pub(crate) struct Source {
    socket: PathBuf,
    client: Option<Client>,
    alerts_seen: Option<u64>,
    alerts: Vec<Alert>,
}

impl Source {
    /// A source for the daemon listening on `socket`; connects on first use.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            client: None,
            alerts_seen: None,
            alerts: Vec::new(),
        }
    }

    /// Takes one snapshot.
    ///
    /// # Errors
    /// A message saying why the daemon could not be read.
    pub(crate) async fn fetch(&mut self) -> Result<Snapshot, String> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        match tokio::time::timeout_at(deadline.into(), self.fetch_inner()).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(e)) => {
                self.client = None;
                Err(e)
            }
            Err(_) => {
                self.client = None;
                Err(format!("the daemon did not answer within {CALL_TIMEOUT:?}"))
            }
        }
    }

    async fn fetch_inner(&mut self) -> Result<Snapshot, String> {
        let status: Status = self.ask(&Request::Status).await?;
        let total = status.metrics.health.alerts.total;
        if self.alerts_seen != Some(total) {
            self.alerts = self.ask(&Request::Alerts { last: ALERTS_KEPT }).await?;
            self.alerts_seen = Some(total);
        }
        Ok(Snapshot {
            uptime_ms: status.uptime_ms,
            metrics: status.metrics,
            workers: status.workers,
            alerts: self.alerts.clone(),
            shared_queue: None,
        })
    }

    async fn ask<T: serde::de::DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, String> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(connect(&self.socket).await?),
        };
        let reply = client.call(request).await.map_err(|e| e.to_string())?;
        json_reply(reply)
    }
}

/// Connects to the control socket, naming it in the error.
pub(crate) async fn connect(socket: &std::path::Path) -> Result<Client, String> {
    Client::connect(socket)
        .await
        .map_err(|e| format!("cannot reach the daemon at {}: {e}", socket.display()))
}

/// The document of a `Json` reply, decoded; an error reply as its message.
pub(crate) fn json_reply<T: serde::de::DeserializeOwned>(reply: Reply) -> Result<T, String> {
    match reply {
        Reply::Json { value } => {
            serde_json::from_value(value).map_err(|e| format!("unexpected reply: {e}"))
        }
        Reply::Error { kind, message } => Err(format!("{kind}: {message}")),
        other => Err(format!("unexpected reply: {other:?}")),
    }
}
