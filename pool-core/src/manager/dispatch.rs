//! The task path inside the actor: dispatch, replies, retries, settlement, and
//! the refusal of tasks sent after the queue closed to callers.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio_util::time::DelayQueue;

use super::actor::{
    capped, worker_name, Actor, CancelAsked, Pending, Phase, RanOn, Running, Shared, Timer,
    HEARTBEAT_HISTORY, LONGEST_TIMER,
};
use super::alert_kind::AlertKind;
use super::events::{AlertSeverity, PoolEvent};
use super::failure::Failure;
use super::handle::{FinalStatus, TaskError};
use super::lane::attempt::{Target, Written};
use super::lane::queue::{Head, SharedQueue};
use super::lane::settle::{self, Settled};
use super::lane::window::Window;
use super::lane::{Book, Completion, Input, Lane, Reply};
use super::metrics::Stats;
use super::outcome_cell::Wakes;
use super::probe_set::Occasion;
use super::routing::TaskTypes;
use super::worker_io::WorkerMessage;
use super::worker_life::KillCause;
use crate::balance::WorkerSnapshot;
use crate::health::{ProbeKind, Verdict};
use crate::process::GroupSignal;
use crate::protocol::{encode_frame, ToWorker};
use crate::queue::DeadLetter;

/// How soon a pass the desk's lock cut short runs again (a caller in the
/// balance policy holds it for as long as the policy takes).
const DESK_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// What became of one assignment.
pub(super) enum Assigned {
    /// The task is on its way to the worker; `alone` when it runs alone there
    /// (the worker takes nothing more until it is answered).
    Yes { alone: bool },
    /// The task could not be encoded and was failed; the worker is unchanged.
    TaskFailed,
    /// The worker cannot take tasks (gone or its link closed); the task is back in
    /// the queue.
    WorkerUnusable,
    /// The worker holds a task that runs alone, or the task must run alone and
    /// the worker holds others: the task is back at the head of the queue.
    WorkerOccupied,
    /// The queue's head changed since it was looked at, to a task the
    /// assignment does not want (another type): left in place, and the worker
    /// still a candidate (the next look reads the new head).
    HeadChanged,
    /// The queue ran empty (a caller or a lane took its tasks first).
    QueueEmpty,
}

/// Where an assignment's task comes from.
pub(super) enum Source<'a> {
    /// A task the actor has in hand (one it held for a type): back at the head
    /// of the queue when the worker cannot take it.
    InHand(Pending),
    /// The queue's head, when `accepts` it: taken under the worker's book lock
    /// (the book's, then the queue's), so a task leaves the queue only under
    /// the lock of the book it goes into, as everywhere. Taken before, it
    /// would be in neither while a caller or a lane took a task queued behind
    /// it (with `prefetch` 0, a break of priority order).
    Head(&'a dyn Fn(&Pending) -> bool),
}

impl Actor {
    /// A task a caller sent as a message: only once the queue is closed to
    /// callers (shutdown began), so it is counted as submitted and answered
    /// "shutting down".
    pub(crate) fn refuse_late(&mut self, pending: Pending) {
        Stats::bump(&self.shared.stats.submitted);
        self.settle_error(pending, FinalStatus::Failed, Failure::ShuttingDown);
    }

    /// Sends queued tasks to workers: first to workers with a free run slot, as
    /// the policy picks them; then, while tasks remain, into the prefetch windows,
    /// evenly (the least-filled window first).
    ///
    /// The candidate list is built once per stage (O(workers)) and then kept up to
    /// date as tasks are assigned, so each task costs one pick, not a rebuild of
    /// the list.
    pub(crate) fn dispatch(&mut self) {
        self.hand_out();
        // The pace intervals this pass closed start after its writes, as a
        // lane's refill starts them after its own.
        for num in self.paced.drain(..) {
            if let Some(worker) = self.workers.get(&num) {
                worker.lane.book().pace_wrote();
            }
        }
    }

    /// [`dispatch`](Self::dispatch)'s hand-out: the tasks waiting, to the
    /// workers with room.
    fn hand_out(&mut self) {
        let waiting = !self.queue.lock().is_empty() || !self.held.is_empty();
        if !matches!(self.phase, Phase::Starting | Phase::Running) || !waiting {
            return;
        }
        self.dispatch_up_to(self.config.worker_concurrency, true);
        if self.config.prefetch > 0 && (!self.queue.lock().is_empty() || !self.held.is_empty()) {
            self.dispatch_up_to(self.config.worker_window(), false);
        }
        self.ring_lanes();
    }

