//! Live pools: the backends of each pool with their counters, published as immutable
//! snapshots that the data path reads with one atomic load.
//!
//! A snapshot pairs a backend list with the balancer built for it. Counters (in flight,
//! requests, failures) live in [`BackendStats`], shared by address across snapshot
//! generations, so rebuilding a snapshot never loses a connection count.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use fulcrum_core::balance::{self, Balancer, Candidates};
use fulcrum_core::config;
use fulcrum_core::rand::{RandomSource, SplitMix64};
use serde::Serialize;

/// Live counters of one backend, kept across snapshot generations.
#[derive(Debug, Default)]
pub struct BackendStats {
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl BackendStats {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// A request (L7) or connection (L4) was handed to this backend.
    pub fn record_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Connect failure, upstream error or timeout.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one request or connection as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<BackendStats>);

impl InFlight {
    pub fn start(stats: &Arc<BackendStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend as the data path sees it in one snapshot.
#[derive(Debug, Clone)]
pub struct LiveBackend {
    pub addr: SocketAddr,
    pub weight: u32,
    pub stats: Arc<BackendStats>,
}

/// One immutable generation of a pool's backend set.
#[derive(Debug)]
pub struct PoolSnapshot {
    pub backends: Vec<LiveBackend>,
    balancer: Box<dyn Balancer>,
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

impl PoolSnapshot {
    /// The index of the backend to use next, skipping those already tried.
    pub fn pick(&self, tried: &Tried) -> Option<usize> {
        let view = View {
            backends: &self.backends,
            tried,
        };
        with_thread_rng(|rng| self.balancer.pick(&view, rng))
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

/// A pool: its settings, its current snapshot, and the counters of every backend it knows.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub settings: config::Pool,
    snapshot: ArcSwap<PoolSnapshot>,
    /// Control plane only: counters by address, reused when a backend reappears in a snapshot.
    stats: Mutex<HashMap<SocketAddr, Arc<BackendStats>>>,
}

impl Pool {
    pub fn new(name: &str, settings: config::Pool) -> Self {
        let pool = Self {
            name: name.to_string(),
            snapshot: ArcSwap::from_pointee(PoolSnapshot {
                backends: Vec::new(),
                balancer: balance::build(settings.algorithm, &[]),
            }),
            settings,
            stats: Mutex::new(HashMap::new()),
        };
        pool.publish(&pool.settings.backends.clone());
        pool
    }

    /// The current snapshot: one atomic load, no lock.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<PoolSnapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot as an owned handle, for holding across awaits.
    pub fn snapshot_full(&self) -> Arc<PoolSnapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a new backend set; counters of backends already known are kept.
    pub fn publish(&self, backends: &[config::Backend]) {
        let mut known = self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let live: Vec<LiveBackend> = backends
            .iter()
            .map(|b| LiveBackend {
                addr: b.addr,
                weight: b.weight,
                stats: Arc::clone(known.entry(b.addr).or_default()),
            })
            .collect();
        let weights: Vec<u32> = live.iter().map(|b| b.weight).collect();
        self.snapshot.store(Arc::new(PoolSnapshot {
            balancer: balance::build(self.settings.algorithm, &weights),
            backends: live,
        }));
    }

    pub fn status(&self) -> PoolStatus {
        let snapshot = self.snapshot();
        PoolStatus {
            name: self.name.clone(),
            algorithm: self.settings.algorithm.name(),
            backends: snapshot
                .backends
                .iter()
                .map(|b| BackendStatus {
                    addr: b.addr,
                    weight: b.weight,
                    in_flight: b.stats.in_flight(),
                    requests: b.stats.requests(),
                    failures: b.stats.failures(),
                })
                .collect(),
        }
    }
}

/// What the admin API reports about a pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub algorithm: &'static str,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub addr: SocketAddr,
    pub weight: u32,
    pub in_flight: u64,
    pub requests: u64,
    pub failures: u64,
}

/// Every pool by name.
#[derive(Debug, Default)]
pub struct Pools {
    by_name: HashMap<String, Arc<Pool>>,
    order: Vec<String>,
}

impl Pools {
    pub fn from_config(config: &config::Config) -> Self {
        let mut pools = Pools::default();
        for (name, settings) in &config.pools {
            pools
                .by_name
                .insert(name.clone(), Arc::new(Pool::new(name, settings.clone())));
            pools.order.push(name.clone());
        }
        pools
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.by_name.get(name)
    }

    /// Pools in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.order.iter().filter_map(|n| self.by_name.get(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(addrs: &[u16]) -> config::Pool {
        let text = format!(
            "[[listeners]]\nname='l'\nbind='127.0.0.1:1'\nprotocol='tcp'\npool='p'\n[pools.p]\nbackends=[{}]\n",
            addrs
                .iter()
                .map(|p| format!("{{addr='127.0.0.1:{p}'}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let config = config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
        config.pools["p"].clone()
    }

    #[test]
    fn counters_survive_a_new_snapshot() {
        let pool = Pool::new("p", settings(&[1, 2]));
        let first = Arc::clone(&pool.snapshot().backends[1].stats);
        let _held = InFlight::start(&first);
        first.record_request();
        let mut next = settings(&[2, 3]).backends;
        next.reverse();
        pool.publish(&next);
        let snapshot = pool.snapshot();
        let same = snapshot
            .backends
            .iter()
            .find(|b| b.addr.port() == 2)
            .map(|b| (b.stats.in_flight(), b.stats.requests()));
        assert_eq!(same, Some((1, 1)));
    }

    #[test]
    fn tried_backends_are_skipped() {
        let pool = Pool::new("p", settings(&[1, 2]));
        let snapshot = pool.snapshot();
        let mut tried = Tried::default();
        let first = snapshot.pick(&tried).unwrap_or(usize::MAX);
        tried.push(first);
        let second = snapshot.pick(&tried).unwrap_or(usize::MAX);
        assert_ne!(first, second);
        tried.push(second);
        assert_eq!(snapshot.pick(&tried), None);
    }
}
