//! Connecting: the client's options (credentials, TLS) and the streams,
//! consumers and buckets the source needs, created when absent.

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{ConnectOptions, Event, ServerError};

use crate::attempts::Attempts;
use crate::config::NatsConfig;
use crate::denials::{Denials, Refused};
use crate::message::{subject, Band};
use crate::NatsError;

/// Everything one connection holds.
pub(crate) struct Queue {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) tasks: stream::Stream,
    pub(crate) dlq: stream::Stream,
    pub(crate) consumers: Vec<(Band, consumer::PullConsumer)>,
    pub(crate) results: kv::Store,
    /// Per message, the deliveries that were not attempts (`attempts.rs`),
    /// when the bucket is open (every delivery counts as an attempt while it
    /// is not).
    pub(crate) attempts: Attempts,
    /// How long the server waits for an ack before it redelivers: the
    /// consumers' own `ack_wait` (whoever created them set it), or the
    /// configured one when that is shorter.
    pub(crate) ack_wait: std::time::Duration,
    /// The longest of the consumers' own `ack_wait`s: how long the server
    /// may take to redeliver a message whose ack it denied.
    pub(crate) longest_ack_wait: std::time::Duration,
    /// The subjects the server denied the connection.
    pub(crate) denials: Denials,
}

/// The client options for `config`: credentials, TLS, endless reconnects;
/// the subjects the server denies go to `denials`.
async fn options(config: &NatsConfig, denials: &Denials) -> Result<ConnectOptions, NatsError> {
    let denials = denials.clone();
    let mut options = ConnectOptions::new()
        .name("cortex-pool")
        .max_reconnects(None)
        .event_callback(move |event| {
            let denials = denials.clone();
            async move {
                if let Event::ServerError(ServerError::Other(said)) = &event {
                    denials.note(said);
                }
                tracing::info!(%event, "NATS connection event");
            }
        });
    if let Some(path) = &config.credentials {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| NatsError::Credentials(path.display().to_string(), e.to_string()))?;
        options = if text.contains("BEGIN NATS USER JWT") {
            options
                .credentials(&text)
                .map_err(|e| NatsError::Credentials(path.display().to_string(), e.to_string()))?
        } else {
            options.nkey(text.trim().to_owned())
        };
    }
    if config.tls_ca.is_some() || config.tls_cert.is_some() {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(NatsError::Config(
                "queue_tls_cert and queue_tls_key go together: set both or neither".into(),
            ))
        }
    }
    Ok(options)
}

/// Names what failed: the credentials, TLS, or reaching the server.
fn connect_error(config: &NatsConfig, e: &async_nats::ConnectError) -> NatsError {
    use async_nats::ConnectErrorKind as Kind;
    let url = config.url.clone();
    let reason = e.to_string();
    match e.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => NatsError::Refused {
            url,
            credentials: credentials(config),
            reason,
        },
        _ if tls_failed(e) => NatsError::Tls { url, reason },
        _ => NatsError::Connect(url, reason),
    }
}

/// Which credentials the connection uses, as its errors name them.
pub(crate) fn credentials(config: &NatsConfig) -> String {
    config.credentials.as_ref().map_or_else(
        || "the connection: no queue_credentials are set".to_owned(),
        |p| format!("the credentials in {} (queue_credentials)", p.display()),
    )
}

