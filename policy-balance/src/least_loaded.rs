//! [`LeastLoaded`]: the worker with the fewest tasks in flight.

use pool_core::{BalancePolicy, WorkerSnapshot};

use crate::next_after;

/// Picks the candidate with the fewest tasks in flight now.
///
/// Ties are broken by the fewest completed tasks (spreading work over workers'
/// lifetimes, so a fresh worker catches up), and candidates still tied take turns in
/// id order, as with [`RoundRobin`](crate::RoundRobin): the policy remembers the id it
/// picked last and picks the next higher id among the tied, wrapping.
///
/// `pick` makes two passes over the candidates (O(n)) and does not allocate.
///
/// # Examples
/// ```
/// use policy_balance::LeastLoaded;
/// use pool_core::{BalancePolicy, WorkerSnapshot};
///
/// // id, in_flight, completed, capacity
/// let workers = [
///     WorkerSnapshot::new(1, 1, 0, 4),
///     WorkerSnapshot::new(2, 0, 9, 4),
///     WorkerSnapshot::new(3, 0, 5, 4),
/// ];
/// let mut policy = LeastLoaded::new();
/// assert_eq!(workers[policy.pick(&workers)].id, 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LeastLoaded {
    last: Option<u64>,
}

impl LeastLoaded {
    /// A least-loaded policy with no history.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Lower is better.
fn load(c: &WorkerSnapshot) -> (u32, u64) {
    (c.in_flight, c.completed)
}

impl BalancePolicy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn pick(&mut self, candidates: &[WorkerSnapshot]) -> usize {
        let Some(best) = candidates.iter().map(load).min() else {
            return 0;
        };
        match next_after(candidates, self.last, |c| load(c) == best) {
            Some(i) => {
                self.last = Some(candidates[i].id);
                i
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: u64, in_flight: u32, completed: u64) -> WorkerSnapshot {
        WorkerSnapshot::new(id, in_flight, completed, 8)
    }

    fn picked(p: &mut LeastLoaded, c: &[WorkerSnapshot]) -> u64 {
        c[p.pick(c)].id
    }

    #[test]
    fn fewest_in_flight_wins_whatever_the_completed_count() {
        let c = [w(1, 3, 0), w(2, 1, 100), w(3, 2, 0)];
        assert_eq!(picked(&mut LeastLoaded::new(), &c), 2);
    }

    #[test]
    fn ties_on_in_flight_go_to_fewest_completed() {
        let c = [w(1, 1, 7), w(2, 1, 3), w(3, 1, 5), w(4, 2, 0)];
        assert_eq!(picked(&mut LeastLoaded::new(), &c), 2);
    }

    #[test]
    fn full_ties_rotate_by_id() {
        let c = [w(1, 0, 4), w(2, 0, 4), w(3, 5, 0), w(4, 0, 4)];
        let mut p = LeastLoaded::new();
        let picks: Vec<u64> = (0..5).map(|_| picked(&mut p, &c)).collect();
        assert_eq!(picks, [1, 2, 4, 1, 2]);
    }

    #[test]
    fn rotation_continues_after_load_changes() {
        let mut p = LeastLoaded::new();
        assert_eq!(picked(&mut p, &[w(1, 0, 0), w(2, 0, 0), w(3, 0, 0)]), 1);
        // Worker 1 now has a task: 2 and 3 are tied, and 2 comes after 1.
        assert_eq!(picked(&mut p, &[w(1, 1, 0), w(2, 0, 0), w(3, 0, 0)]), 2);
        // Worker 2 left the set; 3 is next after 2.
        assert_eq!(picked(&mut p, &[w(1, 0, 0), w(3, 0, 0)]), 3);
        // Wrap.
        assert_eq!(picked(&mut p, &[w(1, 0, 0), w(3, 0, 0)]), 1);
    }

    #[test]
    fn empty_candidates_give_zero() {
        let mut p = LeastLoaded::new();
        assert_eq!(p.pick(&[]), 0);
        assert_eq!(p.name(), "least-loaded");
    }
}
