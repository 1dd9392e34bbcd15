//! The worker path inside the actor: launching, readiness, death and
//! replacement, restart backoff and the breaker, slots, retiring a worker.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

use super::actor::{
    capped, worker_name, Actor, CancelAsked, Phase, Slot, Timer, Worker, MAX_UNCOUNTED_REQUEUES,
};
use super::alert_kind::AlertKind;
use super::events::{AlertSeverity, PoolEvent};
use super::failure::Failure;
use super::handle::FinalStatus;
use super::lane::settle::{LaneSettings, Settler};
use super::lane::window::Window;
use super::lane::Lane;
use super::metrics::Stats;
use super::probe_set::Occasion;
use super::worker_io::{run_worker, Declared, LinkFault, WorkerEvent, WorkerLaunch};
use super::worker_life::{KillCause, WorkerLife};
use crate::error::StartError;
use crate::process::GroupSignal;
use crate::transport::WorkerSpec;

impl Actor {
    /// Makes `slot` available to the next worker launched, counting a restart
    /// when its worker did not leave by the pool's choice.
    pub(crate) fn vacate(&mut self, slot: Slot, restarted: bool) {
        self.vacant_slots.push_back(Slot {
            id: slot.id,
            restarts: slot.restarts + u32::from(restarted),
        });
    }

    /// Opens the restart breaker once `failures` reaches `max_start_failures`: a
    /// critical alert, and replacements only every `restart_backoff_cap`.
    fn open_breaker_after(&mut self, failures: u32, what: &str) {
        if failures < self.config.max_start_failures
            || self.shared.stats.breaker_open.swap(true, Relaxed)
        {
            return;
        }
        let message = format!(
            "{failures} {what}; one replacement every {} ms until a worker succeeds",
            self.config.restart_backoff_cap.as_millis()
        );
        self.raise_alert(
            AlertSeverity::Critical,
            AlertKind::RestartBreakerOpen,
            None,
            message,
        );
    }

    /// Starts one worker process now.
    pub(crate) fn launch_worker(&mut self) {
        let num = self.next_worker;
        self.next_worker += 1;
        let name = worker_name(num);
        let mut spec = WorkerSpec::new(name.clone(), self.command.program.clone())
            .args(self.command.args.iter().cloned());
        spec.env.clone_from(&self.command.env);
        spec.max_frame = self.config.max_frame;
        let slot = self.vacant_slots.pop_front().unwrap_or_else(|| {
            self.next_slot += 1;
            Slot {
                id: self.next_slot - 1,
                restarts: 0,
            }
        });
        self.launching.insert(num, slot);
        Stats::bump(&self.shared.stats.workers_spawned);
        tokio::spawn(run_worker(WorkerLaunch {
            num,
            transport: self.transport.clone(),
            spec,
            heartbeat_ms: self.config.hello_heartbeat_ms(),
            concurrency: self.config.worker_concurrency,
            start_timeout: self.config.start_timeout,
            events: self.events_tx.clone(),
            settler: Settler::new(
                Lane::new(
                    self.shared
                        .stats
                        .tallies
                        .writer(u64::from(self.config.worker_concurrency)),
                    name.as_str().into(),
                    self.shared.clock,
                ),
                self.shared.clone(),
                self.queue.clone(),
                num,
                LaneSettings {
                    window: Window::of(&self.config),
                    default_timeout: self.config.task_timeout,
                    max_frame: self.config.max_frame,
                    settles: !self.probes.consulted_on(Occasion::Completion),
                },
            ),
        }));
        self.shared
            .emit(|| PoolEvent::WorkerSpawned { worker: name });
    }

