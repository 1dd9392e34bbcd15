//! Running counters and the snapshots built from them.
//!
//! The actor updates plain atomics as things happen and each lane counts the
//! task path in its own tally ([`tally`](super::tally)), so
//! [`Pool::metrics`](super::Pool::metrics) costs loads and a sum over the
//! lanes, never a scan of the tasks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::histogram::LatencySummary;
use super::tally::Tallies;
use super::HealthStatus;

/// The shared queue's depth, read under its lock when metrics are taken.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct QueueDepth {
    /// Tasks waiting in it.
    pub(crate) len: u64,
    /// Of those, by band: high (0–32), normal (33–66), low (67–100).
    pub(crate) by_band: [u64; 3],
    /// The shards it is split in.
    pub(crate) shards: u64,
}

/// The counters and gauges the actor maintains.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: Instant,
    pub(crate) initialized: AtomicBool,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) submitted: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    /// Tasks held for a worker of their type.
    pub(crate) held: AtomicU64,
    pub(crate) retrying: AtomicU64,
    pub(crate) dlq_len: AtomicU64,
    pub(crate) dlq_evicted: AtomicU64,
    pub(crate) workers_spawned: AtomicU64,
    pub(crate) workers_restarted: AtomicU64,
    pub(crate) workers_crashed: AtomicU64,
    pub(crate) zombies_killed: AtomicU64,
    pub(crate) workers_recycled: AtomicU64,
    pub(crate) workers_total: AtomicU64,
    pub(crate) workers_unhealthy: AtomicU64,
    pub(crate) target_size: AtomicU64,
    pub(crate) breaker_open: AtomicBool,
    pub(crate) alerts_total: AtomicU64,
    pub(crate) alerts_suppressed: AtomicU64,
    pub(crate) critical_alerts_recent: AtomicU64,
    /// What the lanes count on the task path, one writer per counter.
    pub(crate) tallies: Arc<Tallies>,
    /// Why the pool stopped working, when its actor ended without a shutdown.
    pub(crate) failure: std::sync::OnceLock<String>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            initialized: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            held: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            dlq_len: AtomicU64::new(0),
            dlq_evicted: AtomicU64::new(0),
            workers_spawned: AtomicU64::new(0),
            workers_restarted: AtomicU64::new(0),
            workers_crashed: AtomicU64::new(0),
            zombies_killed: AtomicU64::new(0),
            workers_recycled: AtomicU64::new(0),
            workers_total: AtomicU64::new(0),
            workers_unhealthy: AtomicU64::new(0),
            target_size: AtomicU64::new(0),
            breaker_open: AtomicBool::new(false),
            alerts_total: AtomicU64::new(0),
            alerts_suppressed: AtomicU64::new(0),
            critical_alerts_recent: AtomicU64::new(0),
            tallies: Tallies::new(),
            failure: std::sync::OnceLock::new(),
        }
    }

    /// Records that the actor ended without a shutdown: no worker and no task
    /// is left (the workers see their links close and exit; waiting callers
    /// hear "shutting down").
    pub(crate) fn fail(&self, reason: String) {
        if self.failure.set(reason).is_err() {
            return;
        }
        for gauge in [&self.workers_total, &self.workers_unhealthy, &self.held] {
            gauge.store(0, Relaxed);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The metrics, with the shared queue's depth `queue` (read under its
    /// lock by the caller: the queue's gauges are not kept apart from it).
    pub(crate) fn snapshot(&self, queue: QueueDepth) -> PoolMetrics {
        let get = |c: &AtomicU64| c.load(Relaxed);
        // Queued, held for a worker of their type, or due to retry.
        let waiting = queue.len + get(&self.held) + get(&self.retrying);
        let lanes = self.tallies.totals();
        let completed = lanes.completed;
        let dispatches = lanes.dispatches;
        let reused = lanes.reused_dispatches;
        // A pool whose actor ended holds no task and no worker (see `fail`).
        let (in_flight, ready, busy) = if self.failure.get().is_some() {
            (0, 0, 0)
        } else {
            (lanes.in_flight, lanes.ready, lanes.busy)
        };
        let reuse_ratio = if dispatches == 0 {
            0.0
        } else {
            reused as f64 / dispatches as f64
        };
        let total = get(&self.workers_total);
        let unhealthy = get(&self.workers_unhealthy);
        // Read from the lanes, which may run ahead of the actor's count of
        // workers by a moment (a worker just ready): never more than there are.
        let (ready, busy) = (ready.min(total), busy.min(total));
        let health = self.health(total, unhealthy, busy);
        PoolMetrics {
            pool: PoolSection {
                size: total,
                target_size: get(&self.target_size),
                initialized: self.initialized.load(Relaxed),
                shutting_down: self.shutting_down.load(Relaxed),
                uptime_ms: self.started.elapsed().as_millis() as u64,
            },
            workers: WorkersSection {
                total,
                ready,
                busy,
                unhealthy,
                healthy: total.saturating_sub(unhealthy),
            },
            tasks: TasksSection {
                submitted: get(&self.submitted),
                completed,
                failed: get(&self.failed),
                queued: waiting,
                dlq: get(&self.dlq_len),
                in_flight,
                retried: get(&self.retried),
                dead_lettered: get(&self.dead_lettered),
                cancelled: get(&self.cancelled),
                timed_out: get(&self.timed_out),
            },
            performance: PerformanceSection {
                worker_reuse_rate: format!("{}%", (reuse_ratio * 100.0).round() as u64),
                worker_reuse_ratio: reuse_ratio,
                dispatches,
                workers_spawned: get(&self.workers_spawned),
                workers_restarted: get(&self.workers_restarted),
                workers_crashed: get(&self.workers_crashed),
                zombies_killed: get(&self.zombies_killed),
                workers_recycled: get(&self.workers_recycled),
                avg_task_wait_time_ms: avg_ms(lanes.wait_us_total, dispatches),
                avg_task_duration_ms: avg_ms(lanes.run_us_total, completed),
            },
            health,
            queue: QueueSection {
                queue_depth: waiting,
                by_priority: {
                    let [high, normal, low] = queue.by_band;
                    BandDepths { high, normal, low }
                },
                retrying: get(&self.retrying),
                dlq_size: get(&self.dlq_len),
                dlq_evicted: get(&self.dlq_evicted),
                shards: queue.shards,
            },
            latency: LatencySection {
                queue_wait: lanes.queue_wait,
                run_time: lanes.run_time,
            },
        }
    }

    /// The health summary, with explicit rules: `failed` when the pool's actor
    /// ended without a shutdown (a panic: the pool takes no more tasks, and
    /// `failure` says why); `critical` when a critical alert
    /// was raised in the last 5 minutes or fewer than half the target workers are
    /// healthy; `degraded` when fewer than 80 % are healthy or the restart breaker is
    /// open; else `healthy`. Utilisation is load, not health: a busy pool is healthy.
    pub(crate) fn health(&self, total: u64, unhealthy: u64, busy: u64) -> HealthSummary {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let target = get(&self.target_size);
        let healthy = total.saturating_sub(unhealthy);
        let busy = busy.min(healthy);
        let critical = get(&self.critical_alerts_recent);
        let breaker = self.breaker_open.load(Relaxed);
        let capacity_percent = (healthy * 100)
            .checked_div(target)
            .map_or(100, |p| p.min(100));
        let failure = self.failure.get().cloned();
        let status = if failure.is_some() {
            HealthStatus::Failed
        } else if critical > 0 || healthy * 2 < target {
            HealthStatus::Critical
        } else if healthy * 5 < target * 4 || breaker {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        let alerts_total = get(&self.alerts_total);
        HealthSummary {
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            monitoring: self.initialized.load(Relaxed) && !self.shutting_down.load(Relaxed),
            capacity: CapacitySection {
                total: target,
                healthy,
                unhealthy,
                busy,
                idle: healthy - busy,
                capacity_percent,
                utilization_percent: (busy * 100).checked_div(healthy).unwrap_or(0),
                degraded: capacity_percent < 80,
            },
            alerts: AlertCounts {
                total: alerts_total,
                recent: alerts_total.min(10),
                critical,
                suppressed: get(&self.alerts_suppressed),
            },
            workers: HealthWorkers {
                total,
                healthy,
                unhealthy,
            },
            status,
            restart_breaker_open: breaker,
            failure,
        }
    }
}

fn avg_ms(total_us: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total_us as f64 / count as f64 / 1000.0
    }
}

/// A snapshot of the pool's metrics, in the original's JSON shape (camelCase field
/// names) with new fields added. Eventually consistent: fields are read one by one.
///
/// The identity `submitted = completed + failed + deadLettered + cancelled + queued
/// + inFlight` holds whenever the pool is idle between events: `failed` counts tasks
/// that ended without a result and outside the DLQ (non-retryable errors, shutdown),
/// `queued` includes tasks waiting for a retry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PoolMetrics {
    /// The pool itself.
    pub pool: PoolSection,
    /// Worker counts.
    pub workers: WorkersSection,
    /// Task counts.
    pub tasks: TasksSection,
    /// Rates and averages.
    pub performance: PerformanceSection,
    /// Overall health.
    pub health: HealthSummary,
    /// Queue statistics.
    pub queue: QueueSection,
    /// Latency percentiles.
    pub latency: LatencySection,
}

