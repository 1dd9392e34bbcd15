//! A worker's lane: its attempts in flight, in the order they were written.
//!
//! The [`Book`] is the only place an attempt lives between its write and its
//! settlement. Two parties reach it, each through the lane's lock, and whoever
//! takes an attempt out of the book is the one that settles it:
//! - the worker's reader ([`settle`]) takes the attempt a `result` answers and
//!   settles it on the spot, still under the lock (the caller's answer,
//!   counters, histograms; the only locks taken meanwhile, the task's outcome
//!   cell's and the event channel's when someone listens, are never held
//!   while a book's is taken; the caller is woken later, with the read's
//!   others (a `Completions` channel's outcomes handed over with them, under
//!   one lock of its inbox); the task's
//!   input, maybe a buffer of the caller's own, is dropped after the lock),
//!   with no
//!   hop through the actor; it refills the worker from the queue and tells the
//!   actor only what is the actor's business
//!   ([`Settler::take_report`](settle::Settler::take_report) lists it);
//! - the actor adds attempts, times them out, cancels them, takes the attempt a
//!   handler `error` answers (retries and dead letters are its business), and
//!   settles whatever is left once the worker is reaped.

pub(crate) mod attempt;
pub(crate) mod feed;
pub(crate) mod guard;
pub(crate) mod link_ahead;
pub(crate) mod pace;
pub(crate) mod queue;
pub(crate) mod settle;
pub(crate) mod window;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::time::delay_queue;

use super::actor::{CancelAsked, Running};
use super::bell::Bell;
use super::clock::{AtomicMoment, Moment, Now, PoolClock};
use super::link_output::LinkOutput;
use super::tally::{Counted, TallyReader, TallyWriter};
use guard::{BookGuard, Occupancy};
use settle::Settled;

/// A worker's unanswered tasks in the order they were written (the first
/// `worker_concurrency` are running, the rest wait in its prefetch window), the
/// frames written for it and not yet handed to its writer, whether its lane
/// may refill it from the queue, and what the lane counts.
pub(crate) struct Book {
    entries: VecDeque<Running>,
    /// The payload bytes of the entries waiting for a run slot (no
    /// `run_start` yet): what the prefetch window weighs
    /// ([`window`]).
    waiting_bytes: usize,
    /// How long a task takes the worker lately: how many may wait in its
    /// window ([`pace`]).
    pace: pace::Pace,
    /// Frames encoded and not yet handed to the worker's writer: the last
    /// part of the batch, still taking frames.
    outbuf: BytesMut,
    /// The batch's parts before `outbuf`, in order: buffers closed because
    /// the next frame did not fit in their room or a large payload followed,
    /// and payloads of at least [`APART_MIN`](attempt::APART_MIN) bytes,
    /// written from their own buffers between the frame's bytes before and
    /// after them.
    parts: Vec<Bytes>,
    /// Whether the actor lets the worker be fed from the queue (by its lane
    /// or the desk): it is serving and healthy, with no task limit to watch
    /// (set by the actor, under this lock, whenever that changes). Only while
    /// its input is open too ([`Book::feeding`]).
    pub(crate) feeds: bool,
    /// The lane's counters: written only here, under this lock.
    pub(crate) tally: TallyWriter,
    /// Whether the lane's writer still takes frames from the batch.
    pub(crate) input: Input,
    /// Bytes of frames put in the batch since the book was made: the stream
    /// the worker's link is written from, as [`LinkOutput::written`] counts it.
    ///
    /// [`LinkOutput::written`]: crate::manager::link_output::LinkOutput::written
    batched: u64,
    /// How far the link took that stream, as the lane's output publishes it,
    /// and whether a filler stopped for it ([`link_ahead`]).
    link: Arc<link_ahead::LinkAhead>,
    /// The actor's timer for the earliest deadline of the worker's tasks, and
    /// the instant it is armed for (set by the actor, under this lock).
    /// Completions leave it alone; when it fires, expired tasks time out and
    /// it is armed again for the next deadline. So a run that starts with a
    /// later deadline needs no word to the actor ([`Book::needs_timer`]).
    pub(crate) deadline_timer: Option<(delay_queue::Key, Instant)>,
    /// The queue shard whose head must run alone ([`Pending::run_alone`]) and
    /// found this book holding tasks: the worker takes no other task until
    /// its book is empty, so that it can take that one. Under load no book
    /// empties by itself (each answer is refilled), and a lone task would
    /// wait until the queue drained.
    ///
    /// [`Pending::run_alone`]: super::actor::Pending::run_alone
    lone_waits_in: Option<usize>,
}

