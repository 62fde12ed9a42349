//! The WebSocket connection registry in Redis (`[pools.NAME.websocket] registry`): every
//! upgraded connection of the pool recorded under the id its backend got, so another service
//! finds which backend holds connection X (`layout` says where).
//!
//! Redis is never on the data path. An upgrade records its connection in the pool's
//! in-process table (the source of truth) and puts a change on a bounded queue without
//! waiting; one writer task per pool (`writer`) sends the changes to Redis in pipelines,
//! refreshes every entry while its connection lives, and — after Redis failed or the queue
//! overflowed — rewrites Redis from the table, so that once Redis answers again it holds
//! exactly the open connections.

mod layout;
mod writer;

pub use layout::Layout;
pub use writer::Writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fulcrum_core::config;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::proxy::websockets::WsConnection;

/// Changes that may wait for the writer: a burst of upgrades well beyond one pipeline.
/// Beyond it a change is not queued; the writer rewrites Redis from the table instead.
const QUEUE: usize = 16_384;

/// What the writer is told; the connection's details stay in the table.
#[derive(Debug, Clone, Copy)]
enum Change {
    Opened(u64),
    Closed(u64, SocketAddr),
}

/// One pool's registry: its open connections, the queue to its writer, and its counters.
#[derive(Debug)]
pub struct RedisRegistry {
    pub pool: String,
    pub settings: config::WsRegistry,
    live: Mutex<HashMap<u64, WsConnection>>,
    changes: mpsc::Sender<Change>,
    /// Set when a change could not be queued: the writer rewrites from the table.
    resync: AtomicBool,
    wake: Notify,
    /// A reload or removal replaced this registry: its writer deletes what it wrote once its
    /// last connection has closed, then ends.
    retired: AtomicBool,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    up: AtomicBool,
    round_trips: AtomicU64,
    errors: AtomicU64,
    queue_full: AtomicU64,
    rewrites: AtomicU64,
    /// Unix milliseconds (0: never).
    last_success_ms: AtomicU64,
    last_error: Mutex<Option<(String, f64)>>,
}

/// Keeps a connection in the registry until dropped (the tunnel's end, however it ends).
#[derive(Debug)]
pub struct InRegistry {
    registry: Arc<RedisRegistry>,
    id: u64,
    backend: SocketAddr,
}

impl Drop for InRegistry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.tell(Change::Closed(self.id, self.backend));
    }
}

/// What the admin API shows of a pool's registry.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStatus {
    pub pool: String,
    /// The URL with any password masked.
    pub redis: String,
    pub key_prefix: String,
    pub ttl_seconds: f64,
    /// The last round trip to Redis succeeded.
    pub up: bool,
    /// Open connections the registry holds (what Redis holds once it is up and caught up).
    pub connections: usize,
    pub round_trips: u64,
    pub errors: u64,
    pub queue_full: u64,
    pub rewrites: u64,
    pub last_success_unix: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_unix: Option<f64>,
}

impl RedisRegistry {
    /// A registry and the writer that must run for it (on the control thread's runtime,
    /// which the connection manager needs when it is built).
    pub fn start(
        pool: &str,
        settings: config::WsRegistry,
    ) -> Result<(Arc<Self>, Writer), redis::RedisError> {
        let (changes, received) = mpsc::channel(QUEUE);
        let registry = Arc::new(Self {
            pool: pool.to_string(),
            settings,
            live: Mutex::default(),
            changes,
            resync: AtomicBool::new(false),
            wake: Notify::new(),
            retired: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let writer = Writer::new(Arc::clone(&registry), received)?;
        Ok((registry, writer))
    }

    /// Records an upgraded connection until the returned guard is dropped. Never waits.
    pub fn register(self: &Arc<Self>, id: u64, connection: &WsConnection) -> InRegistry {
        self.lock().insert(id, connection.clone());
        self.tell(Change::Opened(id));
        InRegistry {
            registry: Arc::clone(self),
            id,
            backend: connection.backend,
        }
    }

    /// Its writer finishes with the connections it holds, then ends.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub fn status(&self) -> RegistryStatus {
        let c = &self.counters;
        let last_success_ms = c.last_success_ms.load(Ordering::Relaxed);
        let last_error = c
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        RegistryStatus {
            pool: self.pool.clone(),
            redis: masked(&self.settings.redis),
            key_prefix: self.settings.key_prefix.clone(),
            ttl_seconds: self.settings.ttl.as_secs_f64(),
            up: c.up.load(Ordering::Relaxed),
            connections: self.lock().len(),
            round_trips: c.round_trips.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            queue_full: c.queue_full.load(Ordering::Relaxed),
            rewrites: c.rewrites.load(Ordering::Relaxed),
            last_success_unix: (last_success_ms > 0).then(|| last_success_ms as f64 / 1000.0),
            last_error_unix: last_error.as_ref().map(|(_, at)| *at),
            last_error: last_error.map(|(e, _)| e),
        }
    }

    fn tell(&self, change: Change) {
        if self.changes.try_send(change).is_err() {
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            self.resync.store(true, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, WsConnection>> {
        // Entries are inserted and removed whole; a panicking holder cannot tear the map.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `redis://user:secret@host` as `redis://user:***@host`: the admin API and logs never show
/// a password.
pub fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_url() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:secret@cache:6379", "redis://:***@cache:6379"),
            ("redis://app:s3cr@t@cache/1", "redis://app:***@cache/1"),
            ("redis://token@cache", "redis://***@cache"),
            (
                "redis+unix:///run/redis.sock",
                "redis+unix:///run/redis.sock",
            ),
        ] {
            assert_eq!(masked(url), shown, "{url}");
        }
    }
}
