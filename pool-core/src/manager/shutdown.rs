//! Shutdown inside the actor: drain, abandon past the deadline, and stop each
//! worker step by step (`cancel` for its tasks, `shutdown`, SIGTERM, SIGKILL,
//! `kill_grace` apart); or stop at once, killing every worker's group.

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;

use super::actor::{capped, Actor, CancelAsked, Phase, Timer};
use super::failure::Failure;
use super::handle::FinalStatus;
use super::worker_life::{KillCause, StopStep};
use crate::error::{ConfigError, StartError};
use crate::process::GroupSignal;
use crate::protocol::{encode_frame, ToWorker};

/// What stopping does with the tasks callers queued before it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    /// Handed out first, as if the bell their callers rang had been heard
    /// before the command: a graceful shutdown runs them.
    HandedOut,
    /// Failed as "shutting down" with the rest: every worker is about to be
    /// killed, and a task written to one now would start only to be cut off.
    Failed,
}

impl Actor {
    /// Stops taking work: queued tasks are failed with "shutting down", in-flight
    /// ones get `shutdown_timeout` to finish.
    pub(crate) fn begin_shutdown(&mut self) {
        self.stop_taking_work(Queued::HandedOut);
    }

    /// [`begin_shutdown`](Self::begin_shutdown), handing out first what
    /// callers queued or not (see [`Queued`]).
    fn stop_taking_work(&mut self, queued: Queued) {
        if matches!(
            self.phase,
            Phase::Draining | Phase::Stopping | Phase::Killing
        ) {
            return;
        }
        if queued == Queued::HandedOut {
            self.dispatch();
        }
        self.shared.closed.store(true, Relaxed);
        if let Some(reply) = self.start_reply.take() {
            let _ = reply.send(Err(StartError::Config(ConfigError::new(
                "pool",
                "shut down before it started",
            ))));
        }
        let mut queued: Vec<_> = {
            let mut waiting = self.queue.lock();
            // From now on callers' tasks come as messages: `refuse_late`.
            waiting.close_to_callers();
            waiting.drain()
        };
        // Said once the queue is closed: a caller that sees the pool shutting
        // down finds nothing queued to hand out.
        self.shared.stats.shutting_down.store(true, Relaxed);
        queued.extend(self.held.take_all());
        let retrying: Vec<_> = self.retrying.drain().map(|(_, p)| p).collect();
        for pending in queued.into_iter().chain(retrying) {
            self.settle_error(pending, FinalStatus::Failed, Failure::ShuttingDown);
        }
        self.phase = Phase::Draining;
        self.withdraw_prefetched();
        self.timers
            .insert(Timer::DrainDeadline, capped(self.config.shutdown_timeout));
    }

