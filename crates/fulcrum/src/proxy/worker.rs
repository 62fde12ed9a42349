//! Worker threads. Each worker runs its own single-threaded event loop with its own
//! `SO_REUSEPORT` socket for every listener, so the kernel spreads connections across workers
//! and a request never hops between threads (no work stealing, no cross-thread wake-ups on the
//! hot path). Pools and their counters are shared; upstream connection pools are per worker.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fulcrum_core::config::{Listener, ListenerProtocol, StatusRange};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::LocalSet;

use super::counters::ListenerStats;
use super::h1::buffer::BufferPool;
use super::h1::conn;
use super::h1::exchange::HttpContext;
use super::h1::idle::{IdleRegistry, TICK};
use super::h2;
use super::h2::upstream::H2Upstreams;
use super::l4::{self, TcpContext};
use super::passthrough::{self, PassthroughContext};
use super::upstream::UpstreamPool;
use crate::pool::Pool;
use crate::tls::upstream::BackendTls;
use crate::tls::Terminator;

/// Binds a listening socket that other workers (and, later, a new fulcrum binary during an
/// upgrade) can bind too.
///
/// With `freebind` the address need not be on this host yet (a virtual IP this instance may
/// own later): connections are served from the first packet after it arrives.
pub fn bind_reuseport(addr: SocketAddr, freebind: bool) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if freebind {
        match addr {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Fails when another process already listens on `addr`. Listening sockets are bound with
/// `SO_REUSEPORT`, which would let a second fulcrum share the address silently and split the
/// traffic; a socket bound without it is refused by the kernel while anyone listens there.
/// (Only a binary upgrade may share listeners on purpose.)
pub fn ensure_unused(addr: SocketAddr, freebind: bool) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Connections of an earlier run in TIME_WAIT do not count as in use.
    probe.set_reuse_address(true)?;
    if freebind {
        match addr {
            SocketAddr::V4(_) => probe.set_freebind_v4(true)?,
            SocketAddr::V6(_) => probe.set_freebind_v6(true)?,
        }
    }
    probe.bind(&addr.into())
}

/// One listener's socket for one worker, with what it serves.
#[derive(Debug)]
pub struct WorkerListener {
    pub config: Listener,
    pub socket: StdListener,
    /// The listener's pool (for tls_passthrough: the default one, if any).
    pub pool: Option<Arc<Pool>>,
    /// tls_passthrough: every pool its routes name, by name.
    pub route_pools: HashMap<String, Arc<Pool>>,
    /// TLS termination, shared by every worker (its certificates rotate in one place).
    pub tls: Option<Arc<Terminator>>,
    /// TLS to backends, by pool name, for the pools that speak it.
    pub backend_tls: Arc<HashMap<String, Arc<BackendTls>>>,
    /// What the listener served, shared by every worker.
    pub stats: Arc<ListenerStats>,
}

/// Starts a worker thread serving `listeners` until `shutdown` turns true, then lets open
/// connections finish for at most `grace`.
pub fn spawn(
    id: usize,
    listeners: Vec<WorkerListener>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("fulcrum-worker-{id}"))
        .spawn(move || {
            let local = LocalSet::new();
            local.block_on(&runtime, run(listeners, shutdown, grace));
        })
}

