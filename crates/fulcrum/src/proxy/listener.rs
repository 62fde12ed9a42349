//! One listener on one worker: the service its connections get (built from the listener's
//! configuration and the worker's shared pools of buffers and upstream connections) and the
//! accept loop that hands them out.
//!
//! A reload retires an accept loop and gets its socket back, so a listener whose address did
//! not change keeps its socket (and the connections queued on it) while its service is
//! replaced; connections already accepted keep the service they were accepted with.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::{Listener, ListenerProtocol, ProxyProtocolIn};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::counters::ListenerStats;
use super::h1::buffer::BufferPool;
use super::h1::conn;
use super::h1::exchange::HttpContext;
use super::h1::idle::IdleRegistry;
use super::h2;
use super::h2::upstream::H2Upstreams;
use super::l4::{self, TcpContext};
use super::passthrough::{self, PassthroughContext};
use super::proxy_header;
use super::upstream::UpstreamPool;
use super::worker::ConnTracker;
use super::Addrs;
use crate::access_log::AccessLog;
use crate::metrics::series::{HttpShard, TcpShard};
use crate::pool::Pool;
use crate::tls::upstream::BackendTls;
use crate::tls::Terminator;

/// Where a listener's socket comes from when a worker starts serving it.
#[derive(Debug)]
pub enum ListenerSocket {
    /// Freshly bound (a new listener, or one whose address changed).
    Bound(StdListener),
    /// The one this worker already serves the listener on (its address did not change).
    Kept,
}

/// One listener's socket for one worker, with what it serves.
#[derive(Debug)]
pub struct WorkerListener {
    pub config: Listener,
    pub socket: ListenerSocket,
    /// The listener's pool (for tls_passthrough: the default one, if any).
    pub pool: Option<Arc<Pool>>,
    /// tls_passthrough: every pool its routes name, by name.
    pub route_pools: HashMap<String, Arc<Pool>>,
    /// TLS termination, shared by every worker (its certificates rotate in one place).
    pub tls: Option<Arc<Terminator>>,
    /// TLS to backends, by pool name, for the pools that speak it.
    pub backend_tls: Arc<HashMap<String, Arc<BackendTls>>>,
    /// What the listener served, shared by every worker and kept across reloads.
    pub stats: Arc<ListenerStats>,
    /// Its access log, when it has one (the writer is shared by every worker).
    pub access_log: Option<AccessLog>,
}

/// What every listener of one worker shares.
#[derive(Debug)]
pub struct WorkerShared {
    /// The worker's id (0 …): which shard of each series it writes.
    pub worker: usize,
    pub connections: Rc<ConnTracker>,
    pub upstreams: Rc<UpstreamPool>,
    pub h2_upstreams: Rc<H2Upstreams>,
    pub buffers: Rc<BufferPool>,
}

#[derive(Debug, Clone)]
pub enum Service {
    Http(Rc<HttpContext>),
    Tcp(Rc<TcpContext>),
    Passthrough(Rc<PassthroughContext>),
}

/// The service of `l`'s connections; `idle` is the listener's own registry of waiting
/// connections, so that retiring the listener closes its connections and no other's.
pub fn service_for(
    l: &WorkerListener,
    shared: &WorkerShared,
    idle: &Rc<IdleRegistry>,
) -> Option<Service> {
    let tcp = |pool: &Arc<Pool>| {
        Rc::new(TcpContext {
            listener: l.config.name.clone(),
            pool: Arc::clone(pool),
            idle_timeout: l.config.idle_timeout,
            backend_tls: l.backend_tls.get(&pool.name).cloned(),
            access_log: l.access_log.clone(),
            metrics: if l.config.metrics {
                l.stats.series.tcp(&pool.name, shared.worker)
            } else {
                Arc::new(TcpShard::off())
            },
        })
    };
    match (&l.config.protocol, &l.pool) {
        (ListenerProtocol::Http(limits), Some(pool)) => Some(Service::Http(Rc::new(HttpContext {
            listener: l.config.name.clone(),
            pool: Arc::clone(pool),
            upstreams: Rc::clone(&shared.upstreams),
            buffers: Rc::clone(&shared.buffers),
            idle: Rc::clone(idle),
            limits: limits.clone(),
            idle_timeout: l.config.idle_timeout,
            backend_tls: l.backend_tls.get(&pool.name).cloned(),
            stats: Arc::clone(&l.stats),
            h2_upstreams: Rc::clone(&shared.h2_upstreams),
            access_log: l.access_log.clone(),
            metrics: if l.config.metrics {
                l.stats.series.http(&pool.name, shared.worker)
            } else {
                Arc::new(HttpShard::off())
            },
        }))),
        (ListenerProtocol::Tcp, Some(pool)) => Some(Service::Tcp(tcp(pool))),
        (ListenerProtocol::TlsPassthrough(routes), default) => {
            Some(Service::Passthrough(Rc::new(PassthroughContext {
                listener: l.config.name.clone(),
                routes: routes.clone(),
                pools: l
                    .route_pools
                    .iter()
                    .map(|(name, pool)| (name.clone(), tcp(pool)))
                    .collect(),
                default: default.as_ref().map(tcp),
            })))
        }
        (_, None) => None,
    }
}

/// Longest pause of an accept loop out of descriptors before it tries again (sooner when one
/// of its worker's connections closes).
const STARVED_PAUSE: Duration = Duration::from_millis(100);

