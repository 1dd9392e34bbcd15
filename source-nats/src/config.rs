//! [`NatsConfig`]: where the queue is and how the source uses it.

use std::path::PathBuf;
use std::time::Duration;

/// The settings of a [`NatsSource`](crate::NatsSource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server(s): `nats://HOST:PORT`, several separated by commas.
    pub url: String,
    /// The work-queue stream (`queue_stream`, default `CORTEX_TASKS`).
    pub stream: String,
    /// The subjects' prefix (`queue_subject_prefix`, default `cortex.tasks`).
    pub subject_prefix: String,
    /// The dead-letter stream (default `CORTEX_DLQ`).
    pub dlq_stream: String,
    /// The results bucket (default `cortex-results`).
    pub results_bucket: String,
    /// The bucket of attempts given back (default `cortex-attempts`): how
    /// many deliveries of a message were not attempts (see
    /// [`NatsSource`](crate::NatsSource)).
    pub attempts_bucket: String,
    /// The durable consumer every daemon shares (default `cortex-pool`; one
    /// per priority band, suffixed with the band's name).
    pub durable: String,
    /// A `.creds` file or an nkey seed file (`queue_credentials`).
    pub credentials: Option<PathBuf>,
    /// TLS: the CA certificates to trust (`queue_tls_ca`); setting any TLS
    /// option requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// TLS: the client certificate (`queue_tls_cert`, with `queue_tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// TLS: the client certificate's key.
    pub tls_key: Option<PathBuf>,
    /// How long the server waits for an ack before redelivering
    /// (`queue_ack_wait_ms`, default 30 s).
    pub ack_wait: Duration,
    /// How long results are kept in the bucket (the daemon's `result_ttl`).
    pub result_ttl: Duration,
    /// The duplicate window: a task id published again within it is not
    /// enqueued twice (default 24 h).
    pub duplicate_window: Duration,
    /// The most tasks this source holds at once (free worker slots plus
    /// prefetch); `claim` never fetches beyond it.
    pub max_in_flight: usize,
}

impl NatsConfig {
    /// The defaults, for the server(s) at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "CORTEX_TASKS".into(),
            subject_prefix: "cortex.tasks".into(),
            dlq_stream: "CORTEX_DLQ".into(),
            results_bucket: "cortex-results".into(),
            attempts_bucket: "cortex-attempts".into(),
            durable: "cortex-pool".into(),
            credentials: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            ack_wait: Duration::from_secs(30),
            result_ttl: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(24 * 3600),
            max_in_flight: 16,
        }
    }

    /// The subject dead letters are published on: `PREFIX.dead`.
    pub fn dlq_subject(&self) -> String {
        format!("{}.dead", self.subject_prefix)
    }
}
