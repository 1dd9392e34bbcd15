//! Attempts as the source counts them, not as the server does.
//!
//! The server counts a message's deliveries. A claim the pool gives back
//! unstarted (`Outcome::NotStarted`: it did not take the task, or withdrew
//! it unstarted as it stopped) or interrupted (`Outcome::Interrupted`: the
//! drain deadline stopped it) is a delivery but no attempt.
//! So the source keeps, per message, how many of its deliveries were given
//! back, in the attempts bucket under `STREAM.SEQUENCE.PUBLISHED` (the
//! message's stream sequence and when it was stored, [`key`], so a requeued
//! dead letter, a new message, starts again at 1); a
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
//! counts as an attempt, as every delivery did before the bucket. A write
//! is waited for [`WRITE_WAIT`] at most (credentials that may not write get
//! no answer at all); one that got none turns writes off for [`WRITES_OFF`],
//! and give-backs meanwhile are NAKed at once. A write stored whose NAK then
//! failed is not written again: the retried settlement only NAKs
//! ([`Count::Stored`]).
//!
//! Without the bucket every delivery counts. One the server refuses for good
//! ([`refused`]) is not tried again; one that could not be opened otherwise
//! (no answer in time, the cluster busy) is tried again, in the background,
//! by the first use [`REOPEN_AFTER`] or more after the last try.
//!
//! The count goes once its message is acked or terminated ([`Attempts::forget`]).
//! The bucket keeps it no shorter than the stream keeps its message
//! (`keep.rs`: for ever, for a stream that keeps messages for ever), so it
//! cannot expire while its message may still be delivered; the counts of
//! messages gone otherwise (purged, their stream made again, a daemon that
//! died between the ack and the removal) are removed by the count sweep
//! (`source/counts.rs`), which finds their messages gone ([`Counted`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{
    CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
};
use async_nats::jetstream::kv::{Entry, EntryError, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;

use crate::connect::bucket;
use crate::denials::Denials;

mod keep;
mod keys;

pub(crate) use keys::{key, Counted};

/// How long opening or making the bucket is waited for (a request the
/// credentials may not send gets no answer at all).
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// How long after a try that could not open the bucket the next may start.
const REOPEN_AFTER: Duration = Duration::from_secs(5);

/// How long a give-back's write, or a count's removal, is waited for.
const WRITE_WAIT: Duration = Duration::from_secs(1);

/// How long writes stay off after one got no answer within [`WRITE_WAIT`].
const WRITES_OFF: Duration = Duration::from_secs(60);

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
    /// `revision` of the key (0: no value is stored under it: none ever
    /// was, the sweep removed it, or it expired with a stream's max age).
    Read {
        /// The deliveries given back.
        given_back: u32,
        /// The key's revision read; a give-back is written over it only.
        revision: u64,
    },
    /// Not known: the bucket could not be read, or there is none. Every
    /// delivery counts, and a give-back of this delivery is not written.
    Unknown,
    /// This delivery's give-back is stored: `given_back` deliveries, its
    /// own included, at the key's `revision`. A settlement tried again (its
    /// NAK failed) only NAKs.
    Stored {
        /// The deliveries given back, this one included.
        given_back: u32,
        /// The key's revision the give-back wrote.
        revision: u64,
    },
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
            Self::Read { given_back, .. } | Self::Stored { given_back, .. } => given_back,
            Self::Unknown => 0,
        }
    }

    /// Whether the bucket may hold a count of the message, to forget once
    /// it is answered for good.
    pub(crate) fn may_be_stored(self) -> bool {
        !matches!(self, Self::Read { given_back: 0, .. })
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
    /// Stored now, as this count ([`Count::Stored`]): NAK the delivery.
    Stored(Count),
    /// NAK the delivery: its give-back was stored already, or was not to be
    /// (no bucket, no count read) or could not be (the delivery then counts
    /// as an attempt).
    Nak,
    /// The count changed since the claim read it: this delivery's give-back
    /// arrived already (its reply was lost), or the message was delivered
    /// and given back again since. No NAK: the delivery is left to
    /// `ack_wait`, and its redelivery reads the count anew.
    Lapsed,
}

