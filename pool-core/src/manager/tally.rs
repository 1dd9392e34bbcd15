//! What each lane counts, with one writer per counter, merged when read.
//!
//! A task's path through a lane touches the counters of its metrics
//! (dispatches, completions, time waited and run, tasks in flight, the two
//! latency histograms). Each lane's book owns a [`TallyWriter`], the only
//! writer of its [`LaneTally`]: the book is locked whenever it writes, so a
//! count is a load and a store on a line no other lane writes, never a
//! read-modify-write on a line every lane shares. [`Tallies`] lists the live
//! lanes' tallies and folds in a lane's counts when its book goes, so
//! [`Tallies::totals`] (read by [`Pool::metrics`](super::Pool::metrics)) sums
//! the live lanes and what retired ones counted. The gauges of ready and
//! busy workers are read the same way, from each live lane's tasks in flight
//! and whether its worker takes tasks, so they are current without the actor
//! hearing of every answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use super::histogram::{add, Latency, LatencySummary};

/// The counts of one lane (or of every retired lane), each with one writer.
#[derive(Debug)]
pub(crate) struct LaneTally {
    dispatches: AtomicU64,
    reused_dispatches: AtomicU64,
    wait_us_total: AtomicU64,
    completed: AtomicU64,
    run_us_total: AtomicU64,
    in_flight: AtomicU64,
    /// Tasks its worker answered (with a result or an error).
    answered: AtomicU64,
    /// Its worker takes new tasks (serving and healthy; set by the actor).
    takes_tasks: AtomicBool,
    /// The most tasks its worker runs at once (`worker_concurrency`).
    capacity: u64,
    queue_wait: Latency,
    run_time: Latency,
}

impl LaneTally {
    fn new(capacity: u64) -> Self {
        Self {
            dispatches: AtomicU64::new(0),
            reused_dispatches: AtomicU64::new(0),
            wait_us_total: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            run_us_total: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            takes_tasks: AtomicBool::new(false),
            capacity,
            queue_wait: Latency::new(),
            run_time: Latency::new(),
        }
    }

    /// Its worker takes tasks and has room for one more.
    fn ready(&self) -> bool {
        self.takes_tasks.load(Relaxed) && self.in_flight.load(Relaxed) < self.capacity
    }

    /// Adds what `other` counted (this tally's one writer only).
    fn absorb(&self, other: &LaneTally, epoch: u64) {
        for (mine, theirs) in [
            (&self.dispatches, &other.dispatches),
            (&self.reused_dispatches, &other.reused_dispatches),
            (&self.wait_us_total, &other.wait_us_total),
            (&self.completed, &other.completed),
            (&self.run_us_total, &other.run_us_total),
            (&self.in_flight, &other.in_flight),
        ] {
            add(mine, theirs.load(Relaxed));
        }
        self.queue_wait.absorb(&other.queue_wait, epoch);
        self.run_time.absorb(&other.run_time, epoch);
    }
}

/// Proof that a completion was counted: [`Answer::completed`] takes one, so a
/// task cannot be answered with its result uncounted.
///
/// [`Answer::completed`]: super::ledger::Answer::completed
#[derive(Debug)]
#[must_use = "a counted completion is to be answered"]
pub(crate) struct Counted(());

/// The one writer of a lane's tally, owned by the lane's book. When the book
/// goes, its counts join the retired lanes' total.
#[derive(Debug)]
pub(crate) struct TallyWriter {
    tally: Arc<LaneTally>,
    tallies: Arc<Tallies>,
}

impl TallyWriter {
    /// An attempt was written to the worker after waiting `waited_us`;
    /// `reused`: the worker had run tasks before.
    pub(crate) fn dispatched(&mut self, reused: bool, waited_us: u64) {
        let tally = &self.tally;
        add(&tally.dispatches, 1);
        if reused {
            add(&tally.reused_dispatches, 1);
        }
        add(&tally.wait_us_total, waited_us);
        tally.queue_wait.record(waited_us, self.tallies.epoch());
    }

    /// Attempts this lane wrote to its worker.
    pub(crate) fn dispatches(&self) -> u64 {
        self.tally.dispatches.load(Relaxed)
    }

