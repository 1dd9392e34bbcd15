//! The count sweep: the attempts bucket keeps a count for as long as the
//! tasks' stream may keep its message (for ever, for a stream that keeps
//! messages for ever), so a count whose message is gone without its
//! settlement removing it — the message purged or deleted by an operator,
//! its stream deleted and made again, its daemon dead between the ack and
//! the removal, a removal that failed — would stay for ever. A source that
//! claims tasks sweeps the bucket [`FIRST_AFTER`] its first claim, then
//! every [`EVERY`]: each key of its own stream ([`Counted`]) whose message
//! the stream no longer holds (below its first sequence, none at its
//! sequence, or one stored at another time: a stream made again) is
//! removed, delete markers (the counts `forget` removed) included.
//!
//! A message once gone never comes back, so no count of a message that
//! may still be delivered is removed; and a key is removed only at the
//! revision the sweep read (a purge of its subject up to it): a count
//! written since stays. Keys of other streams sharing the bucket are left
//! to their own daemons.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::PurgeErrorKind;
use task_source::SourceError;

use super::{backend, exactly, Inner, NatsSource};
use crate::attempts::Counted;
use crate::denials::{Own, Refused};
use crate::{scan, stored};

/// How long after a source's first claim its first count sweep runs (a
/// process that only submits tasks or reads results never sweeps).
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// How often a source that claims tasks sweeps the counts.
const EVERY: Duration = Duration::from_secs(3600);

/// What one count sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Swept {
    /// Keys whose messages the stream holds: kept.
    pub(super) kept: usize,
    /// Keys whose messages are gone: removed.
    pub(super) removed: usize,
    /// Keys of other streams, or that name no message: left alone.
    pub(super) others: usize,
}

/// Whether a source's count sweeps have started.
#[derive(Debug, Default)]
pub(super) struct CountSweeps {
    started: AtomicBool,
}

impl NatsSource {
    /// Starts the count sweeps in the background, once (every claim asks).
    pub(super) fn sweep_counts_from_now(&self) {
        let started = &self.inner.count_sweeps.started;
        if !started.load(Ordering::Relaxed) && !started.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_counts_while_alive(Arc::downgrade(&self.inner)));
        }
    }

    /// Removes the counts (and delete markers) of the attempts bucket whose
    /// messages the tasks' stream no longer holds. Without the bucket it
    /// does nothing. It stops at the first request that fails, short of a
    /// message found gone, leaving the rest to the next sweep.
    ///
    /// # Errors
    /// When the bucket cannot be read, the stream cannot be asked for its
    /// messages, or a count cannot be removed (no answer, or denied).
    pub(super) async fn sweep_counts(&self) -> Result<Swept, SourceError> {
        let mut swept = Swept::default();
        let Some(store) = self.attempts().store() else {
            return Ok(swept);
        };
        let entries = self.count_entries(&store).await?;
        // Read after the keys: a key read belongs to this stream as it is
        // now, or to one deleted since, whose messages are all gone.
        let mut tasks = self.inner.queue.tasks.clone();
        let first = tasks.info().await.map_err(backend)?.state.first_sequence;
        let stream = self.inner.config.stream.as_str();
        for entry in &entries {
            let key = entry.subject.strip_prefix(store.prefix.as_str());
            let Some(counted) = key.and_then(|key| Counted::parse(key, stream)) else {
                swept.others += 1;
                continue;
            };
            if counted.sequence >= first {
                let stored_ns = self.published_ns(counted.sequence).await?;
                if counted.is_held_as(stored_ns) {
                    swept.kept += 1;
                    continue;
                }
            }
            let revision = entry.info().map_err(backend)?.stream_sequence;
            if self.remove_count(&store, &entry.subject, revision).await? {
                swept.removed += 1;
            }
        }
        Ok(swept)
    }

    /// The last entry of each key of the attempts bucket `store`, counts
    /// and delete markers alike, as an ordered consumer reads them.
    async fn count_entries(
        &self,
        store: &Store,
    ) -> Result<Vec<async_nats::jetstream::Message>, SourceError> {
        let bucket = store.stream_name.as_str();
        let scan = scan::held(
            &store.stream,
            format!("{}>", store.prefix),
            DeliverPolicy::LastPerSubject,
        );
        // The scan's consumer is created through `$JS.API.CONSUMER.*` with
        // the bucket's stream among its tokens.
        let own = |subject: &str| {
            subject.starts_with("$JS.API.CONSUMER.") && subject.split('.').any(|t| t == bucket)
        };
        let denials = &self.inner.queue.denials;
        denials
            .race(denials.mark(), Own::Matching(own), scan)
            .await
            .map_err(|refused| self.refused(refused, "the attempts bucket's counts are not swept"))
    }

    /// When the tasks' stream's message at `sequence` was stored; `None`
    /// when the stream holds none there.
    async fn published_ns(&self, sequence: u64) -> Result<Option<i128>, SourceError> {
        let queue = &self.inner.queue;
        let stream = self.inner.config.stream.as_str();
        let api = format!("$JS.API.STREAM.MSG.GET.{stream}");
        let read = stored::published_ns(&queue.js, stream, sequence);
        let denials = &queue.denials;
        denials
            .race(denials.mark(), exactly(&api), read)
            .await
            .map_err(|refused| self.refused(refused, "the attempts bucket's counts are not swept"))
    }

    /// Removes the entry of the attempts bucket `store` on `subject` at
    /// `revision` (a purge of the subject up to it: a count written since
    /// stays); whether it removed one (not when another sweep, or a newer
    /// write, did first).
    async fn remove_count(
        &self,
        store: &Store,
        subject: &str,
        revision: u64,
    ) -> Result<bool, SourceError> {
        let api = format!("$JS.API.STREAM.PURGE.{}", store.stream_name);
        let purge = store
            .stream
            .purge()
            .sequence(revision.saturating_add(1))
            .filter(subject);
        let denials = &self.inner.queue.denials;
        match denials.race(denials.mark(), exactly(&api), purge).await {
            Ok(purged) => Ok(purged.purged > 0),
            // The server answered, and refused: this key only (its bucket
            // deleted meanwhile), not the sweep.
            Err(Refused::Failed(e)) if matches!(e.kind(), PurgeErrorKind::JetStream(_)) => {
                tracing::debug!(error = %e, %subject, "cannot remove a count whose message is gone");
                Ok(false)
            }
            Err(refused) => {
                Err(self.refused(refused, "the attempts bucket's counts are not swept"))
            }
        }
    }
}

