//! Counters and histograms for the request path: each worker thread writes its own shard,
//! and the scrape adds the shards up. No lock, no allocation and no label lookup per
//! request, and no cache line written by two threads.
//!
//! A shard has exactly one writer — the worker thread that owns it — so an increment is a
//! relaxed load and a relaxed store (two plain moves on x86 and ARM), not a locked
//! read-modify-write. The atomics are there only so the scrape may read from another thread;
//! a second writer would lose increments (never memory safety), and the types that hold
//! shards hand each worker its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A counter with one writing thread.
#[derive(Debug, Default)]
pub struct OwnedCounter(AtomicU64);

impl OwnedCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed);
        self.0.store(value.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// What fulcrum adds to a request: from its head received to the request sent upstream,
/// pick and connect included (µs when a pooled connection is ready, ms when a connect or
/// a retry is needed). Bounds in nanoseconds.
pub const ROUTING: &[u64] = &[
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    S,
];

/// Request and connection durations, and a backend's time to answer: ms to minutes.
pub const DURATION: &[u64] = &[
    MS / 2,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    2 * S + S / 2,
    5 * S,
    10 * S,
    30 * S,
    60 * S,
    300 * S,
];

/// HA failover: from the active's last sign of life to a standby serving (100 ms to 10 s).
pub const FAILOVER: &[u64] = &[
    100 * MS,
    250 * MS,
    500 * MS,
    750 * MS,
    S,
    1500 * MS,
    2 * S,
    3 * S,
    5 * S,
    7500 * MS,
    10 * S,
    20 * S,
];

fn nanos(value: Duration) -> u64 {
    u64::try_from(value.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram with one writing thread: a count per bucket (not cumulative) and the sum.
#[derive(Debug)]
pub struct OwnedHistogram {
    /// One per bound, then the overflow (+Inf) bucket.
    counts: Box<[OwnedCounter]>,
    sum_nanos: OwnedCounter,
}

impl OwnedHistogram {
    pub fn new(bounds: &[u64]) -> Self {
        Self {
            counts: (0..=bounds.len())
                .map(|_| OwnedCounter::default())
                .collect(),
            sum_nanos: OwnedCounter::default(),
        }
    }

    #[inline]
    pub fn observe(&self, bounds: &[u64], value: Duration) {
        let nanos = nanos(value);
        let i = bounds.partition_point(|&bound| bound < nanos);
        if let Some(count) = self.counts.get(i) {
            count.inc();
        }
        self.sum_nanos.add(nanos);
    }
}

/// Histograms added up over shards, in the form the exposition wants.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSum {
    /// (upper bound in seconds, count in that bucket alone), the last bound +Inf.
    pub buckets: Vec<(f64, u64)>,
    bounds: &'static [u64],
    pub count: u64,
    pub sum_seconds: f64,
}

impl HistogramSum {
    pub fn empty(bounds: &'static [u64]) -> Self {
        let mut buckets: Vec<(f64, u64)> = bounds.iter().map(|&b| (b as f64 / 1e9, 0)).collect();
        buckets.push((f64::INFINITY, 0));
        Self {
            buckets,
            bounds,
            count: 0,
            sum_seconds: 0.0,
        }
    }

    pub fn add(&mut self, shard: &OwnedHistogram) {
        for (total, count) in self.buckets.iter_mut().zip(shard.counts.iter()) {
            let n = count.get();
            total.1 += n;
            self.count += n;
        }
        self.sum_seconds += shard.sum_nanos.get() as f64 / 1e9;
    }

    /// One observation, for histograms kept on the control plane (failovers).
    pub fn observe(&mut self, value: Duration) {
        let nanos = nanos(value);
        let i = self.bounds.partition_point(|&bound| bound < nanos);
        if let Some(bucket) = self.buckets.get_mut(i) {
            bucket.1 += 1;
        }
        self.count += 1;
        self.sum_seconds += value.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        const BOUNDS: &[u64] = &[MS, 10 * MS];
        let bounds = BOUNDS;
        let shard = OwnedHistogram::new(bounds);
        shard.observe(bounds, Duration::from_micros(1000)); // on the bound: le="0.001"
        shard.observe(bounds, Duration::from_micros(1001));
        shard.observe(bounds, Duration::from_secs(3)); // +Inf
        let other = OwnedHistogram::new(bounds);
        other.observe(bounds, Duration::from_micros(5));
        let mut sum = HistogramSum::empty(BOUNDS);
        sum.add(&shard);
        sum.add(&other);
        assert_eq!(
            sum.buckets,
            vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)],
            "per-bucket counts, not cumulative"
        );
        assert_eq!(sum.count, 4);
        assert!(
            (sum.sum_seconds - 3.002_006).abs() < 1e-9,
            "{}",
            sum.sum_seconds
        );
    }

    #[test]
    fn control_plane_observations_use_the_same_bounds() {
        let mut sum = HistogramSum::empty(FAILOVER);
        sum.observe(Duration::from_millis(100));
        sum.observe(Duration::from_millis(1200));
        sum.observe(Duration::from_secs(60));
        assert_eq!(sum.buckets[0], (0.1, 1));
        assert_eq!(sum.buckets[5], (1.5, 1));
        assert_eq!(sum.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(sum.count, 3);
    }

    #[test]
    fn bucket_bounds_rise() {
        for bounds in [ROUTING, DURATION, FAILOVER] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }
}
