//! The hand-off desk: a caller that queued tasks hands them straight to the
//! lanes of workers with a free run slot, where the balance policy picks,
//! without waking the actor; to a worker that held no task it writes them
//! itself ([`Lane::write_or_ring`]), without waking the lane's task either.
//! The actor keeps the desk's seats (one per ready worker), shares the policy
//! with it, and is rung only for what the desk leaves: tasks no idle worker
//! took, held or routed tasks, a worker's deadline timer to arm.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Pending, Shared};
use super::clock::Now;
use super::events::PoolEvent;
use super::lane::attempt::{Target, Unwritable};
use super::lane::feed::{start, take_head, Started, Took};
use super::lane::{Book, Lane};
use super::routing::{TaskTypes, TypeFilter};
use crate::balance::{BalancePolicy, WorkerSnapshot};

/// The desk: the policy and the seats behind one lock. Lock order: the desk,
/// then a lane's book or the queue (one at a time).
pub(crate) struct Desk {
    counter: Mutex<Counter>,
    /// The task settings every attempt is written with.
    settings: DeskSettings,
}

/// The pool settings a hand-off writes attempts with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeskSettings {
    /// Tasks a worker runs at once: a worker holding fewer has a free slot.
    pub(crate) concurrency: u32,
    pub(crate) default_timeout: Duration,
    pub(crate) max_frame: usize,
    /// Whether callers may hand off at all: not when workers have a task limit
    /// (the actor counts each worker's tasks against it), nor when a probe
    /// judges each completion (the actor judges before it hands out more).
    pub(crate) open: bool,
}

struct Counter {
    policy: Box<dyn BalancePolicy>,
    /// Ready workers, in ascending number (the order policies are given).
    seats: Vec<Seat>,
    /// Scratch: the workers with a free slot, and their places in `seats`.
    candidates: Vec<WorkerSnapshot>,
    seat_of: Vec<usize>,
    /// Deadlines of attempts handed off that the worker's timer does not
    /// cover: the actor arms them when rung.
    timers_wanted: Vec<(u64, Instant)>,
    /// The task types every seated worker takes, when they all take the same
    /// (one worker program, or none stated); `None` when they differ, and the
    /// actor routes every task.
    types: Option<TypeFilter>,
}

/// A ready worker at the desk.
struct Seat {
    num: u64,
    lane: Lane,
    /// The task types the worker stated.
    types: TaskTypes,
}

