//! Payloads of 64 KiB and more are written from the caller's own buffer
//! instead of being copied into the worker's frame batch: frames of every size
//! mixed in one batch, through prefetch windows, still arrive whole and in
//! order.

mod common;

use bytes::Bytes;
use pool_core::testing::MockAction;
use pool_core::{PoolConfig, Task};

/// Sizes on both sides of the 64 KiB line, small ones between them.
const SIZES: [usize; 8] = [0, 65_535, 65_536, 7, 200_000, 1, 70_000, 64];

fn payload(n: usize, size: usize) -> Bytes {
    (0..size).map(|i| ((i * 31 + n * 7) % 251) as u8).collect()
}

#[tokio::test(start_paused = true)]
async fn large_and_small_payloads_in_one_batch_come_back_byte_for_byte() {
    let config = PoolConfig {
        prefetch: 4,
        ..common::config(2)
    };
    let (pool, _recorder) = common::start(config, |_| MockAction::Echo).await;
    let payloads: Vec<Bytes> = (0..48)
        .map(|n| payload(n, SIZES[n % SIZES.len()]))
        .collect();
    let handles = pool
        .submit_many(payloads.iter().map(|p| Task::new("echo", p.clone())))
        .await
        .unwrap();
    for (n, (handle, sent)) in handles.into_iter().zip(&payloads).enumerate() {
        let out = handle.await.expect("each echo succeeds");
        assert_eq!(out.payload.len(), sent.len(), "task {n}");
        assert!(out.payload == *sent, "task {n}: the payload changed");
    }
    pool.shutdown().await;
}
