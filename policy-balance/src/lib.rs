//! Load-balancing policies for cortex-pool: which worker gets the next task.
//!
//! Every policy implements [`pool_core::BalancePolicy`]. The pool calls
//! [`pick`](BalancePolicy::pick) on its dispatch hot path with the workers that can
//! take a task now (never an empty slice, ascending id order) and sends the task to
//! the candidate at the returned index.
//!
//! | Policy | Name | Picks |
//! |---|---|---|
//! | [`RoundRobin`] | `round-robin` | the next worker id after the last one picked, wrapping |
//! | [`LeastLoaded`] | `least-loaded` | fewest tasks in flight, then fewest completed, then round-robin |
//! | [`PowerOfTwoChoices`] | `p2c` | the less loaded of two distinct random candidates |
//! | [`policy_fn`] | `fn` | whatever your closure returns |
//!
//! [`by_name`] builds a policy from its name, for configuration files and command
//! lines.
//!
//! # Cost
//! No policy allocates in `pick`, and each is O(n) at most in the number of
//! candidates: [`RoundRobin`] makes one pass over the slice and [`LeastLoaded`] two,
//! [`PowerOfTwoChoices`] looks at two candidates only (O(1)).
//!
//! # Examples
//! ```
//! use policy_balance::{by_name, LeastLoaded, RoundRobin};
//! use pool_core::{BalancePolicy, WorkerSnapshot};
//!
//! // id, in_flight, completed, capacity
//! let workers = [
//!     WorkerSnapshot::new(1, 2, 10, 4),
//!     WorkerSnapshot::new(2, 0, 10, 4),
//!     WorkerSnapshot::new(3, 1, 10, 4),
//! ];
//!
//! let mut rr = RoundRobin::new();
//! let picks: Vec<u64> = (0..4).map(|_| workers[rr.pick(&workers)].id).collect();
//! assert_eq!(picks, [1, 2, 3, 1]);
//!
//! let mut least = LeastLoaded::new();
//! assert_eq!(workers[least.pick(&workers)].id, 2);
//!
//! let mut policy = by_name("p2c")?;
//! assert_eq!(policy.name(), "p2c");
//! assert!(policy.pick(&workers) < workers.len());
//! # Ok::<(), policy_balance::UnknownPolicy>(())
//! ```
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::unwrap_used)]

mod by_name;
mod fn_policy;
mod least_loaded;
mod p2c;
mod round_robin;

pub use by_name::{by_name, UnknownPolicy, POLICY_NAMES};
pub use fn_policy::{policy_fn, PolicyFn};
pub use least_loaded::LeastLoaded;
pub use p2c::PowerOfTwoChoices;
pub use pool_core::{BalancePolicy, WorkerSnapshot};
pub use round_robin::RoundRobin;

/// Index of the candidate with the smallest id greater than `after` (wrapping to
/// the smallest id overall when there is none, or when `after` is `None`), among
/// the candidates for which `keep` holds. `None` only when no candidate is kept.
///
/// One pass, no allocation, no assumption on the order of `candidates`.
fn next_after(
    candidates: &[WorkerSnapshot],
    after: Option<u64>,
    mut keep: impl FnMut(&WorkerSnapshot) -> bool,
) -> Option<usize> {
    let mut lowest: Option<(u64, usize)> = None;
    let mut next: Option<(u64, usize)> = None;
    for (i, c) in candidates.iter().enumerate() {
        if !keep(c) {
            continue;
        }
        if lowest.is_none_or(|(id, _)| c.id < id) {
            lowest = Some((c.id, i));
        }
        if after.is_some_and(|last| c.id > last) && next.is_none_or(|(id, _)| c.id < id) {
            next = Some((c.id, i));
        }
    }
    next.or(lowest).map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots with the given ids, idle.
    pub(crate) fn idle(ids: &[u64]) -> Vec<WorkerSnapshot> {
        ids.iter()
            .map(|&id| WorkerSnapshot::new(id, 0, 0, 1))
            .collect()
    }

    #[test]
    fn next_after_wraps_and_ignores_order() {
        let c = idle(&[7, 3, 5]);
        assert_eq!(next_after(&c, None, |_| true), Some(1));
        assert_eq!(next_after(&c, Some(3), |_| true), Some(2));
        assert_eq!(next_after(&c, Some(5), |_| true), Some(0));
        assert_eq!(next_after(&c, Some(7), |_| true), Some(1));
        assert_eq!(next_after(&c, Some(4), |w| w.id != 5), Some(0));
        assert_eq!(next_after(&c, Some(4), |_| false), None);
    }
}
