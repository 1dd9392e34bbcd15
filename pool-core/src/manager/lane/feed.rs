//! A lane's refill: after its reader settled results, the lane takes tasks
//! from the head of the shared queue into the room they left in its worker's
//! window and writes them at once, so a busy worker is fed without a hop
//! through the actor. The actor still hands tasks to idle workers (where the
//! balance policy picks), routes tasks no lane takes, and holds the rest.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::super::actor::{Pending, Shared, MAX_START_PANICS};
use super::super::clock::Now;
use super::super::dispatch::settle_failed;
use super::super::failure::Failure;
use super::super::handle::FinalStatus;
use super::super::outbox::Outbox;
use super::super::routing::{TaskTypes, TypeFilter};
use super::attempt::{BatchEnd, Target, Unwritable, Written};
use super::queue::{Head, ShardGuard, SharedQueue};
use super::window::Window;
use super::{keep_earliest, Book, Lane};

/// Where a lane refills from, and what it may take.
pub(crate) struct Feed {
    queue: SharedQueue,
    /// The shard it looks at first among shards whose heads are equal: its
    /// worker's number modulo the count to begin with, then the one after
    /// the shard it last took from, so that refills move on among equals and
    /// reach every shard (also one that is no lane's first: fewer workers
    /// than shards).
    first: usize,
    /// What its worker holds at most: `worker_concurrency` running, and up
    /// to `prefetch` more waiting (as many as it runs in a few milliseconds
    /// at its pace) while they weigh under `prefetch_bytes`.
    window: Window,
    /// Set once the worker is ready: the task types it takes.
    types: Option<TypeFilter>,
    /// The tasks one refill took from the queue, started once the queue's
    /// lock is let go (kept for the next refill's).
    taken: VecDeque<Pending>,
}

/// What a refill follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// A read of the worker's answers: the room they left, and the pace's
    /// interval closes ([`pace`](super::pace)).
    Answers,
    /// The link took the frames a filler stopped for
    /// ([`link_ahead`](super::link_ahead)): the room it left; the pace's
    /// interval goes on (no answer closes it).
    LinkCaughtUp,
}

/// What one refill did.
#[derive(Default)]
pub(crate) struct Refilled {
    /// The earliest deadline of the attempts that run at once.
    pub(crate) deadline: Option<Instant>,
    /// Queue slots given back by tasks leaving the queue for the first time.
    pub(crate) freed_slots: usize,
    /// Tasks whose frame could not be encoded: to be failed.
    pub(crate) unwritable: Vec<Unwritable>,
    /// The worker has room the lane did not fill although tasks may wait for
    /// it (the lane may not feed it, the actor holds tasks, or the head of the
    /// queue is not for this worker): the actor's dispatch pass decides.
    pub(crate) stalled: bool,
}

impl Feed {
    /// Worker `num`'s feed from `queue` (the shard it looks at first is
    /// dealt by its number), for a worker's `window`.
    pub(crate) fn new(queue: SharedQueue, num: u64, window: Window) -> Self {
        let first = usize::try_from(num).unwrap_or(0) % queue.shard_count();
        Self {
            queue,
            first,
            window,
            types: None,
            taken: VecDeque::new(),
        }
    }

    /// The worker is ready: it takes `types`.
    pub(crate) fn connect(&mut self, types: TaskTypes) {
        self.types = Some(TypeFilter::new(types));
    }