/// The unanswered attempts that reached a worker ([`Book::reached`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reached {
    /// The first of them that had started running.
    pub(crate) first_running: Option<u64>,
    /// How many had started running.
    pub(crate) running: usize,
    /// How many there are.
    pub(crate) unanswered: usize,
}

/// The worker's input, as the actor, the desk and the lane's writer share it.
/// Frames reach the writer only through the book's batch (each party appends
/// under the book's lock and rings the lane), so the worker reads them in the
/// order they were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The writer takes the batch whenever the lane's bell rings.
    Open,
    /// The actor closed it: the writer takes the batch, then ends the input.
    Closing,
    /// The writer stopped (the link broke, or the lane ended) before the actor
    /// closed it: frames left in the batch are dropped, as the pipe would drop
    /// them; the worker's tasks settle once it is reaped.
    Gone,
    /// The actor closed it, and the writer stopped.
    Closed,
}

/// A completion counted in the lane's tally, with the task's run time in
/// nanoseconds.
pub(crate) struct Completion {
    pub(crate) counted: Counted,
    pub(crate) run_ns: u64,
}

/// How the worker answered a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// With its result: the task completed, unless its cancel was asked for.
    Result,
    /// With an error.
    Error,
}

/// A task that moved into the running range ([`Book::start_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    pub(crate) id: u64,
    pub(crate) deadline: Instant,
    /// Its cancel was asked for while it waited: its grace starts now.
    pub(crate) cancelled_by_caller: bool,
}

impl Book {
    /// An empty book that counts in `tally`.
    pub(crate) fn new(tally: TallyWriter) -> Self {
        Self {
            entries: VecDeque::new(),
            waiting_bytes: 0,
            pace: pace::Pace::default(),
            outbuf: BytesMut::new(),
            parts: Vec::new(),
            feeds: false,
            tally,
            input: Input::Open,
            deadline_timer: None,
            batched: 0,
            link: Arc::default(),
            lone_waits_in: None,
        }
    }

    /// What the book and the lane's output share about the link.
    pub(crate) fn link(&self) -> &Arc<link_ahead::LinkAhead> {
        &self.link
    }

    /// Bytes the link may still be given now (0 asks the lane's writer to
    /// refill once the link took what waits: [`link_ahead`]).
    pub(crate) fn link_room(&self) -> usize {
        self.link.room(self.batched)
    }

    /// Whether a run with deadline `at` needs the actor to arm the worker's
    /// timer earlier: no timer is armed, or it is armed for later.
    pub(crate) fn needs_timer(&self, at: Instant) -> bool {
        self.deadline_timer.is_none_or(|(_, armed)| at < armed)
    }

    /// Attempts written to the worker in its life (its tally's count).
    pub(crate) fn dispatched(&self) -> u64 {
        self.tally.dispatches()
    }

    /// Unanswered tasks.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an attempt just written to the worker; counted in flight.
    pub(crate) fn push(&mut self, attempt: Running) {
        self.tally.in_flight_up(1);
        if attempt.run_start.is_none() {
            self.waiting_bytes += attempt.pending.task.payload.len();
        }
        self.entries.push_back(attempt);
    }

    /// Whether the worker takes one more task within `window`, at its pace,
    /// and its link takes one more frame now ([`link_ahead`]).
    pub(crate) fn takes_more(&self, window: &window::Window) -> bool {
        self.filling(*window).takes_more()
    }

    /// The worker's window as a refill fills it, at its pace, from what it
    /// holds now and what its link may be given.
    pub(crate) fn filling(&self, window: window::Window) -> window::Filling {
        let window = window.paced(&self.pace);
        // The link is asked only when the window has room: a full window
        // leaves no mark for the lane's writer.
        let link_room = if window.takes_more(self.len(), self.waiting_bytes) {
            self.link_room()
        } else {
            0
        };
        window.filling(self.len(), self.waiting_bytes, link_room)
    }

