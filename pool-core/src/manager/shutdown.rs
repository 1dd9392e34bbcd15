//! Shutdown inside the actor: drain, abandon past the deadline, stop every worker.

use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::oneshot;

use super::actor::{capped, Actor, KillCause, Phase, Timer, WorkerState};
use super::failure::Failure;
use super::handle::FinalStatus;
use crate::error::{ConfigError, StartError};
use crate::process::GroupSignal;

impl Actor {
    /// Stops taking work: queued tasks are failed with "shutting down", in-flight
    /// ones get `shutdown_timeout` to finish.
    pub(crate) fn begin_shutdown(&mut self, waiter: Option<oneshot::Sender<()>>) {
        if let Some(waiter) = waiter {
            self.shutdown_waiters.push(waiter);
        }
        if matches!(self.phase, Phase::Draining | Phase::Stopping) {
            return;
        }
        self.shared.closed.store(true, Relaxed);
        self.shared.stats.shutting_down.store(true, Relaxed);
        if let Some(reply) = self.start_reply.take() {
            let _ = reply.send(Err(StartError::Config(ConfigError::new(
                "pool",
                "shut down before it started",
            ))));
        }
        let mut queued: Vec<_> = self.queue.drain().collect();
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

    /// In-flight tasks did not finish in time: their workers are killed and the
    /// tasks fail with "shutting down".
    pub(crate) fn on_drain_deadline(&mut self) {
        if self.phase != Phase::Draining {
            return;
        }
        let busy: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.in_flight.is_empty())
            .map(|(num, _)| *num)
            .collect();
        for num in busy {
            if let Some(worker) = self.workers.get_mut(&num) {
                worker.kill_cause = Some(KillCause::Shutdown);
                worker.state = WorkerState::Killing;
                let _ = worker.control.send(GroupSignal::Kill);
            }
        }
        self.enter_stopping();
    }

    /// Asks every worker to exit, then SIGTERM after `kill_grace`, SIGKILL after
    /// twice that; the actor ends when every worker is reaped.
    pub(crate) fn enter_stopping(&mut self) {
        if self.phase == Phase::Stopping {
            return;
        }
        self.phase = Phase::Stopping;
        let nums: Vec<u64> = self.workers.keys().copied().collect();
        for num in nums {
            if let Some(worker) = self.workers.get_mut(&num) {
                if worker.kill_cause.is_none() {
                    worker.kill_cause = Some(KillCause::Retired);
                }
            }
            self.release_worker(num);
        }
        let grace = self.config.kill_grace;
        self.timers.insert(Timer::Terminate, capped(grace));
        self.timers
            .insert(Timer::Kill, capped(grace.saturating_mul(2)));
    }
}