    /// Assigns queued tasks to ready workers holding fewer than `capacity` tasks;
    /// the policy picks when `by_policy`, else the worker holding the fewest.
    /// When a candidate stated its task types (or tasks are held for a type),
    /// [`routing`](super::routing) assigns instead: its uniform pass when every
    /// candidate stated the same types, else its routed pass.
    fn dispatch_up_to(&mut self, capacity: u32, by_policy: bool) {
        self.candidates.clear();
        // The candidates' task types when they all state the same (`uniform`).
        let mut typed = false;
        let mut uniform = true;
        let mut types: Option<&TaskTypes> = None;
        let window = Window::of(&self.config);
        for (num, w) in &self.workers {
            if !w.life.takes_tasks() {
                continue;
            }
            // Room by count, and (in the window) by weight, and the link's
            // (asked last: a worker passed over leaves no mark for its
            // lane's writer).
            let (held, has_room) = {
                let book = w.lane.book();
                let held = book.len() as u32;
                let dispatched = book.dispatched();
                if book.runs_alone() || w.task_limit.is_some_and(|limit| dispatched >= limit) {
                    continue;
                }
                (held, held < capacity && book.takes_more(&window))
            };
            if has_room {
                if w.task_types.stated() {
                    typed = true;
                    uniform = uniform && types.is_none_or(|t| *t == w.task_types);
                    types.get_or_insert(&w.task_types);
                } else {
                    uniform = false;
                }
                self.candidates
                    .push(WorkerSnapshot::new(*num, held, w.answered(), capacity));
            }
        }
        if typed && uniform && self.held.is_empty() {
            let types = types.cloned().unwrap_or_default();
            return self.dispatch_uniform(&types, capacity, by_policy);
        }
        if typed || !self.held.is_empty() {
            return self.dispatch_routed(capacity, by_policy);
        }
        while !self.candidates.is_empty() {
            // A policy is asked while a task waits; the task is taken once the
            // pick's book is locked (`Source::Head`).
            if self.queue.lock().is_empty() {
                break;
            }
            let picked = if by_policy {
                self.policy_pick()
            } else {
                Some(least_filled(&self.candidates))
            };
            let Some(index) = picked else {
                break;
            };
            let num = self.candidates[index].id;
            let assigned = self.assign(num, Source::Head(&|_| true));
            if matches!(assigned, Assigned::QueueEmpty) {
                break;
            }
            self.after_assign(index, num, capacity, assigned);
        }
    }

    /// Keeps candidate `index` (worker `num`) up to date after an assignment.
    pub(super) fn after_assign(
        &mut self,
        index: usize,
        num: u64,
        capacity: u32,
        assigned: Assigned,
    ) {
        match assigned {
            Assigned::Yes { alone } => {
                let at_limit = self.reached_task_limit(num);
                let c = &mut self.candidates[index];
                c.in_flight += 1;
                if at_limit {
                    self.candidates.remove(index);
                    let reason = "was handed its last task (max_tasks_per_worker)";
                    let verdict = Verdict::Recycle(reason.to_owned());
                    self.apply_verdict(num, verdict, ProbeKind::MaxTasks, "max-tasks");
                } else if alone || c.in_flight >= capacity {
                    self.candidates.remove(index);
                }
            }
            Assigned::TaskFailed | Assigned::QueueEmpty | Assigned::HeadChanged => {}
            Assigned::WorkerUnusable | Assigned::WorkerOccupied => {
                self.candidates.remove(index);
            }
        }
    }

    /// Whether worker `num` was handed as many tasks as its limit allows.
    fn reached_task_limit(&self, num: u64) -> bool {
        self.workers
            .get(&num)
            .and_then(|w| {
                w.task_limit
                    .map(|limit| w.lane.book().dispatched() >= limit)
            })
            .unwrap_or(false)
    }

    /// The policy's pick among the candidates (the first when it picks out of
    /// range); `None` while a caller holds the desk: the pass stops, and runs
    /// again shortly ([`desk_busy`](Self::desk_busy)).
    pub(super) fn policy_pick(&mut self) -> Option<usize> {
        let picked = self.shared.desk.try_pick(&self.candidates);
        if picked.is_none() {
            self.desk_busy();
        }
        picked
    }

    /// A caller holds the desk: what needed it is tried again in a
    /// millisecond, instead of the actor waiting for the caller's policy.
    pub(super) fn desk_busy(&mut self) {
        if !self.desk_retry {
            self.desk_retry = true;
            self.timers.insert(Timer::DeskBusy, DESK_RETRY);
        }
    }

    /// Arms the deadline timers callers asked for when they handed tasks to
    /// workers themselves (see [`Desk::hand_off`](super::handoff::Desk::hand_off)).
    pub(crate) fn arm_wanted(&mut self) {
        let Some(wanted) = self.shared.desk.try_take_timers_wanted() else {
            self.desk_busy();
            return;
        };
        if wanted.is_empty() {
            return;
        }
        let now = Instant::now();
        for (num, deadline) in wanted {
            if let Some(worker) = self.workers.get(&num) {
                let mut book = worker.lane.book();
                arm_deadline(&mut self.timers, &mut book, num, deadline, now);
            }
        }
    }

