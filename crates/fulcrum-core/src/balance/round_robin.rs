//! Smooth weighted round robin, nginx's algorithm: every pick adds each backend's weight to
//! its running score, takes the highest score and subtracts the total from it. Weights 5,1,1
//! give `a a b a c a a`, spreading the light backends out instead of bunching them.
//!
//! The whole cycle is precomputed when the backend set changes, so a pick is one atomic
//! increment and an index: no lock, no per-pick mutation of shared scores. The position in
//! the rotation is shared by every balancer a pool builds over time (see [`Rotation`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Balancer, Candidates};
use crate::rand::RandomSource;

/// Longest precomputed cycle. Larger weight sums are scaled down proportionally, which keeps
/// shares within 1/65 536 of the configured ones for typical pools.
const MAX_CYCLE: u64 = 1 << 16;
/// Bound on the work to build a cycle (cycle length × backends): a rebuild runs on the
/// control thread on every tick that changes an effective weight (slow start, decay), so it
/// must stay in the low milliseconds even for large pools.
const MAX_BUILD_STEPS: u64 = 1 << 23;

/// Where a rotation stands, shared by every balancer a pool builds over time. Slow start and
/// decay change effective weights on every control tick, and each change builds a new cycle;
/// a cycle that restarted at position 0 each time would, at modest request rates, only ever
/// use its first positions, starving the backends placed late in it for the whole ramp —
/// exactly during a deployment. Continuing from the shared position keeps every backend's
/// share, because a smooth cycle spreads each backend evenly over its whole length.
#[derive(Debug, Clone, Default)]
pub struct Rotation(Arc<AtomicUsize>);

impl Rotation {
    /// The next position; successive calls (from any generation) walk on in order.
    fn advance(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct SmoothRoundRobin {
    cycle: Vec<u32>,
    rotation: Rotation,
}

impl SmoothRoundRobin {
    /// A rotation of its own, starting at the first position.
    pub fn new(weights: &[u32]) -> Self {
        Self::with_rotation(weights, Rotation::default())
    }

    /// A rotation that continues where `rotation` stands (the pool's earlier balancers).
    pub fn with_rotation(weights: &[u32], rotation: Rotation) -> Self {
        Self {
            cycle: smooth_cycle(weights),
            rotation,
        }
    }

    /// The next position in the cycle; successive calls walk it in order.
    pub(super) fn advance(&self) -> usize {
        self.rotation.advance()
    }

    /// Backend indices in the order of the cycle, starting at `start`, once round.
    pub(super) fn walk_from(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        let len = self.cycle.len();
        (0..len).map(move |k| self.cycle[(start + k) % len] as usize)
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(&self, candidates: &dyn Candidates, _rng: &mut dyn RandomSource) -> Option<usize> {
        if self.cycle.is_empty() {
            return None;
        }
        let start = self.advance();
        self.walk_from(start).find(|&i| !candidates.is_excluded(i))
    }
}

/// One full cycle of nginx's smooth weighted round robin.
fn smooth_cycle(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let weights = reduce(weights);
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

/// Divides weights by their greatest common divisor, then scales them down if the cycle
/// would be too long to precompute cheaply. Every backend keeps a weight of at least 1.
fn reduce(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w.max(1)));
    let reduced: Vec<u32> = weights.iter().map(|&w| w.max(1) / g).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    let n = weights.len() as u64;
    let cap = (MAX_BUILD_STEPS / n).min(MAX_CYCLE).max(n);
    if total <= cap {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| ((u64::from(w) * cap + total / 2) / total).max(1) as u32)
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_example_sequence() {
        let names: String = smooth_cycle(&[5, 1, 1])
            .iter()
            .map(|&i| (b'a' + i as u8) as char)
            .collect();
        assert_eq!(names, "aabacaa");
    }

    #[test]
    fn a_rebuilt_cycle_continues_the_rotation_instead_of_restarting_it() {
        use crate::rand::SplitMix64;
        // Ten equal backends and one warming up; the cycle is rebuilt after every 5 picks
        // (a control tick at ~100 requests/s) while the newcomer's weight ramps.
        let rotation = Rotation::default();
        let mut picks = vec![0usize; 11];
        let mut rng = SplitMix64::new(1);
        for tick in 0..60u32 {
            let mut weights = vec![1000u32; 10];
            weights.push(100 + tick * 15);
            let balancer = SmoothRoundRobin::with_rotation(&weights, rotation.clone());
            for _ in 0..5 {
                let i = balancer.pick(&vec![0u64; 11], &mut rng).unwrap_or(99);
                picks[i] += 1;
            }
        }
        // 300 picks: each old backend's share is about 27; restarting at position 0 on every
        // rebuild would give the first five backends all of them.
        for (i, &n) in picks[..10].iter().enumerate() {
            assert!((20..=35).contains(&n), "backend {i} got {n}: {picks:?}");
        }
    }

    #[test]
    fn common_factors_do_not_lengthen_the_cycle() {
        assert_eq!(smooth_cycle(&[200, 100]).len(), 3);
    }

    #[test]
    fn huge_weight_sums_are_scaled_but_keep_every_backend() {
        let weights: Vec<u32> = (0..100).map(|i| if i == 0 { 1 } else { 9_999 }).collect();
        let cycle = smooth_cycle(&weights);
        assert!(cycle.len() as u64 <= MAX_CYCLE + 100);
        assert!(cycle.contains(&0));
    }
}
