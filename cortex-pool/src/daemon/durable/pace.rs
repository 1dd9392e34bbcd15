//! How many tasks the feeder keeps claimed: enough to cover what the pool
//! finishes while the next claim waits for the source's commit, no more.
//!
//! A fixed window is wrong one way or the other. Sized for slow tasks, it
//! starves fast workers behind each commit (`submit --wait` of 100 000 echo
//! tasks to 2 workers: 120–127 k/s with 512 claimed, 149–195 k/s with
//! 2 048). Sized for fast ones, slow tasks sit claimed (`running` in the
//! store) long before a worker takes them, and a task of higher priority
//! submitted after them waits until half of them have finished (4 slots of
//! 10 s tasks behind a window of 1 024: 21 minutes). So the window covers
//! [`AHEAD`] of the pool's recent pace, and at least [`KEPT_PER_SLOT`] per
//! worker slot; only before its first reading, when nothing says how fast the
//! pool is, [`FIRST_PER_SLOT`] per slot.

use std::time::{Duration, Instant};

/// Claimed tasks per worker slot before the pace's first reading: a fresh
/// daemon's first claim keeps fast workers busy until the pace is known.
const FIRST_PER_SLOT: usize = 256;
/// Claimed tasks per worker slot at the least once the pace is known: the
/// feeder claims again at half the window, so every slot still holds a task
/// (and the next one waits in the pool) while the claim's commit runs.
const KEPT_PER_SLOT: usize = 4;
/// How far ahead of the pool's pace the window reaches.
const AHEAD: Duration = Duration::from_millis(50);
/// The window's bounds.
const FEWEST: usize = 8;
const MOST: usize = 4096;
/// How long the pace counts finished tasks before it takes a new reading.
const READING: Duration = Duration::from_millis(20);

/// The pool's recent pace: tasks finished per second, smoothed over readings.
#[derive(Debug)]
pub(crate) struct Pace {
    since: Instant,
    finished: usize,
    /// `None` until the first reading.
    per_second: Option<f64>,
}

impl Pace {
    /// No reading yet, counting from `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            since: now,
            finished: 0,
            per_second: None,
        }
    }

    /// `n` more tasks finished by `now`; a new reading once [`READING`] has
    /// passed since the last, each weighing half.
    pub(crate) fn finished(&mut self, n: usize, now: Instant) {
        self.finished += n;
        let span = now.saturating_duration_since(self.since);
        if span < READING {
            return;
        }
        let reading = self.finished as f64 / span.as_secs_f64();
        self.per_second = Some(match self.per_second {
            None => reading,
            Some(last) => (last + reading) / 2.0,
        });
        self.since = now;
        self.finished = 0;
    }

    /// Tasks claimed at once: [`AHEAD`] of the pace, at least
    /// [`KEPT_PER_SLOT`] per slot ([`FIRST_PER_SLOT`] before the first
    /// reading), within the bounds and `max_queue_len`.
    pub(crate) fn window(&self, slots: usize, max_queue_len: usize) -> usize {
        let (ahead, per_slot) = match self.per_second {
            None => (0, FIRST_PER_SLOT),
            Some(per_second) => ((per_second * AHEAD.as_secs_f64()) as usize, KEPT_PER_SLOT),
        };
        ahead
            .max(slots.saturating_mul(per_slot))
            .clamp(FEWEST, MOST)
            .min(max_queue_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_reading_the_window_is_the_first_floor_per_slot() {
        let pace = Pace::new(Instant::now());
        assert_eq!(pace.window(2, 100_000), 2 * FIRST_PER_SLOT);
        assert_eq!(pace.window(0, 100_000), FEWEST);
        assert_eq!(pace.window(64, 100_000), MOST);
        assert_eq!(pace.window(2, 100), 100, "never past max_queue_len");
    }

    #[test]
    fn a_fast_pool_gets_a_window_that_covers_its_pace() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        // 2 000 tasks in 20 ms: 100 000 a second, 5 000 in 50 ms.
        pace.finished(2_000, start + READING);
        assert_eq!(pace.window(2, 100_000), MOST);
        // 600 in 20 ms: 30 000 a second; smoothed with the last, 65 000.
        pace.finished(600, start + 2 * READING);
        assert_eq!(pace.window(2, 100_000), 3_250);
    }

    #[test]
    fn a_pool_gone_quiet_keeps_a_few_tasks_per_slot() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.finished(4_000, start + READING);
        assert_eq!(pace.window(2, 100_000), MOST);
        // The feeder's rounds with no outcome (its 100 ms tick) halve the pace.
        for round in 1..=12 {
            pace.finished(0, start + READING + round * Duration::from_millis(100));
        }
        // 200 000 a second, halved twelve times: 48, 2 in 50 ms.
        assert_eq!(pace.window(2, 100_000), FEWEST);
        assert_eq!(pace.window(16, 100_000), 16 * KEPT_PER_SLOT);
    }

    /// Slow tasks keep few claimed: a task of higher priority submitted
    /// behind them is claimed once a handful have finished, not hundreds.
    #[test]
    fn a_slow_pool_keeps_few_claimed_and_a_short_count_waits_for_its_reading() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.finished(5_000, start + READING / 2);
        assert_eq!(
            pace.window(4, 100_000),
            4 * FIRST_PER_SLOT,
            "no reading yet"
        );
        pace.finished(0, start + Duration::from_secs(10));
        // 5 000 in 10 s: 500 a second, 25 in 50 ms.
        assert_eq!(pace.window(4, 100_000), 25);
        // 4 slots of 10 s tasks: 0.4 a second.
        pace.finished(4, start + Duration::from_secs(20));
        pace.finished(4, start + Duration::from_secs(30));
        for round in 1..=20 {
            pace.finished(
                0,
                start + Duration::from_secs(30) + round * Duration::from_millis(100),
            );
        }
        assert_eq!(pace.window(4, 100_000), 4 * KEPT_PER_SLOT);
    }
}
