//! One snapshot of the daemon: the `status` reply (metrics, the task store's
//! rows and workers in one round trip) and, only when the alert count moved, the
//! recent alerts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::daemon::client::Client;
use crate::daemon::protocol::{Reply, Request};

/// Alerts asked for when the count moved (the log panel shows fewer).
const ALERTS_KEPT: usize = 50;
/// The longest a refresh may wait for the daemon (or the shared queue).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What `top` knows about the pool at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Which daemon answered (none when watching the shared queue).
    pub(crate) daemon: Option<DaemonId>,
    /// The daemon's uptime, in milliseconds.
    pub(crate) uptime_ms: u64,
    /// The metrics.
    pub(crate) metrics: Metrics,
    /// The daemon's task store, when its `status` reply has the store's rows.
    pub(crate) store: Option<StoreRows>,
    /// Each live worker.
    pub(crate) workers: Vec<Worker>,
    /// The most recent alerts, oldest first.
    pub(crate) alerts: Vec<Alert>,
    /// Set when watching the shared queue (`--queue URL`) instead of a daemon.
    pub(crate) shared_queue: Option<SharedQueue>,
    /// Task outcomes the daemon has not recorded yet (`outcomes` of `status`).
    pub(crate) outcomes: Outcomes,
}

impl Snapshot {
    /// Whether its queue figures (queued, in flight, dead letters) were read:
    /// not when the watched shared queue is disconnected.
    pub(crate) fn figures_known(&self) -> bool {
        self.shared_queue.as_ref().is_none_or(|q| q.connected)
    }

    /// For tests: a watched shared queue, `connected` or not, with `dlq`
    /// dead letters and ten times as many tasks queued.
    #[cfg(test)]
    pub(crate) fn watched_queue(connected: bool, dlq: u64) -> Self {
        let mut s = Self::default();
        s.metrics.tasks.dlq = dlq;
        s.metrics.tasks.queued = dlq * 10;
        s.shared_queue = Some(SharedQueue {
            url: "nats://q".into(),
            connected,
        });
        s
    }
}

/// What tells one daemon from the next one answering on the same socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DaemonId {
    /// Its process id.
    pub(crate) pid: u32,
    /// The name it keeps for its whole life (`instance` of `status`; none
    /// from a daemon that does not say).
    pub(crate) instance: Option<String>,
}

/// `outcomes` of the `status` reply (zero from a daemon that does not say).
pub(crate) use crate::daemon::durable::unsaved::Outcomes;

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
    pub(crate) target_size: u64,
    pub(crate) shutting_down: bool,
}

/// `workers` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct WorkersPart {
    pub(crate) total: u64,
    pub(crate) ready: u64,
}

/// `tasks` of the metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TasksPart {
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
    /// Why the pool stopped working (status `failed` only).
    pub(crate) failure: Option<String>,
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

/// The dead letters the box holds at most: a longer queue shows its oldest,
/// and says so (the rest is not read).
pub(crate) const DLQ_SHOWN: usize = 10_000;

/// What the dead-letter box lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeadLetters {
    /// The oldest dead letters, at most [`DLQ_SHOWN`].
    pub(crate) entries: Vec<DeadLetter>,
    /// Whether the queue holds more than these.
    pub(crate) more: bool,
    /// Why each dead letter the daemon could not send was left out (too
    /// large for a reply).
    pub(crate) left_out: Vec<String>,
}

impl DeadLetters {
    /// Takes in the next dead letter (as `dlq list` prints it): `false`
    /// once the box is full, this one left out.
    pub(crate) fn take(&mut self, entry: DeadLetter) -> bool {
        if self.entries.len() >= DLQ_SHOWN {
            self.more = true;
            return false;
        }
        self.entries.push(entry);
        true
    }
}

/// Why a dead letter failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct DeadLetterError {
    pub(crate) kind: String,
    pub(crate) message: String,
}

/// Tasks in the daemon's task store by state (`store.rows` of `status`): what
/// waits, waits for a retry and failed for good, where the pool sees only the
/// window of tasks the daemon claimed, each as one attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct StoreRows {
    /// Waiting to be claimed.
    pub(crate) queued: u64,
    /// Waiting for their next attempt.
    pub(crate) retrying: u64,
    /// Settled with an error, not dead-lettered.
    pub(crate) failed: u64,
}

/// `store` of the `status` reply (no `rows` when the store cannot be read).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoreSection {
    rows: Option<StoreRows>,
}

/// The parts of the `status` reply `top` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    pid: u32,
    instance: Option<String>,
    uptime_ms: u64,
    metrics: Metrics,
    store: StoreSection,
    workers: Vec<Worker>,
    outcomes: Outcomes,
}

