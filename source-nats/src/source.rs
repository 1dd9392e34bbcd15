//! [`NatsSource`]: the [`TaskSource`] on JetStream.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use async_trait::async_trait;
use futures_util::future::{join, join_all};
use futures_util::StreamExt;
use serde_json::json;
use task_source::{
    now_ms, Admission, Claimed, Filter, NewTask, Outcome, Requeue, Settlement, SourceError,
    SourceHealth, SourceStats, TaskRecord, TaskSource, TaskState,
};

use crate::attempts::{self, Count, GiveBack};
use crate::config::NatsConfig;
use crate::connect::{connect, Queue};
use crate::delivery::Delivery;
use crate::denials::{Own, Refused};
use crate::held::{HeldKey, HeldSet, Settling};
use crate::message::{
    id_unfit, result_key, subject, Band, Body, DEFAULT_PRIORITY, HEADER_ATTEMPTS, HEADER_ERROR,
    HEADER_ERROR_KIND, HEADER_ID,
};
use crate::records::{dead_letter, from_line, DeadLetter, Listed};
use crate::scan::{self, KV_OPERATION};
use crate::stats::{Counters, QueueStats};
use crate::NatsError;

mod counts;
mod sweep;

/// Publishes awaited together at most (each waits for the stream's ack).
const PUBLISH_CHUNK: usize = 1024;

/// The longest a fetch may go without its next message or its end before
/// [`claim`](NatsSource::claim) gives up on it (the server answers a fetch at
/// once: it asks for no wait).
const FETCH_STALL: Duration = Duration::from_secs(5);

struct Inner {
    config: NatsConfig,
    /// The subjects it publishes on, built once from the config.
    subjects: Subjects,
    queue: Queue,
    held: Mutex<HeldSet>,
    counters: Counters,
    /// Sweeps for messages the client cannot hand over (`sweep.rs`).
    sweeps: sweep::Sweeps,
    /// Sweeps of the counts of messages gone (`counts.rs`).
    count_sweeps: counts::CountSweeps,
}

/// The subjects tasks and dead letters are published on: a copy is a
/// reference count, not a string formatted per message.
struct Subjects {
    /// Each band's, in [`Band::ALL`]'s order.
    bands: [async_nats::Subject; 3],
    dead: async_nats::Subject,
}

impl Subjects {
    fn of(config: &NatsConfig) -> Self {
        Self {
            bands: Band::ALL.map(|band| subject(band, &config.subject_prefix).into()),
            dead: config.dlq_subject().into(),
        }
    }

    /// The subject of tasks of `priority`.
    fn task(&self, priority: u8) -> &async_nats::Subject {
        &self.bands[Band::of(priority).index()]
    }
}

impl Inner {
    fn held(&self) -> MutexGuard<'_, HeldSet> {
        attempts::lock(&self.held)
    }
}

/// A [`TaskSource`] on NATS JetStream: tasks are messages on a work-queue
/// stream shared by every daemon, results live in a key-value bucket and dead
/// letters in their own stream (see `docs/queue.md`).
#[derive(Clone)]
pub struct NatsSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("url", &self.inner.config.url)
            .field("stream", &self.inner.config.stream)
            .finish_non_exhaustive()
    }
}

/// A request's own subject, `subject`, looked up at once among the denials.
fn exactly(subject: &str) -> Own<'_, fn(&str) -> bool> {
    Own::Subject(subject)
}

pub(crate) fn backend(e: impl std::fmt::Display) -> SourceError {
    SourceError::Backend(e.to_string())
}

