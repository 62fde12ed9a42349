//! What ring hash and Maglev share: hashing stable bytes with xxh3 (never std's `Hash`, which
//! may differ between builds), and the walk from the landed candidate to the next acceptable
//! one. A candidate is skipped when it is excluded (out of rotation, or already tried), when
//! the key falls outside its effective share (slow start or decay, decided per key so the same
//! keys stay as the share grows), or when bounded load says it is full.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Candidates;

pub fn hash(bytes: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(bytes, seed)
}

/// Per-key, per-backend value in 0..10 000, for the effective-share test.
fn share_point(key: u64, backend: usize) -> u64 {
    let mut x = key ^ (backend as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x = (x ^ (x >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    (x ^ (x >> 33)) % 10_000
}

/// Decides, for one pick, whether a landed backend takes the key.
pub struct Acceptance<'a> {
    candidates: &'a dyn Candidates,
    key: u64,
    /// Bounded load: a backend with this many in flight or more is full.
    bound: Option<u64>,
}

impl<'a> Acceptance<'a> {
    pub fn new(
        candidates: &'a dyn Candidates,
        key: u64,
        n: usize,
        balance_factor: Option<f64>,
    ) -> Self {
        // Bounded load needs the mean, which costs a pass over the pool; without it a pick
        // touches only the candidates it walks past.
        let bound = balance_factor.and_then(|c| {
            let (mut available, mut total) = (0u64, 0u64);
            for i in (0..n).filter(|&i| !candidates.is_excluded(i)) {
                available += 1;
                total += candidates.in_flight(i);
            }
            // HAProxy's and Envoy's rule: no backend above ⌈c × (total + 1) / n⌉, counting
            // the request being placed.
            (available > 0).then(|| {
                ((c * (total + 1) as f64) / available as f64)
                    .ceil()
                    .max(1.0) as u64
            })
        });
        Self {
            candidates,
            key,
            bound,
        }
    }

    pub fn usable(&self, i: usize) -> bool {
        !self.candidates.is_excluded(i)
    }

    pub fn accepts(&self, i: usize) -> bool {
        if self.candidates.is_excluded(i) {
            return false;
        }
        let fraction = self.candidates.fraction(i);
        if fraction < 1.0 && (share_point(self.key, i) as f64) >= fraction * 10_000.0 {
            return false;
        }
        self.bound
            .is_none_or(|bound| self.candidates.in_flight(i) < bound)
    }
}

/// Walks `order` (backend indices in candidate order) to the first backend that accepts the
/// key; if none does (all full or outside their share), the first usable one.
pub fn walk(acceptance: &Acceptance<'_>, order: impl Iterator<Item = usize>) -> Option<usize> {
    let mut first_usable = None;
    for i in order {
        if acceptance.accepts(i) {
            return Some(i);
        }
        if first_usable.is_none() && acceptance.usable(i) {
            first_usable = Some(i);
        }
    }
    first_usable
}
