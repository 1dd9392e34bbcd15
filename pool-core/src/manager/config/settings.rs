//! [`PoolSettings`]: the pool's configuration as flat keys (durations in
//! milliseconds, memory in MiB), the form a config file, the environment and flags
//! give it; [`PoolSettings::resolve`] is the one place where absent keys get their
//! defaults and the result is checked.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PoolConfig;
use crate::error::ConfigError;
use crate::manager::Autoscale;
use crate::queue::RetryPolicy;
use crate::task::MAX_TIMEOUT;

const MIB: u64 = 1024 * 1024;

/// The pool's settings by key, every one optional; absent keys take the defaults of
/// [`PoolConfig::default`], adapted to the keys that are given:
///
/// - `pool_size` must lie within `min_workers..=max_workers`. When `min_workers`
///   is absent it is `min(5, pool_size, max_workers)`; when `max_workers` is
///   absent it is `max(50, pool_size, min_workers)`; when `pool_size` is absent it
///   is 20 brought within the bounds. So `pool_size = 4` alone gives 4 workers with
///   bounds `4..=50`, and `pool_size = 4` with `min_workers = 5` is refused.
/// - `suspect_after_ms` defaults to 3 × `heartbeat_interval_ms` when the heartbeat
///   is given (never above `zombie_after_ms` when that is given), and
///   `zombie_after_ms` to 2 × `suspect_after_ms` when either is given.
/// - `retry_backoff_cap_ms` defaults to the larger of `retry_backoff_ms` and 30 s.
///
/// Serialized, a [`PoolConfig`] gives every key (RSS limits rounded up to whole
/// MiB, durations to whole milliseconds); these are the keys of the daemon's
/// configuration file, `CORTEX_POOL_<KEY>` and `--set KEY=VALUE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Workers to start; see the rule above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    /// Fewest workers (`scale` and the autoscaler stay at or above it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<usize>,
    /// Most workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<usize>,
    /// [`PoolConfig::worker_concurrency`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_concurrency: Option<u32>,
    /// [`PoolConfig::prefetch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<u32>,
    /// [`PoolConfig::prefetch_bytes`], in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_bytes: Option<usize>,
    /// [`PoolConfig::queue_shards`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_shards: Option<usize>,
    /// [`PoolConfig::max_queue_len`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_len: Option<usize>,
    /// Retries after a failed first attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Base of the exponential retry backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// Longest retry backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_cap_ms: Option<u64>,
    /// Draw each retry wait from the upper half of its backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_jitter: Option<bool>,
    /// [`PoolConfig::task_timeout`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_timeout_ms: Option<u64>,
    /// [`PoolConfig::dlq_capacity`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlq_capacity: Option<usize>,
    /// [`PoolConfig::heartbeat_interval`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// [`PoolConfig::suspect_after`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspect_after_ms: Option<u64>,
    /// [`PoolConfig::zombie_after`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zombie_after_ms: Option<u64>,
    /// [`PoolConfig::start_timeout`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_timeout_ms: Option<u64>,
    /// [`PoolConfig::shutdown_timeout`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout_ms: Option<u64>,
    /// [`PoolConfig::kill_grace`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// [`PoolConfig::restart_backoff_base`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_backoff_base_ms: Option<u64>,
    /// [`PoolConfig::restart_backoff_cap`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_backoff_cap_ms: Option<u64>,
    /// [`PoolConfig::max_start_failures`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_start_failures: Option<u32>,
    /// [`PoolConfig::cancel_grace`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_grace_ms: Option<u64>,
    /// [`PoolConfig::max_frame`], in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<usize>,
    /// [`PoolConfig::event_capacity`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_capacity: Option<usize>,
    /// [`PoolConfig::max_tasks_per_worker`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tasks_per_worker: Option<u64>,
    /// [`PoolConfig::max_rss_bytes`], in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rss_mb: Option<u64>,
    /// [`PoolConfig::kill_rss_bytes`], in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_rss_mb: Option<u64>,
    /// [`PoolConfig::max_worker_age`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_worker_age_ms: Option<u64>,
    /// [`PoolConfig::autoscale`]: a table whose absent keys take
    /// [`Autoscale::default`]'s values; absent, the pool keeps its size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSettings>,
}

/// [`Autoscale`] by key (a table under `autoscale`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscaleSettings {
    /// [`Autoscale::queue_per_worker`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_per_worker: Option<usize>,
    /// [`Autoscale::max_queue_wait`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_ms: Option<u64>,
    /// [`Autoscale::sustain`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustain_ms: Option<u64>,
    /// [`Autoscale::idle_after`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_after_ms: Option<u64>,
    /// [`Autoscale::step`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
}

