//! [`RoundRobin`]: rotate over the workers by id.

use pool_core::{BalancePolicy, WorkerSnapshot};

use crate::next_after;

/// Rotates over the candidates by worker id.
///
/// Remembers the id it picked last and picks the candidate with the next higher id,
/// wrapping to the lowest id. Because it follows ids rather than positions, it stays
/// fair when the candidate set changes between calls: a worker that is busy, retired
/// or newly started is simply skipped or joined in id order, and nobody is picked
/// twice in a row while another candidate waits its turn.
///
/// `pick` is one pass over the candidates (O(n)) and does not allocate; it does not
/// rely on the candidates being sorted.
///
/// # Examples
/// ```
/// use policy_balance::RoundRobin;
/// use pool_core::{BalancePolicy, WorkerSnapshot};
///
/// let workers: Vec<_> = [4, 9].iter().map(|&id| WorkerSnapshot::new(id, 0, 0, 1)).collect();
/// let mut rr = RoundRobin::new();
/// assert_eq!(workers[rr.pick(&workers)].id, 4);
/// assert_eq!(workers[rr.pick(&workers)].id, 9);
/// assert_eq!(workers[rr.pick(&workers)].id, 4);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    last: Option<u64>,
}

impl RoundRobin {
    /// A rotation that starts at the lowest id.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id picked last, if any.
    pub fn last_picked(&self) -> Option<u64> {
        self.last
    }
}

impl BalancePolicy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn pick(&mut self, candidates: &[WorkerSnapshot]) -> usize {
        match next_after(candidates, self.last, |_| true) {
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
    use crate::tests::idle;

    fn ids(rr: &mut RoundRobin, c: &[WorkerSnapshot], n: usize) -> Vec<u64> {
        (0..n).map(|_| c[rr.pick(c)].id).collect()
    }

    #[test]
    fn rotates_in_id_order_and_wraps() {
        let c = idle(&[1, 2, 3]);
        let mut rr = RoundRobin::new();
        assert_eq!(ids(&mut rr, &c, 7), [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(rr.last_picked(), Some(1));
    }

    #[test]
    fn follows_ids_not_positions() {
        let c = idle(&[30, 10, 20]);
        let mut rr = RoundRobin::new();
        assert_eq!(ids(&mut rr, &c, 4), [10, 20, 30, 10]);
    }

    #[test]
    fn survives_the_candidate_set_changing() {
        let mut rr = RoundRobin::new();
        assert_eq!(ids(&mut rr, &idle(&[1, 2, 3, 4]), 2), [1, 2]);
        // Worker 3 is busy: the turn passes to 4, not back to 1.
        assert_eq!(ids(&mut rr, &idle(&[1, 2, 4]), 1), [4]);
        // The last pick (4) disappeared and 5 joined: continue after 4.
        assert_eq!(ids(&mut rr, &idle(&[1, 3, 5]), 3), [5, 1, 3]);
        // Only lower ids left: wrap to the lowest.
        assert_eq!(ids(&mut rr, &idle(&[2]), 2), [2, 2]);
    }

    #[test]
    fn single_and_empty_candidates() {
        let mut rr = RoundRobin::new();
        assert_eq!(rr.pick(&idle(&[8])), 0);
        assert_eq!(rr.pick(&[]), 0);
        assert_eq!(rr.last_picked(), Some(8));
        assert_eq!(rr.name(), "round-robin");
    }
}
