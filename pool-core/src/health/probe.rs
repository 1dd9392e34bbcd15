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

/// What a probe watches. The pool decides by it, never by the probe's name, which
/// alert a verdict raises:
///
/// | kind | `Suspect` | `Kill` |
/// |---|---|---|
/// | [`Heartbeat`](Self::Heartbeat) | `missed-heartbeat` (warning) | `zombie-detected` (critical), counted as a zombie kill |
/// | [`Memory`](Self::Memory) | `high-memory`, then `worker-suspect` (warnings) | `high-memory`, then `worker-killed` (warnings) |
/// | any other | `worker-suspect` (warning) | `worker-killed` (warning) |
///
/// A `Recycle` verdict raises no alert (a `worker-recycled` event), except from a
/// memory probe, which raises `high-memory` for every verdict but `Healthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ProbeKind {
    /// Silence: how long since the worker was last heard from.
    Heartbeat,
    /// The worker's resident memory.
    Memory,
    /// The worker's age.
    Lifetime,
    /// The tasks the worker has run.
    MaxTasks,
    /// Anything else (the default for probes written outside this crate).
    #[default]
    Custom,
}

/// Judges a worker from its vitals.
///
/// Synchronous and cheap: anything slow (reading `/proc`) is gathered into
/// [`Vitals`] before the probe runs. Every probe is consulted on the pool's health
/// tick; one that returns `true` from [`wants_completions`](Self::wants_completions)
/// is also consulted after each task its worker completes.
///
/// # Examples
/// A probe of one's own needs only a name and a check; the other methods have
/// defaults:
/// ```
/// use pool_core::{HealthProbe, Verdict, Vitals};
///
/// #[derive(Debug)]
/// struct Busy;
///
/// impl HealthProbe for Busy {
///     fn name(&self) -> &'static str {
///         "busy"
///     }
///     fn check(&self, vitals: &Vitals) -> Verdict {
///         if vitals.in_flight > 100 {
///             Verdict::Suspect(format!("{} tasks in flight", vitals.in_flight))
///         } else {
///             Verdict::Healthy
///         }
///     }
/// }
///
/// assert!(!Busy.wants_completions() && !Busy.needs_rss());
/// ```
pub trait HealthProbe: Send + Sync + fmt::Debug + 'static {
    /// Stable short name used in logs.
    fn name(&self) -> &'static str;

    /// The verdict for one worker.
    fn check(&self, vitals: &Vitals) -> Verdict;

    /// What it watches, which decides the alerts its verdicts raise (see
    /// [`ProbeKind`]); [`ProbeKind::Custom`] unless overridden.
    fn kind(&self) -> ProbeKind {
        ProbeKind::Custom
    }

    /// Whether it wants to judge a worker after each task the worker completes,
    /// not only on the health tick (`false` unless overridden: a probe that opts
    /// in adds its cost to every task).
    fn wants_completions(&self) -> bool {
        false
    }

    /// Whether it reads [`Vitals::rss_bytes`]: the pool then reads the worker's
    /// RSS from `/proc` before each time it consults this probe, and also
    /// consults it on each heartbeat (which carries the worker's own report);
    /// `false` unless overridden.
    fn needs_rss(&self) -> bool {
        false
    }
}

#[cfg(test)]
fn _object_safe(_: Box<dyn HealthProbe>) {}
