//! What a listener lets in, and when it stops taking connections: at its `max_connections`
//! it pauses accepting (new connections wait in the kernel's queue, as with HAProxy's
//! `maxconn`), out of file descriptors it pauses too instead of failing `accept` in a loop,
//! and each accepted connection must pass the PROXY protocol (when on) and the per-client
//! connection limit before it is served. Every pause is logged once a second at most.

use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::ProxyProtocolIn;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::counters::ListenerStats;
use super::limits::ClientConnection;
use super::proxy_header;
use super::Addrs;

/// Longest pause of an accept loop out of descriptors or at its connection limit before it
/// looks again (sooner when one of its worker's connections closes).
pub const PAUSE: Duration = Duration::from_millis(20);

/// A listener's admission rules, shared by its accept loop's tasks.
#[derive(Debug)]
pub struct Admission {
    pub listener: String,
    pub proxy_protocol: Option<ProxyProtocolIn>,
    pub max_connections: u64,
    /// 0: no per-client limit.
    pub max_connections_per_ip: u32,
    pub stats: Arc<ListenerStats>,
}

/// An admitted connection: its addresses, and its place in its client's count.
#[derive(Debug)]
pub struct Admitted {
    pub addrs: Addrs,
    /// Its place in its client's count, given back when dropped.
    pub counted: Option<ClientConnection>,
}

impl Admission {
    /// Reads the PROXY header when the listener takes one, then counts the connection against
    /// its client; `None` when it is closed instead.
    pub async fn admit(&self, stream: &mut TcpStream, socket: Addrs) -> Option<Admitted> {
        let addrs = match &self.proxy_protocol {
            None => socket,
            // Boxed: its state (a peek, a timer) would otherwise enlarge every connection's
            // task, PROXY or not, for as long as the connection lives.
            Some(settings) => match Box::pin(proxy_header::read(stream, socket, settings)).await {
                Ok(addrs) => addrs,
                Err(why) => {
                    ListenerStats::count(&self.stats.refused.proxy_protocol);
                    tracing::debug!(listener = %self.listener, peer = %socket.peer, why, "PROXY protocol: closing the connection");
                    return None;
                }
            },
        };
        let counted = match self.max_connections_per_ip {
            0 => None,
            max => match self.stats.clients.connect(addrs.peer.ip(), max) {
                Some(counted) => Some(counted),
                None => {
                    ListenerStats::count(&self.stats.refused.max_connections_per_ip);
                    tracing::debug!(listener = %self.listener, peer = %addrs.peer, max, "client at max_connections_per_ip: closing the connection");
                    return None;
                }
            },
        };
        Some(Admitted { addrs, counted })
    }
}

/// Errors of `accept` that mean the process or system is out of a resource, not that one
/// connection failed: retrying at once would fail again, in a loop.
pub fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A warning that may repeat in a loop, let out once a second at most.
#[derive(Debug, Default)]
pub struct EverySecond {
    last: Option<Instant>,
    held: u64,
}

impl EverySecond {
    /// `Some(n)`: log now, `n` occurrences having been held back since the last line.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}