    /// The lane (or the actor's dispatch pass) refills the worker at `now`:
    /// the pace's interval since the last refill closes
    /// ([`pace::Pace::refill_at`]). Every one of the worker's `concurrency`
    /// run slots had work all along when it still holds that many tasks whose
    /// frames were in its batch when the interval began.
    pub(crate) fn pace_refill(&mut self, now: Moment, concurrency: usize) {
        let worked_all_along = self.pace.began_at_byte().is_some_and(|began| {
            concurrency
                .checked_sub(1)
                .and_then(|last| self.entries.get(last))
                .is_some_and(|r| r.frame_start < began)
        });
        self.pace.refill_at(now, self.batched, worked_all_along);
    }

    /// Whether the worker answered tasks since the pace's interval began.
    pub(crate) fn pace_has_answers(&self) -> bool {
        self.pace.has_answers()
    }

    /// The refill that closed the pace's interval wrote its tasks: they are
    /// held from the next interval's start.
    pub(crate) fn pace_wrote(&mut self) {
        self.pace.wrote(self.batched);
    }

    /// No longer waiting for a run slot: `attempt`'s weight leaves the window.
    fn leaves_window(&mut self, attempt: &Running) {
        if attempt.run_start.is_none() {
            self.waiting_bytes = self
                .waiting_bytes
                .saturating_sub(attempt.pending.task.payload.len());
        }
    }

    /// [`waiting_bytes`](Self::waiting_bytes) summed afresh from the entries.
    #[cfg(test)]
    pub(crate) fn waiting_bytes_recounted(&self) -> usize {
        self.entries
            .iter()
            .filter(|r| r.run_start.is_none())
            .map(|r| r.pending.task.payload.len())
            .sum()
    }