/// One step of setting up the queue: `what`, whose requests are refused
/// when the server denies a subject `fatal` says is theirs. Its error is
/// named as a denial then, and it ends as soon as the denial comes (the
/// request itself would only time out).
async fn step<T, E: std::fmt::Display>(
    config: &NatsConfig,
    denials: &Denials,
    fatal: impl Fn(&str) -> bool,
    what: &str,
    doing: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, NatsError> {
    let denied = |subject: String| {
        let advice = if subject.contains(".CREATE.") {
            format!("grant it, or have an account that may create the {what} do so first")
        } else {
            "grant it".to_owned()
        };
        NatsError::Denied {
            url: config.url.clone(),
            credentials: credentials(config),
            subject,
            what: what.to_owned(),
            advice,
        }
    };
    denials
        .race(denials.mark(), crate::denials::Own::Matching(fatal), doing)
        .await
        .map_err(|refused| match refused {
            Refused::Denied(subject) => denied(subject),
            Refused::Failed(e) => NatsError::Setup(what.to_owned(), e.to_string()),
        })
}

/// Whether `subject` is a JetStream API subject about `name` (one of its
/// dot-separated tokens).
fn about(subject: &str, name: &str) -> bool {
    subject.starts_with("$JS.API.") && subject.split('.').any(|token| token == name)
}

/// Whether a denial of `subject` fails the set-up of bucket `name`: its
/// creation or the account query that precedes it (a denied look-up of its
/// stream only sends the set-up on to create it).
fn fatal_to_bucket(subject: &str, name: &str) -> bool {
    let stream = format!("KV_{name}");
    subject == "$JS.API.INFO" || (about(subject, &stream) && !subject.contains(".INFO."))
}

/// Whether the TLS layer failed: the kind says so, or (an untrusted server
/// certificate, a rejected client certificate) an I/O error carries a rustls
/// error.
fn tls_failed(e: &async_nats::ConnectError) -> bool {
    use async_nats::rustls::Error as Rustls;
    if e.kind() == async_nats::ConnectErrorKind::Tls {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let io_inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        if s.is::<Rustls>() || io_inner.is_some_and(|inner| inner.is::<Rustls>()) {
            return true;
        }
        source = s.source();
    }
    false
}

/// Connects and makes sure the streams, consumers and buckets exist.
pub(crate) async fn connect(config: &NatsConfig) -> Result<Queue, NatsError> {
    let denials = Denials::default();
    let client = options(config, &denials)
        .await?
        .connect(config.url.as_str())
        .await
        .map_err(|e| connect_error(config, &e))?;
    let js = jetstream::new(client.clone());
    let tasks = step(
        config,
        &denials,
        |subject| about(subject, &config.stream),
        &format!("stream {}", config.stream),
        js.get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: Band::ALL
                .iter()
                .map(|&b| subject(b, &config.subject_prefix))
                .collect(),
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        }),
    )
    .await?;
    let dlq = step(
        config,
        &denials,
        |subject| about(subject, &config.dlq_stream),
        &format!("stream {}", config.dlq_stream),
        js.get_or_create_stream(stream::Config {
            name: config.dlq_stream.clone(),
            subjects: vec![config.dlq_subject()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            // A letter's id is its task message's: a redelivery that letters
            // it again (its holder died before the terminate) is dropped as
            // a repeat however long `ack_wait` is.
            duplicate_window: config.duplicate_window,
            ..Default::default()
        }),
    )
    .await?;
    let mut consumers = Vec::with_capacity(Band::ALL.len());
    let mut ack_wait = config.ack_wait;
    let mut longest_ack_wait = std::time::Duration::ZERO;
    for band in Band::ALL {
        let name = format!("{}-{}", config.durable, band.name());
        let consumer = step(
            config,
            &denials,
            |subject| about(subject, &name),
            &format!("consumer {name}"),
            tasks.get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: subject(band, &config.subject_prefix),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 65_536,
                    ..Default::default()
                },
            ),
        )
        .await?;
        // An existing consumer keeps its own settings: in-progress acks
        // must come often enough for the server's, not only for ours.
        let existing = consumer.cached_info().config.ack_wait;
        longest_ack_wait = longest_ack_wait.max(existing);
        if existing < ack_wait {
            tracing::warn!(
                consumer = %name,
                server_ms = existing.as_millis() as u64,
                configured_ms = config.ack_wait.as_millis() as u64,
                "the queue's consumer waits less for acks than queue_ack_wait_ms says \
                 (it was created with that); in-progress acks follow the consumer's"
            );
            ack_wait = existing;
        }
        consumers.push((band, consumer));
    }
    let results = step(
        config,
        &denials,
        |subject| fatal_to_bucket(subject, &config.results_bucket),
        &format!("bucket {}", config.results_bucket),
        bucket(&js, &config.results_bucket, config.result_ttl),
    )
    .await?;
    // Counts kept as long as the tasks' stream keeps their messages (zero:
    // for ever): a count is written after its message was stored, so the same
    // age outlasts it.
    let keep = tasks.cached_info().config.max_age;
    let name = config.attempts_bucket.clone();
    let attempts = Attempts::open(js.clone(), name, keep, denials.clone()).await;
    Ok(Queue {
        client,
        js,
        tasks,
        dlq,
        consumers,
        results,
        attempts,
        ack_wait,
        longest_ack_wait,
        denials,
    })
}

/// The key-value bucket `name`, made (one value a key, kept for `ttl`,
/// zero: for ever, on file) when absent.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: std::time::Duration,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
}
