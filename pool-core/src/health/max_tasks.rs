//! [`MaxTasksProbe`]: recycle a worker after a number of tasks, with jitter.

use super::{HealthProbe, ProbeKind, Verdict, Vitals};

/// Recycles a worker once it has finished about `max_tasks` tasks.
///
/// Each worker's limit is lowered by up to `jitter` tasks, derived from its id, so
/// workers started together do not all retire at the same moment.
#[derive(Debug, Clone, Copy)]
pub struct MaxTasksProbe {
    max_tasks: u64,
    jitter: u64,
}

impl MaxTasksProbe {
    /// Recycle after `max_tasks` tasks minus a per-worker jitter in `0..=jitter`.
    pub fn new(max_tasks: u64, jitter: u64) -> Self {
        Self {
            max_tasks: max_tasks.max(1),
            jitter: jitter.min(max_tasks.saturating_sub(1)),
        }
    }

    /// The limit that applies to worker `worker_id`.
    pub fn limit_for(&self, worker_id: u64) -> u64 {
        // SplitMix64 finaliser: a well-spread value from a sequential id.
        let mut z = worker_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        self.max_tasks - z % (self.jitter + 1)
    }
}

impl HealthProbe for MaxTasksProbe {
    fn name(&self) -> &'static str {
        "max-tasks"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::MaxTasks
    }

    /// Its worker's task count changes with each completion.
    fn wants_completions(&self) -> bool {
        true
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        let limit = self.limit_for(vitals.worker_id);
        if vitals.tasks_done >= limit {
            Verdict::Recycle(format!("ran {} tasks (limit {limit})", vitals.tasks_done))
        } else {
            Verdict::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn limits_spread_within_the_jitter() {
        let p = MaxTasksProbe::new(100, 10);
        let limits: HashSet<u64> = (0..200).map(|id| p.limit_for(id)).collect();
        assert!(limits.iter().all(|l| (90..=100).contains(l)));
        assert!(limits.len() > 5, "jitter spreads the limits: {limits:?}");
    }

    #[test]
    fn a_worker_at_its_limit_is_recycled() {
        let p = MaxTasksProbe::new(5, 0);
        let v = |done| Vitals {
            tasks_done: done,
            ..Vitals::new(3, Duration::ZERO)
        };
        assert_eq!(p.check(&v(4)), Verdict::Healthy);
        assert!(matches!(p.check(&v(5)), Verdict::Recycle(_)));
    }
}