    /// A task completed after running `run_us`.
    pub(crate) fn completed(&mut self, run_us: u64) -> Counted {
        let tally = &self.tally;
        add(&tally.completed, 1);
        add(&tally.run_us_total, run_us);
        tally.run_time.record(run_us, self.tallies.epoch());
        Counted(())
    }

    /// `n` more tasks are in flight in this lane.
    pub(crate) fn in_flight_up(&mut self, n: u64) {
        add(&self.tally.in_flight, n);
    }

    /// `n` tasks left this lane's flight.
    pub(crate) fn in_flight_down(&mut self, n: u64) {
        let in_flight = &self.tally.in_flight;
        in_flight.store(in_flight.load(Relaxed).saturating_sub(n), Relaxed);
    }

    /// The worker answered a task (with a result or an error).
    pub(crate) fn answered(&mut self) {
        add(&self.tally.answered, 1);
    }

    /// Whether the worker takes new tasks (the actor's say, under the book's lock).
    pub(crate) fn set_takes_tasks(&mut self, takes: bool) {
        self.tally.takes_tasks.store(takes, Relaxed);
    }
}

impl TallyWriter {
    /// A reader of this lane's gauge of tasks in flight.
    pub(crate) fn reader(&self) -> TallyReader {
        TallyReader(Arc::clone(&self.tally))
    }
}

/// Reads a lane's counts without its book's lock, as its writer last stored
/// them.
#[derive(Debug, Clone)]
pub(crate) struct TallyReader(Arc<LaneTally>);

impl TallyReader {
    /// Tasks the lane's worker answered.
    pub(crate) fn answered(&self) -> u64 {
        self.0.answered.load(Relaxed)
    }
}

impl Drop for TallyWriter {
    fn drop(&mut self) {
        let mut lanes = self.tallies.lock();
        // Read under the lock: the retired total sees its absorptions' epochs
        // in order.
        let epoch = self.tallies.epoch();
        lanes.retired.absorb(&self.tally, epoch);
        lanes.live.retain(|t| !Arc::ptr_eq(t, &self.tally));
    }
}

/// The tallies of the live lanes and the total of the retired ones.
#[derive(Debug)]
struct Lanes {
    live: Vec<Arc<LaneTally>>,
    /// Written only under the lock.
    retired: LaneTally,
}

/// Every lane's tally, and the epoch of the latency histograms' recent window.
#[derive(Debug)]
pub(crate) struct Tallies {
    epoch: AtomicU64,
    lanes: Mutex<Lanes>,
}

/// The sums over every lane, live or retired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Totals {
    pub(crate) dispatches: u64,
    pub(crate) reused_dispatches: u64,
    pub(crate) wait_us_total: u64,
    pub(crate) completed: u64,
    pub(crate) run_us_total: u64,
    pub(crate) in_flight: u64,
    /// Live lanes whose worker takes tasks and has room for one more.
    pub(crate) ready: u64,
    /// Live lanes with a task in flight.
    pub(crate) busy: u64,
    pub(crate) queue_wait: LatencySummary,
    pub(crate) run_time: LatencySummary,
}

