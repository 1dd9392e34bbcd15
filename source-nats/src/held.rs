//! [`HeldSet`]: the messages this source holds, from their claim until the
//! server has their final answer, each with its life cycle (running, then
//! settling). They are keyed by task id, attempt and stream sequence: the
//! sequence makes every message an entry of its own, two messages of one task
//! id and attempt included.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::Delivery;

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

    /// The message's stream sequence.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
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
    delivery: Arc<Delivery>,
    /// Its deliveries given back before this one (`attempts.rs`).
    given_back: u32,
    since: Instant,
    phase: Phase,
}

/// A held message taken for its settlement (by [`HeldSet::settle`]): it
/// stays held, and kept alive, until [`HeldSet::settled`] or
/// [`HeldSet::unsettled`].
#[derive(Debug)]
pub(crate) struct Settling {
    key: HeldKey,
    delivery: Arc<Delivery>,
    given_back: u32,
}

impl Settling {
    /// Its key.
    pub(crate) fn key(&self) -> &HeldKey {
        &self.key
    }

    /// Its delivery.
    pub(crate) fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Its deliveries given back before this one.
    pub(crate) fn given_back(&self) -> u32 {
        self.given_back
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

    /// Holds `delivery` under `key`, running now. A delivery of the same
    /// message and attempt held already is replaced: the server gave the
    /// message out again, and the newer delivery is the one to answer.
    pub(crate) fn insert(&mut self, key: HeldKey, delivery: Arc<Delivery>, given_back: u32) {
        let held = Held {
            delivery,
            given_back,
            since: Instant::now(),
            phase: Phase::Running,
        };
        self.entries.insert(key, held);
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
            given_back: held.given_back,
        })
    }

    /// `settling` was answered: no longer held.
    pub(crate) fn settled(&mut self, settling: Settling) {
        if self.is_current(&settling) {
            self.entries.remove(&settling.key);
        }
    }

    /// `settling` could not be settled: running again, for the settlement
    /// to be tried again.
    pub(crate) fn unsettled(&mut self, settling: Settling) {
        if let Some(held) = self.entries.get_mut(&settling.key) {
            if Arc::ptr_eq(&held.delivery, &settling.delivery) {
                held.phase = Phase::Running;
            }
        }
    }

    /// Whether `settling` is still the delivery held under its key (a newer
    /// delivery of the message may have replaced it meanwhile).
    fn is_current(&self, settling: &Settling) -> bool {
        self.entries
            .get(&settling.key)
            .is_some_and(|held| Arc::ptr_eq(&held.delivery, &settling.delivery))
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
