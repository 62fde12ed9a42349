//! The WebSockets a listener holds open now: one entry per upgraded connection, from its
//! `101` to its close, with the id fulcrum gave it (sent to the backend in the handshake, so
//! the backend knows its own connections), the backend, the pool, the client and since when.
//! The admin API reads it; the lock is taken twice per WebSocket (open, close), never per
//! request or per frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One open WebSocket, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WsConnection {
    /// 16 hex digits: the `X-Fulcrum-Connection-Id` the backend got.
    pub id: String,
    pub listener: String,
    pub pool: String,
    pub backend: SocketAddr,
    pub client: SocketAddr,
    /// When the backend's `101` was relayed (Unix seconds).
    pub since: f64,
}

impl WsConnection {
    /// A connection upgraded now.
    pub fn new(
        id: u64,
        listener: &str,
        pool: &str,
        backend: SocketAddr,
        client: SocketAddr,
    ) -> Self {
        Self {
            id: id_text(id),
            listener: listener.to_string(),
            pool: pool.to_string(),
            backend,
            client,
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// A listener's open WebSockets, by id.
#[derive(Debug, Default)]
pub struct WsRegistry {
    open: Mutex<HashMap<u64, WsConnection>>,
}

/// Keeps a WebSocket in the registry until dropped (the tunnel's end, however it ends).
#[derive(Debug)]
pub struct Registered {
    registry: Arc<WsRegistry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// The id as the backend and the admin API see it.
pub fn id_text(id: u64) -> String {
    format!("{id:016x}")
}

impl WsRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, WsConnection>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an upgraded connection until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, id: u64, connection: WsConnection) -> Registered {
        self.lock().insert(id, connection);
        Registered {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Every open WebSocket that `keep` accepts, oldest first.
    pub fn list(&self, keep: impl Fn(&WsConnection) -> bool) -> Vec<WsConnection> {
        let mut list: Vec<WsConnection> =
            self.lock().values().filter(|c| keep(c)).cloned().collect();
        list.sort_by(|a, b| a.since.total_cmp(&b.since).then_with(|| a.id.cmp(&b.id)));
        list
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_from_its_upgrade_until_its_guard_drops() {
        let registry = Arc::new(WsRegistry::default());
        let backend: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let first = registry.register(
            0xab,
            WsConnection::new(0xab, "web", "chat", backend, client),
        );
        let other = "127.0.0.1:9002".parse().unwrap();
        let second = registry.register(7, WsConnection::new(7, "web", "chat", other, client));
        assert_eq!(registry.len(), 2);
        let on_first = registry.list(|c| c.backend == backend);
        assert_eq!(on_first.len(), 1);
        assert_eq!(on_first[0].id, "00000000000000ab");
        drop(first);
        assert_eq!(registry.list(|_| true).len(), 1);
        drop(second);
        assert!(registry.is_empty());
    }
}