impl Tallies {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: AtomicU64::new(0),
            lanes: Mutex::new(Lanes {
                live: Vec::new(),
                retired: LaneTally::new(0),
            }),
        })
    }

    /// A new lane's tally, listed until its writer goes; its worker runs up
    /// to `capacity` tasks at once.
    pub(crate) fn writer(self: &Arc<Self>, capacity: u64) -> TallyWriter {
        let tally = Arc::new(LaneTally::new(capacity));
        self.lock().live.push(tally.clone());
        TallyWriter {
            tally,
            tallies: self.clone(),
        }
    }

    /// Starts a new half of the latency histograms' recent window, forgetting
    /// the oldest one.
    pub(crate) fn rotate(&self) {
        self.epoch.fetch_add(1, Relaxed);
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    /// The lanes, locked. Nothing under this lock panics halfway through a
    /// change that matters: a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sums over every lane, read counter by counter.
    pub(crate) fn totals(&self) -> Totals {
        let epoch = self.epoch();
        let lanes = self.lock();
        let all: Vec<&LaneTally> = std::iter::once(&lanes.retired)
            .chain(lanes.live.iter().map(|t| &**t))
            .collect();
        let sum = |field: fn(&LaneTally) -> &AtomicU64| -> u64 {
            all.iter()
                .fold(0u64, |total, t| total.wrapping_add(field(t).load(Relaxed)))
        };
        let latency = |field: fn(&LaneTally) -> &Latency| {
            let parts: Vec<&Latency> = all.iter().map(|t| field(t)).collect();
            Latency::summary(&parts, epoch)
        };
        Totals {
            dispatches: sum(|t| &t.dispatches),
            reused_dispatches: sum(|t| &t.reused_dispatches),
            wait_us_total: sum(|t| &t.wait_us_total),
            completed: sum(|t| &t.completed),
            run_us_total: sum(|t| &t.run_us_total),
            in_flight: sum(|t| &t.in_flight),
            ready: lanes.live.iter().filter(|t| t.ready()).count() as u64,
            busy: lanes
                .live
                .iter()
                .filter(|t| t.in_flight.load(Relaxed) > 0)
                .count() as u64,
            queue_wait: latency(|t| &t.queue_wait),
            run_time: latency(|t| &t.run_time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_live_lanes() {
        let tallies = Tallies::new();
        let mut a = tallies.writer(1);
        let mut b = tallies.writer(1);
        a.dispatched(false, 10);
        b.dispatched(true, 30);
        a.in_flight_up(1);
        b.in_flight_up(1);
        let _ = a.completed(100);
        a.in_flight_down(1);
        let totals = tallies.totals();
        assert_eq!(totals.dispatches, 2);
        assert_eq!(totals.reused_dispatches, 1);
        assert_eq!(totals.wait_us_total, 40);
        assert_eq!(totals.completed, 1);
        assert_eq!(totals.run_us_total, 100);
        assert_eq!(totals.in_flight, 1);
        assert_eq!(totals.queue_wait.lifetime.count, 2);
        assert_eq!(totals.run_time.lifetime.count, 1);
    }

    #[test]
    fn ready_and_busy_count_live_lanes_by_their_room_and_their_say() {
        let tallies = Tallies::new();
        let mut idle = tallies.writer(2);
        let mut full = tallies.writer(2);
        let mut launching = tallies.writer(2);
        assert_eq!((tallies.totals().ready, tallies.totals().busy), (0, 0));
        idle.set_takes_tasks(true);
        full.set_takes_tasks(true);
        full.in_flight_up(2);
        launching.in_flight_up(1);
        let totals = tallies.totals();
        assert_eq!((totals.ready, totals.busy), (1, 2));
        full.in_flight_down(1);
        assert_eq!(tallies.totals().ready, 2, "room again");
        drop(idle);
        let totals = tallies.totals();
        assert_eq!(
            (totals.ready, totals.busy),
            (1, 2),
            "a gone lane counts for nothing"
        );
    }

    #[test]
    fn a_retired_lane_keeps_counting_in_the_totals() {
        let tallies = Tallies::new();
        let mut gone = tallies.writer(1);
        gone.dispatched(false, 5);
        let _ = gone.completed(7);
        let before = tallies.totals();
        drop(gone);
        assert_eq!(
            tallies.totals(),
            before,
            "nothing lost, nothing counted twice"
        );
        let mut next = tallies.writer(1);
        let _ = next.completed(9);
        assert_eq!(tallies.totals().completed, 2);
        assert_eq!(tallies.lock().live.len(), 1, "the retired lane is unlisted");
    }

    #[test]
    fn rotating_twice_empties_the_recent_window_of_every_lane() {
        let tallies = Tallies::new();
        let mut live = tallies.writer(1);
        let mut gone = tallies.writer(1);
        let _ = live.completed(1);
        let _ = gone.completed(2);
        drop(gone);
        tallies.rotate();
        assert_eq!(tallies.totals().run_time.recent.count, 2);
        tallies.rotate();
        let totals = tallies.totals();
        assert_eq!(totals.run_time.recent.count, 0);
        assert_eq!(totals.run_time.lifetime.count, 2);
    }
}
