//! Balancing algorithms behind one trait (Pingora's shape): a [`Balancer`] is built once per
//! backend set from the weights, then asked for picks on the data path.
//!
//! Balancers are immutable apart from atomics, so a snapshot can be shared by every worker
//! thread without a lock. Live load (in-flight requests or connections) is read at pick time
//! through [`Candidates`], and randomness comes from the caller's [`RandomSource`].

mod least_conn;
mod p2c;
mod random;
mod round_robin;

use crate::config::Algorithm;
use crate::rand::RandomSource;

pub use least_conn::LeastConn;
pub use p2c::PowerOfTwoChoices;
pub use random::WeightedRandom;
pub use round_robin::SmoothRoundRobin;

/// What a balancer needs to know about the backends at the moment of a pick.
/// Index `i` is the position of the backend in the set the balancer was built for.
pub trait Candidates {
    /// Requests (L7) or connections (L4) currently in flight to backend `i`.
    fn in_flight(&self, i: usize) -> u64;

    /// True when backend `i` must not be picked this time (e.g. it already failed to
    /// connect for this request).
    fn is_excluded(&self, _i: usize) -> bool {
        false
    }
}

/// A plain list of in-flight counts, nothing excluded.
impl Candidates for Vec<u64> {
    fn in_flight(&self, i: usize) -> u64 {
        self[i]
    }
}

pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// The index of the chosen backend, or `None` when no backend can be picked.
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize>;
}

/// Builds the balancer for `algorithm` over backends with these weights (each ≥ 1).
pub fn build(algorithm: Algorithm, weights: &[u32]) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(SmoothRoundRobin::new(weights)),
        Algorithm::LeastConn => Box::new(LeastConn::new(weights)),
        Algorithm::Random => Box::new(WeightedRandom::new(weights)),
        Algorithm::P2c => Box::new(PowerOfTwoChoices::new(weights)),
    }
}

/// `a_load / a_weight < b_load / b_weight`, exactly (cross-multiplied, no floats).
fn lighter(a_load: u64, a_weight: u32, b_load: u64, b_weight: u32) -> std::cmp::Ordering {
    (u128::from(a_load) * u128::from(b_weight)).cmp(&(u128::from(b_load) * u128::from(a_weight)))
}

#[cfg(test)]
mod tests;
