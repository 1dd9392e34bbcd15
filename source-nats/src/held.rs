//! [`HeldSet`]: the messages this source holds, from their claim until the
//! server has their final answer, each with its life cycle (running, then
//! settling). They are keyed by task id, attempt and stream sequence: the
//! sequence makes every message an entry of its own, two messages of one task
//! id and attempt included. A settlement names a task id and attempt only,
//! so it takes the oldest such message running: two live messages of one task
//! id at the same attempt may swap outcomes.
//!
//! A message is held once however often the server delivers it: a
//! redelivery of a message held (its in-progress acks did not reach the
//! server in time) replaces the delivery in its entry, and the one claim the
//! pool has of it answers the newest delivery. The old delivery is
//! superseded and tells the server nothing more; a settlement that was
//! answering it answers the new one in its turn ([`HeldSet::finished`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attempts::Count;
use crate::delivery::Delivery;
use crate::records::Listed;

/// A held message's key: its task id, its attempt and its stream sequence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HeldKey {
    id: String,
    attempt: u32,
    sequence: u64,
}

impl HeldKey {
    /// The key of attempt `attempt` of task `id`, the message at `sequence`
    /// in the tasks' stream.
    pub(crate) fn new(id: String, attempt: u32, sequence: u64) -> Self {
        Self {
            id,
            attempt,
            sequence,
        }
    }
}

/// Where a held message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its attempt runs, or ended and waits for its settlement.
    Running,
    /// Its settlement is in flight: its outcome being stored, then its
    /// final answer sent. In-progress acks go on meanwhile.
    Settling,
}

/// One held message.
#[derive(Debug)]
struct Held {
    /// Its newest delivery.
    delivery: Arc<Delivery>,
    /// Its deliveries given back before that one, as read at its claim
    /// (`attempts.rs`).
    count: Count,
    /// Its task's type and priority, for its stored line.
    listed: Listed,
    since: Instant,
    phase: Phase,
}

/// A held message taken for its settlement (by [`HeldSet::settle`]): it
/// stays held, and kept alive, until [`HeldSet::finished`] or
/// [`HeldSet::unsettled`].
#[derive(Debug)]
pub(crate) struct Settling {
    key: HeldKey,
    delivery: Arc<Delivery>,
    count: Count,
    listed: Listed,
}

impl Settling {
    /// Its delivery.
    pub(crate) fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Its deliveries given back before this one.
    pub(crate) fn count(&self) -> Count {
        self.count
    }

    /// Its task's type and priority, for its stored line.
    pub(crate) fn listed(&self) -> &Listed {
        &self.listed
    }
}

/// The messages this source holds.
#[derive(Debug, Default)]
pub(crate) struct HeldSet {
    entries: BTreeMap<HeldKey, Held>,
}

impl HeldSet {
    /// How many messages it holds (running or settling).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Holds `delivery` under `key`, running now, with `count` read at its
    /// claim and `listed`, its task's type and priority; `true` when it is a
    /// new claim. A redelivery of a message held already (the same task id
    /// and stream sequence) is no new claim (`false`): it replaces the
    /// delivery and count of its entry, which keeps its attempt and phase
    /// (and its task's type and priority: the same message's), and the old
    /// delivery is superseded.
    pub(crate) fn insert(
        &mut self,
        key: HeldKey,
        delivery: Arc<Delivery>,
        count: Count,
        listed: Listed,
    ) -> bool {
        let from = HeldKey::new(key.id.clone(), 0, 0);
        let held_already = self
            .entries
            .range_mut(from..)
            .take_while(|(k, _)| k.id == key.id)
            .find(|(k, _)| k.sequence == key.sequence);
        if let Some((_, held)) = held_already {
            held.delivery.supersede();
            held.delivery = delivery;
            held.count = count;
            return false;
        }
        let held = Held {
            delivery,
            count,
            listed,
            since: Instant::now(),
            phase: Phase::Running,
        };
        self.entries.insert(key, held);
        true
    }

    /// The oldest running message of attempt `attempt` of task `id`, now
    /// settling; `None` when none is (the attempt was settled already, is
    /// settling, or is not held here).
    pub(crate) fn settle(&mut self, id: &str, attempt: u32) -> Option<Settling> {
        let from = HeldKey::new(id.to_owned(), attempt, 0);
        let to = HeldKey::new(id.to_owned(), attempt, u64::MAX);
        let (key, held) = self
            .entries
            .range_mut(from..=to)
            .find(|(_, held)| held.phase == Phase::Running)?;
        held.phase = Phase::Settling;
        Some(Settling {
            key: key.clone(),
            delivery: Arc::clone(&held.delivery),
            count: held.count,
            listed: held.listed.clone(),
        })
    }

    /// The delivery of `settling` was answered, or its answer lapsed: the
    /// message is no longer held. Unless a redelivery replaced it meanwhile:
    /// then that one, still settling, to be answered in its turn.
    pub(crate) fn finished(&mut self, settling: Settling) -> Option<Settling> {
        let held = self.entries.get(&settling.key)?;
        if Arc::ptr_eq(&held.delivery, &settling.delivery) {
            self.entries.remove(&settling.key);
            return None;
        }
        Some(Settling {
            delivery: Arc::clone(&held.delivery),
            count: held.count,
            key: settling.key,
            listed: settling.listed,
        })
    }