impl PoolSettings {
    /// Every key, as spelled in files, `CORTEX_POOL_<KEY>` and `--set`.
    pub const KEYS: &'static [&'static str] = &[
        "pool_size",
        "min_workers",
        "max_workers",
        "worker_concurrency",
        "prefetch",
        "prefetch_bytes",
        "queue_shards",
        "max_queue_len",
        "max_retries",
        "retry_backoff_ms",
        "retry_backoff_cap_ms",
        "retry_jitter",
        "task_timeout_ms",
        "dlq_capacity",
        "heartbeat_interval_ms",
        "suspect_after_ms",
        "zombie_after_ms",
        "start_timeout_ms",
        "shutdown_timeout_ms",
        "kill_grace_ms",
        "restart_backoff_base_ms",
        "restart_backoff_cap_ms",
        "max_start_failures",
        "cancel_grace_ms",
        "max_frame",
        "event_capacity",
        "max_tasks_per_worker",
        "max_rss_mb",
        "kill_rss_mb",
        "max_worker_age_ms",
        "autoscale",
    ];

    /// Applies the defaults (adapted as the type's documentation says) and checks
    /// the result with [`PoolConfig::validate`].
    ///
    /// # Errors
    /// [`ConfigError`] naming the first key, as spelled here, whose value does
    /// not make sense.
    pub fn resolve(&self) -> Result<PoolConfig, ConfigError> {
        self.check_durations()?;
        let d = PoolConfig::default();
        let (size, min, max) = (self.pool_size, self.min_workers, self.max_workers);
        let min_workers = min.unwrap_or_else(|| {
            d.min_workers
                .min(size.unwrap_or(usize::MAX))
                .min(max.unwrap_or(usize::MAX))
        });
        let max_workers =
            max.unwrap_or_else(|| d.max_workers.max(size.unwrap_or(0)).max(min_workers));
        let pool_size = size.unwrap_or_else(|| d.pool_size.max(min_workers).min(max_workers));

        let heartbeat_interval = ms_or(self.heartbeat_interval_ms, d.heartbeat_interval);
        let zombie_given = self.zombie_after_ms.map(ms);
        let suspect_after = match (self.suspect_after_ms, self.heartbeat_interval_ms) {
            (Some(v), _) => ms(v),
            (None, Some(_)) => heartbeat_interval.saturating_mul(3),
            (None, None) => d.suspect_after,
        };
        let suspect_after = match (self.suspect_after_ms, zombie_given) {
            (None, Some(zombie)) => suspect_after.min(zombie),
            _ => suspect_after,
        };
        // A suspect limit derived from `zombie_after_ms` alone (the user set
        // neither it nor the heartbeat): a zombie limit too short for the
        // heartbeat is that key's fault, not that of the keys left unset.
        if let (None, Some(zombie)) = (self.suspect_after_ms, zombie_given) {
            if zombie <= heartbeat_interval {
                return Err(ConfigError::new(
                    "zombie_after_ms",
                    format!(
                        "must be longer than heartbeat_interval_ms ({} ms{}), or healthy workers \
                         look silent",
                        heartbeat_interval.as_millis(),
                        if self.heartbeat_interval_ms.is_some() {
                            ""
                        } else {
                            ", the default"
                        }
                    ),
                ));
            }
        }
        let zombie_after = match zombie_given {
            Some(zombie) => zombie,
            None if self.suspect_after_ms.is_some() || self.heartbeat_interval_ms.is_some() => {
                suspect_after.saturating_mul(2)
            }
            None => d.zombie_after,
        };

        let retry = match (
            self.max_retries,
            self.retry_backoff_ms,
            self.retry_backoff_cap_ms,
            self.retry_jitter,
        ) {
            (None, None, None, None) => d.retry,
            (retries, base, cap, jitter) => {
                let base = ms_or(base, d.retry.base());
                let cap = cap.map_or_else(|| base.max(d.retry.cap()), ms);
                RetryPolicy::new(
                    retries.unwrap_or(d.retry.max_retries()),
                    base,
                    cap,
                    jitter.unwrap_or(d.retry.jitter()),
                )
                .map_err(|_| {
                    ConfigError::new("retry_backoff_cap_ms", "must not be below retry_backoff_ms")
                })?
            }
        };
        let mib = |key: &'static str, v: Option<u64>| -> Result<Option<u64>, ConfigError> {
            v.map(|mb| {
                mb.checked_mul(MIB)
                    .ok_or_else(|| ConfigError::new(key, format!("{mb} MiB is too large")))
            })
            .transpose()
        };
        let config = PoolConfig {
            pool_size,
            min_workers,
            max_workers,
            worker_concurrency: self.worker_concurrency.unwrap_or(d.worker_concurrency),
            prefetch: self.prefetch.unwrap_or(d.prefetch),
            prefetch_bytes: self.prefetch_bytes.unwrap_or(d.prefetch_bytes),
            queue_shards: self.queue_shards.unwrap_or(d.queue_shards),
            max_queue_len: self.max_queue_len.unwrap_or(d.max_queue_len),
            retry,
            task_timeout: ms_or(self.task_timeout_ms, d.task_timeout),
            dlq_capacity: self.dlq_capacity.unwrap_or(d.dlq_capacity),
            heartbeat_interval,
            suspect_after,
            zombie_after,
            start_timeout: ms_or(self.start_timeout_ms, d.start_timeout),
            shutdown_timeout: ms_or(self.shutdown_timeout_ms, d.shutdown_timeout),
            kill_grace: ms_or(self.kill_grace_ms, d.kill_grace),
            restart_backoff_base: ms_or(self.restart_backoff_base_ms, d.restart_backoff_base),
            restart_backoff_cap: ms_or(self.restart_backoff_cap_ms, d.restart_backoff_cap),
            max_start_failures: self.max_start_failures.unwrap_or(d.max_start_failures),
            cancel_grace: ms_or(self.cancel_grace_ms, d.cancel_grace),
            max_frame: self.max_frame.unwrap_or(d.max_frame),
            event_capacity: self.event_capacity.unwrap_or(d.event_capacity),
            max_tasks_per_worker: self.max_tasks_per_worker.or(d.max_tasks_per_worker),
            max_rss_bytes: mib("max_rss_mb", self.max_rss_mb)?.or(d.max_rss_bytes),
            kill_rss_bytes: mib("kill_rss_mb", self.kill_rss_mb)?.or(d.kill_rss_bytes),
            max_worker_age: self.max_worker_age_ms.map(ms).or(d.max_worker_age),
            autoscale: self.autoscale.as_ref().map(AutoscaleSettings::resolve),
        };
        config.validate().map_err(|e| ConfigError {
            key: key_of(e.key),
            message: with_keys(&e.message),
        })?;
        Ok(config)
    }
}

