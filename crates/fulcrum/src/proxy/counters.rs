//! What each listener has served, by protocol, for the admin API and the metrics: shared by
//! the listener's workers (relaxed atomics, counted once per connection, never per request),
//! with the per-worker request series the metrics add up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::access_log::AccessLogCounters;
use crate::metrics::series::ListenerSeries;
use crate::proxy::limits::ClientLimits;
use crate::proxy::websockets::WsRegistry;

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
    /// Client connections open now.
    open: AtomicU64,
    /// Requests and connections by pool, one shard per worker.
    pub series: ListenerSeries,
    /// Its access log's lines written, dropped and lost.
    pub access_log: Arc<AccessLogCounters>,
    /// The WebSockets it holds open now.
    pub websockets: Arc<WsRegistry>,
    /// Connections and request rates per client address.
    pub clients: Arc<ClientLimits>,
    /// What its limits turned away.
    pub refused: Refusals,
}

/// What a listener's limits turned away, for the metrics: connections and requests refused,
/// and the pauses of its accept loop (each at most [`PAUSE`](super::admission::PAUSE)).
#[derive(Debug, Default)]
pub struct Refusals {
    /// Connections closed for a missing, malformed, late or unallowed PROXY header.
    pub proxy_protocol: AtomicU64,
    /// Connections closed at `max_connections_per_ip`.
    pub max_connections_per_ip: AtomicU64,
    /// Requests over `rate_limit` (answered 429, or their connection closed).
    pub rate_limit: AtomicU64,
    /// Pauses at `max_connections`.
    pub paused_full: AtomicU64,
    /// Pauses out of file descriptors.
    pub paused_starved: AtomicU64,
}

/// Counts a client connection as open until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<ListenerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
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
    /// `workers`: how many worker threads serve the listener (one series shard each).
    pub fn new(name: &str, protocol: &'static str, bind: SocketAddr, workers: usize) -> Self {
        Self {
            name: name.to_string(),
            protocol,
            bind,
            http1: AtomicU64::new(0),
            http2: AtomicU64::new(0),
            tcp: AtomicU64::new(0),
            open: AtomicU64::new(0),
            series: ListenerSeries::new(workers),
            access_log: Arc::default(),
            websockets: Arc::default(),
            clients: Arc::default(),
            refused: Refusals::default(),
        }
    }

    /// A client connection was accepted.
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }

    /// A client connection was accepted, if fewer than `max` are open (across workers: one
    /// worker's check cannot race another's).
    pub fn try_opened(self: &Arc<Self>, max: u64) -> Option<OpenConnection> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(OpenConnection(Arc::clone(self)))
    }

    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
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