    /// The give-back of `settling` is stored, as `count`: a retry of its
    /// settlement (its NAK failed) only NAKs. Unless a redelivery replaced
    /// its delivery meanwhile: that one keeps the count it read.
    pub(crate) fn given_back(&mut self, settling: &mut Settling, count: Count) {
        settling.count = count;
        if let Some(held) = self.entries.get_mut(&settling.key) {
            if Arc::ptr_eq(&held.delivery, &settling.delivery) {
                held.count = count;
            }
        }
    }

    /// `settling` could not be settled: running again, for the settlement
    /// to be tried again (on its newest delivery).
    pub(crate) fn unsettled(&mut self, settling: Settling) {
        if let Some(held) = self.entries.get_mut(&settling.key) {
            held.phase = Phase::Running;
        }
    }

    /// Whether it holds a message of task `id`.
    pub(crate) fn holds(&self, id: &str) -> bool {
        let from = HeldKey::new(id.to_owned(), 0, 0);
        self.entries
            .range(from..)
            .next()
            .is_some_and(|(key, _)| key.id == id)
    }

    /// The messages held for `period` or longer, running or settling: those
    /// whose in-progress acks are due.
    pub(crate) fn due(&self, period: Duration) -> Vec<Arc<Delivery>> {
        self.entries
            .values()
            .filter(|held| held.since.elapsed() >= period)
            .map(|held| Arc::clone(&held.delivery))
            .collect()
    }
}

#[cfg(all(test, feature = "test-server"))]
mod tests {
    use async_nats::jetstream::message::AckKind;

    use super::*;
    use crate::attempts::GiveBack;
    use crate::config::NatsConfig;
    use crate::connect::connect;
    use crate::delivery::rig::{next_delivery, publish_echo};
    use crate::test_server::NatsServer;

    /// The type and priority of `publish_echo`'s tasks.
    fn echo() -> Listed {
        Listed::of("echo", crate::message::DEFAULT_PRIORITY)
    }

    fn count(given_back: u32, revision: u64) -> Count {
        Count::Read {
            given_back,
            revision,
        }
    }

    /// A redelivery of a message held is no new claim: it replaces the
    /// delivery and count of its entry, also while a settlement answers the
    /// old one, and that settlement then answers the new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redelivery_replaces_the_delivery_of_its_message_held() {
        let server = NatsServer::start();
        let queue = connect(&NatsConfig::new(server.url())).await.unwrap();
        publish_echo(&queue, "h").await;
        let first = next_delivery(&queue).await;
        first.message().ack_with(AckKind::Nak(None)).await.unwrap();
        let second = next_delivery(&queue).await;
        let sequence = |d: &Delivery| d.message().info().unwrap().stream_sequence;
        assert_eq!(sequence(&first), sequence(&second));
        let mut held = HeldSet::default();

        let key = |attempt| HeldKey::new("h".into(), attempt, sequence(&first));
        assert!(held.insert(key(1), Arc::clone(&first), count(0, 0), echo()));
        let settling = held.settle("h", 1).expect("running");
        held.unsettled(settling);
        let settling = held.settle("h", 1).expect("running again");
        // Counted an attempt more by its own count: still the same claim.
        assert!(!held.insert(key(2), Arc::clone(&second), count(1, 5), echo()));
        assert_eq!(held.len(), 1);
        assert!(held.settle("h", 2).is_none(), "claimed twice");
        assert!(!first.in_progress().await.unwrap(), "superseded");

        let newer = held.finished(settling).expect("the newer delivery");
        assert!(Arc::ptr_eq(&second, &newer.delivery));
        assert_eq!(newer.count(), count(1, 5));
        assert!(held.finished(newer).is_none());
        assert_eq!(held.len(), 0);
    }

    /// A give-back stored whose NAK then failed is marked on its entry: the
    /// settlement tried again writes nothing (a write over the claim's
    /// revision would lapse, and send no NAK) and only NAKs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_give_back_stored_is_not_written_again_when_its_nak_is_retried() {
        let server = NatsServer::start();
        let config = NatsConfig::new(server.url());
        let queue = connect(&config).await.unwrap();
        publish_echo(&queue, "g").await;
        let delivery = next_delivery(&queue).await;
        let mut held = HeldSet::default();
        assert!(held.insert(
            HeldKey::new("g".into(), 1, 1),
            delivery,
            Count::FIRST,
            echo()
        ));

        let mut settling = held.settle("g", 1).expect("running");
        let stored = queue.attempts.give_back("S.1", settling.count()).await;
        let GiveBack::Stored(count) = stored else {
            panic!("not stored: {stored:?}");
        };
        held.given_back(&mut settling, count);
        held.unsettled(settling); // its NAK failed
        let settling = held.settle("g", 1).expect("running again");
        assert_eq!(settling.count(), count);
        let again = queue.attempts.give_back("S.1", settling.count()).await;
        assert_eq!(again, GiveBack::Nak, "NAKed, not lapsed");

        let bucket = queue
            .js
            .get_key_value(&config.attempts_bucket)
            .await
            .unwrap();
        let entry = bucket.entry("S.1").await.unwrap().expect("stored");
        assert_eq!(&entry.value[..], b"1", "written once");
        let Count::Stored { revision, .. } = count else {
            panic!("{count:?}");
        };
        assert_eq!(entry.revision, revision);
    }
}
