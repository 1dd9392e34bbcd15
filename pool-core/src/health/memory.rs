//! [`MemoryProbe`]: recycle a worker over a soft RSS limit, kill it over a hard one.

use super::{HealthProbe, ProbeKind, Verdict, Vitals};

/// Judges a worker by its resident set size (read by the pool from `/proc`, or as
/// the worker reported it).
///
/// Over `soft` bytes the worker is recycled: it finishes its current tasks and a
/// replacement starts first. Over `hard` bytes it is killed at once and its tasks
/// are retried elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct MemoryProbe {
    soft: Option<u64>,
    hard: Option<u64>,
}

impl MemoryProbe {
    /// A probe with a soft limit, a hard limit, or both (in bytes).
    pub fn new(soft: Option<u64>, hard: Option<u64>) -> Self {
        Self { soft, hard }
    }
}

impl HealthProbe for MemoryProbe {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Memory
    }

    /// Memory grows with the tasks a worker runs: judged after each one.
    fn wants_completions(&self) -> bool {
        true
    }

    fn needs_rss(&self) -> bool {
        true
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        let rss = vitals.rss_bytes;
        let mib = |b: u64| b / (1024 * 1024);
        match (self.hard, self.soft) {
            (Some(hard), _) if rss > hard => Verdict::Kill(format!(
                "rss {} MiB over the hard limit of {} MiB",
                mib(rss),
                mib(hard)
            )),
            (_, Some(soft)) if rss > soft => Verdict::Recycle(format!(
                "rss {} MiB over the limit of {} MiB",
                mib(rss),
                mib(soft)
            )),
            _ => Verdict::Healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(rss: u64) -> Vitals {
        Vitals {
            rss_bytes: rss,
            ..Vitals::new(1, Duration::ZERO)
        }
    }

    #[test]
    fn soft_recycles_and_hard_kills() {
        let p = MemoryProbe::new(Some(100), Some(200));
        assert_eq!(p.check(&at(100)), Verdict::Healthy);
        assert!(matches!(p.check(&at(101)), Verdict::Recycle(_)));
        assert!(matches!(p.check(&at(201)), Verdict::Kill(_)));
    }
}
