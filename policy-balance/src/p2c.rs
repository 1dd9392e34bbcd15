//! [`PowerOfTwoChoices`]: the less loaded of two random workers.

use pool_core::{BalancePolicy, WorkerSnapshot};

/// Picks two distinct candidates at random and takes the less loaded one.
///
/// "Power of two choices" (Mitzenmacher): nearly as good as scanning every worker for
/// the least loaded, at the cost of looking at two, and without the herd effect of
/// every dispatcher piling onto the same "best" worker. Load is the number of tasks in
/// flight; equal loads go to the one with fewer completed tasks, then to the first of
/// the two drawn. With a single candidate it is picked.
///
/// `pick` is O(1) and does not allocate.
///
/// # Examples
/// ```
/// use policy_balance::PowerOfTwoChoices;
/// use pool_core::{BalancePolicy, WorkerSnapshot};
///
/// // With two candidates both are always drawn, so the idle one wins.
/// let workers = [WorkerSnapshot::new(1, 3, 0, 4), WorkerSnapshot::new(2, 0, 0, 4)];
/// let mut p2c = PowerOfTwoChoices::from_seed(42);
/// assert_eq!(workers[p2c.pick(&workers)].id, 2);
/// ```
#[derive(Debug, Clone)]
pub struct PowerOfTwoChoices {
    rng: fastrand::Rng,
}

impl PowerOfTwoChoices {
    /// A policy with a random seed, taken from `fastrand`'s thread-local generator
    /// (itself seeded from the environment: time, thread and process identity).
    pub fn new() -> Self {
        Self {
            rng: fastrand::Rng::new(),
        }
    }

    /// A policy whose choices are fully determined by `seed`, for reproducible tests.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The two distinct indices the next pick would compare, drawn from the generator.
    fn draw(&mut self, n: usize) -> (usize, usize) {
        let a = self.rng.usize(..n);
        let mut b = self.rng.usize(..n - 1);
        if b >= a {
            b += 1;
        }
        (a, b)
    }
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        Self::new()
    }
}

impl BalancePolicy for PowerOfTwoChoices {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick(&mut self, candidates: &[WorkerSnapshot]) -> usize {
        if candidates.len() < 2 {
            return 0;
        }
        let (a, b) = self.draw(candidates.len());
        let load = |i: usize| (candidates[i].in_flight, candidates[i].completed);
        if load(b) < load(a) {
            b
        } else {
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(n: u64) -> Vec<WorkerSnapshot> {
        // Worker i has i tasks in flight, so the load order is the id order.
        (0..n)
            .map(|i| WorkerSnapshot::new(i, i as u32, 0, 64))
            .collect()
    }

    #[test]
    fn same_seed_same_picks() {
        let c = spread(16);
        let run = |seed| {
            let mut p = PowerOfTwoChoices::from_seed(seed);
            (0..64).map(|_| p.pick(&c)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn never_picks_the_more_loaded_of_its_two() {
        let c = spread(10);
        let mut drawer = PowerOfTwoChoices::from_seed(99);
        let mut picker = PowerOfTwoChoices::from_seed(99);
        for _ in 0..1000 {
            let (a, b) = drawer.draw(c.len());
            assert_ne!(a, b, "the two choices must be distinct");
            let picked = picker.pick(&c);
            assert_eq!(picked, a.min(b), "picked {picked} of {a} and {b}");
        }
    }

    #[test]
    fn the_most_loaded_worker_is_never_picked() {
        let c = spread(5);
        let mut p = PowerOfTwoChoices::from_seed(3);
        let mut seen = [0u32; 5];
        for _ in 0..2000 {
            seen[p.pick(&c)] += 1;
        }
        assert_eq!(seen[4], 0);
        assert!(seen[0] > seen[3], "{seen:?}");
        assert!(seen[..4].iter().all(|&n| n > 0), "{seen:?}");
    }

    #[test]
    fn equal_load_ties_go_to_fewer_completed() {
        let c = [
            WorkerSnapshot::new(1, 1, 50, 4),
            WorkerSnapshot::new(2, 1, 10, 4),
        ];
        let mut p = PowerOfTwoChoices::from_seed(5);
        for _ in 0..20 {
            assert_eq!(p.pick(&c), 1);
        }
    }

    #[test]
    fn one_or_no_candidate() {
        let mut p = PowerOfTwoChoices::new();
        assert_eq!(p.pick(&spread(1)), 0);
        assert_eq!(p.pick(&[]), 0);
        assert_eq!(p.name(), "p2c");
    }
}
