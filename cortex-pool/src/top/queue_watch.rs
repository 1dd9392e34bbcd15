//! `top --queue URL`: watching the shared NATS queue instead of one daemon —
//! what waits, what the daemons hold, the dead letters — read straight from the
//! server, the way `submit --queue` and `dlq --queue` reach it.

use std::time::Instant;

use pool_core::HealthStatus;
use serde_json::Value;
use source_nats::NatsSource;

use super::actions::{Action, Outcome};
use super::source::{DeadLetter, SharedQueue, Snapshot};
use crate::daemon::config::Settings;
use crate::daemon::protocol::Request;
use crate::daemon::queue::cli;

/// A connection to the shared queue, and when it was made (the header's "up").
#[derive(Debug, Clone)]
pub(crate) struct QueueWatch {
    url: String,
    source: NatsSource,
    since: Instant,
}

impl QueueWatch {
    /// Connects to `url` with the configuration's other `queue*` keys
    /// (credentials, TLS, stream and subject names).
    ///
    /// # Errors
    /// Why the queue cannot be reached, naming it.
    pub(crate) async fn connect(settings: &Settings, url: &str) -> Result<Self, String> {
        let source = cli::connect(settings, url)
            .await
            .map_err(|e| format!("cannot reach the queue at {url}: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            source,
            since: Instant::now(),
        })
    }

    /// One snapshot: the queue's figures as the metrics `top` draws (waiting
    /// tasks as the queue, tasks held by daemons as in flight); no workers — they
    /// belong to the daemons.
    ///
    /// # Errors
    /// Why the server could not be asked.
    pub(crate) async fn fetch(&self) -> Result<Snapshot, String> {
        let stats = self
            .source
            .queue_stats()
            .await
            .map_err(|e| format!("cannot read the queue at {}: {e}", self.url))?;
        let mut snapshot = Snapshot {
            uptime_ms: u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..Snapshot::default()
        };
        let m = &mut snapshot.metrics;
        m.tasks.queued = stats.lag;
        m.tasks.in_flight = stats.ack_pending;
        m.tasks.dlq = stats.dead_letters;
        m.health.status = if stats.connected {
            HealthStatus::Healthy
        } else {
            HealthStatus::Critical
        };
        snapshot.shared_queue = Some(SharedQueue {
            url: self.url.clone(),
            connected: stats.connected,
        });
        Ok(snapshot)
    }

    /// Does what a key asks, on the queue: the dead-letter list and retry are
    /// the same requests `dlq --queue` makes; scaling and rolling belong to one
    /// daemon and are refused with how to reach one.
    pub(crate) async fn perform(&self, action: Action) -> Vec<Outcome> {
        match action {
            Action::Scale(_) | Action::Roll => vec![Outcome::Failed(
                "scaling and rolling act on one daemon: run `top` with that daemon's \
                 --config instead of --queue"
                    .to_owned(),
            )],
            Action::DlqList => vec![self.list().await],
            Action::DlqRetry(id) => {
                let request = Request::DlqRetry {
                    ids: Some(vec![id.clone()]),
                };
                let retried = match cli::dlq(&self.source, request).await {
                    Ok(v) if v["requeued"].as_array().is_some_and(|r| !r.is_empty()) => {
                        Outcome::Done(format!("dead letter {id} resubmitted"))
                    }
                    Ok(_) => Outcome::Failed(format!("dead letter {id} is no longer in the queue")),
                    Err(e) => Outcome::Failed(format!("retry of dead letter {id} failed: {e}")),
                };
                vec![retried, self.list().await]
            }
        }
    }

    async fn list(&self) -> Outcome {
        match cli::dlq(&self.source, Request::DlqList)
            .await
            .and_then(|v: Value| {
                serde_json::from_value::<Vec<DeadLetter>>(v)
                    .map_err(|e| format!("unexpected reply: {e}"))
            }) {
            Ok(entries) => Outcome::DeadLetters(entries),
            Err(e) => Outcome::Failed(format!("cannot list the dead letters: {e}")),
        }
    }
}