    /// Takes the entry of task `id`, which its worker answered with `reply`
    /// at `now`, and starts the run of the task its leaving lets into the
    /// running range; both are noted in `report`. A result for an attempt
    /// whose cancel was not asked for is counted as a completion. `settle`
    /// gets the attempt and its counted completion under the book's lock,
    /// moved once (a reader
    /// settles a result right there). `None` when the worker does not hold
    /// `id` (settled already, or never sent).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer<R>(
        &mut self,
        id: u64,
        reply: Reply,
        concurrency: usize,
        default_timeout: Duration,
        now: Now,
        report: &mut Settled,
        settle: impl FnOnce(Running, Option<Completion>) -> R,
    ) -> Option<R> {
        // Answers usually come in the order tasks were written: the search
        // starts at the front.
        let at = self.entries.iter().position(|r| r.pending.id == id)?;
        // The first, as usual, without `remove`'s shifting of the others.
        let attempt = if at == 0 {
            self.entries.pop_front()
        } else {
            self.entries.remove(at)
        }?;
        self.leaves_window(&attempt);
        self.pace.answered();
        self.tally.in_flight_down(1);
        let completion = (reply == Reply::Result && attempt.cancel != CancelAsked::ByCaller)
            .then(|| self.count_completion(&attempt, now.moment));
        report.answered += 1;
        self.tally.answered();
        if !self.feeding() {
            report.needs_actor = true;
        }
        if let Some(started) = self.start_next(at, concurrency, default_timeout, now) {
            if self.needs_timer(started.deadline) {
                keep_earliest(&mut report.deadline, started.deadline);
                report.needs_actor = true;
            }
            if started.cancelled_by_caller {
                report.cancel_started.push(started.id);
                report.needs_actor = true;
            }
        }
        Some(settle(attempt, completion))
    }

    /// Starts the run of the task that became one of the first `concurrency`
    /// unanswered tasks when the one at `removed` was answered: its timeout
    /// counts from `now`.
    ///
    /// The first `concurrency` unanswered tasks have always started (a task
    /// starts when it is written into that range, or when it moves into it
    /// here), so an answer from that range moves exactly one task in: the one now
    /// at `concurrency - 1`. An answer from the window moves none.
    fn start_next(
        &mut self,
        removed: usize,
        concurrency: usize,
        default_timeout: Duration,
        now: Now,
    ) -> Option<Started> {
        if removed >= concurrency {
            return None;
        }
        let running = self.entries.get_mut(concurrency.checked_sub(1)?)?;
        if running.run_start.is_some() {
            return None;
        }
        self.waiting_bytes = self
            .waiting_bytes
            .saturating_sub(running.pending.task.payload.len());
        running.run_start = Some(now.moment);
        let timeout = running.pending.task.timeout().unwrap_or(default_timeout);
        let deadline = deadline_after(now.instant, timeout);
        running.deadline = Some(deadline);
        Some(Started {
            id: running.pending.id,
            deadline,
            cancelled_by_caller: running.cancel == CancelAsked::ByCaller,
        })
    }

    /// Counts the completion of `running`, answered at `now`: its run time
    /// starts when its run did (a worker that ignores `concurrency` may answer
    /// a task still in its window: it started when it was sent).
    fn count_completion(&mut self, running: &Running, now: Moment) -> Completion {
        let started = running.run_start.unwrap_or(running.sent);
        let run_ns = now.nanos_since(started);
        Completion {
            counted: self.tally.completed(run_ns / 1_000),
            run_ns,
        }
    }

    /// The attempt of task `id`, if it is in flight here.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Running> {
        self.entries.iter_mut().find(|r| r.pending.id == id)
    }

    /// Every attempt still here, in the order written.
    pub(crate) fn attempts(&self) -> impl Iterator<Item = &Running> {
        self.entries.iter()
    }

    /// Every attempt still here, in the order written, to change.
    pub(crate) fn attempts_mut(&mut self) -> impl Iterator<Item = &mut Running> {
        self.entries.iter_mut()
    }

    /// Whether its worker runs a task that must run alone
    /// ([`Pending::run_alone`](super::actor::Pending::run_alone)): it takes no
    /// other task until that one is answered. Such a task is only written to
    /// an empty book, so it is the first entry.
    pub(crate) fn runs_alone(&self) -> bool {
        self.entries.front().is_some_and(|r| r.pending.run_alone)
    }

    /// Whether the actor lets the worker be fed from the queue and its input
    /// is still open.
    pub(crate) fn feeding(&self) -> bool {
        self.feeds && self.input == Input::Open
    }

    /// Whether a lane or the desk may take tasks from the queue for it now:
    /// it is fed, no task runs alone there, and it does not empty itself for
    /// one that must ([`Book::wait_for_lone`]).
    pub(crate) fn takes_from_queue(&self) -> bool {
        self.feeding() && !self.runs_alone() && !self.empties_for_lone()
    }

    /// Whether it may take `pending` now: not while a task runs alone, nor
    /// while it empties itself for one ([`Book::wait_for_lone`]), and a task
    /// that must run alone only when it holds nothing.
    pub(crate) fn may_take(&self, pending: &super::actor::Pending) -> bool {
        if pending.run_alone {
            self.entries.is_empty()
        } else {
            !self.runs_alone() && !self.empties_for_lone()
        }
    }

    /// The head of queue shard `shard` must run alone and this book holds
    /// tasks: it takes no other until it is empty.
    pub(crate) fn wait_for_lone(&mut self, shard: usize) {
        self.lone_waits_in = Some(shard);
    }

    /// Whether it empties itself for a task that must run alone: it waits for
    /// one and still holds tasks (once empty, it takes again, whoever took
    /// the lone task).
    fn empties_for_lone(&self) -> bool {
        self.lone_waits_in.is_some() && !self.entries.is_empty()
    }

    /// Once the book is empty, the shard whose lone head it waited for (its
    /// refill looks there first); `None` when it waits for none, or still
    /// holds tasks.
    pub(crate) fn lone_shard_once_empty(&mut self) -> Option<usize> {
        if self.entries.is_empty() {
            self.lone_waits_in.take()
        } else {
            None
        }
    }

    /// The unanswered attempts whose frame reached the worker, at least in
    /// part (the link took `written` bytes of the stream): what its death
    /// tells of them.
    pub(crate) fn reached(&self, written: u64) -> Reached {
        let mut reached = Reached::default();
        for r in self.entries.iter().filter(|r| r.frame_start < written) {
            reached.unanswered += 1;
            if r.run_start.is_some() {
                reached.first_running.get_or_insert(r.pending.id);
                reached.running += 1;
            }
        }
        reached
    }

    /// Empties the book (its worker is reaped), last written first.
    pub(crate) fn drain_last_first(&mut self) -> Vec<Running> {
        let taken: Vec<Running> = self.entries.drain(..).rev().collect();
        self.waiting_bytes = 0;
        self.tally.in_flight_down(taken.len() as u64);
        taken
    }
}

