//! A lock-free latency histogram: fixed exponential buckets of atomics, observed on the
//! publish path and read as a snapshot at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bound of the first bucket: 0.5 ms.
const FIRST_BOUND_MICROS: u64 = 500;
/// Buckets of doubling bounds, 0.5 ms to ~16 s; slower goes to the +Inf bucket.
const BOUNDED_BUCKETS: usize = 16;

const ORDER: Ordering = Ordering::Relaxed;

/// Counts of observations per bucket, their sum, and their number.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last is +Inf.
    buckets: [AtomicU64; BOUNDED_BUCKETS + 1],
    sum_micros: AtomicU64,
}

/// A point-in-time copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations in that bucket only); the last bound is
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        self.observe_runs([(latency, 1)]);
    }

    /// Records many observations, as runs of (latency, how many times it was seen),
    /// tallied first so that each bucket's atomic is touched once per call, not once
    /// per observation (a batch's flows, on the publish path, would otherwise cost two
    /// atomic adds each).
    pub fn observe_runs(&self, runs: impl IntoIterator<Item = (Duration, u64)>) {
        let mut counts = [0u64; BOUNDED_BUCKETS + 1];
        let mut sum = 0u64;
        for (latency, times) in runs {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            counts[bucket_of(micros)] += times;
            sum = sum.saturating_add(micros.saturating_mul(times));
        }
        for (bucket, count) in self.buckets.iter().zip(counts).filter(|(_, n)| *n > 0) {
            bucket.fetch_add(count, ORDER);
        }
        if sum > 0 {
            self.sum_micros.fetch_add(sum, ORDER);
        }
    }

    /// Reads every bucket.
    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| (upper_bound_seconds(i), count.load(ORDER)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        // Exact up to 2^53 µs (285 years).
        let sum_seconds = self.sum_micros.load(ORDER) as f64 / 1e6;
        LatencySnapshot { buckets, sum_seconds, count }
    }
}

/// The bucket of an observation: the first whose bound it does not exceed.
fn bucket_of(micros: u64) -> usize {
    (0..BOUNDED_BUCKETS).find(|i| micros <= FIRST_BOUND_MICROS << i).unwrap_or(BOUNDED_BUCKETS)
}

fn upper_bound_seconds(bucket: usize) -> f64 {
    if bucket >= BOUNDED_BUCKETS {
        return f64::INFINITY;
    }
    (FIRST_BOUND_MICROS << bucket) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_they_fit() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_micros(501));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets.len(), 17);
        assert_eq!(snapshot.buckets[0], (0.0005, 1));
        assert_eq!(snapshot.buckets[1], (0.001, 1));
        assert_eq!(snapshot.buckets[3], (0.004, 1), "3 ms is within 4 ms");
        assert_eq!(snapshot.buckets[16], (f64::INFINITY, 1));
        assert!((snapshot.sum_seconds - 60.004_001).abs() < 1e-9, "{}", snapshot.sum_seconds);
    }

    #[test]
    fn many_observations_at_once_count_as_one_by_one() {
        let latencies =
            [7, 500, 501, 3_000, 3_000, 2_000_000, 60_000_000].map(Duration::from_micros);
        let one_by_one = LatencyHistogram::default();
        latencies.iter().for_each(|l| one_by_one.observe(*l));
        let at_once = LatencyHistogram::default();
        let runs = [(7, 1), (500, 1), (501, 1), (3_000, 2), (2_000_000, 1), (60_000_000, 1)];
        at_once.observe_runs(runs.map(|(micros, times)| (Duration::from_micros(micros), times)));
        at_once.observe_runs([]);
        assert_eq!(at_once.snapshot(), one_by_one.snapshot());
        assert_eq!(at_once.snapshot().count, 7);
        let snapshot = at_once.snapshot();
        assert_eq!(snapshot.buckets[0], (0.0005, 2), "7 µs and 500 µs");
        assert_eq!(snapshot.buckets[3], (0.004, 2), "both 3 ms observations");
        assert_eq!(snapshot.buckets[16], (f64::INFINITY, 1), "60 s");
        assert!((snapshot.sum_seconds - 62.007_008).abs() < 1e-9, "{}", snapshot.sum_seconds);
    }
}
