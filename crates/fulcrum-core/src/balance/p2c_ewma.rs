//! Power of two choices on peak-EWMA latency (linkerd2-proxy's and Finagle's balancer): draw
//! two backends at random (weighted), send to the lower cost = latency estimate ×
//! (in flight + 1) ÷ weight. A backend that turns slow loses traffic within a few requests,
//! long before a health check could notice.

use super::random::WeightedRandom;
use super::{Balancer, Candidates};
use crate::rand::RandomSource;

#[derive(Debug)]
pub struct PeakEwmaP2c {
    random: WeightedRandom,
}

impl PeakEwmaP2c {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            random: WeightedRandom::new(weights),
        }
    }

    fn cost(&self, candidates: &dyn Candidates, i: usize) -> f64 {
        candidates.latency(i) * (candidates.in_flight(i) + 1) as f64
            / f64::from(self.random.weight(i))
    }
}

impl Balancer for PeakEwmaP2c {
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize> {
        let (a, b) = self.random.draw_pair(candidates, rng)?;
        let Some(b) = b else {
            return Some(a);
        };
        Some(if self.cost(candidates, b) < self.cost(candidates, a) {
            b
        } else {
            a
        })
    }
}
