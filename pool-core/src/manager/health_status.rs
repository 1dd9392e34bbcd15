//! [`HealthStatus`]: the pool's health in one word.

use serde::{Deserialize, Serialize};

/// The pool's health, serialized as `"healthy"`, `"degraded"`, `"critical"` or
/// `"failed"` (the rules are on [`HealthSummary`](super::HealthSummary)). The default is
/// `Healthy`, what an empty pool without alerts reports.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Enough healthy workers and no recent critical alert.
    #[default]
    Healthy,
    /// Fewer than 80 % of the target healthy, or the restart breaker open.
    Degraded,
    /// A critical alert in the last 5 minutes, or fewer than half the target healthy.
    Critical,
    /// The pool's actor ended without a shutdown (it panicked): nothing runs any
    /// more and submissions are refused; `HealthSummary::failure` says why.
    Failed,
}

impl HealthStatus {
    /// The word it is serialized as.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Critical => "critical",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_serialized_as_the_words_of_the_contract() {
        for (status, word) in [
            (HealthStatus::Healthy, "healthy"),
            (HealthStatus::Degraded, "degraded"),
            (HealthStatus::Critical, "critical"),
            (HealthStatus::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), word);
            assert_eq!(status.to_string(), word);
            let back: HealthStatus = serde_json::from_value(word.into()).unwrap();
            assert_eq!(back, status);
        }
    }
}
