//! The TCP proxy: accept → pick → connect (the next backend when a connect fails) → copy
//! bytes both ways with fixed buffers until both sides are done, propagating each half-close,
//! and closing both sides when neither has sent anything for the idle timeout.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use fulcrum_core::config::Algorithm;

use super::client_io::ClientIo;
use super::error::ErrorSide;
use super::hash_key;
use super::tunnel::{self, Splice};
use super::upstream;
use super::upstream_io::Upstream;
use super::{proxy_header, Addrs};
use crate::access_log::{AccessLog, Entry};
use crate::metrics::series::TcpShard;
use crate::pool::{InFlight, Pool, Tried};
use crate::tls::upstream::BackendTls;

/// Everything one worker thread needs to proxy TCP for one listener.
#[derive(Debug)]
pub struct TcpContext {
    pub listener: String,
    pub pool: Arc<Pool>,
    pub idle_timeout: Duration,
    /// TLS to the pool's backends, when it speaks TLS.
    pub backend_tls: Option<Arc<BackendTls>>,
    /// This worker's counters for the listener and the pool.
    pub metrics: Arc<TcpShard>,
    pub access_log: Option<AccessLog>,
}

/// Who served one connection and what it carried, for its access-log line.
#[derive(Debug, Default)]
struct Served {
    backend: Option<SocketAddr>,
    attempts: u32,
    received: Cell<u64>,
    sent: Cell<u64>,
    error: Option<ErrorSide>,
}

impl TcpContext {
    fn log(&self, peer: SocketAddr, served: &Served, lasted: Duration) {
        let Some(log) = &self.access_log else { return };
        log.offer(Entry {
            time: SystemTime::now(),
            client: peer,
            head: None,
            protocol: "tcp",
            status: 0,
            bytes_in: served.received.get(),
            bytes_out: served.sent.get(),
            pool: Some(Arc::clone(&self.pool)),
            backend: served.backend,
            upstream: None,
            total: lasted,
            retries: served.attempts.saturating_sub(1),
            error: served.error,
        });
    }
}

/// Proxies `client` to a backend of the pool; `prefix` (bytes already read from the client,
/// such as a passthrough's ClientHello) goes to the backend first.
pub async fn serve<S: ClientIo>(ctx: &TcpContext, mut client: S, addrs: Addrs, prefix: &[u8]) {
    let peer = addrs.peer;
    // Over TCP only the client address can be a hash key (validated with the config).
    let key = ctx
        .pool
        .settings()
        .hash_key
        .as_ref()
        .map(|_| hash_key::ip_key(peer.ip()));
    ctx.metrics.accepted();
    let opened = Instant::now();
    let mut served = Served::default();
    let proxy_header = proxy_header::for_backend(ctx.pool.settings().proxy_protocol, addrs);
    let connected = connect_any(
        &ctx.pool,
        ctx.backend_tls.as_deref(),
        &proxy_header,
        key,
        &mut served,
    )
    .await;
    let (mut upstream, in_flight) = match connected {
        Ok(connected) => connected,
        Err(side) => {
            // Nothing to tell a TCP client: closing is the only answer.
            ctx.metrics.refused(side);
            ctx.metrics.ended(opened.elapsed());
            served.error = Some(side);
            ctx.log(peer, &served, opened.elapsed());
            return;
        }
    };
    if !prefix.is_empty() {
        if let Err(e) = upstream.write_all(prefix).await {
            tracing::debug!(listener = %ctx.listener, error = %e, "backend closed before taking the first bytes");
            ctx.log(peer, &served, opened.elapsed());
            return;
        }
        if let Some(received) = ctx.metrics.received() {
            received.add(prefix.len() as u64);
        }
        served.received.set(prefix.len() as u64);
    }
    let started = Instant::now();
    let aborted = in_flight.stats().aborted();
    tokio::select! {
        result = splice(&mut client, &mut upstream, ctx.idle_timeout, &ctx.metrics, &served) => match result {
            Ok(Splice::Finished) => {}
            Ok(Splice::Idle) => {
                tracing::debug!(listener = %ctx.listener, "closing idle TCP connection");
            }
            Err(e) => {
                tracing::debug!(listener = %ctx.listener, error = %e, "TCP connection ended with an error");
            }
        },
        () = aborted => {
            tracing::debug!(listener = %ctx.listener, "closing TCP connection: the backend's drain timed out");
        }
    }
    in_flight.stats().latency.record(started.elapsed());
    drop(in_flight);
    ctx.metrics.ended(opened.elapsed());
    ctx.log(peer, &served, opened.elapsed());
}

/// Connects to a picked backend, trying others (up to the pool's attempts) when it fails.
/// `Err`: whose fault it is that the client gets no backend.
async fn connect_any(
    pool: &Pool,
    tls: Option<&BackendTls>,
    proxy_header: &[u8],
    key: Option<u64>,
    served: &mut Served,
) -> Result<(Upstream, InFlight), ErrorSide> {
    let snapshot = pool.snapshot_owned();
    let mut tried = Tried::default();
    for _ in 0..pool.settings().connect_attempts {
        // Every backend tried, or none in rotation: the client is turned away (warned below).
        let Some(index) = snapshot.pick(&tried, key) else {
            break;
        };
        tried.push(index);
        let backend = &snapshot.backends[index];
        served.backend = Some(backend.addr);
        served.attempts += 1;
        // Counted from the pick: one request (connection) per attempt, each with exactly one
        // outcome, so failures never exceed requests.
        let in_flight = InFlight::start(&backend.stats);
        backend.stats.record_request();
        let started = Instant::now();
        match upstream::connect(
            backend.addr,
            pool.settings().connect_timeout,
            tls,
            proxy_header,
        )
        .await
        {
            Ok(stream) => {
                backend.stats.record_success();
                if pool.settings().algorithm == Algorithm::P2cEwma {
                    backend
                        .stats
                        .ewma
                        .observe(pool.clock().now(), started.elapsed());
                }
                return Ok((stream, in_flight));
            }
            Err(e) => {
                backend.stats.record_failure();
                if let Some(more) = backend.stats.warnings.pass(pool.clock().now()) {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, error = %e, more_since_last = more, "connect failed; trying another backend");
                }
            }
        }
    }
    if let Some(more) = pool.unreachable_warnings.pass(pool.clock().now()) {
        tracing::warn!(pool = %pool.name, more_since_last = more, "no backend could be reached; closing the client connection");
    }
    Err(if tried.is_empty() {
        ErrorSide::NoneAvailable
    } else {
        ErrorSide::Upstream
    })
}

async fn splice<S: ClientIo>(
    a: &mut S,
    b: &mut Upstream,
    idle: Duration,
    metrics: &TcpShard,
    served: &Served,
) -> io::Result<Splice> {
    let (a_read, a_write) = a.halves();
    let (b_read, b_write) = b.halves();
    tunnel::splice(
        tunnel::Ends {
            a_read,
            a_write,
            b_read,
            b_write,
        },
        idle,
        [metrics.received(), metrics.sent()],
        [&served.received, &served.sent],
    )
    .await
}
