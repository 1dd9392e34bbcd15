//! The opt-in autoscaler: grow the pool while work waits in the shared queue,
//! shrink it after a quiet period, always within `min_workers..=max_workers`.
//!
//! Growth answers only the backlog a new worker could take: tasks in the
//! shared queue (their count, and how long the head has waited). Tasks already
//! written to a worker's prefetch window stay with that worker (a window is
//! never taken back), so they are no reason to grow.

use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Actor, Phase};

/// When to grow and shrink (see [`PoolConfig::autoscale`](super::PoolConfig::autoscale)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    /// Grow when more than this many tasks wait in the shared queue per live
    /// worker (tasks in workers' prefetch windows do not count: no new worker
    /// could take them)… Default 4.
    pub queue_per_worker: usize,
    /// …or when the task at the shared queue's head has waited longer than
    /// this. Default 1 s.
    pub max_queue_wait: Duration,
    /// Either condition must hold this long before each step up. Default 2 s.
    pub sustain: Duration,
    /// Shrink one step after nothing has waited and some worker has been idle for
    /// this long. Default 60 s.
    pub idle_after: Duration,
    /// Workers added or removed per step. Default 1.
    pub step: usize,
}

impl Default for Autoscale {
    fn default() -> Self {
        Self {
            queue_per_worker: 4,
            max_queue_wait: Duration::from_secs(1),
            sustain: Duration::from_secs(2),
            idle_after: Duration::from_secs(60),
            step: 1,
        }
    }
}

/// The autoscaler's memory between health ticks.
#[derive(Debug, Default)]
pub(crate) struct AutoscaleState {
    pressure_since: Option<Instant>,
    idle_since: Option<Instant>,
}

impl Actor {
    /// One autoscaler decision; runs on every health tick.
    pub(crate) fn autoscale(&mut self, now: Instant) {
        let Some(rules) = self.config.autoscale else {
            return;
        };
        if self.phase != Phase::Running {
            return;
        }
        let live = self.live_count().max(1);
        let (waited, queued) = {
            let waiting = self.queue.lock();
            let head = waiting.peek();
            let at = self.shared.clock.at(now).moment;
            let waited = head.map_or(Duration::ZERO, |p| at.since(p.queued_at));
            (waited, waiting.len())
        };
        // Only the shared queue's tasks are backlog a new worker could take:
        // a task written to a worker's prefetch window is never taken back,
        // so one the pool grew for would sit idle beside it.
        let pressure =
            queued > rules.queue_per_worker.saturating_mul(live) || waited > rules.max_queue_wait;
        let idle = queued == 0
            && self.retrying.is_empty()
            && self.workers.values().any(|w| w.lane.book().is_empty());

        let state = &mut self.autoscale_state;
        state.pressure_since = if pressure {
            Some(state.pressure_since.unwrap_or(now))
        } else {
            None
        };
        state.idle_since = if idle {
            Some(state.idle_since.unwrap_or(now))
        } else {
            None
        };
        let grow = state
            .pressure_since
            .is_some_and(|since| now.duration_since(since) >= rules.sustain);
        let shrink = state
            .idle_since
            .is_some_and(|since| now.duration_since(since) >= rules.idle_after);
        let step = rules.step.max(1);
        // An open breaker's empty pool builds a backlog that more workers
        // would not serve: they would fail to start as the others do.
        let breaker_open = self
            .shared
            .stats
            .breaker_open
            .load(std::sync::atomic::Ordering::Relaxed);
        if grow && !breaker_open && self.target < self.config.max_workers {
            self.autoscale_state.pressure_since = Some(now);
            let target = self
                .target
                .saturating_add(step)
                .min(self.config.max_workers);
            // What waits in windows is not counted (see above); it is logged
            // so that a pool that grows while workers hold long windows, or
            // does not grow for them, can be told apart.
            tracing::info!(
                queued,
                waited_ms = waited.as_millis() as u64,
                in_windows = self.prefetched_count(),
                target,
                "autoscaler: growing the pool"
            );
            let _ = self.scale_to(target);
        } else if shrink && self.target > self.config.min_workers {
            self.autoscale_state.idle_since = Some(now);
            let target = self
                .target
                .saturating_sub(step)
                .max(self.config.min_workers);
            tracing::info!(target, "autoscaler: shrinking the idle pool");
            let _ = self.scale_to(target);
        }
    }
}
