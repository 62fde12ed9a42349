//! Keep-alive HTTP/1 connections to backends, one pool per worker thread.
//!
//! Each worker runs its own event loop, so its pool is a plain `RefCell`: no lock, no
//! cross-thread wake-ups. A connection goes back to the pool only when its response body was
//! read to the end; the most recently used one is reused first (it is the warmest), and
//! connections idle longer than the pool's `upstream_idle_timeout` are closed by a sweep.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::request_body::RequestBody;
use crate::pool::BackendStats;

pub type Sender = SendRequest<RequestBody>;

/// Why a new upstream connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake failed: {e}"),
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

/// A new HTTP/1 connection to `addr`; its connection task runs on this worker.
/// The connection is closed at once if the backend's drain times out.
pub async fn connect(
    stats: &BackendStats,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Sender, ConnectError> {
    let stream = connect_tcp(addr, timeout).await?;
    let (mut sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    let aborted = stats.aborted();
    tokio::task::spawn_local(async move {
        tokio::select! {
            result = connection => if let Err(e) = result {
                tracing::debug!(backend = %addr, error = %e, "upstream connection ended with an error");
            },
            () = aborted => tracing::debug!(backend = %addr, "upstream connection closed: drain timed out"),
        }
    });
    sender.ready().await.map_err(ConnectError::Handshake)?;
    Ok(sender)
}

struct IdleConn {
    sender: Sender,
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

type AddrMap<V> = HashMap<SocketAddr, V, BuildHasherDefault<AddrHasher>>;

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
    /// A ready idle connection to `addr`, if one is still alive.
    pub async fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        loop {
            let candidate = {
                let mut idle = self.idle.borrow_mut();
                let list = idle.get_mut(&addr)?;
                list.pop()
            }?;
            if candidate.expires <= Instant::now() || candidate.sender.is_closed() {
                continue;
            }
            let mut sender = candidate.sender;
            // The connection task may not have noticed the end of the last response yet;
            // waiting for it is a matter of one turn of the event loop.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Returns a connection whose last response was read to the end.
    pub fn checkin(
        &self,
        addr: SocketAddr,
        sender: Sender,
        stats: &Arc<BackendStats>,
        idle_timeout: Duration,
        max_idle: usize,
    ) {
        if sender.is_closed() || max_idle == 0 || stats.is_closing() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= max_idle {
            // Keep the warmest; the oldest one is closed.
            list.remove(0);
        }
        list.push(IdleConn {
            sender,
            expires: Instant::now() + idle_timeout,
            stats: Arc::clone(stats),
        });
    }

    /// Closes connections idle past their pool's timeout, closed by the backend, or to a
    /// backend that is draining or disabled.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|c| c.expires > now && !c.sender.is_closed() && !c.stats.is_closing());
            !list.is_empty()
        });
    }
}
