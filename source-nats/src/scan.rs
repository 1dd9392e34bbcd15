//! Reading what a stream holds now through one ordered consumer: the dead
//! letters (every message), the results bucket (the last value of each
//! key) and the attempts bucket (the last entry of each key, for the count
//! sweep), in one flow of messages instead of a request per sequence or key.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Message;
use futures_util::StreamExt;
use task_source::SourceError;

use crate::source::backend;

/// The header a key-value bucket marks a deleted or purged key with (a put
/// carries none).
pub(crate) const KV_OPERATION: &str = "KV-Operation";

/// How long the server may leave a scan without its next message.
const IDLE: Duration = Duration::from_secs(10);

/// The messages `stream` holds on `filter_subject` when the scan begins
/// (each one, or only the last of each subject), oldest first: at most as
/// many as it held then, so a scan ends while messages keep arriving. The
/// scan's consumer is deleted once it is done (else the server would keep it
/// for its inactivity limit).
pub(crate) async fn held(
    stream: &Stream,
    filter_subject: String,
    deliver_policy: DeliverPolicy,
) -> Result<Vec<Message>, SourceError> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject,
            deliver_policy,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(backend)?;
    let name = consumer.cached_info().name.clone();
    let read = read(consumer).await;
    if let Err(e) = stream.delete_consumer(&name).await {
        tracing::debug!(error = %e, consumer = %name, "cannot delete a scan's consumer");
    }
    read
}

/// What `consumer` holds now, read to its end.
async fn read(consumer: Consumer<pull::OrderedConfig>) -> Result<Vec<Message>, SourceError> {
    let count = consumer.cached_info().num_pending;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
    if count == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(backend)?;
    while (out.len() as u64) < count {
        let next = tokio::time::timeout(IDLE, messages.next())
            .await
            .map_err(|_| {
                SourceError::Backend(format!(
                    "the queue sent {} of {count} messages, then nothing for {} s",
                    out.len(),
                    IDLE.as_secs()
                ))
            })?;
        let Some(message) = next else {
            return Err(SourceError::Backend(format!(
                "the queue ended a scan after {} of {count} messages",
                out.len()
            )));
        };
        let message = message.map_err(backend)?;
        // Nothing left after it: messages removed since the scan began
        // (a letter requeued meanwhile) end it before `count`.
        let last = message.info().map_err(backend)?.pending == 0;
        out.push(message);
        if last {
            break;
        }
    }
    Ok(out)
}
