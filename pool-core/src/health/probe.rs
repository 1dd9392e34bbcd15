//! The [`HealthProbe`] trait and its [`Verdict`].

use std::fmt;

use super::Vitals;

/// A probe's judgement of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Fine: may take tasks.
    Healthy,
    /// Suspicious: gets no new tasks until it recovers.
    Suspect(String),
    /// Finish the current work, then replace the worker.
    Recycle(String),
    /// Kill the worker now and replace it; its tasks are retried.
    Kill(String),
}

impl Verdict {
    /// How severe the verdict is: 0 (healthy) … 3 (kill).
    pub fn rank(&self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Suspect(_) => 1,
            Self::Recycle(_) => 2,
            Self::Kill(_) => 3,
        }
    }

    /// The reason given with the verdict (empty for `Healthy`).
    pub fn reason(&self) -> &str {
        match self {
            Self::Healthy => "",
            Self::Suspect(r) | Self::Recycle(r) | Self::Kill(r) => r,
        }
    }

    /// The more severe of two verdicts (the first on a tie).
    pub fn worst(self, other: Verdict) -> Verdict {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// Judges a worker from its vitals.
///
/// Synchronous and cheap: anything slow (reading `/proc`) is gathered into
/// [`Vitals`] before the probe runs.
pub trait HealthProbe: Send + Sync + fmt::Debug + 'static {
    /// Stable short name used in alerts and logs.
    fn name(&self) -> &'static str;

    /// The verdict for one worker.
    fn check(&self, vitals: &Vitals) -> Verdict;
}

#[cfg(test)]
fn _object_safe(_: Box<dyn HealthProbe>) {}
