//! Codec: encoding a task frame and decoding a result frame, 64 B / 4 KiB / 1 MiB.

#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use std::time::Duration;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pool_core::protocol::{
    decode_from_worker, encode_frame, FrameCodec, FromWorker, TaskFrame, ToWorker,
};
use tokio_util::codec::Decoder;

const MAX: usize = 16 << 20;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    for size in [64usize, 4096, 1 << 20] {
        let payload = vec![7u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encode_task", size), &payload, |b, p| {
            let mut buf = BytesMut::with_capacity(size + 64);
            b.iter(|| {
                buf.clear();
                let msg = ToWorker::Task(TaskFrame {
                    id: 123_456,
                    task_type: "echo",
                    payload: p,
                    attempt: 1,
                    timeout_ms: 300_000,
                });
                encode_frame(black_box(&msg), &mut buf, MAX).expect("encode");
                black_box(buf.len())
            });
        });
        let mut one = BytesMut::new();
        encode_frame(
            &FromWorker::Result {
                id: 123_456,
                payload: &payload,
            },
            &mut one,
            MAX,
        )
        .expect("encode");
        let one = one.freeze();
        g.bench_with_input(BenchmarkId::new("decode_result", size), &one, |b, f| {
            let mut codec = FrameCodec::new(MAX);
            b.iter(|| {
                let mut src = BytesMut::from(&f[..]);
                let body = codec.decode(&mut src).expect("frame").expect("whole");
                match decode_from_worker(&body).expect("decode") {
                    FromWorker::Result { id, payload } => black_box((id, payload.len())),
                    _ => unreachable!(),
                };
            });
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