impl Status {
    /// The snapshot this reply and `alerts` make.
    fn into_snapshot(self, alerts: Vec<Alert>) -> Snapshot {
        Snapshot {
            daemon: Some(DaemonId {
                pid: self.pid,
                instance: self.instance,
            }),
            uptime_ms: self.uptime_ms,
            metrics: self.metrics,
            store: self.store.rows,
            workers: self.workers,
            alerts,
            shared_queue: None,
            outcomes: self.outcomes,
        }
    }
}

/// Fetches snapshots over one kept connection (reconnecting after an error).
#[derive(Debug)]
pub(crate) struct Source {
    socket: PathBuf,
    /// The kept connection; none before the first refresh and after an error.
    connection: Option<Connection>,
}

/// One connection to the daemon, and what was read over it: the alerts it
/// holds belong to the daemon at its other end, so a new connection (perhaps
/// to a new daemon, after a restart) reads them again.
#[derive(Debug)]
struct Connection {
    client: Client,
    /// The alerts last read, and the alert count they were read at.
    alerts: Option<SeenAlerts>,
}

/// The recent alerts, read when the daemon's alert count was `total`.
#[derive(Debug)]
struct SeenAlerts {
    total: u64,
    alerts: Vec<Alert>,
}

impl Connection {
    async fn ask<T: serde::de::DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, String> {
        let reply = self.client.call(request).await.map_err(|e| e.to_string())?;
        json_reply(reply)
    }
}

