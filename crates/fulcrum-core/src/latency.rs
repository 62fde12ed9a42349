//! A lock-free latency histogram for the data path to record into and the control plane to
//! read quantiles from (the auto drain timeout is 2 × a backend's observed p99).
//!
//! Buckets are log-linear: four per power of two from 1 µs up, so any quantile is known to
//! within 25 %. Two windows rotate (the control plane calls [`LatencyHistogram::rotate`], say
//! every minute), so "observed" means the last one to two windows, not all time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const SUB_BUCKETS: u64 = 4;
/// Enough for 2^40 µs (12 days).
const BUCKETS: usize = (4 + 38 * SUB_BUCKETS) as usize;

#[derive(Debug)]
pub struct LatencyHistogram {
    windows: [Vec<AtomicU64>; 2],
    current: AtomicUsize,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let window = || (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Self {
            windows: [window(), window()],
            current: AtomicUsize::new(0),
        }
    }
}

fn bucket(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let power = 63 - u64::from(micros.leading_zeros());
    let sub = (micros >> (power - 2)) & (SUB_BUCKETS - 1);
    (4 + (power - 2) * SUB_BUCKETS + sub).min(BUCKETS as u64 - 1) as usize
}

/// The largest value that falls into bucket `i` (quantiles round up: never optimistic).
fn upper_edge(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let power = (i as u64 - 4) / SUB_BUCKETS + 2;
    let sub = (i as u64 - 4) % SUB_BUCKETS;
    ((SUB_BUCKETS + sub + 1) << (power - 2)) - 1
}

impl LatencyHistogram {
    pub fn record(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let window = &self.windows[self.current.load(Ordering::Relaxed) & 1];
        window[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a new window; the one before the current is forgotten.
    pub fn rotate(&self) {
        let next = (self.current.load(Ordering::Relaxed) + 1) & 1;
        for b in &self.windows[next] {
            b.store(0, Ordering::Relaxed);
        }
        self.current.store(next, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.windows
            .iter()
            .flat_map(|w| w.iter())
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// The `q` quantile (0 < q ≤ 1) over both windows, or `None` without data.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = (0..BUCKETS)
            .map(|i| {
                self.windows[0][i].load(Ordering::Relaxed)
                    + self.windows[1][i].load(Ordering::Relaxed)
            })
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper_edge(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_within_a_quarter() {
        for v in [0u64, 1, 3, 4, 5, 7, 8, 100, 1_000, 200_000, 123_456_789] {
            let b = bucket(v);
            let upper = upper_edge(b);
            assert!(upper >= v, "{v} -> bucket {b} up to {upper}");
            assert!(
                upper as f64 <= (v as f64 * 1.25).max(3.0) + 1.0,
                "{v} -> {upper}"
            );
        }
    }

    #[test]
    fn p99_of_a_known_distribution() {
        let h = LatencyHistogram::default();
        for _ in 0..990 {
            h.record(Duration::from_millis(10));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(200));
        }
        let p99 = h.quantile(0.99).unwrap_or_default();
        assert!(
            p99 >= Duration::from_millis(10) && p99 < Duration::from_millis(13),
            "{p99:?}"
        );
        let p999 = h.quantile(0.999).unwrap_or_default();
        assert!(
            p999 >= Duration::from_millis(200) && p999 < Duration::from_millis(250),
            "{p999:?}"
        );
    }

    #[test]
    fn rotation_forgets_the_window_before_last() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_secs(5));
        h.rotate();
        assert_eq!(h.count(), 1, "the previous window still counts");
        h.rotate();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.99), None);
    }
}
