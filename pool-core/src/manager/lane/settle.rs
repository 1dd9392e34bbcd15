//! The reader's side of a lane: a `result` read from the worker settles its task
//! at once, on the reader's thread (the caller's answer, the counters, the
//! run-time histogram, the routine event), the worker is refilled from the
//! queue, and the actor hears of it (a [`Settled`] report) only when something
//! in it is the actor's business ([`Settler::take_report`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;

use crate::manager::task_record::TaskRecord;

use super::super::clock::{Now, PoolClock};
use super::super::outbox::Outbox;

use super::super::actor::{Pending, Running, Shared};
use super::super::dispatch::settle_failed;
use super::super::events::PoolEvent;
use super::super::failure::Failure;
use super::super::handle::FinalStatus;
use super::super::outcome_cell::{HeldOutput, Wakes};
use super::super::routing::TaskTypes;
use super::attempt::Target;
use super::feed::{After, Feed};
use super::queue::SharedQueue;
use super::window::Window;
use super::{keep_earliest, Completion, Lane, Reply};

/// What a reader settled in the reads since the last one whose report the
/// actor needed (a report the actor does not need is dropped), or what a
/// refill after the link caught up did (nothing answered).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Something here is the actor's business (see [`Settler::take_report`]);
    /// else the report is dropped and the actor not woken.
    pub(crate) needs_actor: bool,
    /// Tasks whose `result` took them out of the book.
    pub(crate) answered: u32,
    /// Of those, the ones that completed (not cancelled).
    pub(crate) succeeded: u32,
    /// The earliest deadline of the tasks whose runs started meanwhile, in the
    /// worker's window or written by the lane's refill, when the actor's
    /// deadline timer for the worker is not armed for that or earlier.
    pub(crate) deadline: Option<Instant>,
    /// Tasks that started running with a cancel already asked for: their
    /// cancel grace starts now.
    pub(crate) cancel_started: Vec<u64>,
}

/// What a `result` did to the attempt it answered.
enum Answered {
    /// It completed: its caller was told, and is woken with the read's
    /// others (a `Completions` channel is handed the read's outcomes with
    /// them); its task (type and input) is left to drop.
    Completed(TaskRecord),
    /// Its cancel had been asked for: it settles as cancelled, after the book's
    /// lock is let go.
    Cancelled(Pending),
}

/// Settles the results a worker's reader reads, and refills the worker.
pub(crate) struct Settler {
    lane: Lane,
    shared: Arc<Shared>,
    /// The worker's number.
    num: u64,
    settings: LaneSettings,
    feed: Feed,
    report: Settled,
    /// The callers of the tasks this read settled, woken once it is settled
    /// ([`Settler::wake_callers`]).
    wakes: Wakes,
}

/// The pool's settings a [`Settler`] works with.
pub(crate) struct LaneSettings {
    /// The worker's run slots and prefetch window.
    pub(crate) window: Window,
    pub(crate) default_timeout: Duration,
    pub(crate) max_frame: usize,
    /// Whether the lane settles results itself: no probe wants to judge a
    /// worker after each completed task. Otherwise results go to the actor,
    /// which judges before the caller is told (and refills the worker itself).
    pub(crate) settles: bool,
}

impl Settler {
    pub(crate) fn new(
        lane: Lane,
        shared: Arc<Shared>,
        queue: SharedQueue,
        num: u64,
        settings: LaneSettings,
    ) -> Self {
        Self {
            lane,
            shared,
            num,
            feed: Feed::new(queue, num, settings.window),
            settings,
            report: Settled::default(),
            wakes: Wakes::default(),
        }
    }

    /// Wakes the callers of the tasks settled since the last call: once a
    /// read, however many results it brought.
    pub(crate) fn wake_callers(&mut self) {
        self.wakes.wake_all();
    }

    /// The pool's clock.
    pub(crate) fn clock(&self) -> &PoolClock {
        &self.shared.clock
    }

    /// The lane it settles in.
    pub(crate) fn lane(&self) -> &Lane {
        &self.lane
    }

    /// The worker is ready: it takes `types`.
    pub(crate) fn connect(&mut self, types: TaskTypes) {
        self.feed.connect(types);
    }

    /// After results were settled, fills the room they left in the worker's
    /// window from the queue into `out`, after the frames waiting in the
    /// book's batch (see [`Feed::refill`]).
    pub(crate) fn refill(&mut self, out: &mut Outbox) {
        if self.report.answered == 0 {
            return;
        }
        self.fill(out, After::Answers);
    }

    /// The link took the frames a filler of the worker's book stopped for
    /// ([`link_ahead`](super::link_ahead)): fills the room the worker's window
    /// still has from the queue into `out`, or, where the actor feeds the
    /// worker (its results go to the actor), leaves that to the actor's
    /// dispatch pass. Returns the refill's report when the actor needs it (a
    /// deadline to arm, room left that its pass may fill).
    pub(crate) fn refill_caught_up(&mut self, out: &mut Outbox) -> Option<Settled> {
        if self.forwards() {
            self.tell_actor();
        } else {
            self.fill(out, After::LinkCaughtUp);
        }
        let report = std::mem::take(&mut self.report);
        report.needs_actor.then_some(report)
    }

