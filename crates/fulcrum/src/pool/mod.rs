//! Live pools. Each pool publishes immutable [`PoolSnapshot`]s that the data path reads with
//! one atomic load; behind them, the control plane (health probes, ticks, the admin API) keeps
//! the backend lifecycles from `fulcrum-core` under a mutex the data path never takes.
//!
//! Counters live in [`BackendStats`], shared across snapshot generations, so rebuilding a
//! snapshot never loses a connection count.

mod breakers;
mod control;
mod snapshot;
mod stats;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use breakers::{Breakers, RequestSlot};
pub use control::{
    AdminError, BackendStatus, DiscoveryStatus, DrainCounters, Pool, PoolCounters, PoolStatus,
};
pub use snapshot::{random_u64, LiveBackend, PoolSnapshot, Tried};
pub use stats::{BackendStats, InFlight};

use fulcrum_core::config;

/// The control plane's clock: time since fulcrum started, the form `fulcrum-core` takes.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// A clock that reads `by` already: a successor in a binary upgrade places its
    /// predecessor's recent moments (given as ages) on it. Monotonic time is the host's, so an
    /// age the predecessor measured on this host is always representable.
    pub fn backdated(by: Duration) -> Self {
        let now = Instant::now();
        Self {
            start: now.checked_sub(by).unwrap_or(now),
        }
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The wall-clock time (Unix seconds) of a moment on this clock.
    pub fn unix_seconds(&self, at: Duration) -> f64 {
        let ago = self.now().saturating_sub(at);
        std::time::SystemTime::now()
            .checked_sub(ago)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Every pool by name. A reload adds and removes pools; listeners hold their pool directly,
/// so this map is read only by the control plane and the admin API, never per request.
#[derive(Debug, Default)]
pub struct Pools {
    by_name: RwLock<BTreeMap<String, Arc<Pool>>>,
}

impl Pools {
    pub fn from_config(config: &config::Config, clock: Clock) -> Self {
        let pools = Pools::default();
        for (name, settings) in &config.pools {
            pools.insert(Arc::new(Pool::new(name, settings.clone(), clock)));
        }
        pools
    }

    pub fn get(&self, name: &str) -> Option<Arc<Pool>> {
        self.read().get(name).cloned()
    }

    /// Every pool, in name order.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.read().values().cloned().collect()
    }

    /// A reload's new pool.
    pub fn insert(&self, pool: Arc<Pool>) {
        self.write().insert(pool.name.clone(), pool);
    }

    /// A reload's removed pool (no listener sends to it any more).
    pub fn remove(&self, name: &str) -> Option<Arc<Pool>> {
        self.write().remove(name)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Pool>>> {
        // The map is replaced entry by entry; a panicking writer cannot leave it torn.
        self.by_name.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Pool>>> {
        self.by_name.write().unwrap_or_else(|p| p.into_inner())
    }
}
