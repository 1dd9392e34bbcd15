//! A log-linear histogram of durations (microseconds), for latency
//! percentiles over the pool's lifetime and over a recent window.
//!
//! Each histogram has one writer (a lane's tally, or the total of retired
//! lanes under its lock; see [`tally`](super::tally)), so recording is a load
//! and a store per counter, never a read-modify-write. Readers load the
//! counters while it writes: a count is at most one write behind, and a read
//! that meets a half of the recent window while its writer clears it for a new
//! epoch may see that half partly cleared, once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Values below this are counted exactly.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above [`LINEAR`] (relative error ≤ 12.5 %).
const SUB: u64 = 8;
const BUCKETS: usize = 16 + 60 * 8;

/// Counts of durations in log-linear buckets, written by one writer.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros());
    let sub = (us >> (exp - 3)) & (SUB - 1);
    (LINEAR + (exp - 4) * SUB + sub) as usize
}

/// The largest value that falls in bucket `b`.
fn upper_of(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let exp = (b - LINEAR) / SUB + 4;
    let sub = (b - LINEAR) % SUB;
    ((SUB + sub + 1) << (exp - 3)) - 1
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Counts `us`, of bucket `b` (its one writer only).
    fn record(&self, us: u64, b: usize) {
        add(&self.buckets[b], 1);
        add(&self.count, 1);
        add(&self.sum_us, us);
    }

    /// Adds what `other` counted (this histogram's one writer only).
    fn absorb(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(other.buckets.iter()) {
            add(mine, theirs.load(Relaxed));
        }
        add(&self.count, other.count.load(Relaxed));
        add(&self.sum_us, other.sum_us.load(Relaxed));
    }

    fn clear(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.sum_us.store(0, Relaxed);
    }

    /// The value at quantile `q` of the union of `parts`, in microseconds.
    fn quantile(parts: &[&Histogram], q: f64) -> u64 {
        let total: u64 = parts.iter().map(|h| h.count.load(Relaxed)).sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for b in 0..BUCKETS {
            seen += parts
                .iter()
                .map(|h| h.buckets[b].load(Relaxed))
                .sum::<u64>();
            if seen >= rank {
                return upper_of(b);
            }
        }
        upper_of(BUCKETS - 1)
    }

    /// p50/p95/p99 and the mean of the union of `parts`, in milliseconds.
    pub(crate) fn summary(parts: &[&Histogram]) -> Percentiles {
        let count: u64 = parts.iter().map(|h| h.count.load(Relaxed)).sum();
        let sum: u64 = parts.iter().map(|h| h.sum_us.load(Relaxed)).sum();
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count,
            mean_ms: if count == 0 {
                0.0
            } else {
                sum as f64 / count as f64 / 1000.0
            },
            p50_ms: ms(Self::quantile(parts, 0.50)),
            p95_ms: ms(Self::quantile(parts, 0.95)),
            p99_ms: ms(Self::quantile(parts, 0.99)),
        }
    }
}

/// Adds `n` to a counter that has one writer: a load and a store.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One half of the recent window: what was recorded in window epoch `epoch`.
#[derive(Debug)]
struct Window {
    epoch: AtomicU64,
    counts: Histogram,
}

/// A lifetime histogram plus a recent window of two halves, written by one
/// writer. The pool's health tick advances the window epoch every
/// half-window; epoch `e` is recorded in half `e % 2`, which its writer clears
/// when it first records in a new epoch. The recent window is the halves of
/// the current epoch and the one before it.
#[derive(Debug)]
pub(crate) struct Latency {
    lifetime: Histogram,
    windows: [Window; 2],
}

impl Latency {
    pub(crate) fn new() -> Self {
        let window = |epoch| Window {
            epoch: AtomicU64::new(epoch),
            counts: Histogram::new(),
        };
        Self {
            lifetime: Histogram::new(),
            windows: [window(0), window(1)],
        }
    }

    /// The half that records epoch `epoch`, cleared first if it held an
    /// older epoch; `None` when it holds a newer one (epoch `epoch` is then no
    /// longer recent: nothing of it is kept). Its one writer only.
    fn window_for(&self, epoch: u64) -> Option<&Histogram> {
        let window = &self.windows[(epoch & 1) as usize];
        let held = window.epoch.load(Relaxed);
        if held > epoch {
            return None;
        }
        if held < epoch {
            window.counts.clear();
            window.epoch.store(epoch, Relaxed);
        }
        Some(&window.counts)
    }