/// Errors of `accept` that mean the process or system is out of a resource, not that one
/// connection failed: retrying at once would fail again, in a loop.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Warnings of an accept loop out of descriptors: one a second at most, saying how many
/// accepts failed since the last.
#[derive(Debug, Default)]
struct Starved {
    last: Option<Instant>,
    held: u64,
}

impl Starved {
    const EVERY: Duration = Duration::from_secs(1);

    fn warn(&mut self, listener: &str, error: &std::io::Error, now: Instant) {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            self.held += 1;
            return;
        }
        tracing::warn!(
            listener,
            error = %error,
            failed_since_last = self.held,
            "cannot accept: out of file descriptors; pausing accepts until a connection closes (at most 100 ms at a time)"
        );
        self.last = Some(now);
        self.held = 0;
    }
}

/// What a listener's accept loop checks and hands to each connection.
#[derive(Debug)]
pub struct Front {
    pub listener: String,
    pub stats: Arc<ListenerStats>,
    pub tls: Option<Arc<Terminator>>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: Option<Rc<ProxyProtocolIn>>,
}

/// The connection's addresses once it is admitted: the socket's, or its PROXY header's;
/// `None` when it is closed instead (a source that may not send the header, or no valid
/// header in time).
async fn admitted(
    proxy_protocol: Option<&ProxyProtocolIn>,
    stream: &mut tokio::net::TcpStream,
    socket: Addrs,
) -> Option<Addrs> {
    let Some(settings) = proxy_protocol else {
        return Some(socket);
    };
    match proxy_header::read(stream, socket, settings).await {
        Ok(addrs) => Some(addrs),
        Err(why) => {
            tracing::debug!(peer = %socket.peer, why, "PROXY protocol: closing the connection");
            None
        }
    }
}

/// Accepts and serves connections until the worker stops or the listener is retired;
/// returns the socket (a reload may keep it).
pub async fn accept_loop(
    listener: TcpListener,
    service: Service,
    front: Front,
    connections: Rc<ConnTracker>,
    mut shutdown: watch::Receiver<bool>,
    mut retire: oneshot::Receiver<()>,
) -> TcpListener {
    let Front {
        listener: name,
        stats,
        tls,
        proxy_protocol,
    } = front;
    let mut starved = Starved::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return listener,
            _ = &mut retire => return listener,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if out_of_descriptors(&e) => {
                starved.warn(&name, &e, Instant::now());
                // No busy loop: the connection stays queued in the kernel until a descriptor
                // frees, at the latest on the next try.
                tokio::select! {
                    () = connections.one_closed() => {}
                    () = tokio::time::sleep(STARVED_PAUSE) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return listener,
                    _ = &mut retire => return listener,
                }
                continue;
            }
            Err(e) => {
                // The connection failed before it was accepted (reset while queued): its own.
                tracing::debug!(listener = %name, error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let socket = Addrs {
            peer,
            local: stream.local_addr().unwrap_or(peer),
        };
        let guard = (connections.open(), stats.opened());
        if !matches!(service, Service::Http(_)) {
            // HTTP connections are counted by the protocol they turn out to speak.
            ListenerStats::count(&stats.tcp);
        }
        let proxy_protocol = proxy_protocol.clone();
        // One task shape per protocol: a task is as large as its biggest future, and an idle
        // HTTP connection should not pay for the TCP splice's state.
        match (&service, &tls) {
            (Service::Http(ctx), None) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    if let Some(addrs) =
                        admitted(proxy_protocol.as_deref(), &mut stream, socket).await
                    {
                        conn::serve(ctx, stream, addrs, None).await;
                    }
                    drop(guard);
                });
            }
            (Service::Tcp(ctx), None) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    // TCP has no graceful close: connections run on until the grace period ends.
                    if let Some(addrs) =
                        admitted(proxy_protocol.as_deref(), &mut stream, socket).await
                    {
                        l4::serve(&ctx, stream, addrs, &[]).await;
                    }
                    drop(guard);
                });
            }
            (Service::Passthrough(ctx), _) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    if let Some(addrs) =
                        admitted(proxy_protocol.as_deref(), &mut stream, socket).await
                    {
                        passthrough::serve(&ctx, stream, addrs).await;
                    }
                    drop(guard);
                });
            }
            (Service::Http(ctx), Some(tls)) => {
                let (ctx, tls) = (Rc::clone(ctx), Arc::clone(tls));
                tokio::task::spawn_local(async move {
                    let Some(addrs) =
                        admitted(proxy_protocol.as_deref(), &mut stream, socket).await
                    else {
                        return;
                    };
                    match tls.accept(stream).await {
                        Some((stream, facts)) if facts.h2 => {
                            Box::pin(h2::server::serve(ctx, stream, addrs, Some(facts))).await;
                        }
                        Some((stream, facts)) => conn::serve(ctx, stream, addrs, Some(facts)).await,
                        None => {}
                    }
                    drop(guard);
                });
            }
            (Service::Tcp(ctx), Some(tls)) => {
                let (ctx, tls) = (Rc::clone(ctx), Arc::clone(tls));
                tokio::task::spawn_local(async move {
                    let Some(addrs) =
                        admitted(proxy_protocol.as_deref(), &mut stream, socket).await
                    else {
                        return;
                    };
                    if let Some((stream, _)) = tls.accept(stream).await {
                        l4::serve(&ctx, stream, addrs, &[]).await;
                    }
                    drop(guard);
                });
            }
        }
    }
}