    /// Fills the room in the worker's window from the head of the queue, while
    /// the head is a task the worker takes, and queues what it took in `out`,
    /// after the frames waiting in the book's batch (under the lane's lock, so
    /// the worker reads its tasks in the book's order). Nothing when the actor
    /// stopped the lane feeding, or before the worker is ready.
    pub(crate) fn refill(
        &mut self,
        lane: &Lane,
        target: &Target<'_>,
        out: &mut Outbox,
        after: After,
    ) -> Refilled {
        let mut refilled = Refilled {
            stalled: true,
            ..Refilled::default()
        };
        let Some(filter) = &mut self.types else {
            return refilled;
        };
        // Nothing waits (an idle pool's every answer): done without a lock.
        // A task queued after this look is handed to this worker by its
        // caller, who finds its book's room (the answer that made it was
        // settled before), or, when the caller's hand-off leaves it queued,
        // by the actor the caller rings.
        if self.queue.lanes_may_take() && self.queue.looks_empty() {
            refilled.stalled = false;
            return refilled;
        }
        let mut book = lane.book();
        let now = target.shared.clock.now();
        let measures = after == After::Answers;
        if measures {
            book.pace_refill(now.moment, self.window.concurrency());
        }
        let mut filling = book.filling(self.window);
        if !filling.takes_more() {
            refilled.stalled = false;
            return refilled;
        }
        // Emptied for a task that must run alone: its shard is looked at first.
        if let Some(shard) = book.lone_shard_once_empty() {
            self.first = shard;
        }
        if !book.takes_from_queue() {
            return refilled;
        }
        if !self.queue.lanes_may_take() {
            return refilled;
        }
        // The most tasks it may take (fewer when the window fills by weight).
        let room = filling.room();
        let empty = book.is_empty();
        // The lane's lock, then one shard's: never the other way round. Only
        // the taking happens under the shard's lock, which callers and other
        // lanes share; the frames are encoded once it is let go. The lane's
        // lock, held all along, keeps the tasks taken where a cancel or a
        // shutdown looks after the queue: in this book. A shard's tasks are
        // taken while no other shard's head comes first (by the hints); then,
        // or when it runs dry, the lane looks again. Each look takes a task,
        // finds its shard empty (whose hint then says so) or hands over to a
        // shard whose head comes first: the looks are bounded.
        let (mut refused, mut alone) = (false, false);
        // From the first task taken until the last is in the book.
        let mut taken = Untaken {
            tasks: &mut self.taken,
            book: &mut book,
            refilled: &mut refilled,
            step: Step::Taking,
            queue: &self.queue,
            shared: target.shared,
        };
        for _ in 0..room + 2 * self.queue.shard_count() {
            let Some(index) = self.queue.best_shard(self.first) else {
                break;
            };
            self.first = (index + 1) % self.queue.shard_count();
            let mut waiting = self.queue.shard(index);
            if !waiting.lanes_may_take() {
                refused = true;
                break;
            }
            let elsewhere = self.queue.best_head_except(index);
            while filling.takes_more() {
                if let (Some(elsewhere), Some(head)) = (elsewhere, waiting.head_priority()) {
                    if head > elsewhere {
                        break;
                    }
                }
                // A task that must run alone goes only to an empty book, and
                // nothing joins it.
                let first = empty && taken.tasks.is_empty();
                let mut lone = false;
                match waiting.pop_if(|p| {
                    lone = p.run_alone && !first;
                    !lone && filter.takes(&p.task.task_type)
                }) {
                    Head::Taken(pending) => {
                        alone = pending.run_alone;
                        filling.join(pending.task.payload.len());
                        taken.tasks.push_back(pending);
                        if alone {
                            break;
                        }
                    }
                    Head::Refused => {
                        refused = true;
                        if lone {
                            // The book empties itself for it (what it took
                            // now included) before it takes anything else.
                            taken.book.wait_for_lone(index);
                        }
                        break;
                    }
                    Head::Empty => break,
                }
            }
            if refused || alone || !filling.takes_more() {
                break;
            }
        }
        taken.refilled.stalled = filling.takes_more() && (refused || !self.queue.looks_empty());
        if filling.waits_for_link() {
            // The frames just taken are not written yet: the lane's writer
            // sees this once it wrote them, and refills.
            taken.book.link().mark_waited();
        }
        #[cfg(feature = "test-util")]
        if !taken.tasks.is_empty() {
            lane.panic_if_requested(super::PanicPoint::Refill);
        }
        // Each task leaves `taken` only once its frame is in the batch and
        // its attempt counted: a panic before then leaves it to the guard.
        while let Some(front) = taken.tasks.front() {
            taken.step = Step::StartingFirst;
            let framed = taken.book.write_attempt(target, front);
            #[cfg(feature = "test-util")]
            if taken.tasks.len() == 1 {
                lane.panic_if_requested(super::PanicPoint::Start);
            }
            if let Ok(framed) = &framed {
                taken.book.count_attempt(target, framed, front, now);
            }
            let Some(pending) = taken.tasks.pop_front() else {
                break;
            };
            taken.step = Step::Taking;
            match framed {
                Ok(framed) => {
                    let runs_alone = pending.run_alone;
                    let written = taken.book.add_attempt(target, framed, pending, now);
                    let started = Started::of(taken.book, runs_alone, &written);
                    taken.refilled.freed_slots += usize::from(started.freed_slot);
                    if let Some(deadline) = started.timer {
                        keep_earliest(&mut taken.refilled.deadline, deadline);
                    }
                }
                Err(reason) => {
                    taken
                        .refilled
                        .unwritable
                        .push(Unwritable { pending, reason });
                    // Its room is free again: the actor's dispatch pass fills it.
                    taken.refilled.stalled = true;
                }
            }
        }
        taken.step = Step::Finished;
        drop(taken);
        if measures {
            book.pace_wrote();
        }
        book.flush(|piece| out.push(piece));
        refilled
    }
}

