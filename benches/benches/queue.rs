//! Queue: a push and a pop at a steady depth of 1 k and 1 M items, with items the
//! size of the pool's pending tasks.

#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use pool_core::queue::PriorityQueue;

/// About the size of the manager's per-task record.
type Item = [u64; 20];

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    for depth in [1_000usize, 1_000_000] {
        let mut q: PriorityQueue<Item> = PriorityQueue::new();
        for i in 0..depth {
            q.push((i % 3) as u8 * 10, [i as u64; 20]);
        }
        g.bench_function(BenchmarkId::new("push_pop", depth), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                q.push(10, [i; 20]);
                black_box(q.pop())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
