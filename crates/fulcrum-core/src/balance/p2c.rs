//! Power of two choices: draw two different backends at random (weighted), send to the one with fewer
//! in-flight requests per unit of weight. Almost as good as least connections at avoiding a
//! loaded backend, without scanning the pool and without herding every thread onto the same
//! "least loaded" backend at once.

use std::cmp::Ordering;

use super::random::WeightedRandom;
use super::{lighter, Balancer, Candidates};
use crate::rand::RandomSource;

#[derive(Debug)]
pub struct PowerOfTwoChoices {
    random: WeightedRandom,
}

impl PowerOfTwoChoices {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            random: WeightedRandom::new(weights),
        }
    }
}

impl Balancer for PowerOfTwoChoices {
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize> {
        let (a, b) = self.random.draw_pair(candidates, rng)?;
        let Some(b) = b else {
            return Some(a);
        };
        // On a tie keep the first draw: it is itself a weighted random choice, so idle pools
        // still receive traffic in proportion to weight.
        let order = lighter(
            candidates.in_flight(b),
            self.random.weight(b),
            candidates.in_flight(a),
            self.random.weight(a),
        );
        Some(if order == Ordering::Less { b } else { a })
    }
}
