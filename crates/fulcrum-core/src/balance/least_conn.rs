//! Weighted least connections: the backend with the fewest in-flight requests per unit of
//! weight. Ties are broken by smooth weighted round robin among the tied backends (as nginx
//! does), so an idle pool is spread by weight and never falls onto "always the first".

use std::cmp::Ordering;

use super::round_robin::{Rotation, SmoothRoundRobin};
use super::{lighter, Balancer, Candidates};
use crate::rand::RandomSource;

/// How far to walk the round-robin cycle looking for a tied backend before falling back to a
/// weighted random choice among the tied ones (keeps the worst case bounded).
const MAX_TIE_WALK: usize = 64;

#[derive(Debug)]
pub struct LeastConn {
    weights: Vec<u32>,
    rotation: SmoothRoundRobin,
}

impl LeastConn {
    pub fn new(weights: &[u32]) -> Self {
        Self::with_rotation(weights, Rotation::default())
    }

    /// Ties are broken by a rotation that continues the pool's earlier balancers' one.
    pub fn with_rotation(weights: &[u32], rotation: Rotation) -> Self {
        Self {
            weights: weights.iter().map(|&w| w.max(1)).collect(),
            rotation: SmoothRoundRobin::with_rotation(weights, rotation),
        }
    }

    fn ratio_cmp(&self, candidates: &dyn Candidates, a: usize, b: usize) -> Ordering {
        lighter(
            candidates.in_flight(a),
            self.weights[a],
            candidates.in_flight(b),
            self.weights[b],
        )
    }
}

impl Balancer for LeastConn {
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut ties = 0usize;
        let mut tied_weight = 0u64;
        for i in (0..self.weights.len()).filter(|&i| !candidates.is_excluded(i)) {
            match best.map(|b| self.ratio_cmp(candidates, i, b)) {
                None | Some(Ordering::Less) => {
                    best = Some(i);
                    ties = 1;
                    tied_weight = u64::from(self.weights[i]);
                }
                Some(Ordering::Equal) => {
                    ties += 1;
                    tied_weight += u64::from(self.weights[i]);
                }
                Some(Ordering::Greater) => {}
            }
        }
        let best = best?;
        if ties == 1 {
            return Some(best);
        }
        let is_tied = |i: usize| {
            !candidates.is_excluded(i) && self.ratio_cmp(candidates, i, best) == Ordering::Equal
        };
        let start = self.rotation.advance();
        if let Some(i) = self
            .rotation
            .walk_from(start)
            .take(MAX_TIE_WALK)
            .find(|&i| is_tied(i))
        {
            return Some(i);
        }
        let mut r = rng.below(tied_weight);
        for i in (0..self.weights.len()).filter(|&i| is_tied(i)) {
            let w = u64::from(self.weights[i]);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        Some(best)
    }
}
