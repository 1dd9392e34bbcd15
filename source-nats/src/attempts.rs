//! Attempts as the source counts them, not as the server does.
//!
//! The server counts a message's deliveries. A claim the pool gives back
//! unstarted (`Outcome::NotStarted`: it did not take the task, or withdrew
//! it unstarted as it stopped) or interrupted (`Outcome::Interrupted`: the
//! drain deadline stopped it) is a delivery but no attempt.
//! So the source keeps, per message, how many of its deliveries were given
//! back, in the attempts bucket under `STREAM.SEQUENCE` (the message's stream
//! sequence, so a requeued dead letter, a new message, starts again at 1); a
//! delivery's attempt is its delivery count less that. The count is stored
//! before the NAK that gives the delivery back: a NAK lost on the way (the
//! message redelivered once `ack_wait` passed) finds it too. A delivery that
//! ends in no settlement (its daemon died with it) counts as an attempt
//! (the server redelivers it; nothing tells the source it was given back),
//! and so does a retry. The count goes once its message is acked or terminated, and
//! otherwise with the bucket's TTL (`result_ttl`).

use async_nats::jetstream::kv::Store;
use task_source::SourceError;

use crate::message::result_key;
use crate::source::backend;

/// The attempts bucket's key of the message at `sequence` in `stream`.
pub(crate) fn key(stream: &str, sequence: u64) -> String {
    result_key(&format!("{stream}.{sequence}"))
}

/// The attempt a delivery is: its delivery count less the deliveries given
/// back before it, at least 1.
pub(crate) fn attempt(delivered: u64, given_back: u32) -> u32 {
    let attempt = delivered.saturating_sub(u64::from(given_back)).max(1);
    u32::try_from(attempt).unwrap_or(u32::MAX)
}

/// How many deliveries of the message under `key` were given back: 0 when
/// none were, and when the bucket cannot be read (every delivery then counts,
/// so an attempt is counted too often at worst, never too seldom).
pub(crate) async fn given_back(store: &Store, key: &str) -> u32 {
    match store.get(key).await {
        Ok(Some(value)) => std::str::from_utf8(&value)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0),
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!(error = %e, %key, "cannot read a task's attempts given back");
            0
        }
    }
}

/// Stores that `count` deliveries of the message under `key` were given back
/// (the same count however often a settlement is tried again).
pub(crate) async fn give_back(store: &Store, key: &str, count: u32) -> Result<(), SourceError> {
    store
        .put(key, count.to_string().into())
        .await
        .map(|_| ())
        .map_err(backend)
}

/// Forgets the count of a message that left the stream (acked or
/// terminated); one not forgotten goes with the bucket's TTL.
pub(crate) async fn forget(store: &Store, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::debug!(error = %e, %key, "cannot remove a settled task's attempts given back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_the_deliveries_less_those_given_back() {
        assert_eq!(attempt(1, 0), 1);
        assert_eq!(attempt(4, 3), 1);
        assert_eq!(attempt(6, 3), 3);
        assert_eq!(attempt(2, 5), 1, "never below the first");
        assert_eq!(attempt(u64::MAX, 0), u32::MAX);
    }

    #[test]
    fn keys_are_the_stream_and_sequence() {
        assert_eq!(key("CORTEX_TASKS", 42), "CORTEX_TASKS.42");
    }
}
