//! Live pools. Each pool publishes immutable [`PoolSnapshot`]s that the data path reads with
//! one atomic load; behind them, the control plane (health probes, ticks, the admin API) keeps
//! the backend lifecycles from `fulcrum-core` under a mutex the data path never takes.
//!
//! Counters live in [`BackendStats`], shared across snapshot generations, so rebuilding a
//! snapshot never loses a connection count.

mod control;
mod snapshot;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use control::{AdminError, BackendStatus, Pool, PoolStatus};
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

/// Every pool by name.
#[derive(Debug, Default)]
pub struct Pools {
    by_name: HashMap<String, Arc<Pool>>,
    order: Vec<String>,
}

impl Pools {
    pub fn from_config(config: &config::Config, clock: Clock) -> Self {
        let mut pools = Pools::default();
        for (name, settings) in &config.pools {
            pools.by_name.insert(
                name.clone(),
                Arc::new(Pool::new(name, settings.clone(), clock)),
            );
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