    pub(super) fn assign(&mut self, num: u64, source: Source<'_>) -> Assigned {
        let Some(worker) = self.workers.get_mut(&num) else {
            self.put_back(source);
            return Assigned::WorkerUnusable;
        };
        if !worker.input_open() {
            worker.life.mark_killing();
            worker.sync_feed();
            self.put_back(source);
            return Assigned::WorkerUnusable;
        }
        let target = Target {
            shared: &self.shared,
            num,
            name: worker.name(),
            concurrency: self.config.worker_concurrency as usize,
            default_timeout: self.config.task_timeout,
            max_frame: self.config.max_frame,
        };
        let alone;
        // Encoded into the worker's batch, sent when the dispatch pass ends.
        let (written, was_empty) = {
            let mut book = worker.lane.book();
            // Never beyond its window, whoever else handed it tasks since the
            // candidates were listed (its lane, or a caller). A task in hand
            // that does not go in goes back to the queue under the book's lock
            // (book, then queue): an answer its lane settles after this finds
            // it there when it refills.
            let has_room = book.takes_more(&Window::of(&self.config));
            let pending = match source {
                Source::InHand(pending) => {
                    if !has_room || !book.may_take(&pending) {
                        self.queue.lock().push_front(pending);
                        return Assigned::WorkerOccupied;
                    }
                    pending
                }
                Source::Head(_) if !has_room => return Assigned::WorkerOccupied,
                Source::Head(accepts) => {
                    let mut worker_refused = false;
                    let head = self.queue.lock().pop_if(|p| {
                        worker_refused = !book.may_take(p);
                        !worker_refused && accepts(p)
                    });
                    match head {
                        Head::Taken(pending) => pending,
                        // A task that must run alone, or a worker that runs one.
                        Head::Refused if worker_refused => return Assigned::WorkerOccupied,
                        Head::Refused => return Assigned::HeadChanged,
                        Head::Empty => return Assigned::QueueEmpty,
                    }
                }
            };
            let was_empty = !book.has_batch();
            alone = pending.run_alone;
            // Read once the task is in hand, under the book's lock: the waits
            // for it and the queue's (a lane refilling, callers queueing)
            // cost the attempt none of its timeout.
            let now = Instant::now();
            let now_on_clock = self.shared.clock.at(now);
            // The actor refills this worker (its lane does not, or could
            // not): the pace's interval closes here, as at a lane's refill,
            // and the next starts after this pass's writes.
            if book.pace_has_answers() {
                book.pace_refill(now_on_clock.moment, target.concurrency);
                self.paced.push(num);
            }
            let started = book.start_attempt(&target, pending, now_on_clock);
            if let Ok(Written {
                deadline: Some(deadline),
                ..
            }) = &started
            {
                arm_deadline(&mut self.timers, &mut book, num, *deadline, now);
            }
            (started, was_empty)
        };
        let written = match written {
            Ok(written) => written,
            Err(failed) => {
                let failure = Failure::Protocol {
                    message: failed.reason,
                };
                self.settle_error(failed.pending, FinalStatus::Failed, failure);
                return Assigned::TaskFailed;
            }
        };
        if was_empty {
            self.to_ring.push(num);
        }
        // Given back in one call when the pass ends (`ring_lanes`).
        self.freed_slots += usize::from(written.freed_slot);
        Assigned::Yes { alone }
    }

    /// A task in hand that was not assigned goes back to the head of the queue.
    fn put_back(&self, source: Source<'_>) {
        if let Source::InHand(pending) = source {
            self.queue.lock().push_front(pending);
        }
    }

    /// Rings the lane of each worker this dispatch pass wrote tasks for (its
    /// writer takes the batch), and gives back the queue slots of the tasks it
    /// took out of the queue. A batch that held frames before the pass wrote
    /// to it needs no ring from the actor: whoever wrote them rings after.
    fn ring_lanes(&mut self) {
        let freed = std::mem::take(&mut self.freed_slots);
        if freed > 0 {
            self.shared.queue_slots.add_permits(freed);
        }
        for num in self.to_ring.drain(..) {
            let Some(worker) = self.workers.get(&num) else {
                continue;
            };
            worker.lane.ring_batch();
        }
    }

    /// What one read of worker `num`'s link brought: the results its reader
    /// settled, then the other messages, in order.
    pub(crate) fn on_messages(
        &mut self,
        num: u64,
        messages: Vec<WorkerMessage>,
        settled: Option<Settled>,
    ) {
        if !self.workers.contains_key(&num) {
            return;
        }
        if let Some(settled) = settled {
            self.on_settled(num, settled);
        }
        for message in messages {
            self.on_message(num, message);
        }
    }

