//! Policy pick over 2 / 64 / 1 024 candidates, for every policy of
//! `policy-balance` and the pool's default.

#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use policy_balance::{LeastLoaded, PowerOfTwoChoices, RoundRobin};
use pool_core::balance::FirstAvailable;
use pool_core::{BalancePolicy, WorkerSnapshot};

fn policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_pick");
    g.measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    for n in [2u64, 64, 1024] {
        let candidates: Vec<WorkerSnapshot> = (0..n)
            .map(|i| WorkerSnapshot::new(i, (i % 3) as u32, i * 7 % 13, 4))
            .collect();
        let mut policies: Vec<Box<dyn BalancePolicy>> = vec![
            Box::new(FirstAvailable),
            Box::new(RoundRobin::new()),
            Box::new(LeastLoaded::new()),
            Box::new(PowerOfTwoChoices::from_seed(7)),
        ];
        for p in &mut policies {
            g.bench_function(BenchmarkId::new(p.name(), n), |b| {
                b.iter(|| black_box(p.pick(black_box(&candidates))));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