    pub(crate) fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Ready {
                num,
                pid,
                control,
                declared,
                lane,
            } => self.on_ready(num, pid, control, declared, lane),
            WorkerEvent::StartFailed {
                num,
                reason,
                exit,
                stderr_tail,
            } => self.on_start_failed(num, reason, exit, stderr_tail),
            WorkerEvent::Messages {
                num,
                messages,
                settled,
            } => self.on_messages(num, messages, settled),
            WorkerEvent::Gone {
                num,
                pid,
                fault,
                exit,
                stderr_tail,
            } => self.on_gone(num, pid, fault, exit, stderr_tail),
        }
    }

    fn on_ready(
        &mut self,
        num: u64,
        pid: u32,
        control: tokio::sync::mpsc::UnboundedSender<GroupSignal>,
        declared: Declared,
        lane: Lane,
    ) {
        let slot = self.launching.remove(&num);
        let now = Instant::now();
        self.shared.emit(|| PoolEvent::WorkerReady {
            worker: lane.name().to_string(),
            pid,
        });
        self.workers.insert(
            num,
            Worker {
                pid,
                control,
                lane,
                task_limit: self
                    .config
                    .max_tasks_per_worker
                    .map(|max| crate::health::MaxTasksProbe::new(max, max / 10).limit_for(num)),
                ready_at: now,
                rss_bytes: 0,
                life: WorkerLife::new(),
                slot,
                heartbeats: std::collections::VecDeque::new(),
                task_types: declared.task_types,
                replies: declared.replies,
            },
        );
        if let Some(worker) = self.workers.get(&num) {
            worker.sync_feed();
            let (lane, types) = (worker.lane.clone(), worker.task_types.clone());
            self.shared.desk.seat(num, lane, types);
        }
        let replaced = self
            .workers
            .iter()
            .find(|(_, w)| w.life.is_recycling())
            .map(|(n, _)| *n);
        if let Some(old) = replaced {
            self.release_worker(old);
        }
        self.start_failures = 0;
        if self.shared.crash_streak.get() < self.config.max_start_failures {
            self.shared.stats.breaker_open.store(false, Relaxed);
        }
        match self.phase {
            Phase::Starting if self.launching.is_empty() => {
                self.phase = Phase::Running;
                self.shared.stats.initialized.store(true, Relaxed);
                self.publish_gauges();
                if let Some(reply) = self.start_reply.take() {
                    let _ = reply.send(Ok(()));
                }
                // A worker that died while the others started was not
                // replaced (nothing is before the pool runs): it is now.
                self.replenish();
            }
            Phase::Stopping => self.release_worker(num),
            Phase::Killing => self.kill_now(num),
            // The breaker's probe is ready (the next is due after the cap), or
            // the breaker closed and the workers it held back start now.
            Phase::Running => self.replenish(),
            Phase::Starting | Phase::Draining => {}
        }
        if self.live_count() > self.wanted() && self.phase == Phase::Running {
            self.shrink_to_target();
        }
    }

    fn on_start_failed(
        &mut self,
        num: u64,
        reason: String,
        exit: Option<String>,
        stderr_tail: String,
    ) {
        if let Some(slot) = self.launching.remove(&num) {
            self.vacate(slot, true);
        }
        tracing::warn!(worker.id = num, %reason, "worker failed to start");
        if self.phase == Phase::Starting {
            if let Some(reply) = self.start_reply.take() {
                let _ = reply.send(Err(StartError::Worker {
                    reason,
                    exit,
                    stderr_tail,
                }));
            }
            self.shared.closed.store(true, Relaxed);
            self.enter_stopping();
            return;
        }
        if self.phase != Phase::Running {
            return;
        }
        self.start_failures += 1;
        let worker = worker_name(num);
        self.raise_alert(
            AlertSeverity::Warning,
            AlertKind::WorkerStartFailed,
            None,
            format!("{worker} failed to start: {reason}"),
        );
        let failures = self.start_failures;
        self.open_breaker_after(
            failures,
            &format!("consecutive worker starts failed (last: {reason})"),
        );
        self.replenish();
    }

    fn on_gone(
        &mut self,
        num: u64,
        pid: u32,
        fault: Option<LinkFault>,
        exit: String,
        stderr_tail: String,
    ) {
        let Some(mut worker) = self.workers.remove(&num) else {
            return;
        };
        self.shared.desk.unseat(num);
        {
            let mut book = worker.lane.book();
            // Gone: no longer counted ready, even before its book goes.
            book.tally.set_takes_tasks(false);
            if let Some((key, _)) = book.deadline_timer.take() {
                self.timers.try_remove(&key);
            }
        }
        if let Some((_, key)) = worker.life.take_stop() {
            // Gone before its next stop step: it is never signalled.
            self.timers.try_remove(&key);
        }
        if let Some(slot) = worker.slot {
            let retired = matches!(worker.life.cause(), Some(KillCause::Retired));
            self.vacate(slot, !retired);
        }
        let cause = worker.life.cause();
        let expected = cause.is_some() || fault.is_some();
        // A worker that dies while running a task is that task's failure (it loses
        // the attempt below); only a death with no task running counts towards the
        // restart backoff and the breaker, so crashing tasks cannot starve the pool.
        // What the link took: an attempt none of whose frame reached the
        // worker neither ran nor can be to blame.
        let written = worker.lane.output().written();
        let reached = worker.lane.book().reached(written);
        let (running_task, runs, unanswered) =
            (reached.first_running, reached.running, reached.unanswered);
        // A worker that died running several tasks at once, or batched its
        // replies and died holding several, may have been killed by any of
        // them: none is blamed, each runs its next attempt alone.
        let culprit_known = matches!(
            cause,
            Some(KillCause::TimedOut { .. } | KillCause::CancelIgnored { .. })
        );
        let ambiguous = worker
            .replies
            .death_is_ambiguous(runs, unanswered, culprit_known);
        if !expected {
            Stats::bump(&self.shared.stats.workers_crashed);
            let message = match running_task {
                Some(_) if ambiguous => format!(
                    "{} died unexpectedly ({exit}) with {unanswered} tasks unanswered, \
                     {runs} of them running; each runs alone next to find the one \
                     at fault",
                    worker.name()
                ),
                Some(task) => format!(
                    "{} died unexpectedly ({exit}) while running task {task}",
                    worker.name()
                ),
                None => format!("{} died unexpectedly ({exit})", worker.name()),
            };
            self.raise_alert(
                AlertSeverity::Warning,
                AlertKind::WorkerCrashed,
                Some(worker.name()),
                message,
            );
        }
        let task_at_fault = cause.is_none() && running_task.is_some();
        if cause.is_none() && !task_at_fault {
            let crashes = self.shared.crash_streak.bump();
            self.open_breaker_after(
                crashes,
                "workers in a row died with no task running and no task succeeding",
            );
        }
        self.shared.emit(|| PoolEvent::WorkerExited {
            worker: worker.name().to_owned(),
            pid,
            exit: exit.clone(),
            expected,
            stderr_tail: stderr_tail.clone(),
        });
        let general = match (cause, fault) {
            (Some(KillCause::Unhealthy(reason)), _) => Failure::Unhealthy {
                reason: reason.clone(),
            },
            (Some(KillCause::Shutdown), _) => Failure::ShuttingDown,
            (_, Some(LinkFault::Protocol(e))) => Failure::Protocol {
                message: e.to_string(),
            },
            (_, Some(LinkFault::LanePanicked(message))) => Failure::Protocol {
                message: format!(
                    "the pool could not read this worker's output: its reader panicked ({message})"
                ),
            },
            _ => Failure::WorkerDied { exit, stderr_tail },
        };
        // Last written first: the unstarted go back to the head of the queue in
        // their order.
        let attempts = worker.lane.book().drain_last_first();
        for mut running in attempts {
            let id = running.pending.id;
            running.deadline = None;
            // None of its frame reached the worker (left in the batch, or
            // unwritten when the link broke): it did not run, so it goes back
            // without losing an attempt (and without using up a free requeue:
            // there is no doubt). Not a task whose deadline fired: a worker
            // that never reads would make it time out for ever.
            let by_caller = running.cancel == CancelAsked::ByCaller;
            if running.frame_start >= written && !by_caller && running.timed_out.is_none() {
                self.requeue_unstarted(running.pending);
                continue;
            }
            if ambiguous
                && worker.replies.suspects(running.run_start.is_some())
                && !by_caller
                && !matches!(cause, Some(KillCause::Shutdown))
            {
                // It may not have run, or may have finished with its reply
                // unwritten: its attempt does not count, and the next runs alone.
                running.pending.run_alone = true;
                self.requeue_not_at_fault(running.pending);
                continue;
            }
            if running.run_start.is_none()
                && !by_caller
                && running.pending.requeues.out_of_windows() < MAX_UNCOUNTED_REQUEUES
            {
                // Still in the prefetch window: it never ran, so it loses no
                // attempt. A task whose frame alone kills a worker (its
                // decoder) would go free for ever while the task running
                // beside it took the blame each time: after the last free
                // requeue it runs alone, so a death then is its own.
                running.pending.requeues.count_window();
                if running.pending.requeues.out_of_windows() == MAX_UNCOUNTED_REQUEUES {
                    running.pending.run_alone = true;
                }
                self.requeue_unstarted(running.pending);
                continue;
            }
            // Its caller cancelled it: whatever killed the worker, it ends
            // cancelled now that the worker is reaped, never to run again.
            if by_caller {
                self.settle_error(running.pending, FinalStatus::Cancelled, Failure::Cancelled);
                continue;
            }
            // Its deadline fired (whichever task's deadline the worker was
            // killed for): it fails as timed out, counted now.
            if let Some(after) = running.timed_out {
                Stats::bump(&self.shared.stats.timed_out);
                self.shared.emit(|| PoolEvent::TaskTimedOut {
                    task: id,
                    worker: worker.name().to_owned(),
                    timeout_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                });
                self.attempt_failed(running, Failure::TimedOut { after }, true);
                continue;
            }
            match cause {
                Some(KillCause::CancelIgnored { task }) if *task == id => {
                    self.settle_error(running.pending, FinalStatus::Cancelled, Failure::Cancelled);
                }
                Some(KillCause::TimedOut { .. } | KillCause::CancelIgnored { .. }) => {
                    // Collateral: this attempt was not at fault, so it does not count.
                    self.requeue_not_at_fault(running.pending);
                }
                Some(KillCause::Shutdown) => {
                    self.settle_error(running.pending, FinalStatus::Failed, Failure::ShuttingDown);
                }
                _ => self.attempt_failed(running, general.clone(), true),
            }
        }
        if task_at_fault {
            // The task took the blame: its replacement starts at once, so one task
            // never holds the pool below its size.
            self.replenish_after(Duration::ZERO);
        } else {
            self.replenish();
        }
    }

    /// Puts back at the head of its level a task whose last attempt never
    /// started (it waited in a dead worker's window): its attempt is given
    /// back, also when the pool stops taking work and it fails with "shutting
    /// down" instead.
    pub(crate) fn requeue_unstarted(&mut self, mut pending: super::actor::Pending) {
        pending.give_back_attempt();
        if !matches!(self.phase, Phase::Starting | Phase::Running) {
            return self.settle_error(pending, FinalStatus::Failed, Failure::ShuttingDown);
        }
        self.queue.lock().push_front(pending);
    }

    /// Puts back at the head of its level a task whose last attempt may have
    /// run but was not at fault (its worker was killed for another task's, or
    /// died with its replies unwritten): the attempt does not count. Once the
    /// pool stops taking work it fails with "shutting down" instead, its
    /// attempt counted, since it may have run.
    fn requeue_not_at_fault(&mut self, mut pending: super::actor::Pending) {
        if !matches!(self.phase, Phase::Starting | Phase::Running) {
            return self.settle_error(pending, FinalStatus::Failed, Failure::ShuttingDown);
        }
        pending.give_back_attempt();
        self.queue.lock().push_front(pending);
    }

    /// Workers that count towards the target: alive and not on their way out,
    /// starting, or due to start.
    pub(crate) fn live_count(&self) -> usize {
        let staying = self
            .workers
            .values()
            .filter(|w| w.life.is_staying())
            .count();
        staying + self.launching.len() + self.respawns_pending
    }

    /// Starts (or schedules) workers until the pool has as many as it wants
    /// (its target, and a rolling restart's surge), after the restart backoff.
    pub(crate) fn replenish(&mut self) {
        self.replenish_after(self.restart_delay());
    }

    /// Starts (or schedules, `delay` from now) workers until the target is met.
    fn replenish_after(&mut self, delay: Duration) {
        if self.phase != Phase::Running {
            return;
        }
        while self.live_count() < self.wanted() {
            let name = worker_name(self.next_worker + self.respawns_pending as u64);
            if !self.start_one_after(delay) {
                break;
            }
            Stats::bump(&self.shared.stats.workers_restarted);
            self.shared.emit(|| PoolEvent::WorkerRestarted {
                worker: name,
                backoff_ms: delay.as_millis() as u64,
            });
        }
    }

    /// Starts one worker now, or schedules its start `delay` from now; does
    /// nothing (`false`) while the breaker is open and a worker is already
    /// starting or due: with the breaker open, one at a time probes whether
    /// workers start and live again (a replacement or a scale-up's alike),
    /// the next due once it is ready.
    pub(crate) fn start_one_after(&mut self, delay: Duration) -> bool {
        let probing = self.respawns_pending > 0 || !self.launching.is_empty();
        if probing && self.shared.stats.breaker_open.load(Relaxed) {
            return false;
        }
        if delay.is_zero() {
            self.launch_worker();
        } else {
            self.respawns_pending += 1;
            self.timers.insert(Timer::Respawn, capped(delay));
        }
        true
    }

    /// Exponential restart backoff over consecutive failed starts and deaths with
    /// no task running; the cap once the breaker is open.
    pub(crate) fn restart_delay(&self) -> Duration {
        let failures = self.shared.crash_streak.get().max(self.start_failures);
        if failures == 0 {
            return Duration::ZERO;
        }
        if self.shared.stats.breaker_open.load(Relaxed) {
            return self.config.restart_backoff_cap;
        }
        let doublings = (failures - 1).min(20);
        self.config
            .restart_backoff_base
            .saturating_mul(1 << doublings)
            .min(self.config.restart_backoff_cap)
    }

    pub(crate) fn on_respawn_due(&mut self) {
        if self.respawns_pending == 0 {
            return;
        }
        self.respawns_pending -= 1;
        if self.phase == Phase::Running && self.live_count() < self.wanted() {
            self.launch_worker();
        }
    }

    /// Asks worker `num` to exit once idle: no new tasks; `shutdown` and EOF when
    /// its last task is done, then SIGTERM and SIGKILL if it lingers.
    pub(crate) fn release_worker(&mut self, num: u64) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        worker.life.retire();
        worker.sync_feed();
        if worker.lane.book().is_empty() {
            self.send_shutdown(num);
        }
    }
}
