//! What each listener has served, by protocol, for the admin API: shared by the listener's
//! workers (relaxed atomics, counted once per connection, never per request).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug)]
pub struct ListenerStats {
    pub name: String,
    pub protocol: &'static str,
    pub bind: SocketAddr,
    /// HTTP/1.x client connections.
    pub http1: AtomicU64,
    /// HTTP/2 client connections (ALPN `h2` or prior knowledge).
    pub http2: AtomicU64,
    /// TCP or TLS passthrough connections.
    pub tcp: AtomicU64,
}

/// What `GET /api/listeners` shows of one listener.
#[derive(Debug, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub protocol: &'static str,
    pub bind: String,
    pub connections: ConnectionCounts,
}

#[derive(Debug, Serialize)]
pub struct ConnectionCounts {
    pub http1: u64,
    pub http2: u64,
    pub tcp: u64,
}

impl ListenerStats {
    pub fn new(name: &str, protocol: &'static str, bind: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            protocol,
            bind,
            http1: AtomicU64::new(0),
            http2: AtomicU64::new(0),
            tcp: AtomicU64::new(0),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn status(&self) -> ListenerStatus {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStatus {
            name: self.name.clone(),
            protocol: self.protocol,
            bind: self.bind.to_string(),
            connections: ConnectionCounts {
                http1: load(&self.http1),
                http2: load(&self.http2),
                tcp: load(&self.tcp),
            },
        }
    }
}
