//! Balancing algorithms behind one trait (Pingora's shape): a [`Balancer`] is built once per
//! backend set from the weights, then asked for picks on the data path.
//!
//! Balancers are immutable apart from atomics, so a snapshot can be shared by every worker
//! thread without a lock. Live load (in-flight requests or connections) is read at pick time
//! through [`Candidates`], and randomness comes from the caller's [`RandomSource`].

mod hashing;
mod least_conn;
mod maglev;
mod p2c;
mod p2c_ewma;
mod random;
mod ring_hash;
mod round_robin;

use crate::config::Algorithm;
use crate::rand::RandomSource;

pub use hashing::hash as stable_hash;
pub use least_conn::LeastConn;
pub use maglev::Maglev;
pub use p2c::PowerOfTwoChoices;
pub use p2c_ewma::PeakEwmaP2c;
pub use random::WeightedRandom;
pub use ring_hash::RingHash;
pub use round_robin::{Rotation, SmoothRoundRobin};

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

    /// The request's hash key (hashing algorithms); `None` when the request has none.
    fn hash(&self) -> Option<u64> {
        None
    }

    /// Backend `i`'s effective share of its configured weight, 0 … 1 (slow start, decay).
    /// Hashing algorithms build on configured weights and apply this per key.
    fn fraction(&self, _i: usize) -> f64 {
        1.0
    }

    /// Backend `i`'s latency estimate (peak EWMA), for `p2c_ewma`.
    fn latency(&self, _i: usize) -> f64 {
        0.0
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

/// Settings of the hashing algorithms (ignored by the others).
#[derive(Debug, Clone, PartialEq)]
pub struct HashParams {
    pub ring_points: u32,
    pub maglev_table_size: u32,
    /// Bounded load: no backend above ⌈c × mean in-flight⌉.
    pub balance_factor: Option<f64>,
    /// For requests without a key: `Random` or `RoundRobin`.
    pub fallback: Algorithm,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            ring_points: 160,
            maglev_table_size: 65_537,
            balance_factor: None,
            fallback: Algorithm::Random,
        }
    }
}

/// Builds the balancer for `algorithm` over backends with these weights (each ≥ 1), naming
/// backend `i` by its index (tests, or algorithms that do not hash).
pub fn build(algorithm: Algorithm, weights: &[u32]) -> Box<dyn Balancer> {
    let names: Vec<String> = (0..weights.len()).map(|i| i.to_string()).collect();
    let ids: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    build_for(algorithm, &ids, weights, &HashParams::default())
}

/// Builds the balancer for `algorithm`; `ids` are the backends' stable identities (their
/// addresses), which hashing algorithms hash so every instance builds the same table.
pub fn build_for(
    algorithm: Algorithm,
    ids: &[&[u8]],
    weights: &[u32],
    params: &HashParams,
) -> Box<dyn Balancer> {
    build_continuing(algorithm, ids, weights, params, &Rotation::default())
}

/// As [`build_for`], with round-robin positions (round robin, least_conn's tie-break, the
/// hashing fallback) continuing `rotation`: a pool passes the same one to every rebuild.
pub fn build_continuing(
    algorithm: Algorithm,
    ids: &[&[u8]],
    weights: &[u32],
    params: &HashParams,
    rotation: &Rotation,
) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => {
            Box::new(SmoothRoundRobin::with_rotation(weights, rotation.clone()))
        }
        Algorithm::LeastConn => Box::new(LeastConn::with_rotation(weights, rotation.clone())),
        Algorithm::Random => Box::new(WeightedRandom::new(weights)),
        Algorithm::P2c => Box::new(PowerOfTwoChoices::new(weights)),
        Algorithm::P2cEwma => Box::new(PeakEwmaP2c::new(weights)),
        Algorithm::RingHash => Box::new(RingHash::new(
            ids,
            weights,
            params.ring_points,
            params.balance_factor,
            fallback(params, weights, rotation),
        )),
        Algorithm::Maglev => Box::new(Maglev::new(
            ids,
            weights,
            params.maglev_table_size,
            params.balance_factor,
            fallback(params, weights, rotation),
        )),
    }
}

fn fallback(params: &HashParams, weights: &[u32], rotation: &Rotation) -> Box<dyn Balancer> {
    match params.fallback {
        Algorithm::RoundRobin => {
            Box::new(SmoothRoundRobin::with_rotation(weights, rotation.clone()))
        }
        _ => Box::new(WeightedRandom::new(weights)),
    }
}

/// `a_load / a_weight < b_load / b_weight`, exactly (cross-multiplied, no floats).
fn lighter(a_load: u64, a_weight: u32, b_load: u64, b_weight: u32) -> std::cmp::Ordering {
    (u128::from(a_load) * u128::from(b_weight)).cmp(&(u128::from(b_load) * u128::from(a_weight)))
}

#[cfg(test)]
mod hashing_tests;
#[cfg(test)]
mod tests;