/// Whether the attempts bucket is there to use.
enum Bucket {
    /// Open.
    Open(Arc<Store>),
    /// Not open: the first use from `after` on tries again (`trying` while
    /// a try is under way).
    Closed {
        /// When the next try may start.
        after: Instant,
        /// Whether a try is under way.
        trying: bool,
    },
    /// Refused for good ([`refused`]): every delivery counts.
    Off,
}

/// The attempts bucket as the source uses it: opened (or made) at connect,
/// or later, and its writes turned off for a while after one got no answer.
pub(crate) struct Attempts(Arc<Shared>);

/// What [`Attempts`] shares with its tries to open the bucket.
struct Shared {
    js: Context,
    name: String,
    /// The max age the bucket is made with, or raised to: the tasks' stream's
    /// (zero: for ever; see `keep.rs`).
    keep: Duration,
    /// The subjects the server denied the connection: a raise of the max
    /// age denied ends at once.
    denials: Denials,
    bucket: Mutex<Bucket>,
    /// Until when writes are off ([`WRITES_OFF`]).
    writes_off_until: Mutex<Option<Instant>>,
}

/// `mutex` locked, also when a holder panicked (its data stays whole).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Attempts {
    /// The attempts bucket `name` on `js`, made when absent with max age
    /// `keep` (raised to it when it exists with less), tried now for
    /// [`OPEN_WAIT`] at most. Without it (said once, here) every delivery
    /// counts as an attempt until a later try opens it. A denied raise is
    /// told by `denials`.
    pub(crate) async fn open(js: Context, name: String, keep: Duration, denials: Denials) -> Self {
        let shared = Shared {
            js,
            name,
            keep,
            denials,
            bucket: Mutex::new(Bucket::Closed {
                after: Instant::now(),
                trying: true,
            }),
            writes_off_until: Mutex::new(None),
        };
        shared.try_open(true).await;
        Self(Arc::new(shared))
    }

    /// The bucket when it is open; when it is not, and a try is due, one
    /// starts in the background (this use goes on without it).
    pub(crate) fn store(&self) -> Option<Arc<Store>> {
        let mut bucket = lock(&self.0.bucket);
        match &mut *bucket {
            Bucket::Open(store) => Some(Arc::clone(store)),
            Bucket::Off => None,
            Bucket::Closed { after, trying } => {
                if !*trying && Instant::now() >= *after {
                    *trying = true;
                    let shared = Arc::clone(&self.0);
                    tokio::spawn(async move { shared.try_open(false).await });
                }
                None
            }
        }
    }

    /// The bucket when it is open and its writes are not off.
    fn writable(&self) -> Option<Arc<Store>> {
        let off = *lock(&self.0.writes_off_until);
        match off {
            Some(until) if Instant::now() < until => None,
            _ => self.store(),
        }
    }

    /// A write got no answer within [`WRITE_WAIT`]: writes are off for
    /// [`WRITES_OFF`].
    fn writes_off(&self, key: &str) {
        let now = Instant::now();
        let was_on = lock(&self.0.writes_off_until)
            .replace(now + WRITES_OFF)
            .is_none_or(|until| until <= now);
        // Said once as writes turn off, not by every write of a batch that
        // went out together.
        if !was_on {
            return;
        }
        tracing::warn!(
            %key, bucket = %self.0.name, off_s = WRITES_OFF.as_secs(),
            "no answer to a write of the attempts bucket within {WRITE_WAIT:?} (the \
             credentials need $KV.{}.>): give-backs are NAKed unstored meanwhile, each \
             counting as an attempt", self.0.name
        );
    }

    /// The count of the message under `key`, read at its claim.
    pub(crate) async fn read(&self, key: &str) -> Count {
        match self.store() {
            Some(store) => count_of(key, store.entry(key).await),
            None => Count::Unknown,
        }
    }

    /// Stores that one more delivery of the message under `key` than
    /// `count` says was given back, if the count is still the one read.
    pub(crate) async fn give_back(&self, key: &str, count: Count) -> GiveBack {
        let Count::Read {
            given_back,
            revision,
        } = count
        else {
            // Stored already (only the NAK failed), or not to be.
            return GiveBack::Nak;
        };
        let Some(store) = self.writable() else {
            return GiveBack::Nak;
        };
        let given_back = given_back.saturating_add(1);
        let write = store.update(key, given_back.to_string().into(), revision);
        match tokio::time::timeout(WRITE_WAIT, write).await {
            Ok(Ok(revision)) => GiveBack::Stored(Count::Stored {
                given_back,
                revision,
            }),
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                tracing::debug!(%key, "a give-back lapsed: the count changed since the claim");
                GiveBack::Lapsed
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = %e, %key,
                    "cannot store a task's delivery given back; NAKed, it counts as an attempt"
                );
                GiveBack::Nak
            }
            Err(_) => {
                self.writes_off(key);
                GiveBack::Nak
            }
        }
    }

    /// Forgets the count of a message that left the stream (acked or
    /// terminated); one not forgotten (no bucket, writes off, the daemon
    /// died first) is removed by the count sweep (`source/counts.rs`). The
    /// delete marker it leaves goes with the count sweep too.
    pub(crate) async fn forget(&self, key: &str) {
        let Some(store) = self.writable() else { return };
        match tokio::time::timeout(WRITE_WAIT, store.delete(key)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %key, "cannot remove a settled task's attempts given back");
            }
            Err(_) => self.writes_off(key),
        }
    }
}

