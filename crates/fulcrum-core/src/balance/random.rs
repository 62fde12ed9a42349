//! Weighted random: each backend is chosen with probability weight ÷ total. Stateless, so it
//! needs no coordination at all between threads or between fulcrum instances.

use super::{Balancer, Candidates};
use crate::rand::RandomSource;

#[derive(Debug)]
pub struct WeightedRandom {
    /// `cumulative[i]` = sum of weights of backends `0..=i`.
    cumulative: Vec<u64>,
    weights: Vec<u32>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w.max(1));
                sum
            })
            .collect();
        Self {
            cumulative,
            weights: weights.iter().map(|&w| w.max(1)).collect(),
        }
    }

    pub(super) fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// One weighted draw among the backends that are not excluded.
    pub(super) fn draw(
        &self,
        candidates: &dyn Candidates,
        rng: &mut dyn RandomSource,
    ) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = rng.below(total);
        let i = self.cumulative.partition_point(|&c| c <= r);
        if !candidates.is_excluded(i) {
            return Some(i);
        }
        // Rare path (a retry after a failed connect): draw again among the rest.
        let remaining: u64 = (0..self.weights.len())
            .filter(|&j| !candidates.is_excluded(j))
            .map(|j| u64::from(self.weights[j]))
            .sum();
        if remaining == 0 {
            return None;
        }
        let mut r = rng.below(remaining);
        for j in (0..self.weights.len()).filter(|&j| !candidates.is_excluded(j)) {
            let w = u64::from(self.weights[j]);
            if r < w {
                return Some(j);
            }
            r -= w;
        }
        None
    }
}

impl WeightedRandom {
    /// Two weighted draws for the power of two choices, distinct whenever the set allows:
    /// a duplicate is redrawn a few times (Envoy and linkerd compare two different backends;
    /// comparing a backend with itself would hand a slow one 1/N² of the traffic regardless).
    pub(super) fn draw_pair(
        &self,
        candidates: &dyn Candidates,
        rng: &mut dyn RandomSource,
    ) -> Option<(usize, Option<usize>)> {
        const REDRAWS: usize = 4;
        let a = self.draw(candidates, rng)?;
        for _ in 0..=REDRAWS {
            match self.draw(candidates, rng) {
                Some(b) if b != a => return Some((a, Some(b))),
                Some(_) => continue,
                None => break,
            }
        }
        Some((a, None))
    }
}

impl Balancer for WeightedRandom {
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize> {
        self.draw(candidates, rng)
    }
}
