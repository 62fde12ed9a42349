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

use fulcrum_core::config::{Listener, ListenerProtocol};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::admission::{out_of_descriptors, Admission, Admitted, EverySecond, PAUSE};
use super::counters::ListenerStats;
use super::h1::buffer::BufferPool;
use super::h1::conn;
use super::h1::exchange::HttpContext;
use super::h1::idle::IdleRegistry;
use super::h2;
use super::h2::upstream::H2Upstreams;
use super::l4::{self, TcpContext};
use super::passthrough::{self, PassthroughContext};
use super::routing::HttpService;
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
    Http(Rc<HttpService>),
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
        (ListenerProtocol::Http(limits), Some(pool)) => {
            let http = |pool: &Arc<Pool>| {
                Rc::new(HttpContext {
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
                })
            };
            let default = http(pool);
            // One context per pool: routes to the same pool share its counters.
            let mut by_pool: HashMap<&str, Rc<HttpContext>> = HashMap::new();
            by_pool.insert(&pool.name, Rc::clone(&default));
            let mut targets = Vec::with_capacity(l.config.routes.routes.len());
            for route in &l.config.routes.routes {
                let context = match by_pool.get(route.pool.as_str()) {
                    Some(context) => Rc::clone(context),
                    None => {
                        let context = http(l.route_pools.get(&route.pool)?);
                        by_pool.insert(&route.pool, Rc::clone(&context));
                        context
                    }
                };
                targets.push(context);
            }
            Some(Service::Http(Rc::new(HttpService {
                default,
                table: l.config.routes.clone(),
                targets,
            })))
        }
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

/// What a listener's accept loop checks and hands to each connection.
#[derive(Debug)]
pub struct Front {
    pub stats: Arc<ListenerStats>,
    pub tls: Option<Arc<Terminator>>,
    pub admission: Rc<Admission>,
}

/// Waits out a pause of an accept loop (at its connection limit, or out of descriptors): until
/// one of the worker's connections closes, or [`PAUSE`]; `true` when the loop must end
/// instead.
async fn pause(
    connections: &ConnTracker,
    shutdown: &mut watch::Receiver<bool>,
    retire: &mut oneshot::Receiver<()>,
) -> bool {
    tokio::select! {
        () = connections.one_closed() => false,
        () = tokio::time::sleep(PAUSE) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
        _ = retire => true,
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
        stats,
        tls,
        admission,
    } = front;
    let mut full = EverySecond::default();
    let mut starved = EverySecond::default();
    loop {
        if stats.open_connections() >= admission.max_connections {
            // At the limit: leave new connections in the kernel's queue.
            ListenerStats::count(&stats.refused.paused_full);
            if pause(&connections, &mut shutdown, &mut retire).await {
                return listener;
            }
            continue;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return listener,
            _ = &mut retire => return listener,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if out_of_descriptors(&e) => {
                if let Some(held) = starved.due(Instant::now()) {
                    tracing::warn!(listener = %admission.listener, error = %e, failed_since_last = held, "cannot accept: out of file descriptors; pausing accepts until a connection closes");
                }
                ListenerStats::count(&stats.refused.paused_starved);
                if pause(&connections, &mut shutdown, &mut retire).await {
                    return listener;
                }
                continue;
            }
            Err(e) => {
                // The connection failed before it was accepted (reset while queued): its own.
                tracing::debug!(listener = %admission.listener, error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let socket = Addrs {
            peer,
            local: stream.local_addr().unwrap_or(peer),
        };
        // Another worker may have filled the listener since the check above: this one waits
        // (unserved, its successors unaccepted) until there is room.
        let open = loop {
            if let Some(open) = stats.try_opened(admission.max_connections) {
                break open;
            }
            if let Some(held) = full.due(Instant::now()) {
                tracing::warn!(listener = %admission.listener, max_connections = admission.max_connections, paused_since_last = held, "listener at max_connections: new connections wait until one closes");
            }
            ListenerStats::count(&stats.refused.paused_full);
            if pause(&connections, &mut shutdown, &mut retire).await {
                return listener;
            }
        };
        let guard = (connections.open(), open);
        if !matches!(service, Service::Http(_)) {
            // HTTP connections are counted by the protocol they turn out to speak.
            ListenerStats::count(&stats.tcp);
        }
        let admission = Rc::clone(&admission);
        // One task shape per protocol: a task is as large as its biggest future, and an idle
        // HTTP connection should not pay for the TCP splice's state.
        match (&service, &tls) {
            (Service::Http(ctx), None) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    // Only what the connection needs while it lives stays in its task: the
                    // admission rules and the admitted record go once it is admitted.
                    let admitted = admission.admit(&mut stream, socket).await;
                    drop(admission);
                    if let Some(Admitted { addrs, counted }) = admitted {
                        let _held = (guard, counted);
                        conn::serve(ctx, stream, addrs, None).await;
                    }
                });
            }
            (Service::Tcp(ctx), None) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    // TCP has no graceful close: connections run on until the grace period ends.
                    if let Some(admitted) = admission.admit(&mut stream, socket).await {
                        let addrs = admitted.addrs;
                        l4::serve(&ctx, stream, addrs, &[]).await;
                    }
                    drop(guard);
                });
            }
            (Service::Passthrough(ctx), _) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    if let Some(admitted) = admission.admit(&mut stream, socket).await {
                        let addrs = admitted.addrs;
                        passthrough::serve(&ctx, stream, addrs).await;
                    }
                    drop(guard);
                });
            }
            (Service::Http(ctx), Some(tls)) => {
                let (ctx, tls) = (Rc::clone(ctx), Arc::clone(tls));
                tokio::task::spawn_local(async move {
                    let Some(admitted) = admission.admit(&mut stream, socket).await else {
                        return;
                    };
                    let addrs = admitted.addrs;
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
                    let Some(admitted) = admission.admit(&mut stream, socket).await else {
                        return;
                    };
                    let addrs = admitted.addrs;
                    if let Some((stream, _)) = tls.accept(stream).await {
                        l4::serve(&ctx, stream, addrs, &[]).await;
                    }
                    drop(guard);
                });
            }
        }
    }
}
