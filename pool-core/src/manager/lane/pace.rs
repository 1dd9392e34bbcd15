//! A worker's pace: how long it takes a task lately, which bounds its
//! prefetch window in time as well as in tasks.
//!
//! A window exists so the worker has its next task at hand while the lane is
//! away (reading, settling, waiting for a core): it must hold that long of
//! the worker's work, and more only pins tasks to one worker that another
//! could start first, and delays a later task of higher priority. Tasks of a
//! few microseconds need hundreds in the window to cover a scheduler's delay;
//! tasks of a second need one. So the window holds the tasks the worker gets
//! through in [`PREFETCH_SPAN`] at its recent pace, at least one and at most
//! `prefetch`.
//!
//! The pace is measured between refills of the worker under its book's
//! lock (by its lane after a read of replies, or by the actor's dispatch
//! pass where the actor feeds the worker): the time since the last one over
//! the tasks answered since, whatever the worker's concurrency. That is the
//! worker's pace only while every run slot had work all along, which shows
//! when the worker still holds `worker_concurrency` tasks written by the end
//! of the last refill (their frames' place in the stream tells, not a
//! clock). Otherwise the worker may have run dry and waited: the interval
//! says only that its tasks took at most that long, and the window was too
//! small to cover the wait, so the pace is taken as twice as fast as the
//! faster of that bound and the pace before (the window at least doubles).
//! An interval that may have run dry never makes the window smaller; an
//! interval of work does, within a few refills.

use std::time::Duration;

use super::super::clock::{nanos, Moment};

/// The work one worker's prefetch window holds at most, at the worker's
/// recent pace: long enough to cover the lane being away for a scheduler's
/// time slice on a busy machine, short enough that a task of higher priority
/// waits no longer than that behind a window.
pub(crate) const PREFETCH_SPAN: Duration = Duration::from_millis(5);

/// Tasks a window holds at most beyond the run slots before its worker's
/// pace is known ([`PoolConfig::FIRST_PREFETCH`](crate::PoolConfig::FIRST_PREFETCH)).
pub(crate) const FIRST_PREFETCH: usize = crate::PoolConfig::FIRST_PREFETCH as usize;

/// One worker's pace, and the interval being measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Nanoseconds a task takes the worker lately; `None` until measured.
    task_ns: Option<u64>,
    /// Where the interval being measured began: the worker's last refill
    /// under its book's lock, and the bytes put in its batch by then.
    since: Option<(Moment, u64)>,
    /// Tasks answered since then.
    answered: u32,
}

impl Pace {
    /// The worker answered a task.
    #[inline]
    pub(crate) fn answered(&mut self) {
        self.answered = self.answered.saturating_add(1);
    }

    /// Whether the worker answered tasks since the interval began.
    pub(crate) fn has_answers(&self) -> bool {
        self.answered > 0
    }

    /// The bytes put in the worker's batch when the interval being measured
    /// began: a task whose frame starts before them was written before it.
    pub(crate) fn began_at_byte(&self) -> Option<u64> {
        self.since.map(|(_, batched)| batched)
    }

    /// The refill that started the interval being measured wrote its tasks,
    /// up to `batched` bytes of the worker's batch: they count as held from
    /// the interval's start.
    pub(crate) fn wrote(&mut self, batched: u64) {
        if let Some((_, began)) = &mut self.since {
            *began = batched;
        }
    }

    /// The worker is refilled at `now`, with `batched` bytes put in its batch
    /// so far: closes the interval since its last refill and starts the
    /// next. `worked_all_along`: every run slot of the worker had work
    /// through the interval.
    pub(crate) fn refill_at(&mut self, now: Moment, batched: u64, worked_all_along: bool) {
        let since = self.since.replace((now, batched));
        let answered = std::mem::take(&mut self.answered);
        let Some((since, _)) = since else {
            return;
        };
        if answered == 0 {
            return;
        }
        let sample = now.nanos_since(since) / u64::from(answered);
        // Before the pace is known the window holds `FIRST_PREFETCH`: the
        // pace that fills it so, which a bound can only make faster.
        let first = || nanos(PREFETCH_SPAN) / FIRST_PREFETCH as u64;
        self.task_ns = Some(match (self.task_ns, worked_all_along) {
            (None, true) => sample,
            (Some(pace), true) => pace - pace / 4 + sample / 4,
            (known, false) => known.unwrap_or_else(first).min(sample) / 2,
        });
    }