/// `pool` section of [`PoolMetrics`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PoolSection {
    /// Live workers.
    pub size: u64,
    /// The size the pool keeps itself at.
    pub target_size: u64,
    /// Whether start-up completed.
    pub initialized: bool,
    /// Whether shutdown began.
    pub shutting_down: bool,
    /// Time since the pool was built, in milliseconds.
    pub uptime_ms: u64,
}

/// `workers` section of [`PoolMetrics`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WorkersSection {
    /// Live workers (ready or not).
    pub total: u64,
    /// Workers with free capacity that may take tasks.
    pub ready: u64,
    /// Workers with at least one task in flight.
    pub busy: u64,
    /// Workers a probe judged suspect or worse.
    pub unhealthy: u64,
    /// `total − unhealthy`.
    pub healthy: u64,
}

/// `tasks` section of [`PoolMetrics`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TasksSection {
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks that produced a result.
    pub completed: u64,
    /// Tasks that ended without a result outside the DLQ.
    pub failed: u64,
    /// Tasks waiting (for a worker or for a retry).
    pub queued: u64,
    /// Entries in the dead-letter queue now.
    pub dlq: u64,
    /// Tasks running on a worker now.
    pub in_flight: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Tasks that ran out of attempts (lifetime count).
    pub dead_lettered: u64,
    /// Tasks cancelled by their caller.
    pub cancelled: u64,
    /// Attempts that ran past their timeout.
    pub timed_out: u64,
}

