//! The reader's side of a lane: a `result` read from the worker settles its task
//! at once, on the reader's thread (the caller's answer, the counters, the
//! run-time histogram, the routine event), and the actor only hears how many
//! tasks left the worker's book (a [`Settled`] report per read).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;

use super::super::actor::{Running, Shared};
use super::super::dispatch::settle_failed;
use super::super::events::PoolEvent;
use super::super::failure::Failure;
use super::super::handle::{FinalStatus, TaskOutput};
use super::Lane;

/// What a reader settled since its last report to the actor.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Tasks whose `result` took them out of the book.
    pub(crate) answered: u32,
    /// Of those, the ones that completed (not cancelled, not settled earlier at
    /// the drain deadline).
    pub(crate) succeeded: u32,
    /// The earliest deadline of the tasks whose runs started meanwhile (the
    /// actor's deadline timer for the worker must fire by then).
    pub(crate) deadline: Option<Instant>,
    /// Tasks that started running with a cancel already asked for: their
    /// cancel grace starts now.
    pub(crate) cancel_started: Vec<u64>,
}

/// Settles the results a worker's reader reads.
pub(crate) struct Settler {
    lane: Lane,
    shared: Arc<Shared>,
    /// The worker's name, as its tasks' outputs carry it.
    name: String,
    concurrency: usize,
    default_timeout: Duration,
    report: Settled,
}

impl Settler {
    pub(crate) fn new(
        lane: Lane,
        shared: Arc<Shared>,
        name: String,
        concurrency: u32,
        default_timeout: Duration,
    ) -> Self {
        Self {
            lane,
            shared,
            name,
            concurrency: concurrency as usize,
            default_timeout,
            report: Settled::default(),
        }
    }

    /// The lane it settles in.
    pub(crate) fn lane(&self) -> &Lane {
        &self.lane
    }

    /// The worker answered task `id` with `payload`. An answer for a task the
    /// worker does not hold (settled already, or never sent) is ignored.
    pub(crate) fn result(&mut self, id: u64, payload: Bytes) {
        let now = Instant::now();
        let (taken, started) = {
            let mut book = self.lane.book();
            let Some(taken) = book.take(&self.shared.stats, id) else {
                tracing::debug!(worker.id = %self.name, task.id = id, "reply for a task the worker does not hold; ignored");
                return;
            };
            let started = book.start_next(taken.at, self.concurrency, self.default_timeout, now);
            (taken, started)
        };
        self.report.answered += 1;
        if let Some(started) = started {
            if self.report.deadline.is_none_or(|d| started.deadline < d) {
                self.report.deadline = Some(started.deadline);
            }
            if started.cancel_requested {
                self.report.cancel_started.push(started.id);
            }
        }
        // `None` for a task settled at the drain deadline: its answer still
        // counts towards the worker's release.
        let Some(running) = taken.attempt else {
            return;
        };
        if running.cancel_requested {
            return settle_failed(
                &self.shared,
                running.pending,
                FinalStatus::Cancelled,
                Failure::Cancelled,
            );
        }
        self.report.succeeded += 1;
        self.complete(running, payload, now);
    }

    /// The report of what was settled since the last one; `None` when nothing was.
    pub(crate) fn take_report(&mut self) -> Option<Settled> {
        (self.report.answered > 0).then(|| std::mem::take(&mut self.report))
    }

    fn complete(&self, running: Running, payload: Bytes, now: Instant) {
        // A worker that ignores `concurrency` may answer a task still in its
        // window: it started when it was sent.
        let started = running.run_start.unwrap_or(running.sent);
        let run_time = now.duration_since(started);
        let pending = running.pending;
        let stats = &self.shared.stats;
        stats
            .run_us_total
            .fetch_add(run_time.as_micros() as u64, Relaxed);
        stats.run_time.record(run_time.as_micros() as u64);
        self.shared.emit_routine(|| PoolEvent::TaskCompleted {
            task: pending.id,
            worker: self.name.clone(),
            attempts: pending.attempts,
            run_ms: run_time.as_millis() as u64,
            worker_reused: running.reused,
        });
        let output = TaskOutput {
            id: pending.id,
            payload,
            attempts: pending.attempts,
            worker: self.name.clone(),
            run_time,
            queue_time: started.duration_since(pending.queued_at),
        };
        pending.answer.completed(stats, output);
    }
}