async fn run(listeners: Vec<WorkerListener>, mut shutdown: watch::Receiver<bool>, grace: Duration) {
    let connections = Rc::new(ConnTracker::default());
    let idle = Rc::new(IdleRegistry::default());
    tokio::task::spawn_local(tick_idle(Rc::clone(&idle), shutdown.clone()));
    let upstreams = Rc::new(UpstreamPool::default());
    let h2_upstreams = Rc::new(H2Upstreams::default());
    let buffers = Rc::new(BufferPool::default());
    tokio::task::spawn_local(sweep_idle_upstreams(
        Rc::clone(&upstreams),
        Rc::clone(&h2_upstreams),
        shutdown.clone(),
    ));
    for l in listeners {
        let socket = match TcpListener::from_std(l.socket) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::error!(listener = %l.config.name, error = %e, "cannot register listener");
                continue;
            }
        };
        let tcp = |pool: &Arc<Pool>| {
            Rc::new(TcpContext {
                listener: l.config.name.clone(),
                pool: Arc::clone(pool),
                idle_timeout: l.config.idle_timeout,
                backend_tls: l.backend_tls.get(&pool.name).cloned(),
            })
        };
        let service = match (&l.config.protocol, &l.pool) {
            (ListenerProtocol::Http(limits), Some(pool)) => Service::Http(Rc::new(HttpContext {
                listener: l.config.name.clone(),
                failure_statuses: pool.settings.outlier.as_ref().map_or(
                    StatusRange {
                        low: 500,
                        high: 599,
                    },
                    |o| o.failure_statuses,
                ),
                pool: Arc::clone(pool),
                upstreams: Rc::clone(&upstreams),
                buffers: Rc::clone(&buffers),
                idle: Rc::clone(&idle),
                limits: limits.clone(),
                idle_timeout: l.config.idle_timeout,
                backend_tls: l.backend_tls.get(&pool.name).cloned(),
                stats: Arc::clone(&l.stats),
                h2_upstreams: Rc::clone(&h2_upstreams),
            })),
            (ListenerProtocol::Tcp, Some(pool)) => Service::Tcp(tcp(pool)),
            (ListenerProtocol::TlsPassthrough(routes), default) => {
                Service::Passthrough(Rc::new(PassthroughContext {
                    listener: l.config.name.clone(),
                    routes: routes.clone(),
                    pools: l
                        .route_pools
                        .iter()
                        .map(|(name, pool)| (name.clone(), tcp(pool)))
                        .collect(),
                    default: default.as_ref().map(tcp),
                }))
            }
            (_, None) => {
                tracing::error!(listener = %l.config.name, "listener without a pool");
                continue;
            }
        };
        tokio::task::spawn_local(accept_loop(
            socket,
            service,
            l.stats,
            l.tls,
            Rc::clone(&connections),
            shutdown.clone(),
        ));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    idle.stop();
    if tokio::time::timeout(grace, connections.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.open.get(),
            "shutdown grace period over; closing remaining connections"
        );
    }
}

#[derive(Clone)]
enum Service {
    Http(Rc<HttpContext>),
    Tcp(Rc<TcpContext>),
    Passthrough(Rc<PassthroughContext>),
}

async fn accept_loop(
    listener: TcpListener,
    service: Service,
    stats: Arc<ListenerStats>,
    tls: Option<Arc<Terminator>>,
    connections: Rc<ConnTracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let guard = connections.open();
        if !matches!(service, Service::Http(_)) {
            // HTTP connections are counted by the protocol they turn out to speak.
            ListenerStats::count(&stats.tcp);
        }
        // One task shape per protocol: a task is as large as its biggest future, and an idle
        // HTTP connection should not pay for the TCP splice's state.
        match (&service, &tls) {
            (Service::Http(ctx), None) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    conn::serve(ctx, stream, peer, None).await;
                    drop(guard);
                });
            }
            (Service::Tcp(ctx), None) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    // TCP has no graceful close: connections run on until the grace period ends.
                    l4::serve(&ctx, stream, peer, &[]).await;
                    drop(guard);
                });
            }
            (Service::Passthrough(ctx), _) => {
                let ctx = Rc::clone(ctx);
                tokio::task::spawn_local(async move {
                    passthrough::serve(&ctx, stream, peer).await;
                    drop(guard);
                });
            }
            (Service::Http(ctx), Some(tls)) => {
                let (ctx, tls) = (Rc::clone(ctx), Arc::clone(tls));
                tokio::task::spawn_local(async move {
                    match tls.accept(stream).await {
                        Some((stream, facts)) if facts.h2 => {
                            Box::pin(h2::server::serve(ctx, stream, peer, Some(facts))).await;
                        }
                        Some((stream, facts)) => conn::serve(ctx, stream, peer, Some(facts)).await,
                        None => {}
                    }
                    drop(guard);
                });
            }
            (Service::Tcp(ctx), Some(tls)) => {
                let (ctx, tls) = (Rc::clone(ctx), Arc::clone(tls));
                tokio::task::spawn_local(async move {
                    if let Some((stream, _)) = tls.accept(stream).await {
                        l4::serve(&ctx, stream, peer, &[]).await;
                    }
                    drop(guard);
                });
            }
        }
    }
}

/// Advances the idle registry's clock and closes client connections idle too long.
async fn tick_idle(idle: Rc<IdleRegistry>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => idle.tick(tokio::time::Instant::now()),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn sweep_idle_upstreams(
    upstreams: Rc<UpstreamPool>,
    h2_upstreams: Rc<H2Upstreams>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                upstreams.sweep();
                h2_upstreams.sweep();
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Counts this worker's open client connections so shutdown can wait for them.
#[derive(Default)]
struct ConnTracker {
    open: Cell<usize>,
    closed: Notify,
}

struct OpenConn(Rc<ConnTracker>);

impl ConnTracker {
    fn open(self: &Rc<Self>) -> OpenConn {
        self.open.set(self.open.get() + 1);
        OpenConn(Rc::clone(self))
    }

    async fn all_closed(&self) {
        while self.open.get() > 0 {
            self.closed.notified().await;
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.closed.notify_waiters();
        }
    }
}
