//! Dispatch cost end to end, without processes: a pool of in-process mock workers
//! (`pool_core::testing`, real protocol over in-memory streams) echoing 64 B
//! tasks. What remains is the manager: submission, queue, policy, encoding, the
//! writer and reader tasks, settlement.

#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use std::time::{Duration, Instant};

use benches::{config, echo, msgpack_bin};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pool_core::testing::{MockAction, MockTransport};
use pool_core::{Pool, WorkerCommand};

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("dispatch_mock");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    let payload = msgpack_bin(64);
    for (workers, conc) in [(2usize, 1u32), (2, 64)] {
        let pool = rt.block_on(async {
            let (transport, _rec) = MockTransport::new(|_| MockAction::Echo);
            Pool::builder(transport, WorkerCommand::new("mock"))
                .config(config(workers, conc))
                .start()
                .await
                .expect("start")
        });
        let n = 2_000usize;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            BenchmarkId::new("batch", format!("w{workers}_c{conc}")),
            |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let hs = pool
                            .submit_many((0..n).map(|_| echo(&payload)))
                            .await
                            .expect("submit");
                        for h in hs {
                            h.await.expect("echo");
                        }
                    })
                });
            },
        );
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new("sequential", format!("w{workers}_c{conc}")),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let t = Instant::now();
                        for _ in 0..iters {
                            pool.submit(echo(&payload))
                                .await
                                .expect("submit")
                                .await
                                .expect("echo");
                        }
                        t.elapsed()
                    })
                });
            },
        );
        rt.block_on(pool.shutdown());
    }
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