impl NatsSource {
    /// Connects to `config.url`, creates the streams, consumers and buckets
    /// when absent, and starts the in-progress acks of held tasks. Without
    /// an attempts bucket it can neither open nor create, it runs without
    /// one (said in its log), trying it again later unless it was refused
    /// for good: every delivery meanwhile counts as an attempt.
    ///
    /// # Errors
    /// When the server cannot be reached, the credentials cannot be read, or
    /// the streams, consumers or results bucket cannot be created.
    pub async fn connect(config: NatsConfig) -> Result<Self, NatsError> {
        let queue = connect(&config).await?;
        let inner = Arc::new(Inner {
            subjects: Subjects::of(&config),
            config,
            queue,
            held: Mutex::new(HeldSet::default()),
            counters: Counters::default(),
            sweeps: sweep::Sweeps::default(),
            count_sweeps: counts::CountSweeps::default(),
        });
        tokio::spawn(keep_alive(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Failing while the server denied an ack within two `ack_wait`s (the
    /// longest of the consumers'): each task run here would be delivered
    /// again, and never leave the stream.
    fn acks_health(&self) -> SourceHealth {
        let window = self.inner.queue.longest_ack_wait.saturating_mul(2);
        match self.inner.queue.denials.ack_denied_within(window) {
            None => SourceHealth::Ok,
            Some(subject) => SourceHealth::Failing {
                reason: format!(
                    "the NATS server denies this daemon's acks ({subject}, {}): {}",
                    crate::connect::credentials(&self.inner.config),
                    crate::denials::ACK_DENIED
                ),
            },
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// How long the server waits for an ack before it redelivers a task:
    /// the queue's consumers' `ack_wait`, or the configured one when shorter.
    /// In-progress acks are sent every quarter of it.
    pub fn ack_wait(&self) -> Duration {
        self.inner.queue.ack_wait
    }

    /// Whether the client is connected to a server now.
    pub fn connected(&self) -> bool {
        self.inner.queue.client.connection_state() == State::Connected
    }

    /// How many claimed tasks this source holds now (running, or settled
    /// but not yet acknowledged to the server).
    pub fn held_count(&self) -> usize {
        self.held().len()
    }

    fn held(&self) -> MutexGuard<'_, HeldSet> {
        self.inner.held()
    }

    fn refuse_when_down(&self) -> Result<(), SourceError> {
        if self.connected() {
            Ok(())
        } else {
            Err(SourceError::Unwritable(format!(
                "the NATS connection to {} is down (reconnecting)",
                self.inner.config.url
            )))
        }
    }

    /// The queue's figures: lag, redeliveries, fetch batch sizes.
    ///
    /// # Errors
    /// When the server cannot be asked, and while the connection is down
    /// (the lag, the acks pending and the dead letters are the server's:
    /// they are not reported as zeros). [`Self::connected`] and
    /// [`Self::held_count`] answer without the server.
    pub async fn queue_stats(&self) -> Result<QueueStats, SourceError> {
        if !self.connected() {
            return Err(SourceError::Backend(format!(
                "the NATS connection to {} is down (reconnecting): the queue's figures are unknown",
                self.inner.config.url
            )));
        }
        let mut stats = self.inner.counters.snapshot();
        stats.connected = true;
        stats.held = self.held().len() as u64;
        for (_, consumer) in &self.inner.queue.consumers {
            let mut consumer = consumer.clone();
            let info = consumer.info().await.map_err(backend)?;
            stats.lag += info.num_pending;
            stats.ack_pending += info.num_ack_pending as u64;
        }
        let mut dlq = self.inner.queue.dlq.clone();
        stats.dead_letters = dlq.info().await.map_err(backend)?.state.messages;
        Ok(stats)
    }

    /// Every dead letter, oldest first, read through one ordered consumer.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, SourceError> {
        let letters = scan::held(&self.inner.queue.dlq, String::new(), DeliverPolicy::All).await?;
        letters.iter().map(dead_letter).collect()
    }

    /// Publishes `task` on its band's subject under the message id `msg_id`;
    /// `Ok(true)` when the stream took it as new, `Ok(false)` for a duplicate.
    async fn publish_all(
        &self,
        tasks: &[(&NewTask, String)],
        letter_room: LetterRoom,
    ) -> Vec<Result<bool, String>> {
        // A server that has not said its limit yet (0) is not judged.
        let max = match letter_room {
            LetterRoom::Required => {
                Some(self.inner.queue.client.server_info().max_payload).filter(|max| *max > 0)
            }
            LetterRoom::Trimmed => None,
        };
        // A denied publish gets no ack, only the server's error on the side.
        let denials = &self.inner.queue.denials;
        let since = denials.mark();
        let mut acks = Vec::with_capacity(tasks.len());
        for (task, msg_id) in tasks {
            if let Some(why) = id_unfit(&task.id) {
                acks.push(Err(why));
                continue;
            }
            let body = serde_json::to_vec(&Body::of(task)).unwrap_or_default();
            // Its dead letter carries the same body with more headers: a
            // task with no room for them is refused now, not at its end.
            let letter = body.len() + letter_headers_len(&task.id, MAX_ERROR_HEADER);
            if let Some(max) = max.filter(|max| letter > *max) {
                acks.push(Err(format!(
                    "too_large: the task's dead letter would take {letter} bytes with its \
                     headers, over the server's max_payload ({max})"
                )));
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, msg_id.as_str());
            let subject = self.inner.subjects.task(task.priority).clone();
            let sent = self
                .inner
                .queue
                .js
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map(|ack| (subject, ack))
                .map_err(|e| e.to_string());
            acks.push(sent);
        }
        join_all(acks.into_iter().map(|sent| async move {
            let (subject, ack) = sent?;
            match denials.race(since, exactly(&subject), ack).await {
                Ok(ack) => Ok(!ack.duplicate),
                Err(Refused::Failed(e)) => Err(e.to_string()),
                Err(Refused::Denied(_)) => Err(self.denied(&subject)),
            }
        }))
        .await
    }

    /// Removes `letters` from the dead-letter stream.
    async fn delete_letters(&self, letters: &[&DeadLetter]) -> Result<(), SourceError> {
        for letter in letters {
            self.inner
                .queue
                .dlq
                .delete_message(letter.sequence)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// The largest message the server takes (its `max_payload`, headers
    /// included); `usize::MAX` while it has not said (0).
    fn max_payload(&self) -> usize {
        match self.inner.queue.client.server_info().max_payload {
            0 => usize::MAX,
            max => max,
        }
    }

    /// Stores `line` as the result of `id`.
    async fn put_result(&self, id: &str, line: String) -> Result<(), SourceError> {
        let key = result_key(id);
        // The put is a publish to `$KV.BUCKET.KEY` (the source's JetStream
        // context has the default API prefix, so no other): denied, it gets
        // no answer.
        let store = &self.inner.queue.results;
        let put_prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
        let subject = format!("{put_prefix}{key}");
        let denials = &self.inner.queue.denials;
        let put = store.put(key, line.into());
        denials
            .race(denials.mark(), exactly(&subject), put)
            .await
            .map(|_| ())
            .map_err(|refused| {
                let then = format!("the result of task {id} is not stored, and is tried again");
                self.refused(refused, &then)
            })
    }

    /// What a request the server denied met: the subject and the
    /// credentials.
    fn denied(&self, subject: &str) -> String {
        format!(
            "denied: the NATS server denies the subject {subject} ({})",
            crate::connect::credentials(&self.inner.config)
        )
    }

    /// `refused`, what a request met, as the source's error: a denial names
    /// the subject and the credentials, then what follows (`then`).
    fn refused<E: std::fmt::Display>(&self, refused: Refused<E>, then: &str) -> SourceError {
        match refused {
            Refused::Failed(e) => backend(e),
            Refused::Denied(subject) => {
                SourceError::Backend(format!("{}; {then}", self.denied(&subject)))
            }
        }
    }

    /// Task `id`'s entry in the results bucket. A read the server denies gets
    /// no answer: it is named as denied as soon as the server says so, not
    /// after the request's timeout.
    async fn result_entry(&self, id: &str) -> Result<Option<kv::Entry>, SourceError> {
        let results = &self.inner.queue.results;
        let key = result_key(id);
        // The request's exact subject (the source's JetStream context has
        // the default API prefix): a direct get names the key (a bucket made
        // by this source allows them); a bucket without them is read
        // through its stream's message API.
        let subject = if results.stream.cached_info().config.allow_direct {
            format!(
                "$JS.API.DIRECT.GET.{}.{}{key}",
                results.stream_name, results.prefix
            )
        } else {
            format!("$JS.API.STREAM.MSG.GET.{}", results.stream_name)
        };
        let denials = &self.inner.queue.denials;
        let since = denials.mark();
        denials
            .race(since, exactly(&subject), results.entry(key))
            .await
            .map_err(|refused| {
                self.refused(refused, &format!("the result of task {id} cannot be read"))
            })
    }

    /// Records a dead letter for the task `id`, whose message is the
    /// stream's `sequence` with body `payload`.
    async fn publish_dead(
        &self,
        id: &str,
        (sequence, payload): (u64, &bytes::Bytes),
        attempts: u32,
        error: Option<&task_source::ErrorInfo>,
    ) -> Result<(), SourceError> {
        // One letter per message of the task, however often a failed
        // settlement is tried again and whichever daemon publishes it (the
        // one that ran it, or one its redelivery reached): the stream drops
        // a repeat inside its duplicate window. (A requeued task is a new
        // message.)
        let msg_id = format!("{id}#dead-{sequence}");
        let attempts = attempts.to_string();
        let mut pairs: Vec<(&str, String)> = vec![
            (NATS_MESSAGE_ID.as_ref(), msg_id),
            (HEADER_ID, id.to_owned()),
            (HEADER_ATTEMPTS, attempts),
        ];
        if let Some(error) = error {
            pairs.push((
                HEADER_ERROR_KIND,
                header_value(&error.kind, MAX_KIND_HEADER),
            ));
        }
        // The server closes the connection of a client that sends a message
        // over its `max_payload`, headers included: the error message, the
        // one long header, is cut to the room left, and a body with no room
        // left for the letter's headers at all (a message published from
        // outside, filled to the limit) is left out, said so.
        // (0: the server has not said its limit yet; nothing is cut.)
        let max = self.max_payload();
        let mut payload = payload.clone();
        let used = payload.len() + headers_len(pairs.iter().map(|(n, v)| (*n, v.len())));
        if used > max {
            pairs.push((HEADER_BODY_OMITTED, payload.len().to_string()));
            payload = Default::default();
        } else if let Some(error) = error {
            let room = (max - used).saturating_sub(HEADER_ERROR.len() + HEADER_LINE);
            let message = header_value(&error.message, MAX_ERROR_HEADER.min(room));
            if !message.is_empty() {
                pairs.push((HEADER_ERROR, message));
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &pairs {
            headers.insert(*name, value.as_str());
        }
        let subject = self.inner.subjects.dead.clone();
        let denials = &self.inner.queue.denials;
        let since = denials.mark();
        let ack = self
            .inner
            .queue
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(backend)?;
        denials
            .race(since, exactly(&subject), ack)
            .await
            .map(|_| ())
            .map_err(|refused| {
                let then =
                    format!("the dead letter of task {id} is not stored, and is tried again");
                self.refused(refused, &then)
            })
    }

    /// Whether a redelivered `message` of task `id` has its outcome stored
    /// already (the daemon that ran it stored its line, then died or stalled
    /// before its ack reached the server): then it is acked now, as that
    /// daemon would have, instead of running again and replacing a final
    /// line. A bucket that cannot be read says no: the task runs again (at
    /// least once). A message answered for good here has its count of
    /// deliveries given back, under `key`, forgotten.
    async fn settled_already(&self, id: &str, message: &Message, key: &str) -> bool {
        let stored = match self.get(vec![id.to_owned()]).await {
            Ok(mut records) => records.pop().flatten(),
            Err(_) => None,
        };
        let Some(record) = stored.filter(|r| r.state.is_settled()) else {
            return false;
        };
        let kind = if record.state == TaskState::DeadLetter {
            // The line is stored before the letter: a daemon that died
            // between the two left no letter, published now (once: the
            // stream drops a repeat of the same message's letter). Until it
            // is, the message is not terminated, and comes back.
            let letter = self
                .publish_dead(
                    id,
                    sequence_and_body(message),
                    record.attempts,
                    record.error.as_ref(),
                )
                .await;
            if let Err(e) = letter {
                tracing::debug!(error = %e, %id, "cannot publish a settled task's letter");
                return true;
            }
            AckKind::Term
        } else {
            AckKind::Ack
        };
        // Not run either way: an ack that did not arrive brings the message
        // back, and it is looked up again.
        match message.ack_with(kind).await {
            Ok(()) => self.attempts().forget(key).await,
            Err(e) => tracing::debug!(error = %e, %id, "cannot ack a settled task's redelivery"),
        }
        true
    }

    /// A message whose body is not a task (or a task that cannot be run,
    /// `listed` its type and priority): dead-lettered with an
    /// `invalid_input` error, so nothing is lost and nothing retries it
    /// forever.
    async fn reject(&self, message: Message, why: String, listed: Option<&Listed>) {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("invalid-{}", now_ms()));
        if self
            .letter_unfit(&id, sequence_and_body(&message), why, listed)
            .await
            .is_ok()
        {
            if let Err(e) = message.ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, %id, "cannot terminate an invalid message");
            }
        }
    }

    /// Stores the `dead_letter` line and the letter of the message that is
    /// no task, or no task that can be run (`why`), the stream's `sequence`
    /// with body `payload`, under `id`: an `invalid_input` error, at attempt
    /// 0. The line carries `listed`, the type and priority of a task's.
    async fn letter_unfit(
        &self,
        id: &str,
        message: (u64, &bytes::Bytes),
        why: String,
        listed: Option<&Listed>,
    ) -> Result<(), SourceError> {
        let error = task_source::ErrorInfo {
            kind: "invalid_input".into(),
            message: why,
        };
        let mut line = json!({"id": id, "status": "dead_letter", "error": {"kind": error.kind, "message": error.message}, "attempts": 0}).to_string();
        if let Some(listed) = listed {
            line = listed.stored(&line, self.max_payload());
        }
        // The line first, as for a task's letter (`settle_one`).
        self.put_result(id, line).await?;
        self.publish_dead(id, message, 0, Some(&error)).await
    }

    /// A fetched message as a claim, held until it is settled, with its
    /// attempt number (`attempts.rs`); `None` for a message that is no task
    /// (dead-lettered), whose outcome is stored already (answered now), or
    /// that is held here already (a redelivery: the pool's claim of it
    /// answers it, `held.rs`).
    async fn take(&self, message: Message) -> Option<Claimed> {
        let (sequence, delivered, submitted_ms) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u64::try_from(info.delivered).unwrap_or(1),
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            ),
            Err(e) => {
                let why = format!("the message has no stream info: {e}");
                self.reject(message, why, None).await;
                return None;
            }
        };
        let task = match serde_json::from_slice::<Body>(&message.payload) {
            Ok(body) => body.into_task(),
            Err(e) => {
                let why = format!("the message is not a task: {e}");
                self.reject(message, why, None).await;
                return None;
            }
        };
        // Its dead letter would carry the id in a header, which breaks the
        // reader of the letter (another client published this body).
        let listed = Listed::of(&task.task_type, task.priority);
        if let Some(why) = id_unfit(&task.id) {
            self.reject(message, why, Some(&listed)).await;
            return None;
        }
        let count = if delivered > 1 {
            let count_key = self.count_key(&message);
            let (settled, count) = join(
                self.settled_already(&task.id, &message, &count_key),
                self.attempts().read(&count_key),
            )
            .await;
            if settled {
                return None;
            }
            self.inner.counters.redelivered();
            count
        } else {
            Count::FIRST
        };
        let attempt = attempts::attempt(delivered, count.given_back());
        let key = HeldKey::new(task.id.clone(), attempt, sequence);
        // A redelivery of a message held here is answered by the claim the
        // pool has of it already.
        let claim = self
            .held()
            .insert(key, Delivery::new(message), count, listed);
        claim.then_some(Claimed {
            task,
            attempt,
            submitted_ms,
        })
    }

    /// The attempts bucket's key of `message` ([`attempts::key`]). A message
    /// is held, and so counted, only once its stream info was read
    /// ([`take`](Self::take) dead-letters one without); without it the key
    /// is the sequence 0's, which no message has.
    fn count_key(&self, message: &Message) -> String {
        let (sequence, published_ns) = message.info().map_or((0, 0), |info| {
            (info.stream_sequence, info.published.unix_timestamp_nanos())
        });
        attempts::key(&self.inner.config.stream, sequence, published_ns)
    }

    /// The attempts bucket (`attempts.rs`).
    fn attempts(&self) -> &attempts::Attempts {
        &self.inner.queue.attempts
    }

    async fn settle_one(&self, s: Settlement) -> Result<(), SourceError> {
        // Not held here, or settling already: settled already, being
        // settled, or redelivered elsewhere.
        let Some(mut settling) = self.held().settle(&s.id, s.attempt) else {
            return Ok(());
        };
        let settled = matches!(s.outcome, Outcome::Settled { .. });
        // Held, and kept alive, until the server has its answer (that of its
        // newest delivery, when the server redelivered it meanwhile).
        loop {
            let done = self.answer(&s, &mut settling).await;
            // The count this delivery may have stored goes once the message
            // is answered for good.
            let stored = settled && settling.count().may_be_stored();
            let count_key = stored.then(|| self.count_key(settling.delivery().message()));
            let next = match done {
                Ok(()) => self.held().finished(settling),
                Err(e) => {
                    self.held().unsettled(settling);
                    return Err(e);
                }
            };
            match next {
                Some(newer) => settling = newer,
                None => {
                    if let Some(key) = count_key {
                        self.attempts().forget(&key).await;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Stores the outcome of `s` and answers its message, `settling`.
    async fn answer(&self, s: &Settlement, settling: &mut Settling) -> Result<(), SourceError> {
        let kind = match &s.outcome {
            // The line first, then (for a dead letter) the letter, then the
            // ack: a daemon that dies in between leaves a line, and the
            // message's redelivery finds it and is not run again; the
            // letter is published then if it was not yet (`settled_already`).
            Outcome::Settled { state, line, error } => {
                // With its task's type and priority, for the listings.
                let line = settling.listed().stored(line, self.max_payload());
                self.put_result(&s.id, line).await?;
                if *state == TaskState::DeadLetter {
                    self.publish_dead(
                        &s.id,
                        sequence_and_body(settling.delivery().message()),
                        s.attempt,
                        error.as_ref(),
                    )
                    .await?;
                    AckKind::Term
                } else {
                    AckKind::Ack
                }
            }
            Outcome::Retry { due_ms, .. } => {
                AckKind::Nak(Some(Duration::from_millis(due_ms.saturating_sub(now_ms()))))
            }
            // Never started, or stopped with the pool (the daemon's doing,
            // not the task's): the delivery is given back, as in every
            // source, stored before the NAK so that a NAK lost on the way is
            // given back too. One whose count changed since its claim lapses
            // unanswered (`attempts::GiveBack`). One stored is kept on its
            // entry: a retry after its NAK failed only NAKs.
            Outcome::Interrupted | Outcome::NotStarted => {
                let key = self.count_key(settling.delivery().message());
                match self.attempts().give_back(&key, settling.count()).await {
                    GiveBack::Stored(count) => {
                        self.held().given_back(settling, count);
                        AckKind::Nak(None)
                    }
                    GiveBack::Nak => AckKind::Nak(None),
                    GiveBack::Lapsed => return Ok(()),
                }
            }
        };
        settling.delivery().answer(kind).await.map_err(backend)
    }
}

/// A delivered message's stream sequence (0 without its stream info) and
/// body, as a letter carries them.
fn sequence_and_body(message: &Message) -> (u64, &bytes::Bytes) {
    let sequence = message.info().map_or(0, |i| i.stream_sequence);
    (sequence, &message.payload)
}

/// The most bytes of an error message a dead letter's header keeps (the
/// whole message is in the task's result line).
const MAX_ERROR_HEADER: usize = 1024;

/// `text` as a header value: one line, at most `max` bytes (cut at a
/// character).
fn header_value(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace(['\r', '\n'], " ")
}

/// Whether a task published must leave room under `max_payload` for its
/// dead letter's longest headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LetterRoom {
    /// A new task: refused when its letter could not fit.
    Required,
    /// A dead letter put back: taken as it is (its letter, if it comes to
    /// one again, is cut to fit).
    Trimmed,
}

/// The most bytes of an error's kind a dead letter's header keeps.
const MAX_KIND_HEADER: usize = 64;

/// A letter's header when its body was left out: the body's size.
const HEADER_BODY_OMITTED: &str = "Cortex-Body-Omitted";

/// Bytes one header line adds beside its name and value (`: ` and `\r\n`).
const HEADER_LINE: usize = 4;

/// Bytes headers of these names and value lengths take in a message
/// (`NATS/1.0\r\n`, a line each, a closing `\r\n`): the server counts
/// them with the payload against its `max_payload`.
fn headers_len<'a>(headers: impl IntoIterator<Item = (&'a str, usize)>) -> usize {
    "NATS/1.0\r\n\r\n".len()
        + headers
            .into_iter()
            .map(|(name, value)| name.len() + value + HEADER_LINE)
            .sum::<usize>()
}

/// The most bytes the headers of task `id`'s dead letter take, with an
/// error message of at most `error` bytes.
fn letter_headers_len(id: &str, error: usize) -> usize {
    // `{id}#dead-{seq}` at its longest, and the longest attempt number: the
    // digits of u64::MAX (20) and of u32::MAX (10).
    headers_len([
        (NATS_MESSAGE_ID.as_ref(), id.len() + "#dead-".len() + 20),
        (HEADER_ID, id.len()),
        (HEADER_ATTEMPTS, 10),
        (HEADER_ERROR_KIND, MAX_KIND_HEADER),
        (HEADER_ERROR, error),
    ])
}

/// Room kept in a message for what a result's put adds to its line.
const PUT_OVERHEAD: usize = 4 * 1024;

/// In-progress acks: every held message older than a quarter of the
/// consumers' `ack_wait`, running or settling, is told to the server to be
/// still running, every quarter of it, until its final answer.
async fn keep_alive(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => (inner.queue.ack_wait / 4).max(Duration::from_millis(20)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let due = inner.held().due(period);
        // One whose settlement answers it meanwhile is skipped (`Delivery`).
        for delivery in due {
            if let Err(e) = delivery.in_progress().await {
                tracing::debug!(error = %e, "in-progress ack not sent");
            }
        }
    }
}

#[async_trait]
impl TaskSource for NatsSource {
    async fn accept(&self, tasks: Vec<NewTask>) -> Result<Vec<Admission>, SourceError> {
        self.refuse_when_down()?;
        // A task taken now could not be acked by this daemon.
        if let SourceHealth::Failing { reason } = self.acks_health() {
            return Err(SourceError::Unwritable(reason));
        }
        // An id whose result cannot be read (the read failed, or was
        // denied: at once, not after the timeout) is published: the
        // stream's duplicate window still takes it once.
        let known = join_all(tasks.iter().map(|t| async move {
            self.result_entry(&t.id)
                .await
                .ok()
                .flatten()
                .filter(|entry| entry.operation == kv::Operation::Put)
                .map(|entry| from_line(&t.id, &String::from_utf8_lossy(&entry.value), 0).state)
        }))
        .await;
        let mut out: Vec<Option<Admission>> =
            known.into_iter().map(|k| k.map(Admission::Known)).collect();
        // A repeat of an id in this call is answered as its first copy is,
        // once that one's publish is answered.
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        let mut repeats = Vec::new();
        let mut to_publish = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match first_of.entry(task.id.as_str()) {
                Entry::Occupied(first) => repeats.push((i, *first.get())),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                    to_publish.push((i, task));
                }
            }
        }
        for chunk in to_publish.chunks(PUBLISH_CHUNK) {
            let batch: Vec<(&NewTask, String)> =
                chunk.iter().map(|(_, t)| (*t, t.id.clone())).collect();
            let sent = self.publish_all(&batch, LetterRoom::Required).await;
            for ((i, _), result) in chunk.iter().zip(sent) {
                out[*i] = Some(match result {
                    Ok(true) => Admission::Accepted,
                    Ok(false) => Admission::Known(TaskState::Queued),
                    Err(e) => Admission::Refused(format!("not enqueued: {e}")),
                });
            }
        }
        for (i, first) in repeats {
            out[i] = Some(match &out[first] {
                Some(Admission::Refused(why)) => Admission::Refused(why.clone()),
                _ => Admission::Known(TaskState::Queued),
            });
        }
        Ok(out
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Admission::Refused("not enqueued".into())))
            .collect())
    }

    async fn claim(&self, max: usize, _now_ms: u64) -> Result<Vec<Claimed>, SourceError> {
        let room = self
            .inner
            .config
            .max_in_flight
            .saturating_sub(self.held().len());
        let mut want = max.min(room);
        let mut claimed = Vec::new();
        // A source that claims keeps the attempts bucket free of the counts
        // of messages gone (`counts.rs`).
        self.sweep_counts_from_now();
        if want == 0 || !self.connected() {
            return Ok(claimed);
        }
        for (_, consumer) in &self.inner.queue.consumers {
            if want == 0 {
                break;
            }
            let mut batch = match consumer.fetch().max_messages(want).messages().await {
                Ok(batch) => batch,
                Err(e) => {
                    return if claimed.is_empty() {
                        Err(backend(e))
                    } else {
                        Ok(claimed)
                    }
                }
            };
            let mut got = 0;
            // A fetch ends with the server's status after its messages; one
            // lost to a disconnect would leave it open for ever, and the
            // feeder with it. A message it delivers after this gives up is
            // redelivered after `ack_wait`. A fetch cut short may have met a
            // message the client cannot hand over: the queue is swept for it.
            loop {
                match tokio::time::timeout(FETCH_STALL, batch.next()).await {
                    Ok(Some(Ok(message))) => {
                        got += 1;
                        if let Some(claim) = self.take(message).await {
                            claimed.push(claim);
                        }
                    }
                    Ok(None) => break,
                    Ok(Some(Err(_))) | Err(_) => {
                        self.sweep_soon();
                        break;
                    }
                }
            }
            want = want.saturating_sub(got);
        }
        self.inner.counters.fetched(claimed.len());
        Ok(claimed)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), SourceError> {
        match self.settle_each(settlements).await?.into_iter().next() {
            Some((_, first)) => Err(first),
            None => Ok(()),
        }
    }

    /// Each settlement is its own message's: one refused (its subject
    /// denied, its put failed) leaves the others recorded. A call whose acks
    /// could not be flushed records none for sure: it is tried again whole
    /// (a settlement recorded already is not held any more, and answers at
    /// once).
    async fn settle_each(
        &self,
        settlements: Vec<Settlement>,
    ) -> Result<Vec<(usize, SourceError)>, SourceError> {
        let started = Instant::now();
        let results = join_all(settlements.into_iter().map(|s| self.settle_one(s))).await;
        // Acks are plain publishes: out of the client's buffer before we answer.
        self.inner.queue.client.flush().await.map_err(backend)?;
        self.inner.counters.settled(started.elapsed());
        Ok(results
            .into_iter()
            .enumerate()
            .filter_map(|(at, recorded)| recorded.err().map(|e| (at, e)))
            .collect())
    }

    async fn recover(&self) -> Result<u64, SourceError> {
        // The server redelivers what a dead daemon held once `ack_wait` passes.
        Ok(0)
    }

    async fn get(&self, ids: Vec<String>) -> Result<Vec<Option<TaskRecord>>, SourceError> {
        let lookups = join_all(ids.iter().map(|id| async move {
            match self.result_entry(id).await {
                Ok(Some(entry)) if !entry.value.is_empty() => {
                    let at_ms = (entry.created.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
                    Ok(Some(from_line(
                        id,
                        &String::from_utf8_lossy(&entry.value),
                        at_ms,
                    )))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .await;
        let held: Vec<bool> = {
            let held = self.held();
            ids.iter().map(|id| held.holds(id)).collect()
        };
        ids.iter()
            .zip(lookups)
            .zip(held)
            .map(|((id, found), held)| {
                let found = found?;
                Ok(found.or_else(|| {
                    held.then(|| TaskRecord {
                        task: NewTask {
                            id: id.clone(),
                            task_type: String::new(),
                            payload: "null".into(),
                            priority: DEFAULT_PRIORITY,
                            timeout_ms: None,
                        },
                        state: TaskState::Running,
                        attempts: 0,
                        error: None,
                        line: None,
                        created_ms: 0,
                        updated_ms: now_ms(),
                        due_ms: 0,
                        history: Vec::new(),
                    })
                }))
            })
            .collect()
    }

    async fn list(&self, filter: Filter) -> Result<Vec<TaskRecord>, SourceError> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let type_ok = |r: &TaskRecord| {
            filter
                .task_type
                .as_ref()
                .is_none_or(|t| &r.task.task_type == t)
        };
        if filter.state == Some(TaskState::DeadLetter) {
            let mut dead: Vec<TaskRecord> = self
                .dead_letters()
                .await?
                .into_iter()
                .map(|d| d.record)
                .filter(type_ok)
                .collect();
            dead.reverse();
            dead.truncate(limit);
            return Ok(dead);
        }
        // The last value of each key, in one flow of messages.
        let results = &self.inner.queue.results;
        let lines = scan::held(
            &results.stream,
            format!("{}>", results.prefix),
            DeliverPolicy::LastPerSubject,
        )
        .await?;
        let mut out = Vec::new();
        for message in &lines {
            // A key deleted (a requeued letter's line) or purged.
            if message
                .headers
                .as_ref()
                .is_some_and(|h| h.get(KV_OPERATION).is_some())
            {
                continue;
            }
            let at_ms = message.info().map_or(0, |i| {
                (i.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64
            });
            let line = String::from_utf8_lossy(&message.payload);
            let key = message
                .subject
                .strip_prefix(results.prefix.as_str())
                .unwrap_or(&message.subject);
            let id = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                .unwrap_or_else(|| key.to_owned());
            let record = from_line(&id, &line, at_ms);
            if filter.state.is_none_or(|s| s == record.state) && type_ok(&record) {
                out.push(record);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
        out.truncate(limit);
        Ok(out)
    }

    async fn requeue_dead(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(String, Requeue)>, SourceError> {
        self.refuse_when_down()?;
        let dead = self.dead_letters().await?;
        let wanted: Vec<String> = match &ids {
            Some(ids) => ids.clone(),
            None => dead.iter().map(|d| d.record.task.id.clone()).collect(),
        };
        let mut out = Vec::with_capacity(wanted.len());
        let mut done = HashSet::new();
        for id in wanted {
            if !done.insert(id.clone()) {
                continue;
            }
            let letters: Vec<&DeadLetter> =
                dead.iter().filter(|d| d.record.task.id == id).collect();
            let Some(last) = letters.last() else {
                let state = self.get(vec![id.clone()]).await?.pop().flatten();
                out.push((
                    id,
                    state.map_or(Requeue::Unknown, |r| Requeue::NotDeadLettered(r.state)),
                ));
                continue;
            };
            if !crate::records::is_task(&last.record) {
                out.push((id, Requeue::NotATask));
                continue;
            }
            // A letter that a requeue stopped half-way left behind (its
            // line deleted, the task published, the letter not removed) is
            // stale once the task ran again: its final line is kept, and the
            // letters go.
            let stored = self.get(vec![id.clone()]).await?.pop().flatten();
            if let Some(now) = stored.filter(|r| r.state != TaskState::DeadLetter) {
                self.delete_letters(&letters).await?;
                out.push((id, Requeue::NotDeadLettered(now.state)));
                continue;
            }
            // The old line goes first: once the task is published, a daemon
            // may run it and store its new line before a later delete.
            self.inner
                .queue
                .results
                .delete(result_key(&id))
                .await
                .map_err(backend)?;
            // A message id of its own (the original is still in the
            // duplicate window), the same for every try of this letter: a
            // requeue tried again after a failure below enqueues it once.
            let msg_id = format!("{id}#requeued-{}", last.sequence);
            let task = last.record.task.clone();
            // It was taken once: its letter fits with the error it carries, and
            // `publish_dead` cuts a longer one to fit.
            let sent = self
                .publish_all(&[(&task, msg_id)], LetterRoom::Trimmed)
                .await;
            if let Some(Err(e)) = sent.into_iter().next() {
                return Err(backend(e));
            }
            self.delete_letters(&letters).await?;
            out.push((id, Requeue::Requeued));
        }
        Ok(out)
    }

    async fn purge_dead(&self) -> Result<Vec<String>, SourceError> {
        self.refuse_when_down()?;
        let dead = self.dead_letters().await?;
        let Some(last) = dead.iter().map(|d| d.sequence).max() else {
            return Ok(Vec::new());
        };
        // Only the letters read: one that arrived since is kept, not
        // removed unreported.
        self.inner
            .queue
            .dlq
            .purge()
            .sequence(last + 1)
            .await
            .map_err(backend)?;
        // Their `dead_letter` lines stay until `result_ttl`: without one, a
        // resubmission inside the stream's duplicate window would be taken
        // for the queued original and never run.
        let mut seen = HashSet::new();
        Ok(dead
            .into_iter()
            .map(|d| d.record.task.id)
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }

    async fn prune(
        &self,
        _settled_before_ms: u64,
        _max_bytes: Option<u64>,
    ) -> Result<u64, SourceError> {
        // The bucket's TTL (`result_ttl`) expires results on the server.
        Ok(0)
    }

    async fn unsettled(&self) -> Result<u64, SourceError> {
        let stats = self.queue_stats().await?;
        Ok(stats.lag + stats.ack_pending)
    }

    /// The server's largest message, less room for the subject and headers
    /// a result's put carries: the server closes the connection of a client
    /// that sends more.
    fn max_line_bytes(&self) -> Option<usize> {
        let max = self.inner.queue.client.server_info().max_payload;
        Some(max.saturating_sub(PUT_OVERHEAD))
    }

    async fn stats(&self) -> Result<SourceStats, SourceError> {
        let connected = self.connected();
        // Retrying tasks wait inside the stream (a NAK with a delay) and settled
        // ones live in the bucket: the queue counts neither apart. While the
        // connection is down nothing is counted: `rows` stays empty (no state
        // reads as 0 — an exported `dead_letter` 0 would resolve an alert).
        let mut rows = std::collections::BTreeMap::new();
        let mut size_bytes = 0;
        if connected {
            rows = TaskState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect();
            let q = self.queue_stats().await?;
            rows.insert(TaskState::Queued.as_str().to_owned(), q.lag);
            rows.insert(TaskState::Running.as_str().to_owned(), q.ack_pending);
            rows.insert(TaskState::DeadLetter.as_str().to_owned(), q.dead_letters);
            let mut tasks = self.inner.queue.tasks.clone();
            size_bytes = tasks.info().await.map_err(backend)?.state.bytes;
        }
        let c = self.inner.counters.snapshot();
        Ok(SourceStats {
            backend: "nats".into(),
            path: Some(self.inner.config.url.clone()),
            health: if connected {
                self.acks_health()
            } else {
                SourceHealth::Failing {
                    reason: format!(
                        "the NATS connection to {} is down (reconnecting; finishing the {} tasks held)",
                        self.inner.config.url,
                        self.held().len()
                    ),
                }
            },
            size_bytes,
            rows,
            commits: c.settle_batches,
            commit_ms_last: c.settle_ms_last,
            commit_ms_max: c.settle_ms_max,
            commit_ms_sum: c.settle_ms_sum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_value_is_one_line_cut_at_a_character() {
        assert_eq!(header_value("a\nb\r\nc", 100), "a b  c");
        assert_eq!(header_value("ééé", 5), "éé");
        assert_eq!(
            header_value(&"x".repeat(5000), MAX_ERROR_HEADER).len(),
            MAX_ERROR_HEADER
        );
    }
}