    /// A message from a ready worker (its lane's `last_heard` is the read that
    /// brought it, or a later one).
    fn on_message(&mut self, num: u64, message: WorkerMessage) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        match message {
            WorkerMessage::Result { id, payload } => {
                if let Some((running, completion)) = self.take_running(num, id, Reply::Result) {
                    self.complete(num, running, completion, payload);
                }
            }
            WorkerMessage::Error {
                id,
                kind,
                message,
                retryable,
            } => {
                if let Some((running, _)) = self.take_running(num, id, Reply::Error) {
                    let failure = Failure::Handler { kind, message };
                    self.attempt_failed(running, failure, retryable);
                }
            }
            WorkerMessage::Heartbeat(heartbeat) => {
                worker.rss_bytes = heartbeat.rss_bytes;
                if worker.heartbeats.len() == HEARTBEAT_HISTORY {
                    worker.heartbeats.pop_front();
                }
                worker.heartbeats.push_back(worker.lane.last_heard());
                self.judge_worker(num, Occasion::Heartbeat);
            }
            WorkerMessage::Log { level, message } => {
                let name = worker.name();
                match level {
                    crate::protocol::LogLevel::Error => {
                        tracing::error!(worker.id = %name, "{message}")
                    }
                    crate::protocol::LogLevel::Warn => {
                        tracing::warn!(worker.id = %name, "{message}")
                    }
                    crate::protocol::LogLevel::Info => {
                        tracing::info!(worker.id = %name, "{message}")
                    }
                    crate::protocol::LogLevel::Debug => {
                        tracing::debug!(worker.id = %name, "{message}")
                    }
                }
            }
        }
    }

    /// Worker `num`'s reader settled `settled.answered` results: the worker
    /// has room for more, runs that started meanwhile are timed, and a worker
    /// on its way out may be released.
    fn on_settled(&mut self, num: u64, settled: Settled) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        if let Some(deadline) = settled.deadline {
            arm_deadline(
                &mut self.timers,
                &mut worker.lane.book(),
                num,
                deadline,
                Instant::now(),
            );
        }
        for id in settled.cancel_started {
            self.timers.insert(
                Timer::CancelGrace { task: id },
                capped(self.config.cancel_grace),
            );
        }
        if settled.succeeded > 0 {
            self.task_succeeded();
        }
        // A refill the link's catching up made answers nothing.
        if settled.answered > 0 {
            self.after_answers(num);
        }
    }

    /// A task succeeded: deaths with no task running are no longer in a row,
    /// and the breaker closes unless workers keep failing to start.
    fn task_succeeded(&mut self) {
        if self.shared.crash_streak.end()
            && self.start_failures < self.config.max_start_failures
            && self.shared.stats.breaker_open.swap(false, Relaxed)
        {
            // The workers the breaker held back start now, the probe due
            // after the cap too (its timer, when it fires, finds none due).
            self.respawns_pending = 0;
            self.replenish();
        }
    }

    /// Removes task `id` from worker `num`'s book, if it is in flight there, to
    /// settle it here. Replies for tasks the worker does not hold (already
    /// settled) are ignored.
    fn take_running(
        &mut self,
        num: u64,
        id: u64,
        reply: Reply,
    ) -> Option<(Running, Option<Completion>)> {
        let worker = self.workers.get(&num)?;
        let mut settled = Settled::default();
        let answered = worker.lane.book().answer(
            id,
            reply,
            self.config.worker_concurrency as usize,
            self.config.task_timeout,
            self.shared.clock.now(),
            &mut settled,
            |attempt, completion| (attempt, completion),
        );
        let Some((attempt, completion)) = answered else {
            tracing::debug!(worker.id = %worker.name(), task.id = id, "reply for a task the worker does not hold; ignored");
            return None;
        };
        // Timed, released or judged as any answer; its outcome is the caller's.
        self.on_settled(num, settled);
        Some((attempt, completion))
    }

    /// After worker `num` answered tasks: with none left, a retiring worker is
    /// released; otherwise the probes that watch completions are consulted.
    ///
    /// The worker's deadline timer stays armed when its book empties: it fires
    /// at most once a timeout, finds nothing expired and re-arms for what runs
    /// then (`on_worker_deadline`), where removing it and arming it again would
    /// cost two timer-queue updates a task to a worker that runs one task at a
    /// time.
    fn after_answers(&mut self, num: u64) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        let empty = worker.lane.book().is_empty();
        if empty && worker.life.is_retiring() {
            self.release_worker(num);
        } else {
            self.judge_worker(num, Occasion::Completion);
        }
    }

    /// Settles a result the worker's reader forwarded (a probe judged the worker
    /// first).
    fn complete(
        &mut self,
        num: u64,
        running: Running,
        completion: Option<Completion>,
        payload: Bytes,
    ) {
        let Some(completion) = completion else {
            // Not counted as completed: its cancel was asked for.
            return self.settle_error(running.pending, FinalStatus::Cancelled, Failure::Cancelled);
        };
        self.task_succeeded();
        self.publish_task_gauges();
        let name: Arc<str> = match self.workers.get(&num) {
            Some(w) => w.lane.name().to_owned(),
            None => worker_name(num).into(),
        };
        let mut wakes = Wakes::default();
        let _task = settle::complete(
            &self.shared,
            &name,
            running,
            payload,
            completion,
            &mut wakes,
        );
        wakes.wake_all();
    }

    /// An attempt failed: retry it, dead-letter it, or fail it for good.
    pub(crate) fn attempt_failed(&mut self, running: Running, failure: Failure, retryable: bool) {
        match running.cancel {
            CancelAsked::ByCaller => {
                return self.settle_error(
                    running.pending,
                    FinalStatus::Cancelled,
                    Failure::Cancelled,
                );
            }
            CancelAsked::Withdrawn => {
                let mut pending = running.pending;
                pending.give_back_attempt();
                return self.settle_error(pending, FinalStatus::Failed, Failure::ShuttingDown);
            }
            // It stopped for the cancel the drain deadline sent; an attempt
            // that failed on its own ends as any failure while the pool stops.
            CancelAsked::Abandoned if matches!(failure.kind(), "cancelled" | "shutting_down") => {
                return self.settle_error(
                    running.pending,
                    FinalStatus::Failed,
                    Failure::ShuttingDown,
                );
            }
            CancelAsked::Abandoned | CancelAsked::No => {}
        }
        let pending = running.pending;
        let max_retries = pending
            .task
            .max_retries
            .unwrap_or(self.config.retry.max_retries());
        let retries_left = pending.attempts <= max_retries;
        let accepting = matches!(self.phase, Phase::Starting | Phase::Running);
        let will_retry = retryable && retries_left && accepting;
        self.shared.emit(|| PoolEvent::TaskAttemptFailed {
            task: pending.id,
            worker: pending.last_worker.map(RanOn::name),
            attempt: pending.attempts,
            kind: failure.kind().to_owned(),
            message: failure.to_string(),
            will_retry,
        });
        if will_retry {
            self.schedule_retry(pending);
        } else if retryable && !retries_left && pending.task.dead_letter {
            self.dead_letter(pending, failure);
        } else if retryable && !retries_left {
            self.settle_error(pending, FinalStatus::Exhausted, failure);
        } else {
            self.settle_error(pending, FinalStatus::Failed, failure);
        }
    }

    fn schedule_retry(&mut self, pending: Pending) {
        let backoff = self.config.retry.backoff(pending.attempts);
        let id = pending.id;
        Stats::bump(&self.shared.stats.retried);
        self.shared.emit(|| PoolEvent::TaskRetried {
            task: id,
            next_attempt: pending.attempts + 1,
            backoff_ms: backoff.as_millis() as u64,
        });
        self.retrying.insert(id, pending);
        self.timers
            .insert(Timer::Retry { task: id }, capped(backoff));
    }

    pub(crate) fn on_retry_due(&mut self, id: u64) {
        if let Some(mut pending) = self.retrying.remove(&id) {
            pending.queued_at = self.shared.clock.now().moment;
            self.queue.lock().push(pending);
        }
    }

    fn dead_letter(&mut self, pending: Pending, failure: Failure) {
        self.shared.emit(|| PoolEvent::TaskDeadLettered {
            task: pending.id,
            attempts: pending.attempts,
            kind: failure.kind().to_owned(),
        });
        self.raise_alert(
            AlertSeverity::Info,
            AlertKind::TaskDeadLettered,
            None,
            format!(
                "task {} dead-lettered after {} attempts: {failure}",
                pending.id, pending.attempts
            ),
        );
        let error = TaskError {
            id: pending.id,
            status: FinalStatus::DeadLettered,
            failure: failure.clone(),
            attempts: pending.attempts,
            worker: pending.last_worker.map(|ran| ran.name().into()),
        };
        self.dlq.push(DeadLetter {
            id: pending.id,
            task: pending.task.into_task(),
            attempts: pending.attempts,
            failure,
            at: SystemTime::now(),
        });
        let stats = &self.shared.stats;
        stats.dlq_len.store(self.dlq.len() as u64, Relaxed);
        stats.dlq_evicted.store(self.dlq.evicted(), Relaxed);
        self.publish_task_gauges();
        pending.answer.failed(stats, error);
    }

    /// Ends a task without a result (not through the DLQ).
    pub(crate) fn settle_error(&mut self, pending: Pending, status: FinalStatus, failure: Failure) {
        self.publish_task_gauges();
        settle_failed(&self.shared, pending, status, failure);
    }

    /// A caller cancels task `id`.
    pub(crate) fn cancel(&mut self, id: u64) {
        if let Some(pending) = self.retrying.remove(&id) {
            return self.settle_error(pending, FinalStatus::Cancelled, Failure::Cancelled);
        }
        if let Some(pending) = self.held.remove(id) {
            return self.settle_error(pending, FinalStatus::Cancelled, Failure::Cancelled);
        }
        let lanes = || self.workers.iter().map(|(num, w)| (*num, &w.lane));
        let (num, started) = match seek_to_cancel(&self.queue, lanes, id) {
            Sought::Queued(pending) => {
                return self.settle_error(pending, FinalStatus::Cancelled, Failure::Cancelled);
            }
            Sought::InBook { num, started } => (num, started),
            Sought::Nowhere => return,
        };
        // Asked for before: nothing more to do.
        let (Some(started), Some(worker)) = (started, self.workers.get(&num)) else {
            return;
        };
        let mut frame = BytesMut::new();
        if encode_frame(&ToWorker::Cancel { id }, &mut frame, self.config.max_frame).is_ok() {
            worker.send_frame(&frame);
        }
        // A task still in the window gets its grace when it starts running.
        if started {
            self.timers.insert(
                Timer::CancelGrace { task: id },
                capped(self.config.cancel_grace),
            );
        }
    }

    /// Publishes the gauges of held and retrying tasks before a caller hears
    /// of a settlement, so a snapshot taken after the last task settled reads
    /// 0 for both (the queue's depth is read from the queue itself).
    pub(crate) fn publish_task_gauges(&self) {
        let stats = &self.shared.stats;
        stats.held.store(self.held.len() as u64, Relaxed);
        stats.retrying.store(self.retrying.len() as u64, Relaxed);
    }

    /// Sends `cancel` for every task still waiting in a prefetch window, so it
    /// ends as "shutting down" instead of running during the drain.
    pub(crate) fn withdraw_prefetched(&mut self) {
        let max_frame = self.config.max_frame;
        let mut batch = BytesMut::new();
        for worker in self.workers.values() {
            {
                let mut book = worker.lane.book();
                if matches!(book.input, Input::Closing | Input::Closed) {
                    continue;
                }
                batch.clear();
                for running in book.attempts_mut() {
                    if running.run_start.is_some() || running.cancel != CancelAsked::No {
                        continue;
                    }
                    running.cancel = CancelAsked::Withdrawn;
                    let id = running.pending.id;
                    let _ = encode_frame(&ToWorker::Cancel { id }, &mut batch, max_frame);
                }
                if batch.is_empty() {
                    continue;
                }
                book.push_frame(&batch);
            }
            worker.lane.ring_batch();
        }
    }

    /// Tasks written to workers that have not started (they wait in windows).
    pub(crate) fn prefetched_count(&self) -> usize {
        let concurrency = self.config.worker_concurrency as usize;
        self.workers
            .values()
            .map(|w| w.lane.book().len().saturating_sub(concurrency))
            .sum()
    }

    /// A cancelled task did not stop in time: kill its worker (only one that
    /// holds it with its cancel sent: a task cancelled elsewhere has settled).
    pub(crate) fn on_cancel_grace(&mut self, id: u64) {
        let Some(num) = self.worker_holding_cancelled(id) else {
            return;
        };
        self.kill_worker(num, KillCause::CancelIgnored { task: id });
    }

    /// The worker task `id` is in flight on with its cancel requested, if any.
    fn worker_holding_cancelled(&self, id: u64) -> Option<u64> {
        self.workers
            .iter()
            .find(|(_, w)| {
                w.lane
                    .book()
                    .get_mut(id)
                    .is_some_and(|running| running.cancel == CancelAsked::ByCaller)
            })
            .map(|(num, _)| *num)
    }

    /// Worker `num`'s deadline timer fired: every task of it whose deadline has
    /// passed times out (earliest deadline first), then the timer is armed for the
    /// next deadline, if any.
    pub(crate) fn on_worker_deadline(&mut self, num: u64) {
        let now = Instant::now();
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        // The timer that fired is gone from the queue; it counts as reached even if
        // the queue's millisecond ticks let it fire a moment before its instant.
        let mut book = worker.lane.book();
        let reached = match book.deadline_timer.take() {
            Some((_, armed)) => armed.max(now),
            None => now,
        };
        let mut expired: Vec<(Instant, u64)> = Vec::new();
        let mut next: Option<Instant> = None;
        for running in book.attempts() {
            let Some(deadline) = running.deadline else {
                continue;
            };
            if deadline <= reached {
                expired.push((deadline, running.pending.id));
            } else if next.is_none_or(|n| deadline < n) {
                next = Some(deadline);
            }
        }
        if let Some(at) = next {
            arm_deadline(&mut self.timers, &mut book, num, at, now);
        }
        drop(book);
        expired.sort_unstable();
        for (_, id) in expired {
            self.on_deadline(num, id);
        }
    }

    /// An attempt's timeout expired: the worker cannot be trusted. Kill it; the
    /// attempt is failed when the worker is reaped, so the task can never run again
    /// on it after its caller hears of the timeout (and counted as timed out
    /// then: a result already on its way settles it as a success).
    fn on_deadline(&mut self, num: u64, id: u64) {
        let Some(worker) = self.workers.get(&num) else {
            return;
        };
        let after = {
            let mut book = worker.lane.book();
            // Answered since the timer fired: nothing timed out.
            let Some(running) = book.get_mut(id) else {
                return;
            };
            running.deadline = None;
            let after = running
                .pending
                .task
                .timeout()
                .unwrap_or(self.config.task_timeout);
            running.timed_out = Some(after);
            after
        };
        self.kill_worker(num, KillCause::TimedOut { task: id, after });
    }

    /// Kills worker `num` for `cause` (the first kill's cause wins, and replaces a
    /// retirement's); a replacement starts at once and the worker's tasks are
    /// settled when it is reaped.
    pub(crate) fn kill_worker(&mut self, num: u64, cause: KillCause) {
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        // A kill's cause replaces a retirement's (see `WorkerLife::kill`): the task
        // that timed out or ignored its cancel is still the one at fault, and its
        // bystanders lose nothing.
        worker.life.kill(cause);
        worker.sync_feed();
        let _ = worker.control.send(GroupSignal::Kill);
        if let Some(slot) = worker.slot.take() {
            self.vacate(slot, true);
        }
        self.replenish();
    }
}

