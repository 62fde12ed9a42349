//! The data path: listeners, and the L4 and L7 proxies behind them.

pub mod admission;
pub mod client_io;
pub mod counters;
pub mod error;
pub mod h1;
pub mod h2;
pub mod hash_key;
pub mod headers;
pub mod l4;
pub mod limits;
pub mod listener;
pub mod marks;
pub mod passthrough;
pub mod pipeline;
pub mod prefixed;
pub mod proxy_header;
pub mod routing;
pub mod tunnel;
pub mod upstream;
pub mod upstream_io;
pub mod websockets;
pub mod worker;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// A client connection's two ends: the client, and the address it connected to — the
/// socket's, or what a PROXY protocol header said they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// `now + after`, never overflowing: configured durations are capped at a year by
/// validation, and this keeps a clock meeting a configured value safe even without that.
pub fn deadline(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .or_else(|| now.checked_add(fulcrum_core::config::defaults::MAX_DURATION))
        .unwrap_or(now)
}