/// Sweeps the counts of the source `inner` [`FIRST_AFTER`] now, then every
/// [`EVERY`], while it lives. A sweep that fails is said (once while they
/// keep failing) and tried again at the next.
async fn sweep_counts_while_alive(inner: Weak<Inner>) {
    tokio::time::sleep(FIRST_AFTER).await;
    let mut failing = false;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let source = NatsSource { inner };
        if source.connected() {
            match source.sweep_counts().await {
                Ok(swept) => {
                    failing = false;
                    tracing::debug!(?swept, "swept the attempts bucket's counts");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        error = %e,
                        "cannot sweep the attempts bucket: counts of messages gone without \
                         their settlement stay until a sweep can (the credentials need \
                         $JS.API.STREAM.PURGE.KV_<bucket> and an ordered consumer on it)"
                    );
                }
                Err(e) => tracing::debug!(error = %e, "cannot sweep the attempts bucket"),
            }
        }
        drop(source);
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(all(test, feature = "test-server"))]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use futures_util::StreamExt;
    use task_source::{now_ms, NewTask, Outcome, Settlement, TaskSource, TaskState};

    use super::*;
    use crate::attempts::key;
    use crate::config::NatsConfig;
    use crate::test_server::NatsServer;

    /// An echo task `id` of `priority`.
    fn task(id: &str, priority: u8) -> NewTask {
        NewTask {
            id: id.into(),
            task_type: "echo".into(),
            payload: "1".into(),
            priority,
            timeout_ms: None,
        }
    }

    /// `id`'s attempt `attempt` ended as `outcome`.
    fn ended(id: &str, attempt: u32, outcome: Outcome) -> Settlement {
        Settlement {
            id: id.into(),
            attempt,
            outcome,
        }
    }

    /// `id`'s attempt `attempt` ended ok.
    fn ok(id: &str, attempt: u32) -> Settlement {
        let outcome = Outcome::Settled {
            state: TaskState::Ok,
            line: format!(r#"{{"id":"{id}","status":"ok","attempts":{attempt}}}"#),
            error: None,
        };
        ended(id, attempt, outcome)
    }

    /// Claims one task, the highest band's (waiting 10 s at most for it to
    /// come back), and returns its id and attempt.
    async fn claim_one(source: &NatsSource) -> (String, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let claimed = source.claim(1, now_ms()).await.unwrap();
            if let Some(claim) = claimed.into_iter().next() {
                return (claim.task.id, claim.attempt);
            }
            assert!(Instant::now() < deadline, "no task came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Claims `id` at its first attempt and gives it back unstarted.
    async fn give_back(source: &NatsSource, id: &str) {
        assert_eq!(claim_one(source).await, (id.to_owned(), 1));
        let back = ended(id, 1, Outcome::NotStarted);
        source.settle(vec![back]).await.unwrap();
    }

    /// Every key the attempts bucket `store` holds an entry of (a count or
    /// a delete marker), as its stream reports its subjects.
    async fn entries(store: &Store) -> BTreeSet<String> {
        let mut subjects = store
            .stream
            .info_with_subjects(format!("{}>", store.prefix))
            .await
            .unwrap();
        let mut keys = BTreeSet::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.unwrap();
            keys.insert(subject[store.prefix.len()..].to_owned());
        }
        keys
    }

    /// When the tasks' stream of `source` stored its message at `sequence`.
    async fn published(source: &NatsSource, sequence: u64) -> i128 {
        let message = source.inner.queue.tasks.get_raw_message(sequence).await;
        message.unwrap().time.unix_timestamp_nanos()
    }

    /// A tasks' stream that keeps its messages for ever gets an attempts
    /// bucket that keeps counts for ever: the sweep removes the counts (and
    /// delete markers) of the messages gone — acked, deleted by an
    /// operator, or of a stream made again — and keeps those of messages
    /// still there, which keep their attempt; keys of other streams are
    /// left to their own daemons.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_removes_the_counts_of_messages_gone_and_keeps_the_others() {
        let server = NatsServer::start();
        let source = NatsSource::connect(NatsConfig::new(server.url()))
            .await
            .unwrap();
        let store = source.attempts().store().expect("the attempts bucket");
        let stream = source.config().stream.clone();
        // Message 1, acked after a give-back: its count removed, a marker
        // left. Message 2 waits, given back once. Message 3, given back
        // once, is deleted by an operator.
        source.accept(vec![task("done", 50)]).await.unwrap();
        give_back(&source, "done").await;
        assert_eq!(claim_one(&source).await, ("done".to_owned(), 1));
        source.settle(vec![ok("done", 1)]).await.unwrap();
        source.accept(vec![task("kept", 90)]).await.unwrap();
        give_back(&source, "kept").await;
        source.accept(vec![task("purged", 0)]).await.unwrap();
        let purged_at = published(&source, 3).await;
        give_back(&source, "purged").await;
        assert!(source.inner.queue.tasks.delete_message(3).await.unwrap());
        let kept_at = published(&source, 2).await;
        let kept = key(&stream, 2, kept_at);
        let purged = key(&stream, 3, purged_at);
        // Another stream's, an older daemon's (by sequence alone), and one
        // of a stream made again (its message stored at another time).
        let other = key("OTHER_TASKS", 1, 1);
        let legacy_kept = format!("{stream}.2");
        let legacy_gone = format!("{stream}.3");
        let made_again = key(&stream, 2, kept_at + 1);
        let never = key(&stream, 99, 1);
        for written in [&other, &legacy_kept, &legacy_gone, &made_again, &never] {
            store.put(written, "1".into()).await.unwrap();
        }
        let before = entries(&store).await;
        assert!(before.contains(&purged), "{before:?}");
        assert_eq!(before.len(), 8, "{before:?}");

        source.sweep_counts().await.unwrap();
        let after = entries(&store).await;
        let left = BTreeSet::from([kept.clone(), legacy_kept, other]);
        assert_eq!(after, left);
        let again = source.sweep_counts().await.unwrap();
        let same = Swept {
            kept: 2,
            removed: 0,
            others: 1,
        };
        assert_eq!(again, same, "nothing left to remove");
        assert_eq!(
            claim_one(&source).await,
            ("kept".to_owned(), 1),
            "its given-back delivery is still no attempt"
        );
        source.settle(vec![ok("kept", 1)]).await.unwrap();
    }

    /// A count is removed only at the revision the sweep read: one written
    /// since (the message given back again meanwhile) stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_count_written_since_the_sweep_read_it_stays() {
        let server = NatsServer::start();
        let source = NatsSource::connect(NatsConfig::new(server.url()))
            .await
            .unwrap();
        let store = source.attempts().store().expect("the attempts bucket");
        let read = store.put("CORTEX_TASKS.7.1", "1".into()).await.unwrap();
        let since = store.put("CORTEX_TASKS.7.1", "2".into()).await.unwrap();
        let subject = format!("{}CORTEX_TASKS.7.1", store.prefix);

        let removed = source.remove_count(&store, &subject, read).await.unwrap();
        assert!(!removed);
        let entry = store.entry("CORTEX_TASKS.7.1").await.unwrap();
        assert_eq!(entry.map(|e| e.value), Some("2".into()));
        let removed = source.remove_count(&store, &subject, since).await.unwrap();
        assert!(removed);
        assert!(entries(&store).await.is_empty(), "no marker left");
    }
}
