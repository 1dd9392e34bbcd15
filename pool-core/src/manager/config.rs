//! [`PoolConfig`]: every tunable of the pool, with the original's defaults, in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::queue::RetryPolicy;

use super::autoscale::Autoscale;
use super::lane::queue::{auto_shards, MAX_SHARDS};

/// The largest [`PoolConfig::max_queue_len`]: the most permits a semaphore
/// holds (the queue's slots are one's).
pub const MAX_QUEUE_LEN: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// The most workers a pool may have (`pool_size`, `min_workers`,
/// `max_workers`): far past what a machine's processes and file descriptors
/// allow, so that a mistyped size is refused at once instead of spawning
/// until something runs out.
pub const MAX_WORKERS: usize = 65_536;

/// The largest [`PoolConfig::event_capacity`] (about a million events a
/// subscriber: its buffer is allocated whole when it subscribes).
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

mod settings;

pub use settings::{AutoscaleSettings, PoolSettings};

/// The pool's settings. `Default` gives the original's defaults; every field's doc
/// states its default. [`validate`](Self::validate) runs when the pool starts.
///
/// Build one with struct-update syntax:
/// `PoolConfig { pool_size: 4, min_workers: 1, ..PoolConfig::default() }`.
///
/// It (de)serializes as [`PoolSettings`]: flat keys, durations in milliseconds
/// (`task_timeout_ms`), memory in MiB (`max_rss_mb`); deserializing applies the
/// same adapted defaults and checks as [`PoolSettings::resolve`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "PoolSettings", into = "PoolSettings")]
pub struct PoolConfig {
    /// Workers to start. Must lie within `min_workers..=max_workers` (the same rule
    /// as [`Pool::scale_to`](super::Pool::scale_to)). Default 20.
    pub pool_size: usize,
    /// Lower bound of the pool's size. Default 5.
    pub min_workers: usize,
    /// Upper bound of the pool's size. Default 50; at most [`MAX_WORKERS`].
    pub max_workers: usize,
    /// Tasks a worker runs at once (sent to it as the `hello` key `concurrency`).
    /// Default 1.
    pub worker_concurrency: u32,
    /// Tasks written to a worker beyond its `worker_concurrency` (its prefetch
    /// window) at most, so it starts its next task without waiting a round
    /// trip for the pool to send one. A task's timeout counts from its run
    /// start (when it is one of the first `worker_concurrency` unanswered
    /// tasks of its worker), not from its wait in the window; a prefetched task
    /// that never started on a worker that died or was killed goes back to the
    /// queue without losing an attempt.
    ///
    /// The window is also bounded in time: it holds as many tasks as the
    /// worker gets through in about 5 ms at its recent pace, at least one, and
    /// at most [`FIRST_PREFETCH`](Self::FIRST_PREFETCH) (64) until that pace
    /// is known. The pace is measured between refills of the worker (by its
    /// lane, or by the pool where the pool feeds it): the time over the tasks
    /// answered, while every run slot had work all along (an interval in
    /// which it may have run dry can only make its window larger). Tasks of a
    /// few microseconds fill the window to `prefetch`; tasks of a second wait
    /// one at a time, so a long task is not pinned behind others in one
    /// worker's window while another worker frees up. Tasks already written are not taken back: when fast
    /// tasks are followed by slow ones, up to `prefetch` slow ones may wait in
    /// a window that the fast ones' pace sized; set `prefetch` lower for such
    /// a mix. A new worker (a replacement, or one added by scaling) starts
    /// with at most 64 waiting.
    ///
    /// Priority: the queue is strictly ordered, but a task already in a worker's
    /// window is not overtaken, so a new task of higher priority waits behind at
    /// most `prefetch` tasks of each worker, and about 5 ms of its work at its
    /// recent pace, before it starts. `0` keeps strict priority order (a worker
    /// gets a task only when a run slot is free).
    ///
    /// Default 512. A worker's lane refills its window as each read of
    /// replies comes back, and a worker answers in batches (it writes the
    /// replies it has before it starts another task), so the window must cover
    /// a batch plus the time the lane is away, which on a busy machine is a
    /// scheduler's time slice, not a round trip: `pool-bench tput` (64 B echo,
    /// 64 run slots a worker, 2 workers on 2 vCPUs) ran at 1.33 M tasks/s with
    /// 64, 1.53 M with 256, 1.66 M with 512 and 1.64 M with 1 024 (medians of
    /// five; `docs/benchmarks.md`), with a quarter of the context switches. Crash
    /// attribution stays exact with it: a worker that writes a finished task's
    /// reply before it starts a later one (the protocol's rule) has every
    /// earlier reply with the pool when a task kills it, so the
    /// `worker_concurrency` oldest unanswered tasks lose an attempt and the rest
    /// are requeued; a worker that batches replies (`ready.batches_replies`, the
    /// shipped SDKs' default) and dies holding several tasks costs none of them an
    /// attempt, and each runs alone next, so the one at fault is then charged
    /// (`docs/PROTOCOL.md`, "Batched replies").
    pub prefetch: u32,
    /// What the tasks waiting in a worker's prefetch window may weigh, in
    /// payload bytes: a task is written beyond `worker_concurrency` only while
    /// the payloads of those already waiting there total less than this, so
    /// with `prefetch` 1 or more one task always may wait.
    ///
    /// A window exists to hide a round trip, and one large task covers it:
    /// its bytes take far longer to cross the pipe than the pool takes to
    /// answer. More large tasks in one worker's window only pin memory, keep
    /// them from a worker that frees up first, and leave their results
    /// finished out of order (a caller awaiting them in order holds every
    /// one that came early). Default 1 MiB: 64 B tasks fill the whole
    /// `prefetch` window, 1 MiB ones wait one at a time (`pool-bench big`
    /// with the defaults went from 0.83× to 0.90× the raw pipe's bandwidth,
    /// `docs/benchmarks.md`).
    ///
    /// Whatever the window, run slots included, a task leaves the queue for
    /// a worker only while less than 1 MiB of frames (a pipe's worth) waits
    /// for that worker's link, and one always does once the link took
    /// everything: 64 run slots do not take 64 MiB of large tasks from the
    /// queue at once; they fill as the link takes each frame.
    pub prefetch_bytes: usize,
    /// Shards the queue of waiting tasks is split in, each behind its own
    /// lock, so callers and workers' lanes on many cores do not all wait for
    /// one. A caller adds its tasks to its thread's shard; a worker's lane
    /// refills from the shard whose head has the highest priority, taking
    /// turns among shards of equal heads. Priority order holds across
    /// shards (up to a race with a task being added); FIFO order within a
    /// priority holds within a shard, so a caller's tasks keep their order
    /// while it submits from one thread.
    ///
    /// `0` (the default) leaves it to the pool: one shard with `prefetch` 0,
    /// else one for every two of `max_workers` the machine can run at once,
    /// up to 16 (one on a machine of 2 or 3 cores). At most 64; above 1 only
    /// with `prefetch` above 0 (`prefetch` 0 promises strict priority order).
    pub queue_shards: usize,
    /// New tasks that may wait in the queue; `try_submit` refuses past it and
    /// `submit` waits for room. Retries re-enter the queue regardless. Default 100 000;
    /// at most [`MAX_QUEUE_LEN`].
    pub max_queue_len: usize,
    /// Retries and backoff. Default 3 retries, 1 s base, 30 s cap, no jitter.
    pub retry: RetryPolicy,
    /// Per-attempt timeout when a task sets none. Default 5 min.
    pub task_timeout: Duration,
    /// Dead-letter queue bound (oldest evicted). Default 10 000.
    pub dlq_capacity: usize,
    /// How often workers send heartbeats. Default 5 s.
    pub heartbeat_interval: Duration,
    /// Silence after which a worker gets no new tasks. Default 15 s.
    pub suspect_after: Duration,
    /// Silence after which a worker is killed and replaced. Default 30 s.
    pub zombie_after: Duration,
    /// Time a worker has to launch and complete its handshake. Default 10 s.
    pub start_timeout: Duration,
    /// On shutdown, time given to in-flight tasks before they are abandoned. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Time between the steps of stopping a worker: `cancel` for its tasks (at the
    /// drain deadline), `shutdown`, SIGTERM, SIGKILL. Default 5 s.
    pub kill_grace: Duration,
    /// First delay before replacing a worker that failed to start or died with no
    /// task running. Default 100 ms.
    pub restart_backoff_base: Duration,
    /// Longest delay before replacing a worker. Default 30 s.
    pub restart_backoff_cap: Duration,
    /// Consecutive failed starts, or consecutive deaths of workers running no task
    /// with no successful task in between, that open the restart breaker: a
    /// critical alert, and replacements only every `restart_backoff_cap`. A worker
    /// that dies while running a task is that task's failure (an attempt) and is
    /// replaced at once, without backoff. Restart budgets are kept for the pool as
    /// a whole. A rolling restart whose workers fail to start this many times
    /// in a row is aborted ([`Pool::roll_workers`](super::Pool::roll_workers)).
    /// At least 1. Default 5.
    pub max_start_failures: u32,
    /// Time a running task has to stop after a cancel before its worker is killed.
    /// Default 5 s.
    pub cancel_grace: Duration,
    /// Largest frame body either side may send. Default 16 MiB.
    pub max_frame: usize,
    /// Events buffered per subscriber before the oldest are dropped. Default 1 024;
    /// at most [`MAX_EVENT_CAPACITY`].
    pub event_capacity: usize,
    /// Recycle a worker after about this many tasks (minus up to 10 % jitter per
    /// worker, so they do not all retire together). The limit is soft: the worker
    /// keeps serving until its replacement is ready, so capacity never dips.
    /// Default: never.
    pub max_tasks_per_worker: Option<u64>,
    /// Recycle a worker whose RSS exceeds this many bytes: its replacement starts
    /// first, then it finishes its current tasks and exits. Default: no limit.
    pub max_rss_bytes: Option<u64>,
    /// Kill a worker whose RSS exceeds this many bytes; its tasks are retried.
    /// Default: no limit.
    pub kill_rss_bytes: Option<u64>,
    /// Recycle a worker once it has lived this long. Default: never.
    pub max_worker_age: Option<Duration>,
    /// Grow and shrink the pool with the load. Default: off (fixed size).
    pub autoscale: Option<Autoscale>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pool_size: 20,
            min_workers: 5,
            max_workers: 50,
            worker_concurrency: 1,
            prefetch: 512,
            prefetch_bytes: 1024 * 1024,
            queue_shards: 0,
            max_queue_len: 100_000,
            retry: RetryPolicy::default(),
            task_timeout: Duration::from_secs(300),
            dlq_capacity: 10_000,
            heartbeat_interval: Duration::from_secs(5),
            suspect_after: Duration::from_secs(15),
            zombie_after: Duration::from_secs(30),
            start_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            restart_backoff_base: Duration::from_millis(100),
            restart_backoff_cap: Duration::from_secs(30),
            max_start_failures: 5,
            cancel_grace: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            event_capacity: 1024,
            max_tasks_per_worker: None,
            max_rss_bytes: None,
            kill_rss_bytes: None,
            max_worker_age: None,
            autoscale: None,
        }
    }
}

