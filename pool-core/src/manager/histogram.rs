//! A lock-free log-linear histogram of durations (microseconds), for latency
//! percentiles over the pool's lifetime and over a recent window.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use serde::Serialize;

/// Values below this are counted exactly.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above [`LINEAR`] (relative error ≤ 12.5 %).
const SUB: u64 = 8;
const BUCKETS: usize = 16 + 60 * 8;

/// Counts of durations in log-linear buckets.
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

    pub(crate) fn record(&self, us: u64) {
        let b = bucket_of(us).min(BUCKETS - 1);
        self.buckets[b].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
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

/// A lifetime histogram plus a recent window made of two rotating halves.
#[derive(Debug)]
pub(crate) struct Latency {
    lifetime: Histogram,
    windows: [Histogram; 2],
    active: AtomicUsize,
}

impl Latency {
    pub(crate) fn new() -> Self {
        Self {
            lifetime: Histogram::new(),
            windows: [Histogram::new(), Histogram::new()],
            active: AtomicUsize::new(0),
        }
    }

    pub(crate) fn record(&self, us: u64) {
        self.lifetime.record(us);
        self.windows[self.active.load(Relaxed) & 1].record(us);
    }

    /// Starts a new half-window, forgetting the oldest one.
    pub(crate) fn rotate(&self) {
        let next = (self.active.load(Relaxed) + 1) & 1;
        self.windows[next].clear();
        self.active.store(next, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencySummary {
        LatencySummary {
            lifetime: Histogram::summary(&[&self.lifetime]),
            recent: Histogram::summary(&[&self.windows[0], &self.windows[1]]),
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
            h.record(us);
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
        l.record(1_000);
        l.rotate();
        assert_eq!(l.snapshot().recent.count, 1);
        l.rotate();
        assert_eq!(l.snapshot().recent.count, 0);
        assert_eq!(l.snapshot().lifetime.count, 1);
    }
}