/// The candidate holding the fewest tasks (the first of equals).
pub(super) fn least_filled(candidates: &[WorkerSnapshot]) -> usize {
    let mut best = 0;
    for (i, c) in candidates.iter().enumerate() {
        if c.in_flight < candidates[best].in_flight {
            best = i;
        }
    }
    best
}

/// Makes worker `num`'s deadline timer fire no later than `deadline` (or within
/// [`LONGEST_TIMER`] of `now`, when it is further away).
fn arm_deadline(
    timers: &mut DelayQueue<Timer>,
    book: &mut Book,
    num: u64,
    deadline: Instant,
    now: Instant,
) {
    let at = match now.checked_add(LONGEST_TIMER) {
        Some(horizon) => deadline.min(horizon),
        None => deadline,
    };
    match book.deadline_timer {
        None => {
            let key = timers.insert_at(Timer::Deadline { worker: num }, at);
            book.deadline_timer = Some((key, at));
        }
        Some((key, armed)) if at < armed => {
            timers.reset_at(&key, at);
            book.deadline_timer = Some((key, at));
        }
        Some(_) => {}
    }
}

/// Ends a task without a result (not through the DLQ), from the actor or a
/// worker's reader: its queue slot back if it still holds one, the event of a
/// cancel, then its caller told.
pub(crate) fn settle_failed(
    shared: &Shared,
    mut pending: Pending,
    status: FinalStatus,
    failure: Failure,
) {
    release_queue_slot(shared, &mut pending);
    if status == FinalStatus::Cancelled {
        shared.emit(|| PoolEvent::TaskCancelled { task: pending.id });
    }
    let error = TaskError {
        id: pending.id,
        status,
        failure,
        attempts: pending.attempts,
        worker: pending.last_worker.map(|ran| ran.name().into()),
    };
    pending.answer.failed(&shared.stats, error);
}

