//! A task source on NATS JetStream: many daemons on many hosts share one work
//! queue.
//!
//! [`NatsSource`] implements [`task_source::TaskSource`]: `accept` publishes
//! each task on a work-queue stream with its id as the `Nats-Msg-Id` (a
//! resubmitted id inside the duplicate window is not enqueued twice); `claim`
//! fetches at most what the local pool can start from one durable pull
//! consumer per priority band, highest band first; `settle` stores the outcome
//! in a key-value bucket and only then acks (a retry is a NAK with the delay,
//! a dead letter a TERM plus a record in the dead-letter stream); held
//! messages get in-progress acks so long tasks are not redelivered, until
//! their final answer (a settlement slower than `ack_wait` included) and
//! never after it. The wire format is in `docs/queue.md`.
//!
//! A message whose NATS header block the client cannot read (another
//! client's malformed block) ends the client's connection as it is
//! delivered, so no claim ever sees it, and the server would deliver it again
//! every `ack_wait`: a fetch cut short makes the source read the messages in
//! flight again through the stream's message API, which hands over header
//! blocks as bytes, and dead-letter (`invalid_input`) and delete each one the
//! client cannot read.
//!
//! A task's attempt is not the server's delivery count: a claim the pool
//! gives back unstarted or interrupted (`Outcome::NotStarted`,
//! `Outcome::Interrupted`, as it stops) is a delivery, not an attempt. The
//! source counts, per message, the deliveries given back, in a key-value
//! bucket (`cortex-attempts`, key `STREAM.SEQUENCE.PUBLISHED`), stored before the NAK
//! so that a NAK lost on the way is given back too, and only over the count
//! its claim read (a give-back whose count changed since lapses, unanswered,
//! to `ack_wait`); an attempt is the delivery count less that. The bucket
//! keeps a count as long as the stream may keep its message (for ever, by
//! default), and a source that claims sweeps it hourly of the counts whose
//! messages are gone (purged, their stream made again, their removal
//! missed). Retries and
//! deliveries that end in no answer (a daemon that died: the server
//! redelivers them, and nothing tells the source they were given back) each
//! count, and so does every delivery while the bucket cannot be read or
//! written, or when there is none (credentials that may neither use nor
//! create it: the source connects without it, and says so in its log).
//!
//! Held messages are keyed by task id, attempt and stream sequence, so two
//! messages of one task id are held, kept alive and settled each on its own;
//! but a settlement names a task id and attempt only, so two live messages of
//! one task id at the same attempt may swap outcomes. A redelivery of a
//! message held here (its in-progress acks did not reach the server in time)
//! is no new claim: the pool's claim of it answers the newest delivery.
//!
//! ```no_run
//! use source_nats::{NatsConfig, NatsSource};
//! use task_source::{NewTask, TaskSource};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = NatsConfig::new("nats://127.0.0.1:4222");
//! config.max_in_flight = 4;
//! let source = NatsSource::connect(config).await?;
//! let task = NewTask {
//!     id: "a".into(),
//!     task_type: "echo".into(),
//!     payload: "1".into(),
//!     priority: 10,
//!     timeout_ms: None,
//! };
//! source.accept(vec![task]).await?;
//! let claimed = source.claim(4, 0).await?;
//! assert!(claimed.len() <= 4);
//! # Ok(())
//! # }
//! ```

mod attempts;
mod config;
mod connect;
mod delivery;
mod denials;
mod held;
pub mod message;
mod records;
mod scan;
mod source;
mod stats;
mod stored;
#[cfg(feature = "test-server")]
pub mod test_relay;
#[cfg(feature = "test-server")]
mod test_secrets;
#[cfg(feature = "test-server")]
pub mod test_server;
mod unreadable;

pub use config::NatsConfig;
pub use source::NatsSource;
pub use stats::QueueStats;

/// Why the source could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server at the URL cannot be reached.
    #[error("cannot connect to NATS at {0}: {1}")]
    Connect(String, String),
    /// The credentials file cannot be read or parsed.
    #[error("cannot use the NATS credentials in {0}: {1}")]
    Credentials(String, String),
    /// The server refused the client's credentials (or asked for some and
    /// none were set).
    #[error("the NATS server at {url} refused {credentials}: {reason}")]
    Refused {
        /// The server(s).
        url: String,
        /// Which credentials: `the credentials in FILE (queue_credentials)`,
        /// or `the connection: no queue_credentials are set`.
        credentials: String,
        /// What the server or client said.
        reason: String,
    },
    /// The TLS handshake failed: an untrusted server certificate, a client
    /// certificate the server does not accept, or TLS asked of a server
    /// without it.
    #[error(
        "TLS with the NATS server at {url} failed (check queue_tls_ca, queue_tls_cert and \
         queue_tls_key): {reason}"
    )]
    Tls {
        /// The server(s).
        url: String,
        /// What the TLS layer said.
        reason: String,
    },
    /// A stream, consumer or bucket cannot be created.
    #[error("cannot set up the NATS {0}: {1}")]
    Setup(String, String),
    /// The server denied the credentials a subject that setting up a
    /// stream, consumer or bucket needs (its JetStream request would only
    /// have timed out).
    #[error(
        "the NATS server at {url} denied the subject {subject} ({credentials}), needed to set \
         up the {what}: {advice}"
    )]
    Denied {
        /// The server(s).
        url: String,
        /// Which credentials, as [`NatsError::Refused`] names them.
        credentials: String,
        /// The subject the server denied.
        subject: String,
        /// The stream, consumer or bucket.
        what: String,
        /// What to do about it: grant the subject, or (for a creation) have
        /// an account that may create it do so first.
        advice: String,
    },
    /// An inconsistent setting.
    #[error("bad queue setting: {0}")]
    Config(String),
}
