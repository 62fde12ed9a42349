//! Peak-EWMA latency estimate (Finagle's and linkerd2-proxy's): a backend's estimate jumps up
//! at once to any slower observation (the peak) and decays smoothly towards faster ones, so a
//! backend that turns slow loses traffic within a few requests. While a backend gets no
//! traffic its estimate decays towards zero, so it is tried again and can earn its share back.
//!
//! The state is two atomics, updated by the data path without a lock; concurrent updates may
//! lose one observation, which an estimate can afford. Time is an argument.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct PeakEwma {
    /// Estimate in nanoseconds, as f64 bits; `NO_DATA` before the first observation.
    estimate: AtomicU64,
    /// When the estimate was last updated, in nanoseconds on the caller's clock.
    updated: AtomicU64,
    decay_nanos: f64,
    default_nanos: f64,
}

const NO_DATA: u64 = u64::MAX;

impl PeakEwma {
    pub fn new(decay: Duration, default_rtt: Duration) -> Self {
        Self {
            estimate: AtomicU64::new(NO_DATA),
            updated: AtomicU64::new(0),
            decay_nanos: (decay.as_nanos() as f64).max(1.0),
            default_nanos: default_rtt.as_nanos() as f64,
        }
    }

    fn decayed(&self, now: Duration) -> Option<f64> {
        let bits = self.estimate.load(Ordering::Relaxed);
        if bits == NO_DATA {
            return None;
        }
        let elapsed = (now.as_nanos() as u64).saturating_sub(self.updated.load(Ordering::Relaxed));
        Some(f64::from_bits(bits) * (-(elapsed as f64) / self.decay_nanos).exp())
    }

    /// Records one latency observation taken at `now`.
    pub fn observe(&self, now: Duration, rtt: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let next = match self.decayed(now) {
            None => rtt,
            Some(current) if rtt > current => rtt,
            Some(_) => {
                // Weight the old estimate by how recent it is: a stale one counts for little.
                let bits = self.estimate.load(Ordering::Relaxed);
                let elapsed =
                    (now.as_nanos() as u64).saturating_sub(self.updated.load(Ordering::Relaxed));
                let w = (-(elapsed as f64) / self.decay_nanos).exp();
                f64::from_bits(bits) * w + rtt * (1.0 - w)
            }
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.updated.store(now.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The estimate at `now`, in seconds (the default RTT before any observation).
    pub fn estimate(&self, now: Duration) -> f64 {
        self.decayed(now).unwrap_or(self.default_nanos) / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn default_before_data_then_peaks_at_once_and_decays_smoothly() {
        let e = PeakEwma::new(Duration::from_secs(10), ms(30));
        assert!((e.estimate(ms(0)) - 0.030).abs() < 1e-9);
        e.observe(ms(0), ms(10));
        assert!((e.estimate(ms(0)) - 0.010).abs() < 1e-9);
        // One slow answer: the estimate jumps to it.
        e.observe(ms(100), ms(200));
        assert!((e.estimate(ms(100)) - 0.200).abs() < 1e-9);
        // Fast answers pull it down gradually, not at once.
        e.observe(ms(1100), ms(10));
        let after = e.estimate(ms(1100));
        assert!(after > 0.15 && after < 0.2, "{after}");
        // Without traffic it decays towards zero (time constant 10 s).
        let later = e.estimate(ms(11_100));
        assert!((later - after * (-1.0f64).exp()).abs() < 1e-6, "{later}");
    }
}