    /// In-flight tasks did not finish in time: each is cancelled, and its
    /// worker stopped step by step (see [`StopStep`]); each ends when the
    /// worker answers it or is reaped.
    pub(crate) fn on_drain_deadline(&mut self) {
        if self.phase != Phase::Draining {
            return;
        }
        let busy: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.lane.book().is_empty() && !w.life.is_killing())
            .map(|(num, _)| *num)
            .collect();
        for num in busy {
            self.abandon_tasks(num);
        }
        self.enter_stopping();
    }

    /// Sends worker `num` `cancel` for every task it still runs: each ends
    /// when the worker answers it (its result, or "shutting down" for an
    /// error) or, at the latest, when the worker is reaped, never while it may
    /// still run. Once the worker has answered them all it is sent `shutdown`
    /// at once; otherwise `shutdown` follows `kill_grace` later.
    fn abandon_tasks(&mut self, num: u64) {
        let max_frame = self.config.max_frame;
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        worker.life.abandon();
        worker.sync_feed();
        // Its tasks' timeouts still hold: one that runs past its own is
        // killed for it as at any other time.
        let mut batch = BytesMut::new();
        {
            let mut book = worker.lane.book();
            // A task its caller cancelled, or one taken back from the window,
            // was sent its `cancel` already.
            for running in book.attempts_mut() {
                if running.cancel != CancelAsked::No {
                    continue;
                }
                running.cancel = CancelAsked::Abandoned;
                let id = running.pending.id;
                let _ = encode_frame(&ToWorker::Cancel { id }, &mut batch, max_frame);
            }
        }
        worker.send_frame(&batch);
        self.schedule_stop_step(num, StopStep::Cancelled);
    }

    /// Asks every worker to exit: each idle one is sent `shutdown` now, a busy one
    /// once its tasks are answered; the actor ends when every worker is reaped.
    pub(crate) fn enter_stopping(&mut self) {
        if matches!(self.phase, Phase::Stopping | Phase::Killing) {
            return;
        }
        self.phase = Phase::Stopping;
        let nums: Vec<u64> = self.workers.keys().copied().collect();
        for num in nums {
            self.release_worker(num);
        }
    }

    /// Stops the pool at once, also while a graceful shutdown is under way: what
    /// waits fails as [`begin_shutdown`](Self::begin_shutdown) says (a task
    /// queued before it too, never handed out first), and every
    /// worker's process group is killed now. The signal travels to the worker's
    /// keeper, which owns its process and has not reaped it yet, so it can only
    /// reach that worker's group, never a reused pid. Each worker's tasks settle
    /// once it is reaped (`on_gone`); a worker still starting is
    /// killed as soon as it reports ready.
    pub(crate) fn shutdown_now(&mut self) {
        self.stop_taking_work(Queued::Failed);
        if self.phase == Phase::Killing {
            return;
        }
        self.phase = Phase::Killing;
        let nums: Vec<u64> = self.workers.keys().copied().collect();
        for num in nums {
            self.kill_now(num);
        }
    }

    /// Kills worker `num`'s process group now; a stop step still due is dropped.
    /// Its tasks end as "shutting down" unless it was already being killed for a
    /// task's timeout or an ignored cancel (that task then ends as such).
    pub(crate) fn kill_now(&mut self, num: u64) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        if let Some((_, key)) = worker.life.take_stop() {
            self.timers.try_remove(&key);
        }
        worker.life.kill(KillCause::Shutdown);
        worker.sync_feed();
        let _ = worker.control.send(GroupSignal::Kill);
    }

    /// Sends worker `num` `shutdown` and closes its input (once); SIGTERM follows
    /// `kill_grace` later if it has not exited.
    pub(crate) fn send_shutdown(&mut self, num: u64) {
        let max_frame = self.config.max_frame;
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        let mut frame = BytesMut::new();
        let shutdown = ToWorker::Shutdown { graceful: true };
        if encode_frame(&shutdown, &mut frame, max_frame).is_err() {
            frame.clear();
        }
        // The lane ends the worker's input after the frame.
        if !worker.send_and_close(&frame) {
            return;
        }
        self.schedule_stop_step(num, StopStep::ShutdownSent);
    }

    /// Records that worker `num` reached `step` and arms the timer for the next
    /// one, `kill_grace` from now (replacing the timer of the previous step).
    fn schedule_stop_step(&mut self, num: u64, step: StopStep) {
        let grace = capped(self.config.kill_grace);
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        // A serving worker is never stopped step by step: it is released first.
        let Some(stop) = worker.life.stop_mut() else {
            return;
        };
        if let Some((_, key)) = stop.take() {
            self.timers.try_remove(&key);
        }
        let key = self.timers.insert(Timer::StopStep { worker: num }, grace);
        *stop = Some((step, key));
    }

    /// Worker `num` is still there `kill_grace` after its last stop step: take the
    /// next one.
    pub(crate) fn on_stop_step_due(&mut self, num: u64) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        // The timer that fired is no longer in the queue: forget its key.
        let Some((step, _)) = worker.life.take_stop() else {
            return;
        };
        match step {
            StopStep::Cancelled => self.send_shutdown(num),
            StopStep::ShutdownSent => {
                let _ = worker.control.send(GroupSignal::Terminate);
                self.schedule_stop_step(num, StopStep::Terminated);
            }
            StopStep::Terminated => {
                worker.life.mark_killing();
                worker.sync_feed();
                let _ = worker.control.send(GroupSignal::Kill);
            }
        }
    }
}