impl Source {
    /// A source for the daemon listening on `socket`; connects on first use.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            connection: None,
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
                self.connection = None;
                Err(e)
            }
            Err(_) => {
                self.connection = None;
                Err(format!("the daemon did not answer within {CALL_TIMEOUT:?}"))
            }
        }
    }

    async fn fetch_inner(&mut self) -> Result<Snapshot, String> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(Connection {
                client: connect(&self.socket).await?,
                alerts: None,
            }),
        };
        let status: Status = connection.ask(&Request::Status).await?;
        let total = status.metrics.health.alerts.total;
        let seen = match connection.alerts.take() {
            Some(seen) if seen.total == total => seen,
            _ => SeenAlerts {
                total,
                alerts: connection
                    .ask(&Request::Alerts { last: ALERTS_KEPT })
                    .await?,
            },
        };
        let snapshot = status.into_snapshot(seen.alerts.clone());
        connection.alerts = Some(seen);
        Ok(snapshot)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use task_source::{ErrorInfo, MemorySource, Outcome, Settlement, TaskSource, TaskState};

    use super::*;
    use crate::daemon::test_daemon::{daemon, daemon_with, task};
    use crate::top::app::App;
    use crate::top::run::render_text;

    fn error() -> ErrorInfo {
        ErrorInfo {
            kind: "boom".to_owned(),
            message: "boom".to_owned(),
        }
    }

    /// A store holding one task queued, one retrying and one failed, while
    /// the pool itself has queued, retried and failed nothing.
    async fn store_with_one_of_each() -> Arc<MemorySource> {
        let source = Arc::new(MemorySource::new());
        let tasks = ["retrying", "failed", "queued"].map(task).to_vec();
        source.accept(tasks).await.expect("accepted");
        assert_eq!(source.claim(2, 0).await.expect("claimed").len(), 2);
        let settle = |id: &str, outcome| Settlement {
            id: id.to_owned(),
            attempt: 1,
            outcome,
        };
        let retry = Outcome::Retry {
            due_ms: u64::MAX,
            error: error(),
        };
        let failed = Outcome::Settled {
            state: TaskState::Failed,
            line: "{}".to_owned(),
            error: Some(error()),
        };
        let settlements = vec![settle("retrying", retry), settle("failed", failed)];
        source.settle(settlements).await.expect("settled");
        source
    }

    #[tokio::test]
    async fn the_daemons_status_reply_gives_the_header_the_stores_rows() {
        let daemon = daemon_with(store_with_one_of_each().await).await;
        let reply = Reply::Json {
            value: crate::daemon::server::status(&daemon).await,
        };
        let status: Status = json_reply(reply).expect("a status reply");
        let snapshot = status.into_snapshot(Vec::new());
        let rows = StoreRows {
            queued: 1,
            retrying: 1,
            failed: 1,
        };
        assert_eq!(snapshot.store, Some(rows));
        let mut app = App::new(1000);
        app.refreshed(Instant::now(), 0, Ok(snapshot));
        let text = render_text(&app, 80, 24);
        let counts = "queue 1 │ in flight 0 │ retrying 1 │ DLQ 0 │ done 0 │ failed 1";
        assert!(
            text.contains(counts),
            "{counts:?} not on the screen:\n{text}"
        );
    }

    /// The daemon's pid and `instance`: the same for one daemon's whole
    /// life, another for another daemon (even in the same process).
    #[tokio::test]
    async fn each_daemon_names_itself_in_its_status_reply() {
        async fn id(daemon: &crate::daemon::state::Daemon) -> Option<DaemonId> {
            let reply = Reply::Json {
                value: crate::daemon::server::status(daemon).await,
            };
            let status: Status = json_reply(reply).expect("a status reply");
            status.into_snapshot(Vec::new()).daemon
        }
        let (one, other) = (daemon().await, daemon().await);
        let first = id(&one).await.expect("a daemon");
        assert_eq!(first.pid, std::process::id());
        assert!(first.instance.as_ref().is_some_and(|i| !i.is_empty()));
        assert_eq!(id(&one).await, Some(first.clone()));
        let second = id(&other).await.expect("a daemon");
        assert_ne!(second.instance, first.instance);
    }

    /// A stand-in for a daemon on `socket`, answering `status` with `status`
    /// and `alerts` with `alerts` on one connection; stopped (its connection
    /// closed, its socket removed) by [`stop`](Self::stop) or when dropped.
    struct FakeDaemon {
        socket: PathBuf,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl FakeDaemon {
        fn start(
            socket: &std::path::Path,
            status: serde_json::Value,
            alerts: serde_json::Value,
        ) -> Self {
            use futures_util::StreamExt;
            use interprocess::local_socket::tokio::prelude::*;
            use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
            let _ = std::fs::remove_file(socket);
            let name = socket
                .to_fs_name::<GenericFilePath>()
                .expect("a socket name");
            let listener = ListenerOptions::new()
                .name(name)
                .create_tokio()
                .expect("listens");
            let task = tokio::spawn(async move {
                let Ok(conn) = listener.accept().await else {
                    return;
                };
                let (recv, mut send) = tokio::io::split(conn);
                let codec =
                    pool_core::protocol::FrameCodec::new(crate::daemon::protocol::MAX_REPLY);
                let mut frames = tokio_util::codec::FramedRead::new(recv, codec);
                while let Some(Ok(body)) = frames.next().await {
                    let value = match crate::daemon::protocol::decode::<Request>(&body) {
                        Ok(Request::Status) => status.clone(),
                        Ok(Request::Alerts { .. }) => alerts.clone(),
                        _ => return,
                    };
                    let reply = Reply::Json { value };
                    let max = crate::daemon::protocol::MAX_REPLY;
                    if crate::daemon::protocol::write(&mut send, &reply, max)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Self {
                socket: socket.to_owned(),
                task: Some(task),
            }
        }

        /// Goes away: its connection closes and its socket is removed.
        async fn stop(mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
                let _ = task.await;
            }
        }
    }

    impl Drop for FakeDaemon {
        fn drop(&mut self) {
            if let Some(task) = &self.task {
                task.abort();
            }
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    /// After a restart the new daemon may have as many alerts as the last
    /// one had: its own are read, not the last one's shown again.
    #[tokio::test]
    async fn a_new_daemon_s_alerts_are_read_even_at_the_same_count() {
        let socket =
            std::env::temp_dir().join(format!("cortex-top-alerts-{}.sock", std::process::id()));
        let daemon = |instance: &str| {
            let status = serde_json::json!({
                "pid": 7,
                "instance": instance,
                "metrics": {"health": {"alerts": {"total": 1}}},
            });
            let alerts =
                serde_json::json!([{"id": "alert-1", "message": format!("from {instance}")}]);
            FakeDaemon::start(&socket, status, alerts)
        };
        let messages = |snapshot: &Snapshot| -> Vec<String> {
            snapshot.alerts.iter().map(|a| a.message.clone()).collect()
        };
        let first = daemon("a");
        let mut source = Source::new(socket.clone());
        let seen = source.fetch().await.expect("the first daemon answers");
        assert_eq!(messages(&seen), ["from a"]);
        first.stop().await;
        let second = daemon("b");
        source
            .fetch()
            .await
            .expect_err("the first daemon's connection is closed");
        let seen = source.fetch().await.expect("the second daemon answers");
        assert_eq!(messages(&seen), ["from b"]);
        drop(second);
    }

    #[test]
    fn a_reply_without_the_stores_rows_keeps_the_pools_numbers() {
        let value = serde_json::json!({
            "uptime_ms": 5,
            "metrics": {"tasks": {"queued": 4}},
            "store": {"durability": "fsync", "health": {"state": "failing", "reason": "disk"}},
        });
        let status: Status = json_reply(Reply::Json { value }).expect("a status reply");
        let snapshot = status.into_snapshot(Vec::new());
        assert_eq!(snapshot.store, None);
        assert_eq!(snapshot.metrics.tasks.queued, 4);
    }
}
