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

/// How a session with the store ended.
#[derive(Debug)]
pub struct Lost {
    pub error: String,
    /// The session had listed and applied the store: start the backoff over.
    pub had_synced: bool,
}

impl Lost {
    /// How a session that returned `result` ended; `synced` tells whether it got as far as
    /// applying the store's state.
    pub fn after(result: Result<(), String>, synced: bool) -> Self {
        Self {
            error: result.err().unwrap_or_else(|| "watch ended".to_string()),
            had_synced: synced,
        }
    }
}

/// Runs sessions one after another until shutdown, with capped exponential backoff between
/// them; a lost session leaves the pool's backends as they are and marks them stale.
pub async fn keep_following<F, Fut>(
    pool: &Pool,
    mut shutdown: watch::Receiver<bool>,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Lost>,
{
    let mut backoff = BACKOFF.0;
    loop {
        tokio::select! {
            lost = session() => {
                pool.discovery_lost(&lost.error);
                if lost.had_synced {
                    backoff = BACKOFF.0;
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Runs the pool's discovery source until shutdown.
pub async fn run(pool: Arc<Pool>, shutdown: watch::Receiver<bool>) {
    let discovery = pool.settings().discovery.clone();
    match discovery {
        Some(Discovery::Etcd { endpoints, prefix }) => {
            etcd::follow(pool, endpoints, prefix, shutdown).await;
        }
        Some(Discovery::ZooKeeper { servers, path }) => {
            zookeeper::follow(pool, servers, path, shutdown).await;
        }
        None => {}
    }
}