    fn fill(&mut self, out: &mut Outbox, after: After) {
        let target = Target {
            shared: &self.shared,
            num: self.num,
            name: self.lane.name(),
            concurrency: self.settings.window.concurrency(),
            default_timeout: self.settings.default_timeout,
            max_frame: self.settings.max_frame,
        };
        let refilled = self.feed.refill(&self.lane, &target, out, after);
        if refilled.freed_slots > 0 {
            self.shared.queue_slots.add_permits(refilled.freed_slots);
        }
        if let Some(deadline) = refilled.deadline {
            keep_earliest(&mut self.report.deadline, deadline);
            self.report.needs_actor = true;
        }
        if refilled.stalled {
            self.report.needs_actor = true;
        }
        for failed in refilled.unwritable {
            failed.settle(&self.shared);
        }
    }

    /// Makes the report of this read one the actor hears (the lane cannot
    /// refill its worker: the link broke, or the worker broke the protocol).
    pub(crate) fn tell_actor(&mut self) {
        self.report.needs_actor = true;
    }

    /// Whether results go to the actor (see [`LaneSettings::settles`]).
    pub(crate) fn forwards(&self) -> bool {
        !self.settings.settles
    }

    /// The worker answered task `id` with `payload`, read at `now`. An answer
    /// for a task the worker does not hold (settled already, or never sent) is
    /// ignored.
    pub(crate) fn result(&mut self, id: u64, payload: Bytes, now: Now) {
        let shared = &self.shared;
        let name = self.lane.name();
        let wakes = &mut self.wakes;
        let settled = self.lane.book().answer(
            id,
            Reply::Result,
            self.settings.window.concurrency(),
            self.settings.default_timeout,
            now,
            &mut self.report,
            |running, completion| match completion {
                Some(completion) => {
                    Answered::Completed(complete(shared, name, running, payload, completion, wakes))
                }
                None => Answered::Cancelled(running.pending),
            },
        );
        match settled {
            None => {
                tracing::debug!(worker.id = %name, task.id = id, "reply for a task the worker does not hold; ignored");
            }
            Some(Answered::Completed(task)) => {
                // Dropped once the book's lock is let go: its payload may be a
                // buffer of the caller's own, whose drop runs the caller's code.
                drop(task);
                self.report.succeeded += 1;
                if self.shared.crash_streak.get() > 0 {
                    // A success ends the streak of deaths: the breaker's business.
                    self.report.needs_actor = true;
                }
            }
            Some(Answered::Cancelled(pending)) => {
                // The outcomes settled before it in this read go first: a
                // `Completions` channel hears them in the order they settled.
                self.wakes.wake_all();
                settle_failed(
                    &self.shared,
                    pending,
                    FinalStatus::Cancelled,
                    Failure::Cancelled,
                );
            }
        }
    }

    /// The report of what was settled since the last one, when the actor
    /// needs it; `None` when nothing was settled, or when the report holds
    /// nothing the actor acts on. The actor needs it when:
    /// - the worker does not feed from the queue (retiring, suspect, killed,
    ///   or with a task limit the actor counts out): the actor releases,
    ///   judges or refills it;
    /// - a run started with a deadline earlier than the worker's armed timer,
    ///   or with its cancel already asked for (the grace starts);
    /// - a task succeeded while workers had been dying in a row (the breaker);
    /// - the lane had room that the queue's waiting tasks could not fill (held
    ///   for a worker of their type, or not of this worker's types), so the
    ///   actor's dispatch pass decides;
    /// - the pool is shutting down (the actor waits for the last answer).
    ///
    /// Otherwise the results were settled, the worker refilled and its
    /// counters kept by the lane itself: the actor is not woken.
    pub(crate) fn take_report(&mut self) -> Option<Settled> {
        if self.report.answered == 0 {
            return None;
        }
        let report = std::mem::take(&mut self.report);
        (report.needs_actor || self.shared.closed.load(Relaxed)).then_some(report)
    }
}

/// Settles `running` with its result `payload`, read from worker `name`, its
/// `completion` counted by its lane: the routine event, then the caller told,
/// to be woken with the others of `wakes`. The task (its type and input) is
/// returned, for the caller of this to drop where no lock is held.
#[inline]
pub(crate) fn complete(
    shared: &Shared,
    name: &Arc<str>,
    running: Running,
    payload: Bytes,
    completion: Completion,
    wakes: &mut Wakes,
) -> TaskRecord {
    let Completion { counted, run_ns } = completion;
    // Only the fields the outcome needs are moved out.
    let Running {
        pending:
            Pending {
                id,
                task,
                attempts,
                answer,
                queued_at,
                ..
            },
        sent,
        run_start,
        reused,
        ..
    } = running;
    let started = run_start.unwrap_or(sent);
    shared.emit_routine(|| PoolEvent::TaskCompleted {
        task: id,
        worker: name.to_string(),
        attempts,
        run_ms: run_ns / 1_000_000,
        worker_reused: reused,
    });
    let output = HeldOutput {
        payload,
        attempts,
        worker: name.clone(),
        run_ns,
        queue_ns: started.nanos_since(queued_at),
    };
    answer.completed(counted, id, output, wakes);
    task
}
