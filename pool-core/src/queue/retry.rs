//! [`RetryPolicy`]: how many times a failed task runs again, and when.

use std::time::Duration;

/// Retries with exponential backoff: attempt `n` (n ≥ 1 failed attempts so far)
/// waits `min(base · 2^(n−1), cap)`, optionally with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    base: Duration,
    cap: Duration,
    jitter: bool,
}

/// A retry policy whose numbers do not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy: {0}")]
pub struct InvalidRetryPolicy(&'static str);

impl RetryPolicy {
    /// Up to `max_retries` retries after the first attempt (0 = never retry), waiting
    /// `min(base · 2^(n−1), cap)` before retry `n`. With `jitter`, each wait is drawn
    /// uniformly from its upper half, so retries of tasks that failed together spread.
    ///
    /// # Errors
    /// When `cap < base`.
    pub fn new(
        max_retries: u32,
        base: Duration,
        cap: Duration,
        jitter: bool,
    ) -> Result<Self, InvalidRetryPolicy> {
        if cap < base {
            return Err(InvalidRetryPolicy(
                "the backoff cap is below the backoff base",
            ));
        }
        Ok(Self {
            max_retries,
            base,
            cap,
            jitter,
        })
    }

    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before the first retry.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest wait between attempts.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Whether waits are drawn from the upper half of their backoff.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The same policy with another retry count.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The wait before the next attempt, after `failed_attempts` (≥ 1) failures.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(31);
        let full = self
            .base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap);
        if self.jitter && !full.is_zero() {
            let half = full / 2;
            half + full.mul_f64(fastrand::f64()) / 2
        } else {
            full
        }
    }
}

impl Default for RetryPolicy {
    /// 3 retries, 1 s base, 30 s cap, no jitter.
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            jitter: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_doubles_from_one_second_up_to_thirty() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p =
            RetryPolicy::new(3, Duration::from_millis(100), Duration::from_secs(1), true).unwrap();
        for _ in 0..1000 {
            let d = p.backoff(2);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
        }
    }

    #[test]
    fn cap_below_base_is_rejected() {
        assert!(
            RetryPolicy::new(1, Duration::from_secs(2), Duration::from_secs(1), false).is_err()
        );
    }
}
