//! [`ProbeSet`]: the pool's health probes, and which of them are consulted on each
//! occasion (decided once, from what each probe declares).

use crate::health::{HealthProbe, ProbeKind, Verdict, Vitals};

/// When the actor judges a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Occasion {
    /// The health tick: every probe.
    Tick,
    /// The worker completed a task: the probes that want completions.
    Completion,
    /// The worker sent a heartbeat (with its own RSS report): the probes that
    /// need RSS.
    Heartbeat,
}

/// The worst verdict of the probes consulted, and the probe that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) verdict: Verdict,
    pub(crate) kind: ProbeKind,
    /// The probe's name, for logs.
    pub(crate) probe: &'static str,
}

/// The pool's probes, in the order they were installed.
#[derive(Debug)]
pub(crate) struct ProbeSet {
    probes: Vec<Box<dyn HealthProbe>>,
    /// Indices of the probes consulted on a completion.
    on_completion: Vec<usize>,
    /// Indices of the probes consulted on a heartbeat.
    on_heartbeat: Vec<usize>,
    /// Whether any probe consulted on a completion needs RSS.
    rss_on_completion: bool,
}

impl ProbeSet {
    pub(crate) fn new(probes: Vec<Box<dyn HealthProbe>>) -> Self {
        let indices = |wanted: fn(&dyn HealthProbe) -> bool| -> Vec<usize> {
            (0..probes.len())
                .filter(|&i| wanted(probes[i].as_ref()))
                .collect()
        };
        let on_completion = indices(|p| p.wants_completions());
        let on_heartbeat = indices(|p| p.needs_rss());
        let rss_on_completion = on_completion.iter().any(|&i| probes[i].needs_rss());
        Self {
            probes,
            on_completion,
            on_heartbeat,
            rss_on_completion,
        }
    }

    /// Whether any probe is consulted on `occasion`.
    pub(crate) fn consulted_on(&self, occasion: Occasion) -> bool {
        match occasion {
            Occasion::Tick => !self.probes.is_empty(),
            Occasion::Completion => !self.on_completion.is_empty(),
            Occasion::Heartbeat => !self.on_heartbeat.is_empty(),
        }
    }

    /// Whether the worker's RSS is read from `/proc` before judging it on
    /// `occasion`.
    pub(crate) fn reads_rss(&self, occasion: Occasion) -> bool {
        match occasion {
            Occasion::Tick | Occasion::Heartbeat => true,
            Occasion::Completion => self.rss_on_completion,
        }
    }

    /// The worst verdict of the probes consulted on `occasion` (the first of
    /// equals); `Recycle` verdicts are passed over for a worker already
    /// `recycling`. `None` when every probe consulted finds it healthy.
    pub(crate) fn judge(
        &self,
        occasion: Occasion,
        vitals: &Vitals,
        recycling: bool,
    ) -> Option<Finding> {
        let mut worst: Option<Finding> = None;
        let mut consult = |probe: &dyn HealthProbe| {
            let verdict = probe.check(vitals);
            let passed_over = matches!(verdict, Verdict::Recycle(_)) && recycling;
            let rank = worst.as_ref().map_or(0, |f| f.verdict.rank());
            if !passed_over && verdict.rank() > rank {
                worst = Some(Finding {
                    verdict,
                    kind: probe.kind(),
                    probe: probe.name(),
                });
            }
        };
        match occasion {
            Occasion::Tick => self.probes.iter().for_each(|p| consult(p.as_ref())),
            Occasion::Completion => self
                .on_completion
                .iter()
                .for_each(|&i| consult(self.probes[i].as_ref())),
            Occasion::Heartbeat => self
                .on_heartbeat
                .iter()
                .for_each(|&i| consult(self.probes[i].as_ref())),
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HeartbeatProbe, MemoryProbe};
    use std::time::Duration;

    /// A probe of the kind a user writes: only `name` and `check`.
    #[derive(Debug)]
    struct Fixed(Verdict);

    impl HealthProbe for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn check(&self, _: &Vitals) -> Verdict {
            self.0.clone()
        }
    }

    fn set() -> ProbeSet {
        ProbeSet::new(vec![
            Box::new(HeartbeatProbe::new(
                Duration::from_secs(1),
                Duration::from_secs(2),
            )),
            Box::new(MemoryProbe::new(Some(100), None)),
            Box::new(Fixed(Verdict::Suspect("custom".into()))),
        ])
    }

    fn vitals(silent_s: u64, rss: u64) -> Vitals {
        Vitals {
            rss_bytes: rss,
            ..Vitals::new(1, Duration::from_secs(silent_s))
        }
    }

    #[test]
    fn a_custom_probe_is_consulted_on_the_tick_only() {
        let set = set();
        let found = set.judge(Occasion::Tick, &vitals(0, 0), false);
        assert_eq!(
            found,
            Some(Finding {
                verdict: Verdict::Suspect("custom".into()),
                kind: ProbeKind::Custom,
                probe: "fixed",
            })
        );
        assert_eq!(set.judge(Occasion::Completion, &vitals(0, 0), false), None);
        assert_eq!(set.judge(Occasion::Heartbeat, &vitals(0, 0), false), None);
    }

    #[test]
    fn the_memory_probe_opts_into_completions_and_heartbeats() {
        let set = set();
        assert!(set.consulted_on(Occasion::Completion) && set.consulted_on(Occasion::Heartbeat));
        assert!(set.reads_rss(Occasion::Completion));
        let found = set.judge(Occasion::Completion, &vitals(5, 101), false);
        let found = found.map(|f| (f.kind, f.verdict.rank()));
        assert_eq!(found, Some((ProbeKind::Memory, 2)));
        // Silence is judged on the tick: the heartbeat probe's kill wins there.
        let found = set.judge(Occasion::Tick, &vitals(5, 101), false);
        assert_eq!(found.map(|f| f.kind), Some(ProbeKind::Heartbeat));
    }

    #[test]
    fn a_recycling_worker_is_not_recycled_again() {
        let set = set();
        let found = set.judge(Occasion::Completion, &vitals(0, 101), true);
        assert_eq!(found, None);
    }

    #[test]
    fn without_opted_in_probes_completions_cost_nothing() {
        let set = ProbeSet::new(vec![
            Box::new(HeartbeatProbe::default()),
            Box::new(Fixed(Verdict::Kill("k".into()))),
        ]);
        assert!(set.consulted_on(Occasion::Tick));
        assert!(!set.consulted_on(Occasion::Completion));
        assert!(!set.consulted_on(Occasion::Heartbeat));
        assert!(!set.reads_rss(Occasion::Completion));
    }
}