/// `performance` section of [`PoolMetrics`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PerformanceSection {
    /// Kept for compatibility: `workerReuseRatio` as a rounded percentage string.
    pub worker_reuse_rate: String,
    /// Share of dispatches that went to a worker that had already run a task.
    pub worker_reuse_ratio: f64,
    /// Attempts sent to workers.
    pub dispatches: u64,
    /// Worker processes started.
    pub workers_spawned: u64,
    /// Workers started to replace one that died.
    pub workers_restarted: u64,
    /// Workers that died without being asked to (kills for a protocol violation
    /// are not counted: they were asked to).
    pub workers_crashed: u64,
    /// Workers killed for missing heartbeats.
    pub zombies_killed: u64,
    /// Workers retired by a probe (memory, task count) and replaced.
    pub workers_recycled: u64,
    /// Mean time from (re)queueing to dispatch, in milliseconds.
    pub avg_task_wait_time_ms: f64,
    /// Mean run time of successful attempts, in milliseconds.
    pub avg_task_duration_ms: f64,
}

/// The pool's health summary (the original's shape, with explicit rules); the
/// `health` section of [`PoolMetrics`] and [`Pool::health`](super::Pool::health).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HealthSummary {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Whether the pool is running and watching its workers.
    pub monitoring: bool,
    /// Capacity against the target size.
    pub capacity: CapacitySection,
    /// Alert counts.
    pub alerts: AlertCounts,
    /// Worker counts.
    pub workers: HealthWorkers,
    /// `healthy`, `degraded`, `critical` (rules: see [`PoolMetrics`]'s docs), or
    /// `failed` when the pool's actor ended without a shutdown (see `failure`).
    pub status: HealthStatus,
    /// Whether workers keep failing to start.
    pub restart_breaker_open: bool,
    /// Why the pool stopped working (status `failed`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// `capacity` of [`HealthSummary`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CapacitySection {
    /// The target size.
    pub total: u64,
    /// Healthy workers.
    pub healthy: u64,
    /// Suspect workers.
    pub unhealthy: u64,
    /// Healthy workers with a task.
    pub busy: u64,
    /// Healthy workers without one.
    pub idle: u64,
    /// `healthy / target` in percent (100 for an empty target).
    pub capacity_percent: u64,
    /// `busy / healthy` in percent: load, not health.
    pub utilization_percent: u64,
    /// `capacityPercent < 80`.
    pub degraded: bool,
}

/// `alerts` of [`HealthSummary`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AlertCounts {
    /// Alerts raised over the pool's lifetime (duplicates suppressed).
    pub total: u64,
    /// `min(10, total)`, as the original reported.
    pub recent: u64,
    /// Critical alerts raised in the last 5 minutes.
    pub critical: u64,
    /// Duplicate alerts suppressed (rate limiting).
    pub suppressed: u64,
}

/// `workers` of [`HealthSummary`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HealthWorkers {
    /// Live workers.
    pub total: u64,
    /// Healthy ones.
    pub healthy: u64,
    /// Suspect ones.
    pub unhealthy: u64,
}