    /// Counts `us`, recorded in window epoch `epoch` (its one writer only).
    pub(crate) fn record(&self, us: u64, epoch: u64) {
        let b = bucket_of(us).min(BUCKETS - 1);
        self.lifetime.record(us, b);
        if let Some(window) = self.window_for(epoch) {
            window.record(us, b);
        }
    }

    /// Adds what `other` counted; of its recent window, the halves still
    /// recent in epoch `epoch` (this latency's one writer only).
    pub(crate) fn absorb(&self, other: &Latency, epoch: u64) {
        self.lifetime.absorb(&other.lifetime);
        for window in other.recent(epoch) {
            let held = window.epoch.load(Relaxed);
            if let Some(mine) = self.window_for(held) {
                mine.absorb(&window.counts);
            }
        }
    }

    /// Its halves that are recent in epoch `epoch`: that epoch's and the one
    /// before's.
    fn recent(&self, epoch: u64) -> impl Iterator<Item = &Window> {
        self.windows.iter().filter(move |w| {
            let held = w.epoch.load(Relaxed);
            held == epoch || held.checked_add(1) == Some(epoch)
        })
    }

    /// Lifetime and recent percentiles of the union of `parts`, in window
    /// epoch `epoch`.
    pub(crate) fn summary(parts: &[&Latency], epoch: u64) -> LatencySummary {
        let lifetime: Vec<&Histogram> = parts.iter().map(|l| &l.lifetime).collect();
        let recent: Vec<&Histogram> = parts
            .iter()
            .flat_map(|l| l.recent(epoch).map(|w| &w.counts))
            .collect();
        LatencySummary {
            lifetime: Histogram::summary(&lifetime),
            recent: Histogram::summary(&recent),
        }
    }
}

/// Percentiles of one histogram, in milliseconds (bucket upper bounds: within 12.5 %).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Their mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Lifetime and recent-window percentiles of one latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LatencySummary {
    /// Since the pool started.
    pub lifetime: Percentiles,
    /// Over the last one to two minutes.
    pub recent: Percentiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_with_bounded_error() {
        for us in [0u64, 1, 15, 16, 17, 100, 1_000, 12_345, 1_000_000, 1 << 40] {
            let upper = upper_of(bucket_of(us));
            assert!(upper >= us, "{us} → {upper}");
            assert!(upper as f64 <= us as f64 * 1.125 + 1.0, "{us} → {upper}");
        }
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(us, bucket_of(us).min(BUCKETS - 1));
        }
        let s = Histogram::summary(&[&h]);
        assert_eq!(s.count, 10_000);
        assert!((4.9..=5.7).contains(&s.p50_ms), "{s:?}");
        assert!((9.4..=10.7).contains(&s.p95_ms), "{s:?}");
        assert!((5.0..=5.01).contains(&s.mean_ms), "{s:?}");
    }

    #[test]
    fn the_recent_window_forgets_after_two_rotations() {
        let l = Latency::new();
        l.record(1_000, 0);
        assert_eq!(Latency::summary(&[&l], 1).recent.count, 1);
        assert_eq!(Latency::summary(&[&l], 2).recent.count, 0);
        l.record(2_000, 2);
        let summary = Latency::summary(&[&l], 2);
        assert_eq!(summary.recent.count, 1, "the epoch-0 half was cleared");
        assert_eq!(summary.lifetime.count, 2);
    }

    #[test]
    fn an_older_epoch_absorbed_after_a_newer_one_does_not_clear_it() {
        let newer = Latency::new();
        newer.record(10, 4);
        let older = Latency::new();
        older.record(20, 2);
        older.record(30, 3);
        let retired = Latency::new();
        retired.absorb(&newer, 4);
        retired.absorb(&older, 3);
        let summary = Latency::summary(&[&retired], 4);
        assert_eq!(summary.lifetime.count, 3);
        assert_eq!(
            summary.recent.count, 2,
            "epochs 4 and 3 are recent; epoch 2 is not, and did not clear 4"
        );
    }

    #[test]
    fn absorbing_keeps_only_the_recent_halves_in_the_recent_window() {
        let lane = Latency::new();
        lane.record(10, 0);
        lane.record(20, 1);
        let retired = Latency::new();
        retired.absorb(&lane, 2);
        let summary = Latency::summary(&[&retired], 2);
        assert_eq!(summary.lifetime.count, 2);
        assert_eq!(summary.recent.count, 1, "epoch 0 is no longer recent in 2");
        let both = Latency::summary(&[&retired, &lane], 2);
        assert_eq!(both.lifetime.count, 4);
        assert_eq!(both.recent.count, 2);
    }
}
