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
//! the pool's recent pace for [`AHEAD`] or twice the last claim's time,
//! whichever is longer, and at least [`KEPT_PER_SLOT`] per worker slot; only
//! before its first reading, when nothing says how fast the pool is,
//! [`FIRST_PER_SLOT`] per slot.
//!
//! The window caps what can finish between two claims, so the pace it reads
//! is at most the window per claim: covering twice the claim's time, the
//! window grows by half from one reading to the next (the readings are
//! smoothed) until the pool, not the claims, sets the pace (a claim of 60 ms, a slow disk's sync or a distant
//! queue, would otherwise hold a window covering 50 ms where it was).
//! Rounds with nothing running take no reading: an idle pool is not a slow
//! one, and a burst after a quiet spell starts at the last known pace.

use std::time::{Duration, Instant};

/// Claimed tasks per worker slot before the pace's first reading: a fresh
/// daemon's first claim keeps fast workers busy until the pace is known.
const FIRST_PER_SLOT: usize = 256;
/// Claimed tasks per worker slot at the least once the pace is known: the
/// feeder claims again at half the window, so every slot still holds a task
/// (and the next one waits in the pool) while the claim's commit runs.
const KEPT_PER_SLOT: usize = 4;
/// How far ahead of the pool's pace the window reaches at the least.
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
    /// How long the last claim took to come back.
    claim_took: Duration,
}

impl Pace {
    /// No reading yet, counting from `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            since: now,
            finished: 0,
            per_second: None,
            claim_took: Duration::ZERO,
        }
    }

    /// The last claim took `took`.
    pub(crate) fn claimed(&mut self, took: Duration) {
        self.claim_took = took;
    }

    /// `n` more tasks finished by `now`, with tasks still `running` or not;
    /// a new reading once [`READING`] has passed since the last, each weighing
    /// half. A round with nothing finished and nothing running starts the
    /// count again, with no reading.
    pub(crate) fn finished(&mut self, n: usize, running: bool, now: Instant) {
        if n == 0 && !running {
            self.since = now;
            self.finished = 0;
            return;
        }
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

    /// Tasks claimed at once: the pace for [`AHEAD`] or twice the last
    /// claim's time, at least [`KEPT_PER_SLOT`] per slot ([`FIRST_PER_SLOT`]
    /// before the first reading), within the bounds and `max_queue_len`.
    pub(crate) fn window(&self, slots: usize, max_queue_len: usize) -> usize {
        let (ahead, per_slot) = match self.per_second {
            None => (0, FIRST_PER_SLOT),
            Some(per_second) => {
                let span = AHEAD.max(2 * self.claim_took);
                ((per_second * span.as_secs_f64()) as usize, KEPT_PER_SLOT)
            }
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
        pace.finished(2_000, true, start + READING);
        assert_eq!(pace.window(2, 100_000), MOST);
        // 600 in 20 ms: 30 000 a second; smoothed with the last, 65 000.
        pace.finished(600, true, start + 2 * READING);
        assert_eq!(pace.window(2, 100_000), 3_250);
    }

    #[test]
    fn a_pool_that_finishes_nothing_keeps_a_few_tasks_per_slot() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.finished(4_000, true, start + READING);
        assert_eq!(pace.window(2, 100_000), MOST);
        // The feeder's rounds with no outcome (its 100 ms tick) while tasks
        // run halve the pace.
        for round in 1..=12 {
            pace.finished(
                0,
                true,
                start + READING + round * Duration::from_millis(100),
            );
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
        pace.finished(5_000, true, start + READING / 2);
        assert_eq!(
            pace.window(4, 100_000),
            4 * FIRST_PER_SLOT,
            "no reading yet"
        );
        pace.finished(0, true, start + Duration::from_secs(10));
        // 5 000 in 10 s: 500 a second, 25 in 50 ms.
        assert_eq!(pace.window(4, 100_000), 25);
        // 4 slots of 10 s tasks: 0.4 a second.
        pace.finished(4, true, start + Duration::from_secs(20));
        pace.finished(4, true, start + Duration::from_secs(30));
        for round in 1..=20 {
            pace.finished(
                0,
                true,
                start + Duration::from_secs(30) + round * Duration::from_millis(100),
            );
        }
        assert_eq!(pace.window(4, 100_000), 4 * KEPT_PER_SLOT);
    }

    /// An idle pool is not a slow one: rounds with nothing running take no
    /// reading, and the first claim of a fresh daemon keeps its floor.
    #[test]
    fn rounds_with_nothing_running_take_no_reading() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        for round in 1..=10 {
            pace.finished(0, false, start + round * Duration::from_millis(100));
        }
        assert_eq!(pace.window(2, 100_000), 2 * FIRST_PER_SLOT);
        let busy = start + Duration::from_secs(1);
        pace.finished(1_000, true, busy + READING);
        assert_eq!(pace.window(2, 100_000), 2_500);
        for round in 1..=600 {
            pace.finished(
                0,
                false,
                busy + READING + round * Duration::from_millis(100),
            );
        }
        assert_eq!(
            pace.window(2, 100_000),
            2_500,
            "a minute idle keeps the pace"
        );
    }

    /// Claims slower than [`AHEAD`] cap what can finish between them; the
    /// window covers twice a claim's time, so it grows by half each reading
    /// until the pool sets the pace.
    #[test]
    fn slow_claims_let_the_window_grow_until_the_pool_sets_the_pace() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.claimed(Duration::from_millis(60));
        let mut at = start;
        let mut window = 8;
        let mut windows = Vec::new();
        // A pool that could finish 100 000 a second finishes a window per
        // claim: one every 60 ms.
        for _ in 0..6 {
            at += Duration::from_millis(60);
            pace.finished(window, true, at);
            window = pace.window(2, 100_000);
            windows.push(window);
        }
        assert_eq!(windows, [16, 24, 36, 54, 81, 121]);
    }
}
