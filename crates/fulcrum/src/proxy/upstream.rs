//! Keep-alive HTTP/1 connections to backends, one pool per worker thread.
//!
//! Each worker runs its own event loop, so its pool is a plain `RefCell`: no lock, no
//! cross-thread wake-ups. A connection goes back to the pool only when its exchange ended
//! cleanly (request sent whole, response read to its end, nothing extra received); the most
//! recently used one is reused first (it is the warmest), and connections idle longer than
//! the pool's `upstream_idle_timeout` are closed by a sweep. An idle connection is only a
//! socket: no task, no buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::upstream_io::Upstream;
use crate::pool::BackendStats;
use crate::tls::upstream::BackendTls;

/// Why a new upstream connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    /// The TLS handshake with the backend failed (its certificate did not verify, say).
    Tls(std::io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake with the backend failed: {e}"),
        }
    }
}

/// Opens a TCP connection with a deadline; shared by the HTTP and TCP proxies.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)?;
    // Small requests and responses must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a connection to a backend, with TLS when the pool speaks it; the handshake counts
/// as part of connecting (its failure moves on to another backend) and shares its deadline.
/// `proxy_header` (a PROXY protocol header, or nothing) goes first, before any TLS.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&BackendTls>,
    proxy_header: &[u8],
) -> Result<Upstream, ConnectError> {
    let deadline = crate::proxy::deadline(Instant::now(), timeout);
    let mut tcp = connect_tcp(addr, timeout).await?;
    if !proxy_header.is_empty() {
        match tokio::time::timeout_at(deadline, tcp.write_all(proxy_header)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Timeout),
        }
    }
    let Some(tls) = tls else {
        return Ok(Upstream::Plain(tcp));
    };
    let handshake = tls.connector().connect(tls.name_for(addr), tcp);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => Ok(Upstream::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(ConnectError::Tls(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

struct IdleConn {
    stream: Upstream,
    expires: Instant,
    stats: Arc<BackendStats>,
}

/// A multiply-rotate hasher (FxHash's): the keys are a handful of backend addresses chosen by
/// the operator, so SipHash's flooding resistance buys nothing on this per-request look-up.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A backend address and the TLS identity its connections were verified for (0: plain).
type IdleKey = (SocketAddr, u32);

type AddrMap<V> = HashMap<IdleKey, V, BuildHasherDefault<AddrHasher>>;

/// This worker's idle keep-alive connections, by backend address.
#[derive(Default)]
pub struct UpstreamPool {
    idle: RefCell<AddrMap<Vec<IdleConn>>>,
}

impl fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle: usize = self.idle.borrow().values().map(Vec::len).sum();
        f.debug_struct("UpstreamPool").field("idle", &idle).finish()
    }
}

impl UpstreamPool {
    /// An idle connection to `addr` (made with the TLS identity `tls_id`, 0 for plain) that
    /// is still open, most recently used first.
    pub fn checkout(&self, addr: SocketAddr, tls_id: u32, now: Instant) -> Option<Upstream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&(addr, tls_id))?;
        while let Some(mut candidate) = list.pop() {
            if candidate.expires > now && candidate.stream.still_open() {
                return Some(candidate.stream);
            }
        }
        None
    }

    /// Returns a connection whose exchange ended cleanly.
    pub fn checkin(
        &self,
        addr: SocketAddr,
        tls_id: u32,
        stream: Upstream,
        stats: &Arc<BackendStats>,
        idle_timeout: Duration,
        max_idle: usize,
    ) {
        if max_idle == 0 || !stats.pools_connections() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry((addr, tls_id)).or_default();
        if list.len() >= max_idle {
            // Keep the warmest; the oldest one is closed.
            list.remove(0);
        }
        list.push(IdleConn {
            stream,
            expires: crate::proxy::deadline(Instant::now(), idle_timeout),
            stats: Arc::clone(stats),
        });
    }

    /// Closes connections idle past their pool's timeout, closed by the backend, or to a
    /// backend that is draining or disabled.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain_mut(|c| {
                c.expires > now && c.stats.pools_connections() && c.stream.still_open()
            });
            !list.is_empty()
        });
    }
}
