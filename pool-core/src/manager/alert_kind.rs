//! [`AlertKind`]: the classes of alert the pool raises, and the one a probe's
//! verdict raises (decided by the probe's [`ProbeKind`], never by its name).

use std::fmt;

use super::events::AlertSeverity;
use crate::health::{ProbeKind, Verdict};

/// The class of an alert. Its [`as_str`](Self::as_str) is what
/// [`Alert::kind`](super::Alert::kind), [`PoolEvent::Alert`](super::PoolEvent)'s
/// `kind`, the daemon's JSON (`type`) and its logs carry; those strings are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// `missed-heartbeat`: a heartbeat probe found a worker silent; it gets no new
    /// tasks until it is heard from.
    MissedHeartbeat,
    /// `zombie-detected`: a heartbeat probe found a worker silent for too long; it
    /// is killed.
    ZombieDetected,
    /// `high-memory`: a memory probe found a worker over a limit.
    HighMemory,
    /// `worker-suspect`: a probe other than a heartbeat probe found a worker
    /// suspect.
    WorkerSuspect,
    /// `worker-killed`: a probe other than a heartbeat probe had a worker killed.
    WorkerKilled,
    /// `worker-crashed`: a worker died when the pool did not expect it to.
    WorkerCrashed,
    /// `worker-start-failed`: a worker did not start.
    WorkerStartFailed,
    /// `restart-breaker-open`: too many failures in a row; replacements slow down.
    RestartBreakerOpen,
    /// `task-dead-lettered`: a task ran out of retries and went to the dead-letter
    /// queue.
    TaskDeadLettered,
}

impl AlertKind {
    /// The stable string of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissedHeartbeat => "missed-heartbeat",
            Self::ZombieDetected => "zombie-detected",
            Self::HighMemory => "high-memory",
            Self::WorkerSuspect => "worker-suspect",
            Self::WorkerKilled => "worker-killed",
            Self::WorkerCrashed => "worker-crashed",
            Self::WorkerStartFailed => "worker-start-failed",
            Self::RestartBreakerOpen => "restart-breaker-open",
            Self::TaskDeadLettered => "task-dead-lettered",
        }
    }

    /// The alert a `Suspect` or `Kill` verdict of a probe of `probe` kind raises,
    /// and how severe it is (`None` for `Healthy` and `Recycle`).
    pub(crate) fn for_verdict(
        probe: ProbeKind,
        verdict: &Verdict,
    ) -> Option<(AlertSeverity, Self)> {
        let heartbeat = probe == ProbeKind::Heartbeat;
        match verdict {
            Verdict::Suspect(_) if heartbeat => {
                Some((AlertSeverity::Warning, Self::MissedHeartbeat))
            }
            Verdict::Suspect(_) => Some((AlertSeverity::Warning, Self::WorkerSuspect)),
            Verdict::Kill(_) if heartbeat => Some((AlertSeverity::Critical, Self::ZombieDetected)),
            Verdict::Kill(_) => Some((AlertSeverity::Warning, Self::WorkerKilled)),
            _ => None,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_keeps_its_string_on_the_wire() {
        let all = [
            (AlertKind::MissedHeartbeat, "missed-heartbeat"),
            (AlertKind::ZombieDetected, "zombie-detected"),
            (AlertKind::HighMemory, "high-memory"),
            (AlertKind::WorkerSuspect, "worker-suspect"),
            (AlertKind::WorkerKilled, "worker-killed"),
            (AlertKind::WorkerCrashed, "worker-crashed"),
            (AlertKind::WorkerStartFailed, "worker-start-failed"),
            (AlertKind::RestartBreakerOpen, "restart-breaker-open"),
            (AlertKind::TaskDeadLettered, "task-dead-lettered"),
        ];
        for (kind, wire) in all {
            assert_eq!(kind.as_str(), wire);
            assert_eq!(kind.to_string(), wire);
        }
    }

    #[test]
    fn a_heartbeat_probe_raises_zombie_alerts_and_others_do_not() {
        let kill = Verdict::Kill("k".into());
        let suspect = Verdict::Suspect("s".into());
        let of = AlertKind::for_verdict;
        assert_eq!(
            of(ProbeKind::Heartbeat, &kill),
            Some((AlertSeverity::Critical, AlertKind::ZombieDetected))
        );
        assert_eq!(
            of(ProbeKind::Heartbeat, &suspect),
            Some((AlertSeverity::Warning, AlertKind::MissedHeartbeat))
        );
        for other in [ProbeKind::Memory, ProbeKind::Custom, ProbeKind::Lifetime] {
            assert_eq!(
                of(other, &kill),
                Some((AlertSeverity::Warning, AlertKind::WorkerKilled))
            );
            assert_eq!(
                of(other, &suspect),
                Some((AlertSeverity::Warning, AlertKind::WorkerSuspect))
            );
            assert_eq!(of(other, &Verdict::Recycle("r".into())), None);
            assert_eq!(of(other, &Verdict::Healthy), None);
        }
    }
}
