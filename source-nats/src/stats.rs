//! The queue's figures: lag, redeliveries, fetch batch sizes, settle latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// The source's figures (`metrics` shows them under `queue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// Whether the client is connected now.
    pub connected: bool,
    /// Messages waiting in the stream, not yet delivered (every band).
    pub lag: u64,
    /// Messages delivered to some daemon and not yet acked (every band).
    pub ack_pending: u64,
    /// Messages held by this daemon now.
    pub held: u64,
    /// Messages in the dead-letter stream.
    pub dead_letters: u64,
    /// Messages this daemon received again (delivery count above 1).
    pub redeliveries: u64,
    /// Fetches made (one per claim, over every band).
    pub fetches: u64,
    /// Messages those fetches returned.
    pub fetched: u64,
    /// The last fetch's batch size (messages, every band).
    pub fetch_batch_last: u64,
    /// The largest fetch batch.
    pub fetch_batch_max: u64,
    /// Settle calls (each stores outcomes, then acks).
    pub settle_batches: u64,
    /// The last settle call's latency, ms.
    pub settle_ms_last: f64,
    /// The slowest settle call, ms.
    pub settle_ms_max: f64,
    /// Every settle call's latency summed, ms.
    pub settle_ms_sum: f64,
}

/// The counters behind [`QueueStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    redeliveries: AtomicU64,
    fetches: AtomicU64,
    fetched: AtomicU64,
    batch_last: AtomicU64,
    batch_max: AtomicU64,
    settles: AtomicU64,
    settle_us_last: AtomicU64,
    settle_us_max: AtomicU64,
    settle_us_sum: AtomicU64,
}

impl Counters {
    pub(crate) fn redelivered(&self) {
        self.redeliveries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fetched(&self, n: usize) {
        let n = n as u64;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.fetched.fetch_add(n, Ordering::Relaxed);
        self.batch_last.store(n, Ordering::Relaxed);
        self.batch_max.fetch_max(n, Ordering::Relaxed);
    }

    pub(crate) fn settled(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.settles.fetch_add(1, Ordering::Relaxed);
        self.settle_us_last.store(us, Ordering::Relaxed);
        self.settle_us_max.fetch_max(us, Ordering::Relaxed);
        self.settle_us_sum.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> QueueStats {
        let ms = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1000.0;
        QueueStats {
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
            fetched: self.fetched.load(Ordering::Relaxed),
            fetch_batch_last: self.batch_last.load(Ordering::Relaxed),
            fetch_batch_max: self.batch_max.load(Ordering::Relaxed),
            settle_batches: self.settles.load(Ordering::Relaxed),
            settle_ms_last: ms(&self.settle_us_last),
            settle_ms_max: ms(&self.settle_us_max),
            settle_ms_sum: ms(&self.settle_us_sum),
            ..QueueStats::default()
        }
    }
}