/// A worker's lane: its [`Book`] behind the lock its reader and the actor
/// share, its link's output ([`LinkOutput`]), the worker's name as its tasks'
/// outputs carry it, a reader of its tally (attempts in flight, tasks
/// answered), when it was last heard from, and the bell that tells its writer
/// frames wait in the book's batch. A clone shares all of it.
#[derive(Clone)]
pub(crate) struct Lane(Arc<LaneShared>);

struct LaneShared {
    book: Mutex<Book>,
    /// How many tasks the book held when its lock was last let go.
    occupancy: Occupancy,
    output: Mutex<LinkOutput>,
    name: Arc<str>,
    tally: TallyReader,
    heard: Heard,
    batch_bell: Arc<Bell>,
    /// Where [`crate::testing::panic_lanes`] asked the lane to panic, as a
    /// bug would (a [`PanicPoint`]; 0 for nowhere).
    #[cfg(feature = "test-util")]
    panic_requested: std::sync::atomic::AtomicU8,
}

/// Where a lane panics when a test asks it to ([`crate::testing::panic_lanes`]).
#[cfg(feature = "test-util")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PanicPoint {
    /// When it next wakes for its batch.
    Wake = 1,
    /// In its next refill that took tasks from the queue, before it starts them.
    Refill = 2,
    /// In its next refill that took tasks from the queue, once the last
    /// one's frame is in the batch and before that task is in the book (the
    /// others taken are in it).
    Start = 3,
}

/// Rings its lane's bell when dropped, unless emptied first.
struct RingOnDrop<'a>(Option<&'a Lane>);

impl Drop for RingOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.0 {
            lane.ring_batch();
        }
    }
}

/// When a worker was last heard from: any frame its reader reads is a sign of
/// life (`docs/PROTOCOL.md`), results the lane settles without the actor
/// included. Written by the reader, read by the actor's health checks; held as
/// a moment on the pool's clock, so one atomic holds it.
#[derive(Debug)]
struct Heard {
    clock: PoolClock,
    at: AtomicMoment,
}

impl Lane {
    /// The lane of worker `name`, with an empty book that counts in `tally`,
    /// its worker's signs of life kept on the pool's `clock`.
    pub(crate) fn new(tally: TallyWriter, name: Arc<str>, clock: PoolClock) -> Self {
        let book = Book::new(tally);
        let output = LinkOutput::publishing_to(Arc::clone(book.link()));
        Self(Arc::new(LaneShared {
            tally: book.tally.reader(),
            book: Mutex::new(book),
            occupancy: Occupancy::default(),
            output: Mutex::new(output),
            name,
            heard: Heard {
                clock,
                at: AtomicMoment::new(clock.now().moment),
            },
            batch_bell: Arc::new(Bell::default()),
            #[cfg(feature = "test-util")]
            panic_requested: std::sync::atomic::AtomicU8::new(0),
        }))
    }

    /// Asks the lane's task to panic when it next reaches `at`
    /// ([`crate::testing::panic_lanes`]).
    #[cfg(feature = "test-util")]
    pub(crate) fn request_panic(&self, at: PanicPoint) {
        self.0
            .panic_requested
            .store(at as u8, std::sync::atomic::Ordering::Relaxed);
        self.ring_batch();
    }

