//! [`policy_fn`]: a policy from a closure.

use std::fmt;

use pool_core::{BalancePolicy, WorkerSnapshot};

/// Turns a closure into a [`BalancePolicy`], like `tower::service_fn`.
///
/// The closure receives the candidates and returns an index into them. It runs on
/// the pool's dispatch hot path, so it should be quick and must not block; an index
/// out of range is logged by the pool and replaced by 0. The policy is named `fn`
/// unless renamed with [`PolicyFn::named`].
///
/// # Examples
/// Always the worker with the most free capacity:
/// ```
/// use policy_balance::policy_fn;
/// use pool_core::{BalancePolicy, WorkerSnapshot};
///
/// let mut roomiest = policy_fn(|c: &[WorkerSnapshot]| {
///     (0..c.len())
///         .max_by_key(|&i| c[i].capacity.saturating_sub(c[i].in_flight))
///         .unwrap_or(0)
/// })
/// .named("roomiest");
///
/// let workers = [WorkerSnapshot::new(1, 1, 0, 2), WorkerSnapshot::new(2, 1, 0, 8)];
/// assert_eq!(roomiest.pick(&workers), 1);
/// assert_eq!(roomiest.name(), "roomiest");
/// ```
pub fn policy_fn<F>(f: F) -> PolicyFn<F>
where
    F: FnMut(&[WorkerSnapshot]) -> usize + Send + 'static,
{
    PolicyFn { f, name: "fn" }
}

/// A [`BalancePolicy`] made from a closure by [`policy_fn`].
#[derive(Clone)]
pub struct PolicyFn<F> {
    f: F,
    name: &'static str,
}

impl<F> PolicyFn<F> {
    /// Gives the policy the name reported by [`BalancePolicy::name`].
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

impl<F> fmt::Debug for PolicyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFn")
            .field("name", &self.name)
            .field("f", &format_args!("{}", std::any::type_name::<F>()))
            .finish()
    }
}

impl<F> BalancePolicy for PolicyFn<F>
where
    F: FnMut(&[WorkerSnapshot]) -> usize + Send + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn pick(&mut self, candidates: &[WorkerSnapshot]) -> usize {
        (self.f)(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_the_closure_with_the_candidates_and_keeps_its_state() {
        let mut calls = 0;
        let mut last = policy_fn(move |c: &[WorkerSnapshot]| {
            calls += 1;
            (c.len() - 1).min(calls)
        });
        let c = [
            WorkerSnapshot::new(1, 0, 0, 1),
            WorkerSnapshot::new(2, 0, 0, 1),
            WorkerSnapshot::new(3, 0, 0, 1),
        ];
        assert_eq!(last.pick(&c), 1);
        assert_eq!(last.pick(&c), 2);
        assert_eq!(last.pick(&c), 2);
        assert_eq!(last.name(), "fn");
    }

    #[test]
    fn boxes_as_a_trait_object_and_debugs_without_f_debug() {
        let p: Box<dyn BalancePolicy> = Box::new(policy_fn(|_: &[WorkerSnapshot]| 0).named("zero"));
        assert_eq!(p.name(), "zero");
        assert!(format!("{p:?}").contains("\"zero\""));
    }
}
