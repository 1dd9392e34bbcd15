//! Transport: one round trip and pipelined throughput for 64 B / 4 KiB / 1 MiB,
//! through the full pool API over stdio pipes and over FIFOs, next to a raw tokio
//! pipe to a bare echo child (the floor: no framing, no protocol, no pool).
//!
//! Workers are `bench-worker` (worker-sdk, `echo`); the raw child is `raw-echo`.

#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use benches::{config, echo, msgpack_bin, start_pool, Link};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pool_core::Pool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [64, 4096, 1 << 20];

fn worker() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench-worker"))
}

fn raw_echo() -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_raw-echo"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn raw-echo")
}

fn frame(size: usize) -> Vec<u8> {
    let mut f = (size as u32).to_le_bytes().to_vec();
    f.extend((0..size).map(|i| (i % 251) as u8));
    f
}

/// Tasks per pipelined batch.
fn batch(size: usize) -> usize {
    if size >= 1 << 20 {
        32
    } else {
        2_000
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn pool(link: Link, workers: usize, conc: u32) -> Pool {
    start_pool(link, worker(), config(workers, conc))
        .await
        .expect("pool starts")
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("round_trip");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    for link in [Link::Stdio, Link::Fifo] {
        let pool = rt.block_on(pool(link, 1, 1));
        for size in SIZES {
            let payload = msgpack_bin(size);
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::new(link.name(), size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let t = Instant::now();
                        for _ in 0..iters {
                            let h = pool.submit(echo(&payload)).await.expect("submit");
                            h.await.expect("echo");
                        }
                        t.elapsed()
                    })
                });
            });
        }
        rt.block_on(pool.shutdown());
    }
    // Raw baseline: the same bytes, framed by a bare 4-byte length, no pool.
    let (mut child, mut w, mut r) = rt.block_on(async {
        let mut c = raw_echo();
        let w = c.stdin.take().expect("stdin");
        let r = tokio::io::BufReader::new(c.stdout.take().expect("stdout"));
        (c, w, r)
    });
    for size in SIZES {
        let f = frame(size);
        let mut reply = vec![0u8; f.len()];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("raw_pipe", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        w.write_all(&f).await.expect("write");
                        r.read_exact(&mut reply).await.expect("read");
                    }
                    t.elapsed()
                })
            });
        });
    }
    drop(w);
    let _ = rt.block_on(child.wait());
    g.finish();
}

async fn run_batch(pool: &Pool, payload: &Bytes, n: usize) {
    let handles = pool
        .submit_many((0..n).map(|_| echo(payload)))
        .await
        .expect("submit");
    for h in handles {
        h.await.expect("echo");
    }
}

type RawChild = (
    tokio::process::ChildStdin,
    tokio::io::BufReader<tokio::process::ChildStdout>,
);

/// One raw child per worker; a writer task per child keeps the frames coming
/// while a reader task reads the echoes (the pipes hold far less than a batch).
async fn raw_batch(children: &mut Vec<RawChild>, f: &Bytes, n: usize) {
    let per = n / children.len().max(1);
    let mut tasks = Vec::new();
    for (w, mut r) in children.drain(..) {
        let frame = f.clone();
        let writer = tokio::spawn(async move {
            let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, w);
            for _ in 0..per {
                w.write_all(&frame).await.expect("write");
            }
            w.flush().await.expect("flush");
            w.into_inner()
        });
        let len = f.len();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; len];
            for _ in 0..per {
                r.read_exact(&mut buf).await.expect("read");
            }
            r
        });
        tasks.push((writer, reader));
    }
    for (w, r) in tasks {
        children.push((w.await.expect("writer"), r.await.expect("reader")));
    }
}

fn pipelined(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("pipelined_2_workers");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    for link in [Link::Stdio, Link::Fifo] {
        let pool = rt.block_on(pool(link, 2, 64));
        for size in SIZES {
            let payload = msgpack_bin(size);
            let n = batch(size);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(link.name(), size), |b| {
                b.iter(|| rt.block_on(run_batch(&pool, &payload, n)));
            });
        }
        rt.block_on(pool.shutdown());
    }
    let mut procs = Vec::new();
    let mut children: Vec<RawChild> = rt.block_on(async {
        (0..2)
            .map(|_| {
                let mut c = raw_echo();
                let w = c.stdin.take().expect("stdin");
                let r = c.stdout.take().expect("stdout");
                // As StdioTransport does.
                let _ = rustix::pipe::fcntl_setpipe_size(&w, 1 << 20);
                let _ = rustix::pipe::fcntl_setpipe_size(&r, 1 << 20);
                procs.push(c);
                (w, tokio::io::BufReader::with_capacity(256 * 1024, r))
            })
            .collect()
    });
    for size in SIZES {
        let f = Bytes::from(frame(size));
        let n = batch(size);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("raw_pipe", size), |b| {
            b.iter(|| rt.block_on(raw_batch(&mut children, &f, n)));
        });
    }
    children.clear();
    for mut c in procs {
        let _ = rt.block_on(c.wait());
    }
    g.finish();
}

criterion_group!(benches, round_trip, pipelined);
criterion_main!(benches);
