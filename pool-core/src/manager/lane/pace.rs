//! A worker's pace: how long its tasks ran lately, which bounds its prefetch
//! window in time as well as in tasks.
//!
//! A window exists so the worker has its next task at hand while the lane is
//! away (reading, settling, waiting for a core): it must hold that long of
//! the worker's work, and more only pins tasks to one worker that another
//! could start first, and delays a later task of higher priority. Tasks of a
//! few microseconds need hundreds in the window to cover a scheduler's delay;
//! tasks of a second need one. So the window holds the tasks the worker runs
//! in [`PREFETCH_SPAN`] at its recent pace, at least one and at most
//! `prefetch`.
//!
//! The pace is the mean run time of the worker's recent completions, each
//! timed from its run start to the read of its result (what the lane can see).
//! By Little's law, a worker that runs `concurrency` tasks at once finishes
//! one every mean run time ÷ `concurrency`. A batch of replies read at once
//! times its first task with the whole wait and the rest with none: the mean
//! over the batch is still the worker's pace, which is why it is a mean and
//! not a moving value per completion.

use std::time::Duration;

/// The work one worker's prefetch window holds at most, at the worker's
/// recent pace: long enough to cover the lane being away for a scheduler's
/// time slice on a busy machine, short enough that a task of higher priority
/// waits no longer than that behind a window.
pub(crate) const PREFETCH_SPAN: Duration = Duration::from_millis(5);

/// Tasks a window holds at most beyond the run slots before its worker
/// answered any: nothing is known of the tasks' length yet, so a first fill
/// of long tasks commits no more than this to one worker.
pub(crate) const FIRST_PREFETCH: usize = 64;

/// Completions the pace is the mean of, roughly: past twice this many, the
/// older half's weight is halved.
const RECENT: u32 = 64;

/// The recent run times of one worker's completions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Their sum, in nanoseconds (halved with `runs`).
    run_ns: u64,
    /// How many are summed.
    runs: u32,
}

impl Pace {
    /// A completion that ran `run_ns` nanoseconds.
    #[inline]
    pub(crate) fn record(&mut self, run_ns: u64) {
        self.run_ns = self.run_ns.saturating_add(run_ns);
        self.runs += 1;
        if self.runs >= 2 * RECENT {
            self.run_ns /= 2;
            self.runs /= 2;
        }
    }

    /// The tasks a worker running `concurrency` at once may hold beyond
    /// them, with `prefetch` the most: those it finishes within
    /// [`PREFETCH_SPAN`] at this pace, at least one; before it finished any,
    /// at most [`FIRST_PREFETCH`]. `prefetch` 0 stays 0.
    pub(crate) fn prefetch(&self, concurrency: usize, prefetch: usize) -> usize {
        if prefetch == 0 {
            return 0;
        }
        if self.runs == 0 {
            return prefetch.min(FIRST_PREFETCH);
        }
        // The span ÷ (the mean run ÷ concurrency), in whole tasks.
        let span = PREFETCH_SPAN.as_nanos()
            * u128::from(u64::try_from(concurrency).unwrap_or(u64::MAX))
            * u128::from(self.runs);
        let fits = span / u128::from(self.run_ns.max(1));
        usize::try_from(fits)
            .unwrap_or(usize::MAX)
            .clamp(1, prefetch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paced(run: Duration, times: u32) -> Pace {
        let mut pace = Pace::default();
        for _ in 0..times {
            pace.record(u64::try_from(run.as_nanos()).unwrap());
        }
        pace
    }

    #[test]
    fn before_any_answer_a_window_holds_at_most_the_first_prefetch() {
        let pace = Pace::default();
        assert_eq!(pace.prefetch(1, 1024), FIRST_PREFETCH);
        assert_eq!(pace.prefetch(1, 4), 4);
        assert_eq!(pace.prefetch(8, 0), 0);
    }

    #[test]
    fn a_window_holds_the_span_of_work_at_the_worker_pace() {
        // 100 µs a task, one at a time: 50 tasks make 5 ms.
        assert_eq!(paced(Duration::from_micros(100), 10).prefetch(1, 1024), 50);
        // Four at once finish four times as many.
        assert_eq!(paced(Duration::from_micros(100), 10).prefetch(4, 1024), 200);
        // Fast tasks fill it to `prefetch`.
        assert_eq!(paced(Duration::from_micros(2), 10).prefetch(1, 1024), 1024);
        assert_eq!(paced(Duration::ZERO, 10).prefetch(1, 1024), 1024);
    }

    #[test]
    fn long_tasks_wait_one_at_a_time() {
        assert_eq!(paced(Duration::from_secs(1), 3).prefetch(1, 1024), 1);
        assert_eq!(paced(Duration::from_millis(20), 3).prefetch(2, 1024), 1);
        assert_eq!(paced(Duration::from_secs(1), 3).prefetch(1, 0), 0);
    }

    #[test]
    fn a_batch_read_at_once_counts_as_its_mean() {
        // The first of ten replies read together waited 1 ms, the rest none:
        // 100 µs a task.
        let mut pace = Pace::default();
        pace.record(1_000_000);
        for _ in 0..9 {
            pace.record(0);
        }
        assert_eq!(pace.prefetch(1, 1024), 50);
    }

    #[test]
    fn the_pace_follows_the_recent_tasks() {
        let mut pace = paced(Duration::from_micros(2), 1000);
        for _ in 0..2 * RECENT {
            pace.record(10_000_000);
        }
        assert_eq!(pace.prefetch(1, 1024), 1, "10 ms tasks now");
        // The slow runs' weight halves every `RECENT` completions.
        for _ in 0..16 * RECENT {
            pace.record(2_000);
        }
        assert_eq!(pace.prefetch(1, 1024), 1024, "fast again");
    }
}
