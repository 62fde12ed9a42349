//! Maglev hashing (Google's, weighted as in Envoy): every backend fills slots of a prime-sized
//! table following its own permutation, in turns proportional to its weight, so each owns a
//! near-equal share of slots and a lookup is one index. Built off the data path whenever the
//! backend set changes; adding one backend to N moves a little more than 1/(N+1) of the keys.

use super::hashing::{hash, walk, Acceptance};
use super::{Balancer, Candidates};
use crate::rand::RandomSource;

const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
    backends: usize,
    balance_factor: Option<f64>,
    fallback: Box<dyn Balancer>,
}

impl Maglev {
    /// `size` must be prime (validated by the configuration) and larger than the number of
    /// backends.
    pub fn new(
        ids: &[&[u8]],
        weights: &[u32],
        size: u32,
        balance_factor: Option<f64>,
        fallback: Box<dyn Balancer>,
    ) -> Self {
        Self {
            table: build_table(ids, weights, u64::from(size)),
            backends: ids.len(),
            balance_factor,
            fallback,
        }
    }

    pub fn table(&self) -> &[u32] {
        &self.table
    }
}

fn build_table(ids: &[&[u8]], weights: &[u32], size: u64) -> Vec<u32> {
    let n = ids.len();
    if n == 0 || size == 0 {
        return Vec::new();
    }
    let offset: Vec<u64> = ids.iter().map(|id| hash(id, 0x6D61_676C) % size).collect();
    let skip: Vec<u64> = ids
        .iter()
        .map(|id| hash(id, 0x7365_6564) % (size - 1) + 1)
        .collect();
    let total: f64 = weights.iter().map(|&w| f64::from(w.max(1))).sum();
    let normalized: Vec<f64> = weights
        .iter()
        .map(|&w| f64::from(w.max(1)) / total)
        .collect();
    let max_normalized = normalized.iter().copied().fold(0.0, f64::max);
    let mut target = vec![0.0f64; n];
    let mut next = vec![0u64; n];
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < size {
        for i in 0..n {
            if (iteration as f64) * normalized[i] < target[i] {
                continue;
            }
            target[i] += max_normalized;
            loop {
                let slot = ((offset[i] + next[i] * skip[i]) % size) as usize;
                next[i] += 1;
                if table[slot] == EMPTY {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break;
            }
        }
        iteration += 1;
    }
    table
}

impl Balancer for Maglev {
    fn pick(&self, candidates: &dyn Candidates, rng: &mut dyn RandomSource) -> Option<usize> {
        let Some(key) = candidates.hash() else {
            return self.fallback.pick(candidates, rng);
        };
        if self.table.is_empty() {
            return None;
        }
        let acceptance = Acceptance::new(candidates, key, self.backends, self.balance_factor);
        let len = self.table.len();
        let start = (key % len as u64) as usize;
        walk(
            &acceptance,
            (0..len).map(|k| self.table[(start + k) % len] as usize),
        )
    }
}