impl PoolSettings {
    /// Every duration key is at most [`MAX_TIMEOUT`] (365 days), so none can
    /// overflow a deadline.
    fn check_durations(&self) -> Result<(), ConfigError> {
        let scale = self.autoscale.clone().unwrap_or_default();
        let keys = [
            ("retry_backoff_ms", self.retry_backoff_ms),
            ("retry_backoff_cap_ms", self.retry_backoff_cap_ms),
            ("task_timeout_ms", self.task_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("suspect_after_ms", self.suspect_after_ms),
            ("zombie_after_ms", self.zombie_after_ms),
            ("start_timeout_ms", self.start_timeout_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("kill_grace_ms", self.kill_grace_ms),
            ("restart_backoff_base_ms", self.restart_backoff_base_ms),
            ("restart_backoff_cap_ms", self.restart_backoff_cap_ms),
            ("cancel_grace_ms", self.cancel_grace_ms),
            ("max_worker_age_ms", self.max_worker_age_ms),
            ("autoscale", scale.max_queue_wait_ms),
            ("autoscale", scale.sustain_ms),
            ("autoscale", scale.idle_after_ms),
        ];
        let max = u64::try_from(MAX_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        match keys.into_iter().find(|(_, v)| v.is_some_and(|v| v > max)) {
            Some((key, _)) => Err(ConfigError::new(
                key,
                format!("a duration must be at most {max} ms (365 days)"),
            )),
            None => Ok(()),
        }
    }
}

impl AutoscaleSettings {
    /// The rules, absent keys taking [`Autoscale::default`]'s values.
    pub fn resolve(&self) -> Autoscale {
        let d = Autoscale::default();
        Autoscale {
            queue_per_worker: self.queue_per_worker.unwrap_or(d.queue_per_worker),
            max_queue_wait: ms_or(self.max_queue_wait_ms, d.max_queue_wait),
            sustain: ms_or(self.sustain_ms, d.sustain),
            idle_after: ms_or(self.idle_after_ms, d.idle_after),
            step: self.step.unwrap_or(d.step),
        }
    }
}

impl From<&Autoscale> for AutoscaleSettings {
    fn from(a: &Autoscale) -> Self {
        Self {
            queue_per_worker: Some(a.queue_per_worker),
            max_queue_wait_ms: Some(millis(a.max_queue_wait)),
            sustain_ms: Some(millis(a.sustain)),
            idle_after_ms: Some(millis(a.idle_after)),
            step: Some(a.step),
        }
    }
}

impl From<&PoolConfig> for PoolSettings {
    fn from(c: &PoolConfig) -> Self {
        Self {
            pool_size: Some(c.pool_size),
            min_workers: Some(c.min_workers),
            max_workers: Some(c.max_workers),
            worker_concurrency: Some(c.worker_concurrency),
            prefetch: Some(c.prefetch),
            prefetch_bytes: Some(c.prefetch_bytes),
            queue_shards: Some(c.queue_shards),
            max_queue_len: Some(c.max_queue_len),
            max_retries: Some(c.retry.max_retries()),
            retry_backoff_ms: Some(millis(c.retry.base())),
            retry_backoff_cap_ms: Some(millis(c.retry.cap())),
            retry_jitter: Some(c.retry.jitter()),
            task_timeout_ms: Some(millis(c.task_timeout)),
            dlq_capacity: Some(c.dlq_capacity),
            heartbeat_interval_ms: Some(millis(c.heartbeat_interval)),
            suspect_after_ms: Some(millis(c.suspect_after)),
            zombie_after_ms: Some(millis(c.zombie_after)),
            start_timeout_ms: Some(millis(c.start_timeout)),
            shutdown_timeout_ms: Some(millis(c.shutdown_timeout)),
            kill_grace_ms: Some(millis(c.kill_grace)),
            restart_backoff_base_ms: Some(millis(c.restart_backoff_base)),
            restart_backoff_cap_ms: Some(millis(c.restart_backoff_cap)),
            max_start_failures: Some(c.max_start_failures),
            cancel_grace_ms: Some(millis(c.cancel_grace)),
            max_frame: Some(c.max_frame),
            event_capacity: Some(c.event_capacity),
            max_tasks_per_worker: c.max_tasks_per_worker,
            max_rss_mb: c.max_rss_bytes.map(|b| b.div_ceil(MIB)),
            kill_rss_mb: c.kill_rss_bytes.map(|b| b.div_ceil(MIB)),
            max_worker_age_ms: c.max_worker_age.map(millis),
            autoscale: c.autoscale.as_ref().map(AutoscaleSettings::from),
        }
    }
}

impl From<PoolConfig> for PoolSettings {
    fn from(c: PoolConfig) -> Self {
        Self::from(&c)
    }
}

impl TryFrom<PoolSettings> for PoolConfig {
    type Error = ConfigError;

    fn try_from(s: PoolSettings) -> Result<Self, ConfigError> {
        s.resolve()
    }
}

/// The [`PoolConfig`] fields whose settings key is spelled otherwise (a
/// duration's `_ms`, a size's `_mb`).
const FIELD_KEYS: &[(&str, &str)] = &[
    ("task_timeout", "task_timeout_ms"),
    ("heartbeat_interval", "heartbeat_interval_ms"),
    ("suspect_after", "suspect_after_ms"),
    ("zombie_after", "zombie_after_ms"),
    ("start_timeout", "start_timeout_ms"),
    ("shutdown_timeout", "shutdown_timeout_ms"),
    ("kill_grace", "kill_grace_ms"),
    ("restart_backoff_base", "restart_backoff_base_ms"),
    ("restart_backoff_cap", "restart_backoff_cap_ms"),
    ("cancel_grace", "cancel_grace_ms"),
    ("max_worker_age", "max_worker_age_ms"),
    ("max_rss_bytes", "max_rss_mb"),
    ("kill_rss_bytes", "kill_rss_mb"),
];

/// The settings key of a [`PoolConfig`] field named by [`PoolConfig::validate`]
/// (a word that names no field is itself).
fn key_of(field: &str) -> &str {
    FIELD_KEYS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, key)| key)
}

/// `message` of [`PoolConfig::validate`] with each field it names spelled as
/// its settings key (`must not be below max_rss_bytes` → `… max_rss_mb`), so
/// an error names only keys a user can set.
fn with_keys(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let bare = word.trim_end_matches([',', '.', ';', ')']);
            let key = key_of(bare);
            format!("{key}{}", &word[bare.len()..])
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn ms_or(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, ms)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: PoolSettings) -> Result<(usize, usize, usize), ConfigError> {
        s.resolve()
            .map(|c| (c.pool_size, c.min_workers, c.max_workers))
    }

