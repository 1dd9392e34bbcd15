//! [`HeartbeatProbe`]: healthy → suspect → zombie by silence.

use std::time::Duration;

use super::{HealthProbe, ProbeKind, Verdict, Vitals};

/// Judges a worker by how long it has been silent.
///
/// Silent for `suspect_after`: it gets no new tasks. Silent for `zombie_after`: it
/// is killed (its whole process group) and replaced, and its tasks are retried. The
/// SDK sends heartbeats from a thread of their own, so a long handler keeps them
/// coming; a stopped or wedged process does not.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatProbe {
    suspect_after: Duration,
    zombie_after: Duration,
}

impl HeartbeatProbe {
    /// A probe with the given thresholds (`zombie_after` is raised to at least
    /// `suspect_after`).
    pub fn new(suspect_after: Duration, zombie_after: Duration) -> Self {
        Self {
            suspect_after,
            zombie_after: zombie_after.max(suspect_after),
        }
    }
}

impl Default for HeartbeatProbe {
    /// Suspect after 15 s of silence, zombie after 30 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(15), Duration::from_secs(30))
    }
}

impl HealthProbe for HeartbeatProbe {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Heartbeat
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        let silent = vitals.since_heard;
        if silent >= self.zombie_after {
            Verdict::Kill(format!(
                "zombie: no heartbeat for {} ms",
                silent.as_millis()
            ))
        } else if silent >= self.suspect_after {
            Verdict::Suspect(format!("no heartbeat for {} ms", silent.as_millis()))
        } else {
            Verdict::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_moves_from_healthy_to_suspect_to_zombie() {
        let probe = HeartbeatProbe::new(Duration::from_secs(15), Duration::from_secs(30));
        let at = |s| probe.check(&Vitals::new(1, Duration::from_secs(s)));
        assert_eq!(at(14), Verdict::Healthy);
        assert!(matches!(at(15), Verdict::Suspect(_)));
        assert!(matches!(at(29), Verdict::Suspect(_)));
        assert!(matches!(at(30), Verdict::Kill(_)));
    }

    #[test]
    fn worst_prefers_the_more_severe_verdict() {
        let kill = Verdict::Kill("k".into());
        assert_eq!(Verdict::Healthy.worst(kill.clone()), kill);
        assert_eq!(kill.clone().worst(Verdict::Suspect("s".into())), kill);
    }
}
