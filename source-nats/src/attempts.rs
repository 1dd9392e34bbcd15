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
//! and so does a retry.
//!
//! The count is written only over the revision the claim read
//! ([`Count::Read`]): a give-back whose count changed since (its own write
//! arrived but its reply was lost, or another delivery of the message was
//! given back meanwhile) is refused and lapses ([`GiveBack::Lapsed`]). A
//! count that could not be read is not written at all (a write over it could
//! lower it), and a write that fails does not stop the NAK: such a delivery
//! counts as an attempt, as every delivery did before the bucket. Without the
//! bucket (it could be neither opened nor made) every delivery counts.
//!
//! The count goes once its message is acked or terminated, and otherwise
//! with the bucket's TTL ([`ttl`]), which outlasts any message.

use std::time::Duration;

use async_nats::jetstream::kv::{Entry, EntryError, Operation, Store, UpdateErrorKind};

use crate::message::result_key;

/// How long the bucket keeps a count after its last write when the tasks'
/// stream keeps its messages for ever: 30 days (`forget` removes a count
/// once its message is answered for good).
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// The attempts bucket's TTL for a tasks' stream that keeps messages for
/// `max_age` (zero: for ever): no shorter than a message lives, so a count
/// does not expire while its message waits or runs.
pub(crate) fn ttl(max_age: Duration) -> Duration {
    if max_age.is_zero() {
        KEEP
    } else {
        max_age
    }
}

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

/// What a claim learned of its message's deliveries given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// `given_back` deliveries were given back, as of the bucket's
    /// `revision` of the key (0: no value was ever stored under it, or it
    /// expired).
    Read {
        /// The deliveries given back.
        given_back: u32,
        /// The key's revision read; a give-back is written over it only.
        revision: u64,
    },
    /// Not known: the bucket could not be read, or there is none. Every
    /// delivery counts, and a give-back of this delivery is not written.
    Unknown,
}

impl Count {
    /// A message's first delivery: nothing given back, no count stored.
    pub(crate) const FIRST: Self = Self::Read {
        given_back: 0,
        revision: 0,
    };

    /// The deliveries given back, 0 when not known (an attempt is then
    /// counted too often at worst, never too seldom).
    pub(crate) fn given_back(self) -> u32 {
        match self {
            Self::Read { given_back, .. } => given_back,
            Self::Unknown => 0,
        }
    }

    /// Whether the bucket may hold a count of the message, to forget once
    /// it is answered for good.
    pub(crate) fn may_be_stored(self) -> bool {
        !matches!(self, Self::Read { given_back: 0, .. })
    }
}

/// The count of the message under `key`, read at its claim from `store`
/// (`None`: there is no attempts bucket).
pub(crate) async fn read(store: Option<&Store>, key: &str) -> Count {
    match store {
        Some(store) => count_of(key, store.entry(key).await),
        None => Count::Unknown,
    }
}

/// The count a read of `key` found.
fn count_of(key: &str, read: Result<Option<Entry>, EntryError>) -> Count {
    match read {
        Ok(Some(entry)) => {
            // A delete or purge marker: a count removed, none now.
            let value = (entry.operation == Operation::Put).then_some(&entry.value[..]);
            count_in(key, value, entry.revision)
        }
        Ok(None) => Count::FIRST,
        Err(e) => {
            tracing::warn!(error = %e, %key, "cannot read a task's deliveries given back");
            Count::Unknown
        }
    }
}

/// The count `key` holds at `revision`: `value`, or none once removed
/// (`None`).
fn count_in(key: &str, value: Option<&[u8]>, revision: u64) -> Count {
    let Some(value) = value else {
        return Count::Read {
            given_back: 0,
            revision,
        };
    };
    let parsed = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok());
    match parsed {
        Some(given_back) => Count::Read {
            given_back,
            revision,
        },
        None => {
            tracing::warn!(%key, "a task's deliveries given back are not a number");
            Count::Unknown
        }
    }
}

/// What became of a delivery's give-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveBack {
    /// NAK the delivery: its give-back is stored, or was not to be (no
    /// bucket, no count read) or could not be (the delivery then counts as
    /// an attempt).
    Nak,
    /// The count changed since the claim read it: this delivery's give-back
    /// arrived already (its reply was lost), or the message was delivered
    /// and given back again since. No NAK: the delivery is left to
    /// `ack_wait`, and its redelivery reads the count anew.
    Lapsed,
}

/// Stores, in `store`, that one more delivery of the message under `key`
/// than `count` says was given back, if the count is still the one read.
pub(crate) async fn give_back(store: Option<&Store>, key: &str, count: Count) -> GiveBack {
    let (
        Some(store),
        Count::Read {
            given_back,
            revision,
        },
    ) = (store, count)
    else {
        return GiveBack::Nak;
    };
    let value = given_back.saturating_add(1).to_string();
    match store.update(key, value.into(), revision).await {
        Ok(_) => GiveBack::Nak,
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
            tracing::debug!(%key, "a give-back lapsed: the count changed since the claim");
            GiveBack::Lapsed
        }
        Err(e) => {
            tracing::warn!(
                error = %e, %key,
                "cannot store a task's delivery given back; NAKed, it counts as an attempt"
            );
            GiveBack::Nak
        }
    }
}

/// Forgets, in `store`, the count of a message that left the stream (acked
/// or terminated); one not forgotten goes with the bucket's TTL.
pub(crate) async fn forget(store: Option<&Store>, key: &str) {
    let Some(store) = store else { return };
    if let Err(e) = store.delete(key).await {
        tracing::debug!(error = %e, %key, "cannot remove a settled task's attempts given back");
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::kv::EntryErrorKind;

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

    #[test]
    fn counts_outlast_the_messages_of_their_stream() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(ttl(Duration::ZERO), 30 * day, "messages kept for ever");
        assert_eq!(ttl(2 * day), 2 * day);
    }

    /// A count that could not be read is unknown, not 0: a give-back is not
    /// written over it. One absent or removed is 0, at the revision read.
    #[test]
    fn an_unread_count_is_unknown_and_an_absent_one_none() {
        let failed = Err(EntryError::from(EntryErrorKind::TimedOut));
        assert_eq!(count_of("k", failed), Count::Unknown);
        assert_eq!(count_of("k", Ok(None)), Count::FIRST);
        let three = Count::Read {
            given_back: 3,
            revision: 7,
        };
        assert_eq!(count_in("k", Some(b"3"), 7), three);
        let none = Count::Read {
            given_back: 0,
            revision: 9,
        };
        assert_eq!(count_in("k", None, 9), none);
        assert_eq!(count_in("k", Some(b"three"), 4), Count::Unknown);
    }

    #[test]
    fn a_count_may_be_stored_unless_read_as_none() {
        assert!(!Count::FIRST.may_be_stored());
        assert!(Count::Unknown.may_be_stored());
        let one = Count::Read {
            given_back: 1,
            revision: 2,
        };
        assert!(one.may_be_stored());
        assert_eq!(Count::Unknown.given_back(), 0);
    }
}