/// Gives back the queue slot `pending` took at submission, if it still holds it.
fn release_queue_slot(shared: &Shared, pending: &mut Pending) {
    if std::mem::take(&mut pending.holds_queue_slot) {
        shared.queue_slots.add_permits(1);
    }
}

/// Where [`seek_to_cancel`] found a task.
pub(crate) enum Sought {
    /// Waiting in the queue: taken out of it, to be settled cancelled.
    Queued(Pending),
    /// In worker `num`'s book, its cancel now asked for: `started` says
    /// whether it runs already, `None` when its cancel was asked for before
    /// (nothing more to send).
    InBook { num: u64, started: Option<bool> },
    /// Neither: settled already, or never in the pool.
    Nowhere,
}

/// Looks for task `id` to cancel it, in the queue, then in each book `lanes`
/// lists (worker numbers and their lanes), and marks its attempt's cancel as
/// asked for where it is in a book.
///
/// A task leaves the queue only under the lock of the book it goes into, so
/// one that is in neither when looked at is in the hands of a lane's refill
/// or the desk, under that book's lock: by the time the look at that book
/// gets the lock, the task is in the book, or, if the pool's code panicked
/// there, back in the queue ([`SharedQueue::put_back`]), from where another
/// lane may have taken it into a book looked at before. So the look is made
/// again, queue then books, until a whole look saw no task put back; each
/// look again follows such a panic, so the looks are bounded.
pub(crate) fn seek_to_cancel<'a, I>(
    queue: &SharedQueue,
    mut lanes: impl FnMut() -> I,
    id: u64,
) -> Sought
where
    I: Iterator<Item = (u64, &'a Lane)>,
{
    loop {
        let put_backs = queue.put_backs();
        if let Some(pending) = queue.lock().remove_first(|p| p.id == id) {
            return Sought::Queued(pending);
        }
        for (num, lane) in lanes() {
            let mut book = lane.book();
            let Some(running) = book.get_mut(id) else {
                continue;
            };
            let before = std::mem::replace(&mut running.cancel, CancelAsked::ByCaller);
            // Past the drain deadline its worker was sent `cancel` already and
            // is being stopped step by step: the task ends cancelled, with no
            // grace of its own to cut those steps short.
            let send = !matches!(before, CancelAsked::ByCaller | CancelAsked::Abandoned);
            let started = send.then_some(running.run_start.is_some());
            return Sought::InBook { num, started };
        }
        if queue.put_backs() == put_backs {
            return Sought::Nowhere;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::manager::lane::feed::{After, Feed};
    use crate::manager::ledger::Answer;
    use crate::manager::outbox::Outbox;
    use crate::protocol::DEFAULT_MAX_FRAME;
    use crate::task::Task;

    /// A pool's shared state with lanes allowed to take from its queue, two
    /// workers' lanes (1 and 2, each running one task, `prefetch` 0) and
    /// worker 1's feed.
    struct CancelRig {
        shared: Shared,
        lanes: [Lane; 2],
        feed: RefCell<Feed>,
    }

    impl CancelRig {
        fn new() -> Self {
            let (shared, feed) = crate::manager::lane::feed::strict_rig(1);
            let lanes = [1, 2].map(|num| {
                let lane = Lane::new(
                    shared.stats.tallies.writer(1),
                    format!("worker-{num}").into(),
                    shared.clock,
                );
                lane.book().feeds = true;
                lane
            });
            Self {
                shared,
                lanes,
                feed: RefCell::new(feed),
            }
        }

        /// Worker 1's lane refills from the queue.
        fn refill_worker_1(&self) {
            let target = Target {
                shared: &self.shared,
                num: 1,
                name: "worker-1",
                concurrency: 1,
                default_timeout: std::time::Duration::from_secs(30),
                max_frame: DEFAULT_MAX_FRAME,
            };
            let mut out = Outbox::default();
            self.feed
                .borrow_mut()
                .refill(&self.lanes[0], &target, &mut out, After::Answers);
        }
    }

    /// A cancel that races a lane's refill that panicked: when the cancel
    /// looked in the queue, worker 2's refill had taken the task (out of the
    /// queue, not yet in its book); by the time the cancel got worker 2's
    /// book, that refill had panicked and put the task back, and worker 1's
    /// lane, whose book the cancel had looked at already, had taken it. The
    /// cancel looks again and finds it in worker 1's book, its cancel asked.
    #[tokio::test]
    async fn a_cancel_finds_a_task_a_panicking_refill_put_back_and_another_lane_took() {
        let rig = CancelRig::new();
        let (answer, _told) = Answer::new();
        let now = rig.shared.clock.now().moment;
        rig.shared
            .queue
            .shard(0)
            .push_new(Pending::new(7, Task::new("echo", vec![1]), answer), now);
        // Worker 2's refill takes it under its book's lock.
        let Head::Taken(taken) = rig.shared.queue.shard(0).pop_if(|_| true) else {
            panic!("task 7 is queued");
        };
        let in_worker_2s_refill = RefCell::new(Some(taken));
        let looks = Cell::new(0);
        let lanes = || {
            looks.set(looks.get() + 1);
            let (rig, in_refill) = (&rig, &in_worker_2s_refill);
            [1, 2]
                .into_iter()
                .zip(&rig.lanes)
                .inspect(move |&(num, _)| {
                    // Before worker 2's book is let go to the cancel, its
                    // refill panics and puts the task back; worker 1's lane
                    // then takes it.
                    let task = if num == 2 {
                        in_refill.borrow_mut().take()
                    } else {
                        None
                    };
                    if let Some(task) = task {
                        assert!(rig.shared.queue.put_back(Some(task)).is_ok());
                        rig.refill_worker_1();
                    }
                })
        };

        let sought = seek_to_cancel(&rig.shared.queue, lanes, 7);

        let Sought::InBook { num, started } = sought else {
            panic!("task 7 was found in a book");
        };
        assert_eq!((num, started), (1, Some(true)));
        assert_eq!(looks.get(), 2, "the first look missed it");
        let book = rig.lanes[0].book();
        let cancel: Vec<_> = book.attempts().map(|r| (r.pending.id, r.cancel)).collect();
        assert_eq!(cancel, [(7, CancelAsked::ByCaller)]);
    }

    /// A cancel of a task in no place (settled, or never submitted) looks
    /// once when no task went back meanwhile.
    #[tokio::test]
    async fn a_cancel_of_a_task_in_no_place_looks_once() {
        let rig = CancelRig::new();
        let looks = Cell::new(0);
        let lanes = || {
            looks.set(looks.get() + 1);
            [1, 2].into_iter().zip(&rig.lanes)
        };
        let sought = seek_to_cancel(&rig.shared.queue, lanes, 7);
        assert!(matches!(sought, Sought::Nowhere));
        assert_eq!(looks.get(), 1);
    }
}
