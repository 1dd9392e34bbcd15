//! The queue of waiting tasks, shared by callers (who add their tasks to it
//! themselves and ring the actor), the actor (which hands them to idle workers
//! and puts retries back) and every lane (which refills its own worker from it
//! as results come back, with no hop through the actor).
//!
//! On a large pool it is split in shards, each behind its own lock, so that
//! callers and lanes on many cores do not all wait for one lock: a caller adds
//! its tasks to its thread's shard; a lane refills from the shard whose head
//! comes first (the highest priority), and among equal heads from the one
//! after the shard it took from last, so lanes spread over the shards and
//! none is left behind. Each shard leaves the priority of its head behind as its
//! lock is let go ([`ShardGuard`]); lanes pick a shard by reading those, with
//! no lock. Priority order holds across shards up to what a hint that is
//! behind lets through; FIFO order within a priority holds within a shard.
//! A pool with `prefetch` 0 (strict priority order) has one shard.

mod names;
mod shard;
mod whole;

use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use super::super::actor::Pending;
use super::super::bell::Bell;
use super::super::handoff::Left;
pub(crate) use shard::{Head, ShardGuard};
use shard::{Waiting, NO_HEAD};
pub(crate) use whole::WholeQueue;

/// The most shards a queue is split in.
pub(crate) const MAX_SHARDS: usize = 64;

/// Whether lanes may take tasks and whether callers may add them: changed
/// only while every shard's lock is held (by the actor, or by the watcher
/// that marks the pool failed once the actor is gone), so whoever holds one
/// shard's lock reads them exactly; read without a lock, they are hints.
#[derive(Debug)]
pub(crate) struct Flags {
    /// Lanes and the desk refill from the queue only while nothing is held
    /// for a worker of its type (the actor alone weighs held tasks against
    /// queued ones).
    lanes_may_take: AtomicBool,
    /// Callers no longer add tasks here (the pool is shutting down, or its
    /// actor is gone): what they submit goes to the actor, which refuses it.
    closed: AtomicBool,
}

impl Flags {
    fn lanes_may_take(&self) -> bool {
        self.lanes_may_take.load(Relaxed)
    }

    fn closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    fn set_lanes_may_take(&self, may: bool) {
        self.lanes_may_take.store(may, Relaxed);
    }

    fn close(&self) {
        self.closed.store(true, Relaxed);
    }

    /// What the queue leaves for the actor after a hand-off, `empty` or not:
    /// tasks the desk may still hand out, or it is closed to callers or holds
    /// back from lanes while tasks are held for a type (the actor decides),
    /// or nothing.
    fn left(&self, empty: bool) -> Left {
        if self.closed() || !self.lanes_may_take() {
            Left::Unknown
        } else if empty {
            Left::Nothing
        } else {
            Left::Tasks
        }
    }
}

/// One shard and the priority of its head as it was last left, on a cache
/// line of its own.
#[repr(align(128))]
struct Shard {
    waiting: Mutex<Waiting>,
    /// [`NO_HEAD`] when empty; written only by [`ShardGuard`] as it lets go.
    head: AtomicU8,
}

/// The shared queue: its shards, and the bell callers ring after adding
/// tasks. A holder of a shard's lock never takes a lane's lock (a lane takes
/// its own, then a shard's), nor a second shard's, except the actor's
/// [`lock`](Self::lock), which takes them all in order.
#[derive(Clone)]
pub(crate) struct SharedQueue(Arc<Inner>);

struct Inner {
    shards: Box<[Shard]>,
    flags: Flags,
    bell: Bell,
    /// How many times tasks went back to the queue from a lane's refill or
    /// the desk that had taken them and panicked before they were in a book
    /// ([`SharedQueue::put_back`]): the one way a task moves from a book's
    /// side back to the queue without the actor.
    put_backs: AtomicU64,
}

impl std::fmt::Debug for SharedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never waits for a lock: a holder may be the one formatting.
        f.debug_struct("SharedQueue")
            .field("shards", &self.0.shards.len())
            .field("looks_empty", &self.looks_empty())
            .field("flags", &self.0.flags)
            .finish_non_exhaustive()
    }
}

impl SharedQueue {
    /// An empty queue in `shards` shards (1 to [`MAX_SHARDS`]), lanes not
    /// yet allowed to take from it.
    pub(crate) fn new(shards: usize) -> Self {
        let shards = (0..shards.clamp(1, MAX_SHARDS))
            .map(|_| Shard {
                waiting: Mutex::default(),
                head: AtomicU8::new(NO_HEAD),
            })
            .collect();
        Self(Arc::new(Inner {
            shards,
            flags: Flags {
                lanes_may_take: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            },
            bell: Bell::default(),
            put_backs: AtomicU64::new(0),
        }))
    }

    /// How many shards it has.
    pub(crate) fn shard_count(&self) -> usize {
        self.0.shards.len()
    }

