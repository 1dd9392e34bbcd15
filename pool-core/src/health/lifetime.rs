//! [`LifetimeProbe`]: recycle a worker once it has lived long enough.

use std::time::Duration;

use super::{HealthProbe, ProbeKind, Verdict, Vitals};

/// Recycles a worker older than `max_age` (its replacement starts first).
#[derive(Debug, Clone, Copy)]
pub struct LifetimeProbe {
    max_age: Duration,
}

impl LifetimeProbe {
    /// Recycle workers older than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self { max_age }
    }
}

impl HealthProbe for LifetimeProbe {
    fn name(&self) -> &'static str {
        "lifetime"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Lifetime
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        if vitals.age >= self.max_age {
            Verdict::Recycle(format!(
                "lived {} s (limit {} s)",
                vitals.age.as_secs(),
                self.max_age.as_secs()
            ))
        } else {
            Verdict::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_workers_are_recycled() {
        let p = LifetimeProbe::new(Duration::from_secs(60));
        let at = |s| Vitals {
            age: Duration::from_secs(s),
            ..Vitals::new(1, Duration::ZERO)
        };
        assert_eq!(p.check(&at(59)), Verdict::Healthy);
        assert!(matches!(p.check(&at(60)), Verdict::Recycle(_)));
    }
}