/// Latency percentiles: queue wait (submission or retry to dispatch) and run time
/// (dispatch to result) of each attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LatencySection {
    /// Time tasks waited for a worker.
    pub queue_wait: LatencySummary,
    /// Time successful attempts ran.
    pub run_time: LatencySummary,
}

/// `queue` section of [`PoolMetrics`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct QueueSection {
    /// Tasks waiting: in the queue, held for a worker of their type, or waiting
    /// out a retry backoff.
    pub queue_depth: u64,
    /// Tasks in the queue by priority band (tasks waiting for a retry are not
    /// in a band until their backoff ends: see `retrying`).
    pub by_priority: BandDepths,
    /// Tasks waiting out a retry backoff.
    pub retrying: u64,
    /// Entries in the dead-letter queue.
    pub dlq_size: u64,
    /// Entries evicted from the full dead-letter queue.
    pub dlq_evicted: u64,
    /// The shards the queue of waiting tasks is split in
    /// ([`PoolConfig::queue_shards`](crate::PoolConfig::queue_shards), or the
    /// pool's choice when that is 0).
    pub shards: u64,
}

/// Queue depth by [`PriorityBand`](crate::queue::PriorityBand), in
/// [`QueueSection::by_priority`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BandDepths {
    /// Priorities 0–33 (the default, 10, is here).
    pub high: u64,
    /// Priorities 34–66.
    pub normal: u64,
    /// Priorities 67–100.
    pub low: u64,
}

/// One worker's state, from [`Pool::workers`](super::Pool::workers).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WorkerStatus {
    /// Its name.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// `ready`, `busy`, `suspect`, `recycling` (serving until its replacement is
    /// ready), `retiring` (finishing its tasks, then exiting) or `killing`.
    pub state: &'static str,
    /// Tasks in flight on it.
    pub in_flight: u32,
    /// Tasks it finished.
    pub tasks_done: u64,
    /// Resident set size as last reported, in bytes.
    pub rss_bytes: u64,
    /// Time since it was last heard from, in milliseconds.
    pub last_heard_ms: u64,
    /// The place in the pool it fills (kept by its replacements).
    pub slot: Option<u32>,
    /// How many times that place's worker was replaced after dying, being killed
    /// or being recycled.
    pub restarts: u32,
    /// Heartbeats remembered (the last 100 at most).
    pub heartbeats_seen: u32,
    /// Longest gap between two of the remembered heartbeats, in milliseconds.
    pub max_heartbeat_gap_ms: u64,
    /// Time since it became ready, in milliseconds.
    pub uptime_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(target: u64, total: u64, unhealthy: u64) -> Stats {
        let s = Stats::new();
        s.target_size.store(target, Relaxed);
        s.workers_total.store(total, Relaxed);
        s.workers_unhealthy.store(unhealthy, Relaxed);
        s
    }

    fn status(s: &Stats) -> &'static str {
        s.health(
            s.workers_total.load(Relaxed),
            s.workers_unhealthy.load(Relaxed),
            0,
        )
        .status
        .as_str()
    }

    #[test]
    fn status_rules_follow_healthy_share_alerts_and_the_breaker() {
        assert_eq!(status(&stats(10, 10, 0)), "healthy");
        assert_eq!(status(&stats(10, 10, 2)), "healthy", "80 % is enough");
        assert_eq!(status(&stats(10, 10, 3)), "degraded");
        assert_eq!(
            status(&stats(10, 10, 5)),
            "degraded",
            "half is not critical"
        );
        assert_eq!(status(&stats(10, 4, 0)), "critical");
        assert_eq!(
            status(&stats(0, 0, 0)),
            "healthy",
            "an empty pool is not critical"
        );
        let s = stats(10, 10, 0);
        s.breaker_open.store(true, Relaxed);
        assert_eq!(status(&s), "degraded");
        s.critical_alerts_recent.store(1, Relaxed);
        assert_eq!(status(&s), "critical");
    }

    #[test]
    fn reuse_is_the_share_of_dispatches_to_workers_that_had_run_a_task() {
        let s = Stats::new();
        let mut first = s.tallies.writer(1);
        let mut second = s.tallies.writer(1);
        for lane in [&mut first, &mut second] {
            lane.dispatched(false, 0);
            for _ in 0..3 {
                lane.dispatched(true, 0);
            }
        }
        let p = s.snapshot(QueueDepth::default()).performance;
        assert_eq!(
            (p.worker_reuse_ratio, p.worker_reuse_rate.as_str()),
            (0.75, "75%")
        );
    }
}