    /// Shard `index` (taken modulo the count), locked. On poisoning, see
    /// [`Lane::book`](super::Lane::book): a panic leaves no shard half-changed.
    pub(crate) fn shard(&self, index: usize) -> ShardGuard<'_> {
        let index = index % self.0.shards.len();
        let shard = &self.0.shards[index];
        ShardGuard {
            // At most MAX_SHARDS (64) shards.
            index: u8::try_from(index).unwrap_or(u8::MAX),
            waiting: shard.waiting.lock().unwrap_or_else(PoisonError::into_inner),
            head: &shard.head,
            flags: &self.0.flags,
        }
    }

    /// Every shard, locked in order: the actor's view.
    pub(crate) fn lock(&self) -> WholeQueue<'_> {
        WholeQueue {
            shards: (0..self.0.shards.len()).map(|i| self.shard(i)).collect(),
            flags: &self.0.flags,
        }
    }

    /// The shard this thread's callers add their tasks to (threads are dealt
    /// shards in turn as they first submit).
    pub(crate) fn callers_shard(&self) -> usize {
        static DEALT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SEAT: Cell<Option<usize>> = const { Cell::new(None) };
        }
        let count = self.0.shards.len();
        if count == 1 {
            return 0;
        }
        let seat = SEAT.with(|seat| {
            seat.get().unwrap_or_else(|| {
                let dealt = DEALT.fetch_add(1, Relaxed);
                seat.set(Some(dealt));
                dealt
            })
        });
        seat % count
    }

    /// Each shard that does not look empty, with its head's priority, by
    /// the hints.
    fn heads(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.0
            .shards
            .iter()
            .map(|shard| shard.head.load(Relaxed))
            .enumerate()
            .filter(|(_, head)| *head != NO_HEAD)
    }

    /// The shard whose head comes first by the hints (the highest priority),
    /// `first` first among equals, then the shards after it in turn; `None`
    /// when every shard looks empty. A hint may be behind: the shard is to be
    /// looked at under its lock.
    pub(crate) fn best_shard(&self, first: usize) -> Option<usize> {
        let count = self.0.shards.len();
        self.heads()
            .min_by_key(|&(index, head)| (head, (index + count - first % count) % count))
            .map(|(index, _)| index)
    }

    /// The best (lowest) head priority among the shards other than `except`,
    /// by the hints; `None` when they look empty.
    pub(crate) fn best_head_except(&self, except: usize) -> Option<u8> {
        self.heads()
            .filter(|&(index, _)| index != except)
            .map(|(_, head)| head)
            .min()
    }

    /// Whether every shard looked empty as it was last left (a hint).
    pub(crate) fn looks_empty(&self) -> bool {
        self.heads().next().is_none()
    }

    /// Whether lanes may take tasks (a hint without a shard's lock).
    pub(crate) fn lanes_may_take(&self) -> bool {
        self.0.flags.lanes_may_take()
    }

    /// What the queue leaves for the actor after a hand-off, by the hints: a
    /// task another party added may not show yet, which the party that added
    /// it answers for (it rings the actor when its own hand-off leaves tasks).
    pub(crate) fn left(&self) -> Left {
        self.0.flags.left(self.looks_empty())
    }

    /// Puts `tasks`, which a lane's refill or the desk had taken (or a
    /// caller had handed in) and could not start because the pool's code
    /// panicked, back at the head of their shards in their order, and counts
    /// it in [`put_backs`](Self::put_backs) before letting the shards go.
    /// Called under the lock of the book they were going into, so a cancel
    /// that waits for that book sees the count once it has the book. `Err`
    /// with them, untouched, once the queue is closed to callers (a shutdown
    /// drained it).
    pub(crate) fn put_back<I>(&self, tasks: I) -> Result<(), I>
    where
        I: IntoIterator<Item = Pending>,
        I::IntoIter: DoubleEndedIterator,
    {
        let mut waiting = self.lock();
        if waiting.closed() {
            return Err(tasks);
        }
        for pending in tasks.into_iter().rev() {
            waiting.push_front(pending);
        }
        self.0.put_backs.fetch_add(1, Release);
        Ok(())
    }

    /// How many times [`put_back`](Self::put_back) put tasks back so far: a
    /// cancel that found its task nowhere looks again when this changed
    /// while it looked.
    pub(crate) fn put_backs(&self) -> u64 {
        self.0.put_backs.load(Acquire)
    }

    /// Tells the actor that tasks were added (rings after adding them).
    pub(crate) fn ring(&self) {
        self.0.bell.ring();
    }

    /// Resolves once the bell rang since it last resolved.
    pub(crate) async fn rung(&self) {
        self.0.bell.rung().await;
    }
}

/// How many shards a pool's queue is split in when `queue_shards` leaves it
/// to the pool: one with `prefetch` 0 (strict priority order), else one for
/// every two workers the machine can run at once, up to 16.
pub(crate) fn auto_shards(prefetch: u32, max_workers: usize) -> usize {
    if prefetch == 0 {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (max_workers.min(cores) / 2).clamp(1, 16)
}

#[cfg(test)]
mod tests;
