//! One immutable generation of a pool's backend set: the backends in rotation with their
//! effective weights, and the balancer built for exactly those weights.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use fulcrum_core::balance::{self, Balancer, Candidates};
use fulcrum_core::config::Algorithm;
use fulcrum_core::rand::{RandomSource, SplitMix64};

use super::stats::BackendStats;

/// A backend as the data path sees it in one snapshot.
#[derive(Debug, Clone)]
pub struct LiveBackend {
    pub addr: SocketAddr,
    /// Effective weight in the balancer's units (configured weight × health × 1000).
    pub weight: u32,
    pub stats: Arc<BackendStats>,
}

#[derive(Debug)]
pub struct PoolSnapshot {
    pub backends: Vec<LiveBackend>,
    balancer: Box<dyn Balancer>,
}

impl PoolSnapshot {
    pub fn new(algorithm: Algorithm, backends: Vec<LiveBackend>) -> Self {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        Self {
            balancer: balance::build(algorithm, &weights),
            backends,
        }
    }

    /// The index of the backend to use next, skipping those already tried.
    pub fn pick(&self, tried: &Tried) -> Option<usize> {
        let view = View {
            backends: &self.backends,
            tried,
        };
        with_thread_rng(|rng| self.balancer.pick(&view, rng))
    }
}

/// Backends already tried for one request; connect attempts are capped at 10 by config.
#[derive(Debug, Default)]
pub struct Tried {
    indices: [usize; 10],
    len: usize,
}

impl Tried {
    pub fn push(&mut self, i: usize) {
        if self.len < self.indices.len() {
            self.indices[self.len] = i;
            self.len += 1;
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn contains(&self, i: usize) -> bool {
        self.indices[..self.len].contains(&i)
    }
}

struct View<'a> {
    backends: &'a [LiveBackend],
    tried: &'a Tried,
}

impl Candidates for View<'_> {
    fn in_flight(&self, i: usize) -> u64 {
        self.backends[i].stats.in_flight()
    }
    fn is_excluded(&self, i: usize) -> bool {
        self.tried.contains(i)
    }
}

thread_local! {
    static RNG_STATE: Cell<u64> = Cell::new(thread_seed());
}

fn thread_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per process and differs per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// Runs `f` with this thread's generator: no lock, no sharing between workers.
fn with_thread_rng<R>(f: impl FnOnce(&mut dyn RandomSource) -> R) -> R {
    RNG_STATE.with(|state| {
        let mut rng = SplitMix64::new(state.get());
        let out = f(&mut rng);
        state.set(rng.state());
        out
    })
}
