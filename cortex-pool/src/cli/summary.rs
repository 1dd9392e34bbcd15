//! The closing summary `cortex-pool run` prints on stderr.

use std::time::Duration;

use pool_core::PoolMetrics;

use super::output::Status;

/// Counts and latencies gathered while lines are written.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) dead_letter: u64,
    pub(crate) invalid: u64,
    durations_ms: Vec<f64>,
}

impl Tally {
    pub(crate) fn add(&mut self, status: Status, duration_ms: f64) {
        match status {
            Status::Ok => self.ok += 1,
            Status::Failed => self.failed += 1,
            Status::DeadLetter => self.dead_letter += 1,
            Status::Invalid => return self.invalid += 1,
        }
        self.durations_ms.push(duration_ms);
    }

    pub(crate) fn total(&self) -> u64 {
        self.ok + self.failed + self.dead_letter + self.invalid
    }

    pub(crate) fn all_ok(&self) -> bool {
        self.total() == self.ok
    }

    /// The summary text.
    pub(crate) fn render(&mut self, elapsed: Duration, metrics: Option<&PoolMetrics>) -> String {
        self.durations_ms.sort_by(f64::total_cmp);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let tasks = self.durations_ms.len() as f64;
        let mut text = format!(
            "cortex-pool: {} ok, {} failed, {} dead-lettered, {} invalid; {} tasks in {:.3} s ({:.0} tasks/s); latency p50 {:.3} ms, p99 {:.3} ms",
            self.ok,
            self.failed,
            self.dead_letter,
            self.invalid,
            self.total(),
            secs,
            tasks / secs,
            percentile(&self.durations_ms, 0.50),
            percentile(&self.durations_ms, 0.99),
        );
        if let Some(m) = metrics {
            text.push_str(&format!(
                "; worker reuse {:.1}% ({} dispatches, {} workers spawned, {} crashed)",
                m.performance.worker_reuse_ratio * 100.0,
                m.performance.dispatches,
                m.performance.workers_spawned,
                m.performance.workers_crashed,
            ));
        }
        text
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn invalid_lines_count_but_have_no_latency() {
        let mut t = Tally::default();
        t.add(Status::Ok, 2.0);
        t.add(Status::Invalid, 0.0);
        assert_eq!(t.total(), 2);
        assert!(!t.all_ok());
        assert!(t.render(Duration::from_secs(1), None).contains("1 invalid"));
    }
}