impl Shared {
    /// Opens (or makes) the bucket: open, off for good when refused, or
    /// tried again from [`REOPEN_AFTER`] on. Only the `first` try, at
    /// connect, warns when it cannot.
    async fn try_open(&self, first: bool) {
        let opened = tokio::time::timeout(OPEN_WAIT, bucket(&self.js, &self.name, self.keep)).await;
        let name = &self.name;
        let next = match opened {
            Ok(Ok(store)) => {
                if !first {
                    tracing::info!(bucket = %name, "the attempts bucket is open now");
                }
                keep::raise(&self.js, &self.denials, name, &store, self.keep).await;
                Bucket::Open(Arc::new(store))
            }
            Ok(Err(e)) if refused(&e) => {
                tracing::warn!(
                    error = %e, bucket = %name,
                    "no attempts bucket (refused): every delivery of a task counts as an \
                     attempt, a claim given back unstarted or interrupted included"
                );
                Bucket::Off
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {OPEN_WAIT:?}"),
                };
                if first {
                    tracing::warn!(
                        error = %why, bucket = %name,
                        "no attempts bucket yet, tried again in the background: every \
                         delivery of a task counts as an attempt meanwhile, a claim given \
                         back unstarted or interrupted included (the credentials need \
                         $KV.{name}.> and to create it, or an admin to create it)"
                    );
                } else {
                    tracing::debug!(error = %why, bucket = %name, "the attempts bucket is not open yet");
                }
                Bucket::Closed {
                    after: Instant::now() + REOPEN_AFTER,
                    trying: false,
                }
            }
        };
        *lock(&self.bucket) = next;
    }
}

/// Whether opening or making the bucket failed for good: the server
/// answered that it may not be made (no JetStream for the account, its
/// limits reached) or the name is invalid. No answer, or any other (the
/// name taken: the bucket exists, and a read failed only for now), is
/// tried again.
fn refused(e: &CreateKeyValueError) -> bool {
    match e.kind() {
        CreateKeyValueErrorKind::InvalidStoreName => true,
        CreateKeyValueErrorKind::BucketCreate => std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<CreateStreamError>())
            .is_some_and(|create| match create.kind() {
                CreateStreamErrorKind::JetStream(answer) => refuses(answer.error_code()),
                _ => false,
            }),
        _ => false,
    }
}

