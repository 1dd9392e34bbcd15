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
    /// The task whose start panics, as a bug there would, between its frame
    /// and its place in the book (0 for none): [`Desk::panic_when_starting`].
    #[cfg(test)]
    panic_starting: std::sync::atomic::AtomicU64,
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
            #[cfg(test)]
            panic_starting: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes the desk panic, as a bug would, while it starts task `id`'s
    /// attempt, once its frame is in the worker's batch and before the task
    /// is in the book.
    #[cfg(test)]
    pub(crate) fn panic_when_starting(&self, id: u64) {
        self.panic_starting.store(id, Relaxed);
    }

    /// Panics if [`panic_when_starting`](Self::panic_when_starting) asked
    /// for it for task `id`.
    #[cfg(test)]
    pub(crate) fn panic_if_requested(&self, id: u64) {
        assert!(
            self.panic_starting.load(Relaxed) != id,
            "panic requested by Desk::panic_when_starting"
        );
    }

    fn lock(&self) -> MutexGuard<'_, Counter> {
        // Nothing the desk does leaves it half-changed on a panic (a policy's
        // panic leaves the candidates scratch, cleared before each use).
        self.counter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`lock`](Self::lock) without waiting: `None` while someone holds it.
    fn try_lock(&self) -> Option<MutexGuard<'_, Counter>> {
        match self.counter.try_lock() {
            Ok(counter) => Some(counter),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The policy's pick among `candidates` (the first when it picks out of
    /// range, logged); `None`, at once, while a caller holds the desk (it is
    /// in the policy itself, or handing tasks off: it rings the actor when
    /// tasks are left), so the actor never waits for a caller's policy.
    pub(crate) fn try_pick(&self, candidates: &[WorkerSnapshot]) -> Option<usize> {
        let mut counter = self.try_lock()?;
        Some(pick(&mut *counter.policy, candidates))
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

    /// The deadlines handed-off attempts need armed, for the actor; `None`,
    /// at once, while a caller holds the desk (see [`try_pick`](Self::try_pick)).
    pub(crate) fn try_take_timers_wanted(&self) -> Option<Vec<(u64, Instant)>> {
        Some(std::mem::take(&mut self.try_lock()?.timers_wanted))
    }

    /// Hands tasks from the head of the queue to workers with a free run slot,
    /// as the policy picks them, as the actor's dispatch would, each attempt
    /// started at a reading of the clock taken under its book's lock
    /// ([`take_head`]). `true` when
    /// nothing is left for the actor; `false` when it must be rung: tasks are
    /// still queued (or the desk did not hand off), or a deadline timer must
    /// be armed.
    ///
    /// A task leaves the queue only under the lock of the book it goes into
    /// (the book's, then the queue's, as a lane refills), so whoever looks for
    /// it (a cancel, a drain) finds it in one or the other.
    pub(crate) fn hand_off(&self, shared: &Shared) -> bool {
        let settings = self.settings;
        if !settings.open {
            return false;
        }
        // Finished as it is dropped, after the desk's lock, also if a start
        // unwinds.
        let mut handed = Handed {
            shared,
            to_write: ToWrite::default(),
            unwritable: Vec::new(),
            freed_slots: 0,
        };
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
                match seat.place(shared, &settings, filter) {
                    Placed::Yes(placed, now_left, delivery) => {
                        // A second task for a worker this caller writes to
                        // goes in the same write.
                        match delivery {
                            Delivery::Ring if !handed.to_write.has(&seat.lane) => {
                                seat.lane.ring_batch();
                            }
                            Delivery::Write | Delivery::Ring => handed.to_write.add(&seat.lane),
                        }
                        handed.freed_slots += usize::from(placed.freed_slot);
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
                    Placed::Unwritable(failed) => handed.unwritable.push(*failed),
                    Placed::Stop(why) => {
                        left = why;
                        break;
                    }
                }
            }
            if !counter.timers_wanted.is_empty() {
                left = Left::Unknown;
            }
            left
        };
        // Written, and told, with no lock held.
        drop(handed);
        left == Left::Nothing
    }
}