    #[test]
    fn the_bounds_adapt_to_a_pool_size_given_alone() {
        let only = |n| PoolSettings {
            pool_size: Some(n),
            ..PoolSettings::default()
        };
        assert_eq!(size(PoolSettings::default()).unwrap(), (20, 5, 50));
        assert_eq!(size(only(4)).unwrap(), (4, 4, 50));
        assert_eq!(size(only(80)).unwrap(), (80, 5, 80));
        let max_only = PoolSettings {
            max_workers: Some(3),
            ..PoolSettings::default()
        };
        assert_eq!(size(max_only).unwrap(), (3, 3, 3));
        let min_only = PoolSettings {
            min_workers: Some(30),
            ..PoolSettings::default()
        };
        assert_eq!(size(min_only).unwrap(), (30, 30, 50));
    }

    #[test]
    fn a_pool_size_outside_given_bounds_is_refused_with_the_rule() {
        let e = size(PoolSettings {
            pool_size: Some(4),
            min_workers: Some(5),
            ..PoolSettings::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "pool_size");
        assert!(
            e.message.contains("min_workers..=max_workers (5..=50)"),
            "{e}"
        );
    }

    /// A zombie limit set alone, too short for the heartbeat, is blamed on
    /// its own key (the suspect limit is derived from it), not on the
    /// heartbeat's or the suspect limit's, which were never set.
    #[test]
    fn a_zombie_limit_too_short_for_the_heartbeat_is_its_own_fault() {
        let zombie = |zombie, heartbeat| {
            PoolSettings {
                zombie_after_ms: Some(zombie),
                heartbeat_interval_ms: heartbeat,
                ..PoolSettings::default()
            }
            .resolve()
        };
        let e = zombie(1000, None).unwrap_err();
        assert_eq!(e.key, "zombie_after_ms");
        assert!(
            e.message
                .contains("heartbeat_interval_ms (5000 ms, the default)"),
            "{e}"
        );
        let e = zombie(500, Some(1000)).unwrap_err();
        assert_eq!(e.key, "zombie_after_ms");
        assert!(e.message.contains("(1000 ms)"), "{e}");
        zombie(20_000, None).unwrap();
    }

    /// An error that compares two fields names both by their settings keys.
    #[test]
    fn an_error_about_two_fields_names_both_keys() {
        let e = PoolSettings {
            max_rss_mb: Some(200),
            kill_rss_mb: Some(100),
            ..PoolSettings::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(
            (e.key, e.message.as_str()),
            ("kill_rss_mb", "must not be below max_rss_mb")
        );
        let e = PoolSettings {
            restart_backoff_base_ms: Some(5_000),
            restart_backoff_cap_ms: Some(1_000),
            ..PoolSettings::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(
            (e.key, e.message.as_str()),
            (
                "restart_backoff_cap_ms",
                "must not be below restart_backoff_base_ms"
            )
        );
    }

    #[test]
    fn silence_limits_follow_the_heartbeat_and_errors_use_the_keys() {
        let c = PoolSettings {
            heartbeat_interval_ms: Some(100),
            ..PoolSettings::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.suspect_after, Duration::from_millis(300));
        assert_eq!(c.zombie_after, Duration::from_millis(600));
        let c = PoolSettings {
            zombie_after_ms: Some(10_000),
            ..PoolSettings::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.suspect_after, Duration::from_millis(10_000));
        let e = PoolSettings {
            task_timeout_ms: Some(0),
            ..PoolSettings::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.key, "task_timeout_ms");
        let e = PoolSettings {
            kill_grace_ms: Some(MAX_TIMEOUT.as_millis() as u64 + 1),
            ..PoolSettings::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.key, "kill_grace_ms");
        assert!(e.message.contains("365 days"), "{e}");
    }

    #[test]
    fn a_config_round_trips_through_its_keys() {
        let config = PoolConfig {
            pool_size: 3,
            min_workers: 2,
            max_workers: 9,
            max_rss_bytes: Some(64 * MIB),
            kill_rss_bytes: Some(128 * MIB),
            max_tasks_per_worker: Some(1000),
            max_worker_age: Some(Duration::from_secs(60)),
            autoscale: Some(Autoscale::default()),
            retry: RetryPolicy::new(2, Duration::from_millis(10), Duration::from_secs(1), true)
                .unwrap(),
            ..PoolConfig::default()
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["max_rss_mb"], 64);
        assert_eq!(json["task_timeout_ms"], 300_000);
        let back: PoolConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(PoolSettings::from(&back), PoolSettings::from(&config));
        let unknown = serde_json::from_str::<PoolConfig>(r#"{"pool_sise": 3}"#).unwrap_err();
        assert!(unknown.to_string().contains("pool_sise"), "{unknown}");
        let keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        for key in &keys {
            assert!(PoolSettings::KEYS.contains(&key.as_str()), "{key}");
        }
        assert_eq!(keys.len(), PoolSettings::KEYS.len());
    }
}