    /// Panics if [`request_panic`](Self::request_panic) asked it to, here.
    #[cfg(feature = "test-util")]
    pub(crate) fn panic_if_requested(&self, here: PanicPoint) {
        assert!(
            self.0
                .panic_requested
                .load(std::sync::atomic::Ordering::Relaxed)
                != here as u8,
            "panic requested by pool_core::testing::panic_lanes"
        );
    }

    /// Tells the lane's writer that frames wait in the book's batch (rung
    /// after the book's lock is released).
    pub(crate) fn ring_batch(&self) {
        self.0.batch_bell.ring();
    }

    /// Writes the frames waiting in the book's batch to the worker's link
    /// now, on the caller's thread, when nothing waits before them and the
    /// link takes them whole ([`LinkOutput::write_now`]); else rings the
    /// lane's writer to write them. Called with neither lock held.
    pub(crate) fn write_or_ring(&self) {
        // Rings unless all was written, also when the writer panicked.
        let mut ring = RingOnDrop(Some(self));
        if let Ok(mut output) = self.0.output.try_lock() {
            if output.write_now(|| self.book()) {
                ring.0 = None;
            }
        }
        // Else held by the lane's task (it writes anyway once rung), or
        // poisoned by a writer that panicked on a caller's thread (the lane's
        // task goes on writing; callers leave the writing to it).
    }

    /// Whether `other` is a clone of this lane.
    pub(crate) fn is(&self, other: &Lane) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The lane's bell, for its worker's keeper to ring when the worker exits.
    pub(crate) fn bell(&self) -> Arc<Bell> {
        self.0.batch_bell.clone()
    }

    /// Resolves once [`Lane::ring_batch`] rang since it last resolved.
    pub(crate) async fn batch_rung(&self) {
        self.0.batch_bell.rung().await;
    }

    /// The worker was heard from at `at` (its reader read a frame).
    pub(crate) fn heard(&self, at: Moment) {
        self.0.heard.at.store(at);
    }

    /// When the worker was last heard from (when the lane began, before any
    /// frame).
    pub(crate) fn last_heard(&self) -> Instant {
        let heard = &self.0.heard;
        heard.clock.instant(heard.at.load())
    }

    /// Tasks its worker answered, read without the book's lock.
    pub(crate) fn answered(&self) -> u64 {
        self.0.tally.answered()
    }

    /// The worker's name, shared by every output it produces.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    /// The book, locked. The lock is never held across an await. A caller
    /// may be told an outcome under it (a reader settling a result, see the
    /// module's doc), but is woken after it. A panic while it was held
    /// poisoned nothing the book's own methods had left half-done, so the
    /// book stays usable.
    pub(crate) fn book(&self) -> BookGuard<'_> {
        BookGuard {
            book: self.0.book.lock().unwrap_or_else(PoisonError::into_inner),
            occupancy: &self.0.occupancy,
        }
    }

    /// Whether nobody holds its book's lock now.
    #[cfg(test)]
    pub(crate) fn book_is_free(&self) -> bool {
        self.0.book.try_lock().is_ok()
    }

    /// How many tasks its worker holds, as its book was last left (see
    /// [`Occupancy`]), read without the book's lock: a hint.
    pub(crate) fn occupancy(&self) -> u32 {
        self.0.occupancy.get()
    }

    /// The link's output, locked (by the lane's task; callers only try it,
    /// in [`Lane::write_or_ring`]). Taken before the book's lock when both
    /// are held; never held across an await.
    pub(crate) fn output(&self) -> MutexGuard<'_, LinkOutput> {
        self.0.output.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("unanswered", &self.book().len())
            .finish()
    }
}

/// Makes `slot` hold `at` when it is earlier than what it holds (or it holds
/// nothing).
pub(crate) fn keep_earliest(slot: &mut Option<Instant>, at: Instant) {
    if slot.is_none_or(|held| at < held) {
        *slot = Some(at);
    }
}

/// When a run that starts at `start` and may take `timeout` ends; a timeout too
/// large to represent saturates to "not in this program's life".
pub(crate) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    use super::actor::LONGEST_TIMER;
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(LONGEST_TIMER * 100))
        .or_else(|| start.checked_add(LONGEST_TIMER))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests;
