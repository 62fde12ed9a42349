//! Ketama-style consistent hashing: each backend owns `points × weight` points on a 64-bit
//! ring (xxh3 of "address-index"); a key goes to the first point at or after its hash. Adding
//! or removing one backend moves only the keys between its points and their predecessors:
//! about 1/N of them, and never between two other backends.

use super::hashing::{hash, walk, Acceptance};
use super::{Balancer, Candidates};
use crate::rand::RandomSource;

#[derive(Debug)]
pub struct RingHash {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, u32)>,
    backends: usize,
    balance_factor: Option<f64>,
    fallback: Box<dyn Balancer>,
}

impl RingHash {
    /// `ids` are stable identities (the backend addresses as text), so every instance with
    /// the same configuration builds the same ring.
    pub fn new(
        ids: &[&[u8]],
        weights: &[u32],
        points_per_weight: u32,
        balance_factor: Option<f64>,
        fallback: Box<dyn Balancer>,
    ) -> Self {
        let mut ring = Vec::new();
        let mut label = Vec::with_capacity(64);
        for (i, (id, weight)) in ids.iter().zip(weights).enumerate() {
            for point in 0..u64::from(points_per_weight) * u64::from((*weight).max(1)) {
                label.clear();
                label.extend_from_slice(id);
                label.push(b'-');
                label.extend_from_slice(point.to_string().as_bytes());
                ring.push((hash(&label, 0), i as u32));
            }
        }
        ring.sort_unstable();
        Self {
            ring,
            backends: ids.len(),
            balance_factor,
            fallback,
        }
    }

    pub fn points(&self) -> usize {
        self.ring.len()
    }

    /// Each backend's share of the hash space (the arcs that end at its points).
    pub fn ownership(&self) -> Vec<f64> {
        let mut share = vec![0.0; self.backends];
        let Some(&(last, _)) = self.ring.last() else {
            return share;
        };
        let mut previous = last;
        for &(point, backend) in &self.ring {
            share[backend as usize] += point.wrapping_sub(previous) as f64 / 2f64.powi(64);
            previous = point;
        }
        share
    }
}

impl Balancer for RingHash {
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize> {
        let Some(key) = candidates.hash() else {
            return self.fallback.pick(candidates, rng);
        };
        if self.ring.is_empty() {
            return None;
        }
        let acceptance = Acceptance::new(candidates, key, self.backends, self.balance_factor);
        let start = self.ring.partition_point(|&(point, _)| point < key);
        let len = self.ring.len();
        walk(
            &acceptance,
            (0..len).map(|k| self.ring[(start + k) % len].1 as usize),
        )
    }
}