/// What a hand-off leaves to do once the desk's lock is let go, done as it
/// is dropped: the queue slots the tasks it placed gave back are returned,
/// the frames it left in books' batches written (or their lanes rung), and
/// the tasks whose frames could not be encoded failed. Dropped when the
/// hand-off unwinds too (a bug's panic while it started a task: that task
/// went back, [`start`]), so the tasks placed before are not left unwritten
/// and unseen.
struct Handed<'a> {
    shared: &'a Shared,
    to_write: ToWrite,
    unwritable: Vec<Unwritable>,
    freed_slots: usize,
}

impl Drop for Handed<'_> {
    fn drop(&mut self) {
        if self.freed_slots > 0 {
            self.shared.queue_slots.add_permits(self.freed_slots);
        }
        let to_write = std::mem::take(&mut self.to_write);
        if std::thread::panicking() {
            // Unwinding: the lanes' own tasks write (a writer that panicked
            // now would abort the process), and the actor is rung to arm the
            // placed tasks' deadlines and hand out what the panic left.
            to_write.ring();
            self.shared.queue.ring();
        } else {
            to_write.write();
        }
        for failed in self.unwritable.drain(..) {
            failed.settle(self.shared);
        }
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
                match seat.start_new(shared, &settings, new) {
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
    fn place(&self, shared: &Shared, settings: &DeskSettings, filter: &mut TypeFilter) -> Placed {
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
            took = take_head(&mut book, waiting, filter, &target);
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
    /// slot, and the queue is still empty and open ([`Desk::hand_new`]). The
    /// clock is read here, under the book's lock, for the time it counts as
    /// queued and its attempt's start: a caller that waited for a lock or
    /// was preempted before costs the task none of its timeout.
    fn start_new(
        &self,
        shared: &Shared,
        settings: &DeskSettings,
        new: &mut Option<Pending>,
    ) -> NewStart {
        let target = self.target(shared, settings);
        let mut book = self.lane.book();
        // Looked at again now that the pick is made: a task queued, a task
        // held for a type or a shutdown begun meanwhile comes first (a hint
        // behind by a moment is a submit that came just before it).
        if shared.queue.left() != Left::Nothing {
            return NewStart::Stop;
        }
        // The link is asked last: a worker that would not take the task
        // leaves no mark for its lane's writer.
        if !new.as_ref().is_some_and(|pending| book.may_take(pending)) {
            return NewStart::Full;
        }
        let Some(delivery) = room(&book, settings) else {
            return NewStart::Full;
        };
        let Some(pending) = new.as_mut() else {
            return NewStart::Full;
        };
        let now = shared.clock.now();
        let queue = &shared.queue;
        pending.shard = u8::try_from(queue.callers_shard()).unwrap_or(0);
        pending.queued_at = now.moment;
        // Never queued, so it took no queue slot.
        pending.holds_queue_slot = false;
        shared.stats.submitted.fetch_add(1, Relaxed);
        let (id, priority) = (pending.id, pending.task.priority);
        shared.emit_routine(|| PoolEvent::TaskQueued { task: id, priority });
        match start(&mut book, &target, new, now) {
            Some(Ok(started)) => NewStart::Started(started, delivery),
            Some(Err(failed)) => NewStart::Unwritable(failed),
            None => NewStart::Full,
        }
    }
}

/// How a frame written into `book` reaches its worker, if the worker still
/// takes tasks from the queue, has a free run slot and its link room for a
/// frame ([`link_ahead`](super::lane::link_ahead)): an idle worker waits
/// for it, so the caller writes it; a busy one is written to by its lane,
/// after its next read, with the tasks its refill takes, in one write.
fn room(book: &Book, settings: &DeskSettings) -> Option<Delivery> {
    if !book.takes_from_queue()
        || book.len() >= settings.concurrency as usize
        || book.link_room() == 0
    {
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

    /// Leaves the writing to each lane's own task.
    fn ring(self) {
        for lane in self.first.iter().chain(&self.more) {
            lane.ring_batch();
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio::sync::oneshot;

    use super::*;
    use crate::balance::FirstAvailable;
    use crate::manager::actor::{EventChannels, MAX_START_PANICS};
    use crate::manager::clock::Moment;
    use crate::manager::lane::attempt::APART_MIN;
    use crate::manager::ledger::Answer;
    use crate::manager::outcome_cell::{Held, Waiter};
    use crate::protocol::{encode_task, TaskFrame, DEFAULT_MAX_FRAME};
    use crate::task::Task;
    use crate::PoolConfig;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A pool's shared state whose desk seats worker 1, idle, running
    /// `concurrency` tasks at once (`prefetch` 0), with lanes allowed to
    /// take from the queue, and worker 1's lane.
    struct DeskRig {
        shared: Arc<Shared>,
        lane: Lane,
    }

    impl DeskRig {
        fn new(concurrency: u32, policy: Box<dyn BalancePolicy>) -> Self {
            let config = PoolConfig {
                worker_concurrency: concurrency,
                prefetch: 0,
                task_timeout: TIMEOUT,
                ..PoolConfig::default()
            };
            let shared = Arc::new(Shared::new(
                &config,
                EventChannels::default(),
                policy,
                false,
            ));
            shared.queue.lock().set_lanes_may_take(true);
            let lane = Lane::new(
                shared.stats.tallies.writer(u64::from(concurrency)),
                "worker-1".into(),
                shared.clock,
            );
            lane.book().feeds = true;
            shared.desk.seat(1, lane.clone(), TaskTypes::default());
            Self { shared, lane }
        }

        /// Queues task `id` (its payload `size` bytes of `id`), holding a
        /// queue slot; the side its caller is told on.
        fn queue(&self, id: u64, size: usize) -> Waiter {
            let (pending, told) = pending(id, size);
            let now = self.shared.clock.now().moment;
            self.shared.queue.shard(0).push_new(pending, now);
            told
        }

        fn free_queue_slots(&self) -> usize {
            self.shared.queue_slots.available_permits()
        }

        /// The queue's head: its id, the start panics it was charged, and
        /// whether it holds a queue slot.
        fn head(&self) -> Option<(u64, u8, bool)> {
            let queue = self.shared.queue.lock();
            let head = queue.peek()?;
            Some((
                head.id,
                head.requeues.after_start_panics(),
                head.holds_queue_slot,
            ))
        }

        /// The ids in worker 1's book, with where their frames start.
        fn book(&self) -> Vec<(u64, u64)> {
            let book = self.lane.book();
            book.attempts()
                .map(|r| (r.pending.id, r.frame_start))
                .collect()
        }

        /// The bytes waiting in worker 1's batch, taken.
        fn take_batch(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            self.lane
                .book()
                .flush(|part| bytes.extend_from_slice(&part));
            bytes
        }

        /// Whether the actor's bell rang since it was last heard.
        fn actor_rung(&self) -> bool {
            let mut cx = Context::from_waker(Waker::noop());
            pin!(self.shared.queue.rung()).poll(&mut cx).is_ready()
        }
    }

    /// Task `id` with a payload of `size` bytes of `id`, and its caller's side.
    fn pending(id: u64, size: usize) -> (Pending, Waiter) {
        let (answer, told) = Answer::new();
        let byte = u8::try_from(id).expect("small ids");
        let task = Task::new("echo", vec![byte; size]);
        (Pending::new(id, task, answer), told)
    }

    /// The frame of task `id`'s first attempt, as [`pending`] makes it.
    fn frame_of(id: u64, size: usize) -> Vec<u8> {
        let byte = u8::try_from(id).expect("small ids");
        let frame = TaskFrame {
            id,
            task_type: "echo",
            payload: &vec![byte; size],
            attempt: 1,
            timeout_ms: 30_000,
        };
        let mut bytes = BytesMut::new();
        encode_task(&frame, &mut bytes, DEFAULT_MAX_FRAME).expect("encodes");
        bytes.to_vec()
    }

    /// A hand-off that panics while starting its second task (a payload of
    /// `size` bytes), once that task's frame is in the batch and before it is
    /// in the book: the first task stays placed, its queue slot given back
    /// and its frame the only one the worker gets; the second goes back to
    /// the head of the queue, charged once, still holding its queue slot,
    /// and the actor is rung. The next hand-off writes it right after the
    /// first task's frame.
    fn a_panic_while_starting_the_second_task(size: usize) {
        let rig = DeskRig::new(2, Box::new(FirstAvailable));
        let _told: Vec<Waiter> = vec![rig.queue(1, 10), rig.queue(2, size)];
        let slots = rig.free_queue_slots();
        rig.shared.desk.panic_when_starting(2);

        let unwound = catch_unwind(AssertUnwindSafe(|| rig.shared.desk.hand_off(&rig.shared)));

        assert!(unwound.is_err(), "the desk panicked while starting task 2");
        assert_eq!(rig.book(), [(1, 0)], "task 1 is in the book, task 2 not");
        assert_eq!(rig.head(), Some((2, 1, true)), "task 2 is back, charged");
        assert_eq!(rig.shared.queue.put_backs(), 1);
        assert_eq!(
            rig.free_queue_slots(),
            slots + 1,
            "task 1 gave back its queue slot"
        );
        assert!(rig.actor_rung(), "the actor is rung to hand task 2 out");
        let first = frame_of(1, 10);
        assert_eq!(
            rig.take_batch(),
            first,
            "task 2's frame never reaches the worker"
        );

        rig.shared.desk.panic_when_starting(0);
        rig.shared.desk.hand_off(&rig.shared);
        assert_eq!(rig.book(), [(1, 0), (2, first.len() as u64)]);
        assert_eq!(rig.take_batch(), frame_of(2, size));
        assert_eq!(rig.head(), None);
    }

    /// A balance policy that panics on its second pick.
    #[derive(Debug)]
    struct PanicsSecond(u32);

    impl BalancePolicy for PanicsSecond {
        fn pick(&mut self, _candidates: &[WorkerSnapshot]) -> usize {
            self.0 += 1;
            assert!(self.0 < 2, "the policy's bug");
            0
        }

        fn name(&self) -> &'static str {
            "panics-second"
        }
    }

    /// A policy that panics in the middle of a hand-off leaves the task
    /// placed before in its book, its frame for the lane's own task to write
    /// (nothing is written on the unwinding thread), and the actor rung, so
    /// that task's deadline is armed and the rest handed out.
    #[test]
    fn a_policy_that_panics_mid_hand_off_leaves_the_placed_task_to_its_lane_and_rings_the_actor() {
        let rig = DeskRig::new(2, Box::new(PanicsSecond(0)));
        let _told: Vec<Waiter> = vec![rig.queue(1, 10), rig.queue(2, 10)];
        let unwound = catch_unwind(AssertUnwindSafe(|| rig.shared.desk.hand_off(&rig.shared)));
        assert!(unwound.is_err(), "the policy panicked on its second pick");
        assert_eq!(rig.book(), [(1, 0)], "task 1 was placed before");
        assert_eq!(rig.head(), Some((2, 0, true)), "task 2 still waits");
        assert!(rig.actor_rung(), "the actor is rung");
        assert_eq!(rig.take_batch(), frame_of(1, 10), "task 1's frame waits");
    }

    #[test]
    fn a_hand_off_that_panics_while_starting_a_task_puts_it_back_without_its_frame() {
        a_panic_while_starting_the_second_task(10);
    }

    /// As [`a_hand_off_that_panics_while_starting_a_task_puts_it_back_without_its_frame`],
    /// with a payload written apart from the batch's buffer (the frame's
    /// bytes around it in buffers of their own).
    #[test]
    fn a_panic_while_starting_a_large_task_takes_back_its_frame_around_the_payload() {
        a_panic_while_starting_the_second_task(APART_MIN);
    }

    /// A task whose start at the desk panics each time goes back at most
    /// `MAX_START_PANICS` times; the next time it fails, naming the desk,
    /// and its queue slot comes back.
    #[test]
    fn a_task_whose_start_at_the_desk_keeps_panicking_fails_after_a_bounded_number_of_times() {
        let rig = DeskRig::new(1, Box::new(FirstAvailable));
        let mut told = rig.queue(7, 10);
        let slots = rig.free_queue_slots();
        rig.shared.desk.panic_when_starting(7);
        for panics in 1..=MAX_START_PANICS + 1 {
            let unwound = catch_unwind(AssertUnwindSafe(|| rig.shared.desk.hand_off(&rig.shared)));
            assert!(unwound.is_err(), "the desk panicked while starting task 7");
            assert_eq!(rig.book(), [], "task 7 never joined the book");
            assert!(rig.take_batch().is_empty(), "nor its frame the batch");
            if panics <= MAX_START_PANICS {
                assert_eq!(rig.head(), Some((7, panics, true)));
                assert_eq!(rig.free_queue_slots(), slots);
            } else {
                assert_eq!(rig.head(), None, "no longer queued");
                assert_eq!(rig.free_queue_slots(), slots + 1);
            }
        }
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Some(Held::Error(error))) = told.poll(&mut cx) else {
            panic!("task 7 was told its failure");
        };
        assert_eq!((error.id, error.failure.kind()), (7, "protocol"));
        assert!(
            error
                .failure
                .to_string()
                .contains("the pool's desk panicked while starting this task"),
            "{}",
            error.failure
        );
    }

    /// A new task handed straight to an idle worker (never queued) whose
    /// start panics goes to the queue, counted as submitted once, holding
    /// no queue slot, and runs from there.
    #[test]
    fn a_new_task_whose_start_at_the_desk_panics_goes_to_the_queue() {
        let rig = DeskRig::new(1, Box::new(FirstAvailable));
        let (task, _told) = pending(5, 10);
        let mut new = Some(task);
        rig.shared.desk.panic_when_starting(5);

        let unwound = catch_unwind(AssertUnwindSafe(|| {
            rig.shared.desk.hand_new(&rig.shared, &mut new);
        }));

        assert!(unwound.is_err(), "the desk panicked while starting task 5");
        assert!(new.is_none(), "out of its caller's hands");
        assert_eq!(rig.book(), []);
        assert!(
            rig.take_batch().is_empty(),
            "its frame never reaches the worker"
        );
        assert_eq!(rig.head(), Some((5, 1, false)));
        assert_eq!(rig.shared.stats.submitted.load(Relaxed), 1);
        assert_eq!(rig.shared.queue.put_backs(), 1);
        assert!(rig.actor_rung());

        rig.shared.desk.panic_when_starting(0);
        rig.shared.desk.hand_off(&rig.shared);
        assert_eq!(rig.book(), [(5, 0)]);
        assert_eq!(rig.take_batch(), frame_of(5, 10));
        assert_eq!(rig.shared.stats.submitted.load(Relaxed), 1);
    }

    /// A policy that, the first time it is asked, says so and waits for
    /// word to pick: a caller held up at the desk (preempted, or waiting
    /// for a lock) as long as a test likes.
    #[derive(Debug)]
    struct HeldUpInPick {
        asked: Option<oneshot::Sender<()>>,
        go: std::sync::mpsc::Receiver<()>,
    }

    impl BalancePolicy for HeldUpInPick {
        fn name(&self) -> &'static str {
            "held-up-in-pick"
        }

        fn pick(&mut self, _candidates: &[WorkerSnapshot]) -> usize {
            if let Some(asked) = self.asked.take() {
                let _ = asked.send(());
                let _ = self.go.recv();
            }
            0
        }
    }

    /// How long the caller is held up at the desk.
    const HELD_UP: Duration = Duration::from_secs(7);

    /// Runs `hand` (a hand-off on `rig`) on a thread of its own, holds it up
    /// in the policy's pick for [`HELD_UP`] of the paused clock, and returns
    /// the one attempt it started in worker 1's book (its run start and
    /// deadline, and when its task counts as queued), and what `hand` said.
    async fn held_up<R: Send + 'static>(
        rig: DeskRig,
        asked: oneshot::Receiver<()>,
        go: std::sync::mpsc::Sender<()>,
        hand: impl FnOnce(&Shared) -> R + Send + 'static,
    ) -> ((Option<Moment>, Option<Instant>, Moment), R) {
        let shared = Arc::clone(&rig.shared);
        let runtime = tokio::runtime::Handle::current();
        let caller = std::thread::spawn(move || {
            // The paused clock is the runtime's.
            let _runtime = runtime.enter();
            hand(&shared)
        });
        asked.await.expect("the policy was asked");
        tokio::time::advance(HELD_UP).await;
        go.send(()).expect("the caller waits");
        let said = caller.join().expect("the hand-off returned");
        let book = rig.lane.book();
        let attempts: Vec<_> = book
            .attempts()
            .map(|r| (r.run_start, r.deadline, r.pending.queued_at))
            .collect();
        assert_eq!(attempts.len(), 1, "one attempt started");
        (attempts[0], said)
    }

    fn held_up_rig() -> (DeskRig, oneshot::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (asked, asked_rx) = oneshot::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let policy = HeldUpInPick {
            asked: Some(asked),
            go: go_rx,
        };
        (DeskRig::new(1, Box::new(policy)), asked_rx, go)
    }

    /// A caller held up at the desk after it began a submit, before the
    /// worker's book took its new task: the task's run starts, and its
    /// timeout counts, from when its frame was written, not from when its
    /// caller began.
    #[tokio::test(start_paused = true)]
    async fn a_caller_held_up_at_the_desk_costs_its_new_task_none_of_its_timeout() {
        let (rig, asked, go) = held_up_rig();
        let began = rig.shared.clock.now();
        let (task, _told) = pending(1, 10);
        let ((run_start, deadline, queued_at), taken) = held_up(rig, asked, go, |shared| {
            let mut new = Some(task);
            shared.desk.hand_new(shared, &mut new);
            new.is_none()
        })
        .await;
        assert!(taken, "the worker took it");
        let written = began.later_by(HELD_UP);
        assert_eq!(run_start, Some(written.moment));
        assert_eq!(deadline, Some(written.instant + TIMEOUT));
        assert_eq!(queued_at, written.moment, "it never waited in the queue");
    }

    /// A caller held up at the desk between queueing a task and handing it
    /// to an idle worker: the task counts as queued from when it was queued,
    /// and its run starts, and its timeout counts, from when its frame was
    /// written.
    #[tokio::test(start_paused = true)]
    async fn a_caller_held_up_at_the_desk_costs_a_queued_task_none_of_its_timeout() {
        let (rig, asked, go) = held_up_rig();
        let queued = rig.shared.clock.now();
        let _told = rig.queue(1, 10);
        let ((run_start, deadline, queued_at), _) =
            held_up(rig, asked, go, |shared| shared.desk.hand_off(shared)).await;
        let written = queued.later_by(HELD_UP);
        assert_eq!(run_start, Some(written.moment));
        assert_eq!(deadline, Some(written.instant + TIMEOUT));
        assert_eq!(queued_at, queued.moment);
    }
}
