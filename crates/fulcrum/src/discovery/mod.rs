//! Discovery: backends learnt from a coordination store and applied to their pool as full
//! sets (the pool computes the difference: new ones warm up, gone ones drain). A lost store
//! changes nothing in rotation; the pool keeps its last known fleet and says it is stale.

pub mod etcd;
pub mod registration;
pub mod zookeeper;

use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::Discovery;
use tokio::sync::watch;

use crate::pool::Pool;

/// Reconnection backoff: doubles from the first to the last.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Runs the pool's discovery source until shutdown.
pub async fn run(pool: Arc<Pool>, shutdown: watch::Receiver<bool>) {
    match pool.settings.discovery.clone() {
        Some(Discovery::Etcd { endpoints, prefix }) => {
            etcd::follow(pool, endpoints, prefix, shutdown).await;
        }
        Some(Discovery::ZooKeeper { servers, path }) => {
            zookeeper::follow(pool, servers, path, shutdown).await;
        }
        None => {}
    }
}