/// A refill under way: the tasks it took from the queue and has not yet
/// added to the book, the book, and what it did so far. If the refill
/// unwinds (a bug's panic: the lane ends, its worker is killed and its book
/// settled):
/// - the worker's input is marked gone first, so a frame written for a task
///   not in the book never reaches the worker (nor does anything else: the
///   worker is to be killed);
/// - the queue slots that tasks already in the book gave back are returned,
///   and tasks whose frames could not be encoded are failed, as the lane
///   would have once the refill returned;
/// - the task whose attempt was being started goes back with the others at
///   most [`MAX_START_PANICS`] times (its
///   [`requeues`](Pending::requeues)); past that it fails, so a task
///   that makes the pool's own code panic as it starts cannot kill lane after
///   lane;
/// - the rest go back to the head of the queue in their order, still holding
///   their queue slots, instead of being dropped with their callers' answers;
///   once the queue is closed (a shutdown drained it), they end as the drain
///   ended the queue's tasks.
///
/// All of it happens while the lane's book is still locked, and the tasks
/// go back through [`SharedQueue::put_back`], which counts it, so an actor's
/// cancel that looked in the queue and waits for the book sees the count
/// changed and looks again ([`seek_to_cancel`]): it finds them in the queue,
/// or in the book another lane took them into meanwhile.
///
/// [`seek_to_cancel`]: super::super::dispatch::seek_to_cancel
struct Untaken<'a> {
    tasks: &'a mut VecDeque<Pending>,
    book: &'a mut Book,
    refilled: &'a mut Refilled,
    step: Step,
    queue: &'a SharedQueue,
    shared: &'a Shared,
}

/// Where a refill is, for [`Untaken`]'s drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Taking tasks from the queue, or between two tasks' starts.
    Taking,
    /// Starting the first of the tasks taken (its frame may be in the batch).
    StartingFirst,
    /// At its end: dropped before, the refill unwound.
    Finished,
}

impl Drop for Untaken<'_> {
    fn drop(&mut self) {
        if self.step == Step::Finished {
            return;
        }
        self.book.input_gone();
        let freed = std::mem::take(&mut self.refilled.freed_slots);
        if freed > 0 {
            self.shared.queue_slots.add_permits(freed);
        }
        for failed in self.refilled.unwritable.drain(..) {
            failed.settle(self.shared);
        }
        if self.step == Step::StartingFirst {
            // The lane panicked while starting the first task's attempt.
            if let Some(pending) = self.tasks.pop_front() {
                if let Some(pending) = charged_with_start_panic(self.shared, pending, "lane") {
                    self.tasks.push_front(pending);
                }
            }
        }
        if self.tasks.is_empty() {
            return;
        }
        put_back_or_end(self.shared, self.queue, self.tasks.drain(..));
    }
}

