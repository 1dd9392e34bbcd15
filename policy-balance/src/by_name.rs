//! [`by_name`]: a policy from its configuration name.

use pool_core::BalancePolicy;

use crate::{LeastLoaded, PowerOfTwoChoices, RoundRobin};

/// Every name [`by_name`] accepts.
pub const POLICY_NAMES: &[&str] = &["round-robin", "least-loaded", "p2c", "power-of-two"];

/// Builds the policy called `name`, for configuration files and command lines.
///
/// | Name | Policy |
/// |---|---|
/// | `round-robin` | [`RoundRobin`] |
/// | `least-loaded` | [`LeastLoaded`] |
/// | `p2c`, `power-of-two` | [`PowerOfTwoChoices`] seeded at random |
///
/// Names are matched exactly (lowercase, with hyphens).
///
/// # Errors
/// [`UnknownPolicy`] for any other name; its message lists the valid ones.
///
/// # Examples
/// ```
/// use policy_balance::by_name;
///
/// assert_eq!(by_name("least-loaded")?.name(), "least-loaded");
/// let err = by_name("random").unwrap_err();
/// assert_eq!(err.name(), "random");
/// assert!(err.to_string().contains("round-robin"));
/// # Ok::<(), policy_balance::UnknownPolicy>(())
/// ```
pub fn by_name(name: &str) -> Result<Box<dyn BalancePolicy>, UnknownPolicy> {
    match name {
        "round-robin" => Ok(Box::new(RoundRobin::new())),
        "least-loaded" => Ok(Box::new(LeastLoaded::new())),
        "p2c" | "power-of-two" => Ok(Box::new(PowerOfTwoChoices::new())),
        _ => Err(UnknownPolicy {
            name: name.to_owned(),
        }),
    }
}

/// The name given to [`by_name`] is not a known policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balance policy `{name}` (expected one of: round-robin, least-loaded, p2c, power-of-two)")]
pub struct UnknownPolicy {
    name: String,
}

impl UnknownPolicy {
    /// The name that was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names that would have been accepted (the same as [`POLICY_NAMES`]).
    pub fn valid_names(&self) -> &'static [&'static str] {
        POLICY_NAMES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_builds_a_policy() {
        let built: Vec<&str> = POLICY_NAMES
            .iter()
            .map(|n| by_name(n).map(|p| p.name()))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        assert_eq!(built, ["round-robin", "least-loaded", "p2c", "p2c"]);
    }

    #[test]
    fn unknown_names_are_refused_with_the_valid_list() {
        for bad in ["", "Round-Robin", "round_robin", "random", "p2c "] {
            let err = by_name(bad).err();
            assert_eq!(err.as_ref().map(UnknownPolicy::name), Some(bad));
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.starts_with("unknown balance policy"), "{message}");
            for name in POLICY_NAMES {
                assert!(message.contains(name), "{message} lacks {name}");
            }
        }
    }

    #[test]
    fn valid_names_match_the_constant() {
        let err = UnknownPolicy { name: "x".into() };
        assert_eq!(err.valid_names(), POLICY_NAMES);
    }
}
