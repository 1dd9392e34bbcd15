//! The pool's clock: the instants a task's record keeps (queued, sent, run
//! start) as nanoseconds since the pool began, in one `u64` each.
//!
//! A task's record is moved and its times subtracted several times on the
//! task path; an [`Instant`] takes 16 bytes and a checked subtraction of two
//! costs about 50 instructions, a [`Moment`] 8 bytes and one subtraction. The
//! clock is read through tokio, so it follows a paused test clock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// When the pool began: the zero of its [`Moment`]s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolClock {
    began: Instant,
}

/// An instant on a pool's clock: nanoseconds since the pool began (a `u64`
/// holds about 584 years of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Moment(u64);

/// One reading of the clock: the instant (for timers) and the same instant
/// as a [`Moment`] (for a task's record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) instant: Instant,
    pub(crate) moment: Moment,
}

impl PoolClock {
    /// A clock whose zero is now.
    pub(crate) fn new() -> Self {
        Self {
            began: Instant::now(),
        }
    }

    /// Reads the clock.
    #[inline]
    pub(crate) fn now(&self) -> Now {
        self.at(Instant::now())
    }

    /// `instant` on this clock (the pool's start for an instant before it).
    pub(crate) fn at(&self, instant: Instant) -> Now {
        Now {
            instant,
            moment: Moment(nanos(instant.saturating_duration_since(self.began))),
        }
    }

    /// The instant of `moment`, a moment this clock gave (so one the pool's
    /// start plus it can hold; the start itself if not).
    pub(crate) fn instant(&self, moment: Moment) -> Instant {
        self.began
            .checked_add(Duration::from_nanos(moment.0))
            .unwrap_or(self.began)
    }
}

/// A [`Moment`] that one thread writes and others read.
#[derive(Debug)]
pub(crate) struct AtomicMoment(AtomicU64);

impl AtomicMoment {
    /// Holding `moment`.
    pub(crate) fn new(moment: Moment) -> Self {
        Self(AtomicU64::new(moment.0))
    }

    /// Now holding `moment`.
    pub(crate) fn store(&self, moment: Moment) {
        self.0.store(moment.0, Relaxed);
    }

    /// The moment held.
    pub(crate) fn load(&self) -> Moment {
        Moment(self.0.load(Relaxed))
    }
}

impl Default for PoolClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl Now {
    /// The reading `by` after this one.
    pub(crate) fn later_by(self, by: Duration) -> Self {
        Self {
            instant: self.instant + by,
            moment: self.moment + by,
        }
    }
}

#[cfg(test)]
impl std::ops::Add<Duration> for Moment {
    type Output = Self;

    fn add(self, by: Duration) -> Self {
        Self(self.0 + nanos(by))
    }
}

impl Moment {
    /// Nanoseconds from `earlier` to this moment (0 when `earlier` is later).
    pub(crate) fn nanos_since(self, earlier: Moment) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The time from `earlier` to this moment (zero when `earlier` is later).
    pub(crate) fn since(self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }
}

/// `duration` in nanoseconds, saturated at `u64::MAX`.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moments_follow_the_paused_clock_and_subtract_to_its_durations() {
        let clock = PoolClock::new();
        let first = clock.now();
        assert_eq!(first.moment, Moment(0));
        tokio::time::advance(Duration::from_millis(7)).await;
        let later = clock.now();
        assert_eq!(later.moment.since(first.moment), Duration::from_millis(7));
        assert_eq!(later.moment.nanos_since(first.moment), 7_000_000);
        assert_eq!(
            first.moment.since(later.moment),
            Duration::ZERO,
            "saturates"
        );
        assert!(first.moment < later.moment);
        assert_eq!(clock.instant(later.moment), later.instant);
        let seen = AtomicMoment::new(first.moment);
        seen.store(later.moment);
        assert_eq!(seen.load(), later.moment);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_before_the_pool_began_is_its_start() {
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(3)).await;
        let clock = PoolClock::new();
        assert_eq!(clock.at(before).moment, Moment(0));
    }
}