/// Puts `tasks` back in `queue` ([`SharedQueue::put_back`]); once it is
/// closed (a shutdown drained it), they end as shutting down.
fn put_back_or_end<I>(shared: &Shared, queue: &SharedQueue, tasks: I)
where
    I: IntoIterator<Item = Pending>,
    I::IntoIter: DoubleEndedIterator,
{
    if let Err(closed) = queue.put_back(tasks) {
        for pending in closed {
            settle_failed(shared, pending, FinalStatus::Failed, Failure::ShuttingDown);
        }
    }
}

/// `pending`, whose start `part` of the pool (its lane, its desk) panicked
/// in, is charged with the panic: it goes back (`Some`) with the panic
/// counted, or fails (`None`) once it went back [`MAX_START_PANICS`] times, so
/// a task that makes the pool's own code panic as it starts cannot do so for
/// ever.
fn charged_with_start_panic(shared: &Shared, mut pending: Pending, part: &str) -> Option<Pending> {
    if pending.requeues.after_start_panics() < MAX_START_PANICS {
        pending.requeues.count_start_panic();
        return Some(pending);
    }
    let message = format!(
        "the pool's {part} panicked while starting this task, {} times",
        u32::from(MAX_START_PANICS) + 1
    );
    settle_failed(
        shared,
        pending,
        FinalStatus::Failed,
        Failure::Protocol { message },
    );
    None
}

/// What [`take_head`] did.
pub(crate) enum Took {
    /// The head's attempt started.
    Started(Started),
    /// The head's frame could not be encoded: it is taken, to be failed.
    Unwritable(Box<Unwritable>),
    /// The head is not a task this worker takes (its type, or it must run
    /// alone): left in place.
    Refused,
    Empty,
}

/// An attempt [`take_head`] started.
pub(crate) struct Started {
    /// It runs alone there (nothing joins it until it is answered).
    pub(crate) alone: bool,
    /// It gave back its queue slot.
    pub(crate) freed_slot: bool,
    /// Its deadline, when the worker's timer does not cover it yet.
    pub(crate) timer: Option<Instant>,
}

impl Started {
    /// An attempt `book` took, `alone` or not, as [`Book::add_attempt`]
    /// `written` it: its deadline wants the timer only when the worker's
    /// timer does not cover it yet.
    fn of(book: &Book, alone: bool, written: &Written) -> Self {
        Self {
            alone,
            freed_slot: written.freed_slot,
            timer: written.deadline.filter(|d| book.needs_timer(*d)),
        }
    }
}

/// Takes the head of a shard of the queue into `book` and starts its
/// attempt, when the book may take it and `filter` takes its type: under the
/// book's lock, then the shard's, so the task is always in one or the other
/// (or in the desk's hands under the book's lock, which put it back if the
/// start panics: [`start`]). The shard's lock is let go once the head is
/// taken; the clock is read for the attempt's start then, under the book's
/// lock alone, after any wait for either lock (a caller held up there costs
/// the task none of its timeout), and the frame is encoded, as a refill's.
/// The one way the desk takes from the queue.
#[inline]
pub(crate) fn take_head(
    book: &mut Book,
    mut waiting: ShardGuard<'_>,
    filter: &mut TypeFilter,
    target: &Target<'_>,
) -> Took {
    let head = waiting.pop_if(|p| book.may_take(p) && filter.takes(&p.task.task_type));
    drop(waiting);
    let mut hand = match head {
        Head::Taken(pending) => Some(pending),
        Head::Refused => return Took::Refused,
        Head::Empty => return Took::Empty,
    };
    let now = target.shared.clock.now();
    match start(book, target, &mut hand, now) {
        Some(Ok(started)) => Took::Started(started),
        Some(Err(failed)) => Took::Unwritable(failed),
        None => Took::Empty,
    }
}

