//! `top --queue URL`: watching the shared NATS queue instead of one daemon —
//! what waits, what the daemons hold, the dead letters — read straight from the
//! server, the way `submit --queue` and `dlq --queue` reach it.

use std::time::Instant;

use pool_core::HealthStatus;
use source_nats::NatsSource;

use super::actions::{listed, retried, Action, Outcome};
use super::source::{SharedQueue, Snapshot, CALL_TIMEOUT};
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
    /// Why the server could not be asked, or that it did not answer within
    /// [`CALL_TIMEOUT`] (the screen and the keys wait for a refresh).
    pub(crate) async fn fetch(&self) -> Result<Snapshot, String> {
        let mut snapshot = Snapshot {
            uptime_ms: u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..Snapshot::default()
        };
        if !self.source.connected() {
            // The server's figures are unknown while the connection is down:
            // the snapshot says so (`connected: false`) and its counts are
            // not figures (the app keeps the last known ones).
            snapshot.metrics.health.status = HealthStatus::Critical;
            snapshot.shared_queue = Some(SharedQueue {
                url: self.url.clone(),
                connected: false,
            });
            return Ok(snapshot);
        }
        let stats = tokio::time::timeout(CALL_TIMEOUT, self.source.queue_stats())
            .await
            .map_err(|_| {
                format!(
                    "the queue at {} did not answer within {CALL_TIMEOUT:?}",
                    self.url
                )
            })?
            .map_err(|e| format!("cannot read the queue at {}: {e}", self.url))?;
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
            Action::DlqList => vec![listed(
                cli::dlq(&self.source, Request::DlqList { paged: false }).await,
            )],
            Action::DlqRetry(id) => {
                let request = Request::DlqRetry {
                    ids: Some(vec![id.clone()]),
                };
                let retried = retried(&id, cli::dlq(&self.source, request).await);
                vec![
                    retried,
                    listed(cli::dlq(&self.source, Request::DlqList { paged: false }).await),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use source_nats::test_relay::Relay;
    use source_nats::test_server::NatsServer;

    use super::*;
    use crate::daemon::config::{Raw, Sources};

    #[tokio::test]
    async fn a_queue_that_stops_answering_fails_the_refresh_after_the_timeout() {
        let server = NatsServer::start();
        let relay = Relay::start(&server.url()).await;
        let url = relay.url();
        let settings = Sources::default()
            .load_with(|_| None)
            .and_then(Raw::resolve)
            .expect("default settings");
        let watch = QueueWatch::connect(&settings, &url)
            .await
            .expect("connects");
        watch.fetch().await.expect("a snapshot while it answers");
        relay.freeze();
        let error = watch
            .fetch()
            .await
            .expect_err("no snapshot from a silent queue");
        assert_eq!(
            error,
            format!("the queue at {url} did not answer within 2s")
        );
    }
}