/// Whether the server's answer `code` to making the bucket is for good.
fn refuses(code: ErrorCode) -> bool {
    [
        ErrorCode::JETSTREAM_NOT_ENABLED,
        ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
        ErrorCode::MAXIMUM_STREAMS_LIMIT,
        ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
        ErrorCode::STORAGE_RESOURCES_EXCEEDED,
    ]
    .contains(&code)
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

    #[test]
    fn only_answers_that_it_may_not_be_made_refuse_it_for_good() {
        assert!(refuses(ErrorCode::MAXIMUM_STREAMS_LIMIT));
        assert!(refuses(ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT));
        assert!(!refuses(ErrorCode::CLUSTER_NOT_AVAILABLE), "tried again");
        assert!(!refuses(ErrorCode::CLUSTER_NOT_LEADER), "tried again");
        // The bucket exists with other settings, and the read before the
        // make failed only for now: the next try reads it.
        assert!(!refuses(ErrorCode::STREAM_NAME_EXIST), "tried again");
    }
}

#[cfg(all(test, feature = "test-server"))]
mod server_tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::config::NatsConfig;
    use crate::connect::connect;
    use crate::test_server::{NatsServer, Security};

    /// A bucket not opened at connect (here: no answer, the credentials may
    /// not make it) is not off for good: a use once [`REOPEN_AFTER`] passed
    /// tries again, and that try opens it once an admin made it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_not_opened_at_connect_is_opened_by_a_later_try() {
        let server = NatsServer::start_with(Security::Restricted);
        let mut admin = NatsConfig::new(server.url());
        admin.credentials = server.client().admin_seed.clone();
        let made = connect(&admin).await.unwrap();
        made.js
            .delete_key_value(&admin.attempts_bucket)
            .await
            .unwrap();
        let mut user = NatsConfig::new(server.url());
        user.credentials = server.client().seed.clone();
        let queue = connect(&user).await.expect("connected without it");
        assert!(queue.attempts.store().is_none());
        assert_eq!(queue.attempts.read("k").await, Count::Unknown);

        drop(connect(&admin).await.unwrap());
        let shared = &queue.attempts.0;
        assert!(matches!(
            *lock(&shared.bucket),
            Bucket::Closed { trying: false, .. }
        ));
        shared.try_open(false).await;
        assert!(queue.attempts.store().is_some(), "opened");
        assert_eq!(queue.attempts.read("k").await, Count::FIRST);
    }

    /// A write with no answer within [`WRITE_WAIT`] (here: the bucket's
    /// stream no longer takes its subjects, a bare subscriber gets them)
    /// turns writes off: the next give-back and removal write nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_without_an_answer_turns_writes_off() {
        let server = NatsServer::start();
        let config = NatsConfig::new(server.url());
        let queue = connect(&config).await.unwrap();
        let name = format!("KV_{}", config.attempts_bucket);
        let mut stream = queue.js.get_stream(&name).await.unwrap();
        let mut moved = stream.info().await.unwrap().config.clone();
        moved.subjects = vec!["elsewhere.>".into()];
        queue.js.update_stream(moved).await.unwrap();
        let writes = format!("$KV.{}.>", config.attempts_bucket);
        let mut writes = queue.client.subscribe(writes).await.unwrap();
        queue.client.flush().await.unwrap();

        let first = queue.attempts.give_back("S.1", Count::FIRST).await;
        assert_eq!(first, GiveBack::Nak, "unanswered");
        assert_eq!(
            queue.attempts.give_back("S.2", Count::FIRST).await,
            GiveBack::Nak
        );
        queue.attempts.forget("S.3").await;
        let marker = format!("$KV.{}.marker", config.attempts_bucket);
        queue
            .client
            .publish(marker.clone(), "".into())
            .await
            .unwrap();
        queue.client.flush().await.unwrap();
        let mut written = Vec::new();
        let guard = Duration::from_secs(10);
        while let Ok(Some(write)) = tokio::time::timeout(guard, writes.next()).await {
            if write.subject.as_str() == marker {
                break;
            }
            written.push(write.subject.to_string());
        }
        assert_eq!(written, [format!("$KV.{}.S.1", config.attempts_bucket)]);
    }
}