/// Starts, at `now`, the attempt of the task in `hand` (the desk's: taken
/// from the queue, or handed in by its caller) in `book`, and takes it out
/// of `hand` once it is in the book, or to fail it when its frame cannot be
/// encoded. `None` when `hand` holds nothing.
///
/// If the start unwinds before the task is in the book (a bug's panic, on
/// the caller's thread), [`Starting`] takes its frame back out of the batch
/// and gives the task back as a lane's refill does.
#[inline]
pub(crate) fn start(
    book: &mut Book,
    target: &Target<'_>,
    hand: &mut Option<Pending>,
    now: Now,
) -> Option<Result<Started, Box<Unwritable>>> {
    let starting = Starting {
        before: book.batch_end(),
        book,
        shared: target.shared,
        hand,
    };
    let pending = starting.hand.as_ref()?;
    let alone = pending.run_alone;
    let framed = match starting.book.write_attempt(target, pending) {
        Ok(framed) => framed,
        Err(reason) => {
            let pending = starting.hand.take()?;
            return Some(Err(Box::new(Unwritable { pending, reason })));
        }
    };
    #[cfg(test)]
    target.shared.desk.panic_if_requested(pending.id);
    starting.book.count_attempt(target, &framed, pending, now);
    let pending = starting.hand.take()?;
    let written = starting.book.add_attempt(target, framed, pending, now);
    Some(Ok(Started::of(starting.book, alone, &written)))
}

/// The desk starting the task in `hand` in `book`, from before its frame is
/// written until the task is in the book (out of `hand`). Dropped with the
/// task still in hand, the start unwound (a bug's panic in the pool's code:
/// the caller's submit unwinds, the desk's lock and the book's, which
/// tolerate poisoning, are let go after this): as a lane's refill would
/// ([`Untaken`]), and still under the book's lock,
/// - the batch is cut back to where it ended before ([`Book::unwrite`]), so
///   the frame never reaches the worker, while the frames before it, of
///   tasks in the book, still do;
/// - the task goes back to the head of the queue, charged with the panic,
///   at most [`MAX_START_PANICS`] times (then it fails), holding the queue
///   slot it held (none, for a task its caller handed in, which counts as
///   queued then); once the queue is closed it ends as the drain ended the
///   queue's tasks;
/// - the actor is rung to hand it out (and to arm the timers the desk
///   wanted so far), since the caller that would have rung it unwinds.
struct Starting<'a, 'b> {
    book: &'a mut Book,
    shared: &'a Shared,
    /// Where the batch ended before the frame.
    before: BatchEnd,
    hand: &'b mut Option<Pending>,
}

impl Drop for Starting<'_, '_> {
    #[inline]
    fn drop(&mut self) {
        if self.hand.is_some() {
            self.give_back();
        }
    }
}

impl Starting<'_, '_> {
    /// The start unwound with the task still in hand.
    #[cold]
    #[inline(never)]
    fn give_back(&mut self) {
        let Some(pending) = self.hand.take() else {
            return;
        };
        self.book.unwrite(self.before);
        if let Some(pending) = charged_with_start_panic(self.shared, pending, "desk") {
            put_back_or_end(self.shared, &self.shared.queue, Some(pending));
        }
        self.shared.queue.ring();
    }
}

/// For tests: a pool's shared state for workers that run `concurrency` tasks
/// at once with no prefetch (strict priority order), its queue open to
/// lanes, and worker 1's feed from it, taking every type.
#[cfg(test)]
pub(crate) fn strict_rig(concurrency: u32) -> (Shared, Feed) {
    rig(&crate::PoolConfig {
        worker_concurrency: concurrency,
        prefetch: 0,
        ..crate::PoolConfig::default()
    })
}

/// A pool's shared state for `config`, its queue open to lanes, and worker
/// 1's feed from it, taking every type.
#[cfg(test)]
pub(crate) fn rig(config: &crate::PoolConfig) -> (Shared, Feed) {
    let shared = Shared::new(
        config,
        crate::manager::actor::EventChannels::default(),
        Box::new(crate::balance::FirstAvailable),
        false,
    );
    shared.queue.lock().set_lanes_may_take(true);
    let mut feed = Feed::new(shared.queue.clone(), 1, Window::of(config));
    feed.connect(TaskTypes::default());
    (shared, feed)
}