/// What placing the queue's head on a seat did.
enum Placed {
    /// Written into the worker's batch; what it left in the queue, and how
    /// the frame is to reach the worker.
    Yes(Started, Left, Delivery),
    /// The seat has no free run slot (any more), or no longer takes tasks.
    Full,
    /// The head's frame could not be encoded: it is to be failed.
    Unwritable(Box<Unwritable>),
    /// Nothing was taken: the reason the hand-off stops.
    Stop(Left),
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never waits for the lock: a holder may be the one formatting.
        let seats = self.counter.try_lock().ok().map(|c| c.seats.len());
        f.debug_struct("Desk")
            .field("seats", &seats)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Desk {
    pub(crate) fn new(policy: Box<dyn BalancePolicy>, settings: DeskSettings) -> Self {
        Self {
            counter: Mutex::new(Counter {
                policy,
                seats: Vec::new(),
                candidates: Vec::new(),
                seat_of: Vec::new(),
                timers_wanted: Vec::new(),
                types: Some(TypeFilter::default()),
            }),
            settings,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counter> {
        // Nothing the desk does leaves it half-changed on a panic (a policy's
        // panic leaves the candidates scratch, cleared before each use).
        self.counter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy's pick among `candidates` (the first when it picks out of
    /// range, logged).
    pub(crate) fn pick(&self, candidates: &[WorkerSnapshot]) -> usize {
        pick(&mut *self.lock().policy, candidates)
    }

    /// Worker `num` is ready: callers may hand it tasks through its lane.
    /// It takes `types`.
    pub(crate) fn seat(&self, num: u64, lane: Lane, types: TaskTypes) {
        let mut counter = self.lock();
        let at = counter.seats.partition_point(|s| s.num < num);
        counter.seats.insert(at, Seat { num, lane, types });
        counter.seats_changed();
    }

    /// Worker `num` is gone.
    pub(crate) fn unseat(&self, num: u64) {
        let mut counter = self.lock();
        counter.seats.retain(|s| s.num != num);
        counter.seats_changed();
    }

    /// The actor is gone (it panicked): every seated worker's input is
    /// closed, so it exits once it has read what waits for it, and the desk
    /// lets go of the lanes.
    pub(crate) fn close_all(&self) {
        let mut counter = self.lock();
        for seat in &counter.seats {
            seat.lane.book().close_input();
            seat.lane.ring_batch();
        }
        counter.seats.clear();
        counter.seats_changed();
    }

    /// Every worker is gone: the desk lets go of their lanes.
    pub(crate) fn clear(&self) {
        let mut counter = self.lock();
        counter.seats.clear();
        counter.seats_changed();
    }

    /// The deadlines handed-off attempts need armed, for the actor.
    pub(crate) fn take_timers_wanted(&self) -> Vec<(u64, Instant)> {
        std::mem::take(&mut self.lock().timers_wanted)
    }

    /// Hands tasks from the head of the queue to workers with a free run slot,
    /// as the policy picks them, as the actor's dispatch would, their
    /// attempts started at `now` (the caller's reading of the clock as it
    /// queued them: the hand-off follows at once). `true` when
    /// nothing is left for the actor; `false` when it must be rung: tasks are
    /// still queued (or the desk did not hand off), or a deadline timer must
    /// be armed.
    ///
    /// A task leaves the queue only under the lock of the book it goes into
    /// (the book's, then the queue's, as a lane refills), so whoever looks for
    /// it (a cancel, a drain) finds it in one or the other.
    pub(crate) fn hand_off(&self, shared: &Shared, now: Now) -> bool {
        let settings = self.settings;
        if !settings.open {
            return false;
        }
        let mut unwritable = Vec::new();
        let mut to_write = ToWrite::default();
        let left = {
            let mut counter = self.lock();
            let counter = &mut *counter;
            let Some(filter) = &mut counter.types else {
                return false;
            };
            gather(
                &counter.seats,
                settings.concurrency,
                &mut counter.candidates,
                &mut counter.seat_of,
            );
            let mut left = Left::Tasks;
            let mut freed_slots = 0;
            while !counter.candidates.is_empty() {
                // Asked only while a task waits: a policy hears of the tasks
                // it places.
                let now_left = shared.queue.left();
                if now_left != Left::Tasks {
                    left = now_left;
                    break;
                }
                let index = pick(&mut *counter.policy, &counter.candidates);
                let seat = &counter.seats[counter.seat_of[index]];
                match seat.place(shared, &settings, filter, now) {
                    Placed::Yes(placed, now_left, delivery) => {
                        // A second task for a worker this caller writes to
                        // goes in the same write.
                        match delivery {
                            Delivery::Ring if !to_write.has(&seat.lane) => {
                                seat.lane.ring_batch();
                            }
                            Delivery::Write | Delivery::Ring => to_write.add(&seat.lane),
                        }
                        freed_slots += usize::from(placed.freed_slot);
                        if let Some(deadline) = placed.timer {
                            counter.timers_wanted.push((seat.num, deadline));
                        }
                        left = now_left;
                        let candidate = &mut counter.candidates[index];
                        candidate.in_flight += 1;
                        if placed.alone || candidate.in_flight >= settings.concurrency {
                            counter.candidates.remove(index);
                            counter.seat_of.remove(index);
                        }
                    }
                    Placed::Full => {
                        counter.candidates.remove(index);
                        counter.seat_of.remove(index);
                    }
                    Placed::Unwritable(failed) => unwritable.push(failed),
                    Placed::Stop(why) => {
                        left = why;
                        break;
                    }
                }
            }
            if freed_slots > 0 {
                shared.queue_slots.add_permits(freed_slots);
            }
            if !counter.timers_wanted.is_empty() {
                left = Left::Unknown;
            }
            left
        };
        // Written, and told, with no lock held.
        to_write.write();
        for failed in unwritable {
            failed.settle(shared);
        }
        left == Left::Nothing
    }
}

impl Desk {
    /// Hands the task in `new`, which its caller has not queued, straight to
    /// a worker with a free run slot, as the policy picks. Only while nothing
    /// waits in the queue (so it passes no queued task, and strict priority
    /// order holds with `prefetch` 0) and the queue is open to callers and to
    /// lanes, as seen before the policy picks and again under the picked
    /// worker's book lock, and while the desk hands off. A submit to a pool
    /// with an idle worker then takes no queue lock and no queue slot. The
    /// task is counted as submitted, with its `TaskQueued` event, once a
    /// worker's book has room for it, and taken out of `new`; else it is left
    /// there untouched, for its caller to queue.
    pub(crate) fn hand_new(&self, shared: &Shared, new: &mut Option<Pending>) {
        let settings = self.settings;
        if !settings.open || shared.queue.left() != Left::Nothing {
            return;
        }
        let now = shared.clock.now();
        let started = {
            let mut counter = self.lock();
            let counter = &mut *counter;
            let takes = counter.types.as_mut().is_some_and(|filter| {
                new.as_ref()
                    .is_some_and(|pending| filter.takes(&pending.task.task_type))
            });
            if !takes {
                return;
            }
            gather(
                &counter.seats,
                settings.concurrency,
                &mut counter.candidates,
                &mut counter.seat_of,
            );
            loop {
                if counter.candidates.is_empty() {
                    return;
                }
                let index = pick(&mut *counter.policy, &counter.candidates);
                let seat = &counter.seats[counter.seat_of[index]];
                match seat.start_new(shared, &settings, new, now) {
                    NewStart::Started(started, delivery) => {
                        if let Some(deadline) = started.timer {
                            counter.timers_wanted.push((seat.num, deadline));
                        }
                        break Ok((seat.lane.clone(), delivery, started.timer));
                    }
                    NewStart::Full => {
                        counter.candidates.remove(index);
                        counter.seat_of.remove(index);
                    }
                    NewStart::Stop => return,
                    NewStart::Unwritable(failed) => break Err(failed),
                }
            }
        };
        // Written, or failed, and told, with no lock held.
        let (lane, delivery, timer) = match started {
            Ok(started) => started,
            Err(failed) => {
                failed.settle(shared);
                return;
            }
        };
        match delivery {
            Delivery::Write => lane.write_or_ring(),
            Delivery::Ring => lane.ring_batch(),
        }
        if timer.is_some() {
            shared.queue.ring();
        }
    }
}

/// What [`Seat::start_new`] did with a new task.
enum NewStart {
    /// Its attempt was written into the worker's batch; how the frame is to
    /// reach the worker.
    Started(Started, Delivery),
    /// The worker has no free run slot (any more), or does not take it now:
    /// the task was left where it was.
    Full,
    /// Tasks were queued or held, or the queue closed, since the desk looked:
    /// the task was left where it was, for its caller to queue.
    Stop,
    /// Its frame could not be encoded: it is to be failed.
    Unwritable(Box<Unwritable>),
}

/// What a hand-off left for the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// The queue is empty.
    Nothing,
    /// Tasks still wait (for room in windows, or for another worker).
    Tasks,
    /// The queue is closed or lanes may not take from it, the head is not a
    /// task the desk hands off, or a timer must be armed: the actor decides.
    Unknown,
}

impl Counter {
    /// After a worker sat down or left: whether they all take the same types.
    fn seats_changed(&mut self) {
        let mut seats = self.seats.iter();
        self.types = match seats.next() {
            None => Some(TypeFilter::default()),
            Some(first) => seats
                .all(|s| s.types == first.types)
                .then(|| TypeFilter::new(first.types.clone())),
        };
    }
}

/// Lists the seats with a free run slot as the policy's `candidates`, and
/// their places in `seats`, from each worker's occupancy as its book was last
/// let go (no book's lock taken: [`Seat::place`] looks again under it, and a
/// hint that is behind costs a task left for the lane's refill or the actor,
/// never a task).
fn gather(
    seats: &[Seat],
    concurrency: u32,
    candidates: &mut Vec<WorkerSnapshot>,
    seat_of: &mut Vec<usize>,
) {
    candidates.clear();
    seat_of.clear();
    for (at, seat) in seats.iter().enumerate() {
        // A worker not fed reads as full (`NOT_FED`).
        let held = seat.lane.occupancy();
        if held < concurrency {
            candidates.push(WorkerSnapshot::new(
                seat.num,
                held,
                seat.lane.answered(),
                concurrency,
            ));
            seat_of.push(at);
        }
    }
}

impl Seat {
    /// Takes the queue's head into the worker's batch ([`take_head`]) and
    /// rings its lane's writer, if the worker still takes from the queue and
    /// has a free run slot, and the head is a task it takes (`filter`).
    fn place(
        &self,
        shared: &Shared,
        settings: &DeskSettings,
        filter: &mut TypeFilter,
        now: Now,
    ) -> Placed {
        let target = self.target(shared, settings);
        let mut book = self.lane.book();
        let Some(delivery) = room(&book, settings) else {
            return Placed::Full;
        };
        // From the shard whose head comes first, this caller's own first
        // among equals (it just added its tasks there); a shard that ran dry
        // since its hint was left is passed over, each looked at once.
        let queue = &shared.queue;
        let mut took = Took::Empty;
        for _ in 0..queue.shard_count() {
            let Some(index) = queue.best_shard(queue.callers_shard()) else {
                break;
            };
            let waiting = queue.shard(index);
            if waiting.closed() || !waiting.lanes_may_take() {
                return Placed::Stop(Left::Unknown);
            }
            took = take_head(&mut book, waiting, filter, &target, now);
            if !matches!(took, Took::Empty) {
                break;
            }
        }
        let left = queue.left();
        match took {
            // The frame waits in the batch until the hand-off writes it.
            Took::Started(started) => Placed::Yes(started, left, delivery),
            Took::Unwritable(failed) => Placed::Unwritable(failed),
            // A type the workers do not take, or a task that must run alone:
            // the actor holds, fails or places it.
            Took::Refused => Placed::Stop(Left::Unknown),
            // Every shard looked at ran dry: what the hints still show is
            // the actor's.
            Took::Empty => Placed::Stop(left),
        }
    }
}

impl Seat {
    /// The worker as an attempt is written to it.
    fn target<'a>(&'a self, shared: &'a Shared, settings: &DeskSettings) -> Target<'a> {
        Target {
            shared,
            num: self.num,
            name: self.lane.name(),
            concurrency: settings.concurrency as usize,
            default_timeout: settings.default_timeout,
            max_frame: settings.max_frame,
        }
    }

    /// Starts the task in `new`, which no queue held, on the worker (taking
    /// it out of `new`), if the worker still takes tasks and has a free run
    /// slot, and the queue is still empty and open ([`Desk::hand_new`]).
    fn start_new(
        &self,
        shared: &Shared,
        settings: &DeskSettings,
        new: &mut Option<Pending>,
        now: Now,
    ) -> NewStart {
        let target = self.target(shared, settings);
        let mut book = self.lane.book();
        // Looked at again now that the pick is made: a task queued, a task
        // held for a type or a shutdown begun meanwhile comes first (a hint
        // behind by a moment is a submit that came just before it).
        if shared.queue.left() != Left::Nothing {
            return NewStart::Stop;
        }
        let takes = new.as_ref().is_some_and(|pending| book.may_take(pending));
        let Some(delivery) = room(&book, settings).filter(|_| takes) else {
            return NewStart::Full;
        };
        let Some(mut pending) = new.take() else {
            return NewStart::Full;
        };
        let queue = &shared.queue;
        pending.shard = u8::try_from(queue.callers_shard()).unwrap_or(0);
        pending.queued_at = now.moment;
        // Never queued, so it took no queue slot.
        pending.holds_queue_slot = false;
        shared.stats.submitted.fetch_add(1, Relaxed);
        let (id, priority) = (pending.id, pending.task.priority);
        shared.emit_routine(|| PoolEvent::TaskQueued { task: id, priority });
        match start(&mut book, &target, pending, now) {
            Ok(started) => NewStart::Started(started, delivery),
            Err(failed) => NewStart::Unwritable(failed),
        }
    }
}

/// How a frame written into `book` reaches its worker, if the worker still
/// takes tasks from the queue and has a free run slot: an idle worker waits
/// for it, so the caller writes it; a busy one is written to by its lane,
/// after its next read, with the tasks its refill takes, in one write.
fn room(book: &Book, settings: &DeskSettings) -> Option<Delivery> {
    if !book.takes_from_queue() || book.len() >= settings.concurrency as usize {
        return None;
    }
    Some(if book.is_empty() {
        Delivery::Write
    } else {
        Delivery::Ring
    })
}

/// How a frame the desk left in a book's batch reaches the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The caller writes it once the desk's lock is released.
    Write,
    /// The lane's task is rung to write it.
    Ring,
}

/// The lanes a hand-off left frames for in their books' batches, each once:
/// written (or rung) once the desk's lock is released, so a caller's write
/// holds up no other caller.
#[derive(Default)]
struct ToWrite {
    first: Option<Lane>,
    more: Vec<Lane>,
}

impl ToWrite {
    fn has(&self, lane: &Lane) -> bool {
        let known = |l: &Lane| l.is(lane);
        self.first.as_ref().is_some_and(known) || self.more.iter().any(known)
    }

    fn add(&mut self, lane: &Lane) {
        if self.has(lane) {
            return;
        }
        match self.first {
            None => self.first = Some(lane.clone()),
            Some(_) => self.more.push(lane.clone()),
        }
    }

    fn write(self) {
        for lane in self.first.iter().chain(&self.more) {
            lane.write_or_ring();
        }
    }
}

/// `policy`'s pick among `candidates` (never empty); the first when it picks
/// out of range.
fn pick(policy: &mut dyn BalancePolicy, candidates: &[WorkerSnapshot]) -> usize {
    let picked = policy.pick(candidates);
    if picked < candidates.len() {
        return picked;
    }
    tracing::warn!(
        policy = policy.name(),
        picked,
        candidates = candidates.len(),
        "balance policy picked an index out of range; using the first candidate"
    );
    0
}