impl PoolConfig {
    /// Tasks a worker's window holds at most beyond its run slots before the
    /// worker's pace is known (a new worker, or one after a spell that told
    /// nothing of its pace): nothing is known of the tasks' length yet, so a
    /// first fill of long tasks commits no more than this to one worker.
    pub const FIRST_PREFETCH: u32 = 64;

    /// Checks every value; the error names the offending key.
    ///
    /// # Errors
    /// [`ConfigError`] for the first value that does not make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(key, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        for (key, workers) in [
            ("pool_size", self.pool_size),
            ("min_workers", self.min_workers),
            ("max_workers", self.max_workers),
        ] {
            if workers > MAX_WORKERS {
                return Err(ConfigError::new(
                    key,
                    format!("{workers} is above the most, {MAX_WORKERS}"),
                ));
            }
        }
        if self.max_workers == 0 {
            return Err(ConfigError::new("max_workers", "must be at least 1"));
        }
        if self.min_workers > self.max_workers {
            return Err(ConfigError::new(
                "min_workers",
                format!(
                    "{} is above max_workers ({})",
                    self.min_workers, self.max_workers
                ),
            ));
        }
        self.check_size(self.pool_size)?;
        if self.worker_concurrency == 0 {
            return Err(ConfigError::new("worker_concurrency", "must be at least 1"));
        }
        if self.max_start_failures == 0 {
            // The breaker would open at the first failure and never close.
            return Err(ConfigError::new("max_start_failures", "must be at least 1"));
        }
        if self.prefetch_bytes == 0 {
            return Err(ConfigError::new(
                "prefetch_bytes",
                "must be at least 1 (set prefetch to 0 to write no task beyond worker_concurrency)",
            ));
        }
        if self.max_queue_len == 0 || self.max_queue_len > MAX_QUEUE_LEN {
            return Err(ConfigError::new(
                "max_queue_len",
                format!("must be from 1 to {MAX_QUEUE_LEN}"),
            ));
        }
        if self.queue_shards > MAX_SHARDS {
            return Err(ConfigError::new(
                "queue_shards",
                format!("{} is above the most, {MAX_SHARDS}", self.queue_shards),
            ));
        }
        if self.queue_shards > 1 && self.prefetch == 0 {
            return Err(ConfigError::new(
                "queue_shards",
                "must be 0 or 1 with prefetch 0, which keeps strict priority order",
            ));
        }
        positive("task_timeout", self.task_timeout)?;
        positive("heartbeat_interval", self.heartbeat_interval)?;
        positive("suspect_after", self.suspect_after)?;
        positive("start_timeout", self.start_timeout)?;
        if self.zombie_after < self.suspect_after {
            return Err(ConfigError::new(
                "zombie_after",
                "must not be shorter than suspect_after",
            ));
        }
        if self.heartbeat_interval >= self.suspect_after {
            return Err(ConfigError::new(
                "heartbeat_interval",
                "must be shorter than suspect_after, or healthy workers look silent",
            ));
        }
        if self.restart_backoff_cap < self.restart_backoff_base {
            return Err(ConfigError::new(
                "restart_backoff_cap",
                "must not be below restart_backoff_base",
            ));
        }
        if self.max_frame < 1024 || u32::try_from(self.max_frame).is_err() {
            return Err(ConfigError::new(
                "max_frame",
                "must be between 1 KiB and 4 GiB − 1",
            ));
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(ConfigError::new(
                "max_tasks_per_worker",
                "must be at least 1",
            ));
        }
        if let (Some(soft), Some(hard)) = (self.max_rss_bytes, self.kill_rss_bytes) {
            if hard < soft {
                return Err(ConfigError::new(
                    "kill_rss_bytes",
                    "must not be below max_rss_bytes",
                ));
            }
        }
        if self.event_capacity == 0 || self.event_capacity > MAX_EVENT_CAPACITY {
            return Err(ConfigError::new(
                "event_capacity",
                format!("must be from 1 to {MAX_EVENT_CAPACITY}"),
            ));
        }
        Ok(())
    }

    /// The pool-size rule shared by the configuration and scaling: a size must lie
    /// within `min_workers..=max_workers`.
    ///
    /// # Errors
    /// [`ConfigError`] for `pool_size`, stating the rule and the bounds.
    pub fn check_size(&self, size: usize) -> Result<(), ConfigError> {
        if (self.min_workers..=self.max_workers).contains(&size) {
            return Ok(());
        }
        Err(ConfigError::new(
            "pool_size",
            format!(
                "{size} is outside min_workers..=max_workers ({}..={}): the pool size \
                 must lie within them (set min_workers or max_workers to move them)",
                self.min_workers, self.max_workers
            ),
        ))
    }

    /// How many shards the queue is split in: `queue_shards`, or the pool's
    /// choice when it is 0.
    pub(crate) fn queue_shard_count(&self) -> usize {
        match self.queue_shards {
            0 => auto_shards(self.prefetch, self.max_workers),
            shards => shards,
        }
    }

    /// The most tasks written to one worker at once: its concurrency plus its
    /// prefetch window.
    pub fn worker_window(&self) -> u32 {
        self.worker_concurrency.saturating_add(self.prefetch)
    }

    /// The heartbeat period a worker's `hello` asks for, in whole milliseconds:
    /// at least 1, since a worker reads 0 as "send none" (PROTOCOL.md), and a
    /// period under a millisecond is asked for as 1.
    pub(crate) fn hello_heartbeat_ms(&self) -> u64 {
        u64::try_from(self.heartbeat_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The number of workers the pool starts with: `pool_size` (which
    /// [`validate`](Self::validate) keeps within the bounds).
    pub fn initial_size(&self) -> usize {
        self.pool_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_period_under_a_millisecond_is_asked_for_as_one_not_as_none() {
        let hello_ms = |interval| {
            PoolConfig {
                heartbeat_interval: interval,
                ..PoolConfig::default()
            }
            .hello_heartbeat_ms()
        };
        assert_eq!(hello_ms(Duration::from_micros(500)), 1);
        assert_eq!(hello_ms(Duration::from_micros(1_500)), 1);
        assert_eq!(hello_ms(Duration::from_secs(5)), 5_000);
    }

    #[test]
    fn defaults_are_the_originals_and_valid() {
        let c = PoolConfig::default();
        assert_eq!((c.pool_size, c.min_workers, c.max_workers), (20, 5, 50));
        assert_eq!(c.retry.max_retries(), 3);
        assert_eq!(c.task_timeout, Duration::from_secs(300));
        assert_eq!(c.dlq_capacity, 10_000);
        c.validate().unwrap();
    }

    /// A breaker that opens at the first failure could never close again.
    #[test]
    fn max_start_failures_of_zero_is_refused() {
        let c = PoolConfig {
            max_start_failures: 0,
            ..PoolConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max_start_failures");
    }

    #[test]
    fn a_pool_size_outside_the_bounds_is_refused() {
        let mut c = PoolConfig {
            pool_size: 2,
            ..PoolConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "pool_size");
        assert!(e.message.contains("(5..=50)"), "{e}");
        c.pool_size = 500;
        assert_eq!(c.validate().unwrap_err().key, "pool_size");
        c.pool_size = 5;
        c.validate().unwrap();
        assert_eq!(c.initial_size(), 5);
    }

    #[test]
    fn errors_name_the_key() {
        let c = PoolConfig {
            min_workers: 9,
            max_workers: 3,
            ..PoolConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "min_workers");
        let c = PoolConfig {
            task_timeout: Duration::ZERO,
            ..PoolConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "task_timeout");
    }

    /// A size past [`MAX_WORKERS`] is refused by the key it was set by.
    #[test]
    fn sizes_past_the_most_workers_are_refused_by_key() {
        let c = PoolConfig {
            pool_size: MAX_WORKERS + 1,
            max_workers: usize::MAX,
            ..PoolConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "pool_size");
        assert!(e.message.contains("is above the most, 65536"), "{e}");
        let c = PoolConfig {
            max_workers: MAX_WORKERS + 1,
            ..PoolConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max_workers");
    }

    /// Bounds past which the pool could not start (a semaphore's most
    /// permits, an event buffer allocated whole) are refused by name.
    #[test]
    fn the_queue_and_event_buffers_are_bounded() {
        for (c, key) in [
            (
                PoolConfig {
                    max_queue_len: MAX_QUEUE_LEN + 1,
                    ..PoolConfig::default()
                },
                "max_queue_len",
            ),
            (
                PoolConfig {
                    event_capacity: MAX_EVENT_CAPACITY + 1,
                    ..PoolConfig::default()
                },
                "event_capacity",
            ),
        ] {
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.message.starts_with("must be from 1 to"), "{e}");
        }
        PoolConfig {
            max_queue_len: MAX_QUEUE_LEN,
            event_capacity: MAX_EVENT_CAPACITY,
            ..PoolConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn queue_shards_are_bounded_and_one_keeps_strict_order() {
        let mut c = PoolConfig {
            queue_shards: MAX_SHARDS + 1,
            ..PoolConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "queue_shards");
        assert!(e.message.contains("64"), "{e}");
        c.queue_shards = 4;
        c.validate().unwrap();
        assert_eq!(c.queue_shard_count(), 4);
        c.prefetch = 0;
        let e = c.validate().unwrap_err();
        assert!(e.message.contains("strict priority order"), "{e}");
        c.queue_shards = 0;
        c.validate().unwrap();
        assert_eq!(c.queue_shard_count(), 1, "prefetch 0 keeps one shard");
    }
}
