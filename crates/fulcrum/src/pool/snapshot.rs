//! One immutable generation of a pool's backend set: the backends in rotation with their
//! effective weights, and the balancer built for exactly those weights.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::balance::{Balancer, Candidates};
use fulcrum_core::rand::{RandomSource, SplitMix64};

use super::stats::BackendStats;
use super::Clock;

/// A backend as the data path sees it in one snapshot.
#[derive(Debug, Clone)]
pub struct LiveBackend {
    pub addr: SocketAddr,
    /// Effective weight in the balancer's units (configured weight × health × 1000).
    pub weight: u32,
    /// Effective share of the configured weight, 0 … 1. Hashing snapshots hold every backend
    /// and skip those at 0; the others hold only backends in rotation.
    pub fraction: f64,
    pub stats: Arc<BackendStats>,
}

#[derive(Debug)]
pub struct PoolSnapshot {
    pub backends: Vec<LiveBackend>,
    balancer: Arc<dyn Balancer>,
    /// Set for `p2c_ewma`: picks read latency estimates, which need the time.
    latency_clock: Option<Clock>,
}

impl PoolSnapshot {
    pub fn new(
        backends: Vec<LiveBackend>,
        balancer: Arc<dyn Balancer>,
        latency_clock: Option<Clock>,
    ) -> Self {
        Self {
            backends,
            balancer,
            latency_clock,
        }
    }

    /// The index of the backend to use next for a request with this hash key (if any),
    /// skipping those already tried.
    pub fn pick(&self, tried: &Tried, key: Option<u64>) -> Option<usize> {
        let view = View {
            backends: &self.backends,
            tried,
            key,
            now: self.latency_clock.map(|c| c.now()),
        };
        with_thread_rng(|rng| self.balancer.pick(&view, rng))
    }
}

/// A random value from this worker's generator (sticky cookie values).
pub fn random_u64() -> u64 {
    with_thread_rng(|rng| rng.next_u64())
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
    key: Option<u64>,
    now: Option<Duration>,
}

impl Candidates for View<'_> {
    fn in_flight(&self, i: usize) -> u64 {
        self.backends[i].stats.in_flight()
    }
    fn is_excluded(&self, i: usize) -> bool {
        self.backends[i].fraction <= 0.0 || self.tried.contains(i)
    }
    fn hash(&self) -> Option<u64> {
        self.key
    }
    fn fraction(&self, i: usize) -> f64 {
        self.backends[i].fraction
    }
    fn latency(&self, i: usize) -> f64 {
        self.now
            .map_or(0.0, |now| self.backends[i].stats.ewma.estimate(now))
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
