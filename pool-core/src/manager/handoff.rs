//! The hand-off desk: a caller that queued tasks hands them straight to the
//! lanes of workers with a free run slot, where the balance policy picks,
//! without waking the actor. The actor keeps the desk's seats (one per ready
//! worker), shares the policy with it, and is rung only for what the desk
//! leaves: tasks no idle worker took, held or routed tasks, a worker's
//! deadline timer to arm.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::WeakUnboundedSender;
use tokio::time::Instant;

use super::actor::{Pending, Shared};
use super::dispatch::settle_failed;
use super::failure::Failure;
use super::handle::FinalStatus;
use super::lane::attempt::Target;
use super::lane::Lane;
use super::routing::TaskTypes;
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
    /// (the actor counts each worker's tasks against it).
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
    types: Option<TaskTypes>,
    /// The type of the last task handed off: the queue shares one allocation
    /// of a type's name, so the next task of that type is told by pointer.
    last_type: Option<Arc<str>>,
}

/// A ready worker at the desk.
struct Seat {
    num: u64,
    lane: Lane,
    /// The worker's frame channel, held weakly: the actor closing the
    /// worker's input (dropping its sender) is never delayed by the desk.
    frames: WeakUnboundedSender<Bytes>,
    /// The task types the worker stated.
    types: TaskTypes,
}

/// What placing one task on a seat did.
enum Placed {
    /// Written into the worker's batch; `alone` when it runs alone there.
    Yes { alone: bool },
    /// The seat could not take it now: the task is given back.
    No(Pending),
    /// Its frame could not be encoded: it was failed.
    Failed,
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
                types: Some(TaskTypes::default()),
                last_type: None,
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

    /// Worker `num` is ready: callers may hand it tasks through `frames`.
    /// It takes `types`.
    pub(crate) fn seat(
        &self,
        num: u64,
        lane: Lane,
        frames: WeakUnboundedSender<Bytes>,
        types: TaskTypes,
    ) {
        let mut counter = self.lock();
        let at = counter.seats.partition_point(|s| s.num < num);
        counter.seats.insert(
            at,
            Seat {
                num,
                lane,
                frames,
                types,
            },
        );
        counter.seats_changed();
    }

    /// Worker `num` is gone.
    pub(crate) fn unseat(&self, num: u64) {
        let mut counter = self.lock();
        counter.seats.retain(|s| s.num != num);
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
    /// as the policy picks them, as the actor's dispatch would. `true` when
    /// nothing is left for the actor; `false` when it must be rung: tasks are
    /// still queued (or the desk did not hand off), or a deadline timer must
    /// be armed.
    pub(crate) fn hand_off(&self, shared: &Shared) -> bool {
        let settings = self.settings;
        if !settings.open {
            return false;
        }
        let mut counter = self.lock();
        let counter = &mut *counter;
        if counter.types.is_none() {
            return false;
        }
        counter.gather(settings.concurrency);
        let mut queued = true;
        let mut freed_slots = 0;
        let now = Instant::now();
        while !counter.candidates.is_empty() {
            let pending = {
                let mut waiting = shared.queue.lock();
                if waiting.closed || !waiting.lanes_may_take {
                    break;
                }
                let Some(head) = waiting.tasks.peek() else {
                    queued = false;
                    break;
                };
                // A type the workers do not take: the actor holds or fails it.
                if !counter.takes(&head.task.task_type) {
                    break;
                }
                let Some(pending) = waiting.tasks.pop() else {
                    break;
                };
                queued = !waiting.tasks.is_empty();
                waiting.publish(&shared.stats);
                pending
            };
            let index = pick(&mut *counter.policy, &counter.candidates);
            let seat = &counter.seats[counter.seat_of[index]];
            let placed = seat.place(shared, &settings, pending, now, |freed, timer| {
                freed_slots += usize::from(freed);
                if let Some(deadline) = timer {
                    counter.timers_wanted.push((seat.num, deadline));
                }
            });
            match placed {
                Placed::Yes { alone } => {
                    let candidate = &mut counter.candidates[index];
                    candidate.in_flight += 1;
                    if alone || candidate.in_flight >= settings.concurrency {
                        counter.candidates.remove(index);
                        counter.seat_of.remove(index);
                    }
                }
                Placed::No(pending) => {
                    let mut waiting = shared.queue.lock();
                    waiting.tasks.push_front(pending.task.priority, pending);
                    waiting.publish(&shared.stats);
                    queued = true;
                    counter.candidates.remove(index);
                    counter.seat_of.remove(index);
                }
                Placed::Failed => {}
            }
        }
        if freed_slots > 0 {
            shared.queue_slots.add_permits(freed_slots);
        }
        !queued && counter.timers_wanted.is_empty()
    }
}

impl Counter {
    /// After a worker sat down or left: whether they all take the same types.
    fn seats_changed(&mut self) {
        self.last_type = None;
        let mut seats = self.seats.iter();
        self.types = match seats.next() {
            None => Some(TaskTypes::default()),
            Some(first) => seats
                .all(|s| s.types == first.types)
                .then(|| first.types.clone()),
        };
    }

    /// Whether the seated workers take tasks of `task_type`.
    fn takes(&mut self, task_type: &Arc<str>) -> bool {
        if self
            .last_type
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, task_type))
        {
            return true;
        }
        let takes = self.types.as_ref().is_some_and(|t| t.accepts(task_type));
        if takes {
            self.last_type = Some(task_type.clone());
        }
        takes
    }

    /// Lists the seats with a free run slot as the policy's candidates.
    fn gather(&mut self, concurrency: u32) {
        self.candidates.clear();
        self.seat_of.clear();
        for (at, seat) in self.seats.iter().enumerate() {
            let held = {
                let book = seat.lane.book();
                if !book.feeds || book.runs_alone() {
                    continue;
                }
                book.len() as u32
            };
            if held < concurrency {
                self.candidates.push(WorkerSnapshot::new(
                    seat.num,
                    held,
                    seat.lane.answered(),
                    concurrency,
                ));
                self.seat_of.push(at);
            }
        }
    }
}

impl Seat {
    /// Writes `pending`'s attempt into the worker's batch and hands the batch
    /// to its lane, if the worker still feeds, has a free run slot and may take
    /// it (under its book's lock, where the actor and the lane change it).
    /// `then` hears whether the task gave back its queue slot, and a deadline
    /// the worker's timer does not cover.
    fn place(
        &self,
        shared: &Shared,
        settings: &DeskSettings,
        pending: Pending,
        now: Instant,
        then: impl FnOnce(bool, Option<Instant>),
    ) -> Placed {
        let Some(frames) = self.frames.upgrade() else {
            return Placed::No(pending);
        };
        let mut book = self.lane.book();
        if !book.feeds || book.len() >= settings.concurrency as usize || !book.may_take(&pending) {
            return Placed::No(pending);
        }
        let alone = pending.run_alone;
        let target = Target {
            shared,
            num: self.num,
            name: self.lane.name(),
            concurrency: settings.concurrency as usize,
            default_timeout: settings.default_timeout,
            max_frame: settings.max_frame,
        };
        match book.start_attempt(&target, pending, now) {
            Ok(written) => {
                let timer = written.deadline.filter(|d| book.needs_timer(*d));
                book.flush_to(&frames);
                drop(book);
                then(written.freed_slot, timer);
                Placed::Yes { alone }
            }
            Err(failed) => {
                drop(book);
                let failure = Failure::Protocol {
                    message: failed.reason,
                };
                settle_failed(shared, failed.pending, FinalStatus::Failed, failure);
                Placed::Failed
            }
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