    /// The tasks the worker may hold beyond its run slots, with `prefetch`
    /// the most: those it gets through within [`PREFETCH_SPAN`] at this pace,
    /// at least one; before its pace is known, at most [`FIRST_PREFETCH`].
    /// `prefetch` 0 stays 0.
    pub(crate) fn prefetch(&self, prefetch: usize) -> usize {
        if prefetch == 0 {
            return 0;
        }
        let Some(task_ns) = self.task_ns else {
            return prefetch.min(FIRST_PREFETCH);
        };
        let fits = nanos(PREFETCH_SPAN) / task_ns.max(1);
        usize::try_from(fits)
            .unwrap_or(usize::MAX)
            .clamp(1, prefetch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at(ns: u64) -> Moment {
        Moment::default() + Duration::from_nanos(ns)
    }

    /// A pace whose worker answered `tasks` in each of `intervals` intervals
    /// of `each_ns`, with work all along.
    fn working(tasks: u32, each_ns: u64, intervals: u64) -> Pace {
        let mut pace = Pace::default();
        pace.refill_at(at(0), 0, true);
        for i in 1..=intervals {
            for _ in 0..tasks {
                pace.answered();
            }
            pace.refill_at(at(i * each_ns), i, true);
        }
        pace
    }

    #[test]
    fn before_its_pace_is_known_a_window_holds_at_most_the_first_prefetch() {
        let pace = Pace::default();
        assert_eq!(pace.prefetch(1024), FIRST_PREFETCH);
        assert_eq!(pace.prefetch(4), 4);
        assert_eq!(pace.prefetch(0), 0);
        // One refill starts the first interval; nothing is measured yet.
        let mut pace = Pace::default();
        pace.answered();
        pace.refill_at(at(MS), 7, true);
        assert_eq!(pace.prefetch(1024), FIRST_PREFETCH);
        assert_eq!(pace.began_at_byte(), Some(7));
    }

    #[test]
    fn a_window_holds_the_span_of_work_at_the_worker_pace() {
        // 10 tasks a millisecond: 100 µs a task, 50 in 5 ms, whatever the
        // worker's concurrency.
        assert_eq!(working(10, MS, 3).prefetch(1024), 50);
        // Fast tasks fill it to `prefetch`.
        assert_eq!(working(500, MS, 3).prefetch(1024), 1024);
        assert_eq!(working(10, 0, 3).prefetch(1024), 1024);
    }

    #[test]
    fn long_tasks_wait_one_at_a_time() {
        assert_eq!(working(1, 1_000 * MS, 3).prefetch(1024), 1);
        assert_eq!(working(2, 40 * MS, 3).prefetch(1024), 1);
        assert_eq!(working(1, 1_000 * MS, 3).prefetch(0), 0);
    }

    #[test]
    fn a_worker_that_may_have_run_dry_gets_a_larger_window_never_a_smaller_one() {
        // 2 µs tasks, but the lane comes back only every 10 ms: each time
        // the worker answered its whole window and waited.
        let mut pace = working(2_500, 5 * MS, 1);
        assert_eq!(pace.prefetch(4096), 2_500);
        let mut window = pace.prefetch(4096);
        for i in 1..=3u64 {
            for _ in 0..window {
                pace.answered();
            }
            pace.refill_at(at(5 * MS + i * 10 * MS), 10 + i, false);
            let grown = pace.prefetch(4096);
            assert!(grown == 4096 || grown > window, "{grown} after {window}");
            window = grown;
        }
        assert_eq!(window, 4096);
        // One answer over a second of waiting shrinks nothing.
        pace.answered();
        pace.refill_at(at(2_000 * MS), 20, false);
        assert_eq!(pace.prefetch(4096), 4096);
    }

    #[test]
    fn a_first_interval_that_may_have_run_dry_doubles_the_first_window() {
        // 100 tasks answered within 10 ms, the worker no longer busy: at
        // most 100 µs a task, and the first window (64) was too small.
        let mut pace = Pace::default();
        pace.refill_at(at(0), 0, true);
        for _ in 0..100 {
            pace.answered();
        }
        pace.refill_at(at(10 * MS), 1, false);
        assert_eq!(pace.prefetch(1024), 2 * FIRST_PREFETCH);
        // A long wait with few answers (a quiet spell) is no smaller.
        let mut pace = Pace::default();
        pace.refill_at(at(0), 0, true);
        pace.answered();
        pace.refill_at(at(60_000 * MS), 1, false);
        assert_eq!(pace.prefetch(1024), 2 * FIRST_PREFETCH);
    }

    #[test]
    fn the_pace_follows_the_worker_within_a_few_intervals() {
        let mut pace = working(2_500, 5 * MS, 4);
        assert_eq!(pace.prefetch(1024), 1024);
        // Now 10 ms a task, with work all along: a quarter of the way each
        // interval.
        let mut now = 20 * MS;
        let mut windows = Vec::new();
        for i in 0..3 {
            pace.answered();
            pace.refill_at(at(now + 10 * MS), 10 + i, true);
            now += 10 * MS;
            windows.push(pace.prefetch(1024));
        }
        assert_eq!(windows, [1, 1, 1], "10 ms tasks now");
        // And back: 1 µs tasks, a quarter of the way each interval.
        let mut windows = Vec::new();
        for i in 0..30 {
            for _ in 0..1_000 {
                pace.answered();
            }
            pace.refill_at(at(now + MS), 20 + i, true);
            now += MS;
            windows.push(pace.prefetch(1024));
        }
        assert_eq!(windows[0], 1);
        assert_eq!(windows[29], 1024);
    }
}
