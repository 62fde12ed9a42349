//! Worker threads. Each worker runs its own single-threaded event loop with its own
//! `SO_REUSEPORT` socket for every listener, so the kernel spreads connections across workers
//! and a request never hops between threads (no work stealing, no cross-thread wake-ups on the
//! hot path). Pools and their counters are shared; upstream connection pools are per worker.
//! A reload reaches a worker as [`Command`]s: serve a listener (new or changed), close one.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::LocalSet;

use super::admission::Admission;
use super::h1::buffer::BufferPool;
use super::h1::idle::{IdleRegistry, TICK};
use super::h2::upstream::H2Upstreams;
use super::listener::{accept_loop, service_for, Front, WorkerShared};
pub use super::listener::{ListenerSocket, WorkerListener};
use super::upstream::UpstreamPool;

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

/// What a reload asks of a worker; `done` is answered once it is in effect.
#[derive(Debug)]
pub enum Command {
    /// Serve this listener: a new one, or a changed one (whose current accept loop is
    /// retired first and its connections told to close after their current request).
    Serve {
        listener: Box<WorkerListener>,
        done: std::sync::mpsc::Sender<()>,
    },
    /// Stop accepting on the listener and close its socket; its connections finish their
    /// current request and close.
    Close {
        name: String,
        done: std::sync::mpsc::Sender<()>,
    },
}

/// Starts a worker thread serving `listeners` (and what `commands` bring later) until
/// `shutdown` turns true, then lets open connections finish for at most `grace`.
pub fn spawn(
    id: usize,
    listeners: Vec<WorkerListener>,
    commands: mpsc::UnboundedReceiver<Command>,
    shutdown: watch::Receiver<bool>,
    handed_over: Arc<AtomicBool>,
    grace: Duration,
) -> io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("fulcrum-worker-{id}"))
        .spawn(move || {
            let local = LocalSet::new();
            local.block_on(
                &runtime,
                run(id, listeners, commands, shutdown, handed_over, grace),
            );
        })
}

async fn run(
    worker: usize,
    listeners: Vec<WorkerListener>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<bool>,
    handed_over: Arc<AtomicBool>,
    grace: Duration,
) {
    let shared = WorkerShared {
        worker,
        connections: Rc::new(ConnTracker::default()),
        upstreams: Rc::new(UpstreamPool::default()),
        h2_upstreams: Rc::new(H2Upstreams::default()),
        buffers: Rc::new(BufferPool::default()),
    };
    let registries: Registries = Rc::default();
    tokio::task::spawn_local(tick_idle(Rc::clone(&registries), shutdown.clone()));
    tokio::task::spawn_local(sweep_idle_upstreams(
        Rc::clone(&shared.upstreams),
        Rc::clone(&shared.h2_upstreams),
        shutdown.clone(),
    ));
    let mut worker = Worker {
        shared,
        registries,
        serving: HashMap::new(),
        shutdown: shutdown.clone(),
    };
    for l in listeners {
        worker.serve(l).await;
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Serve { listener, done }) => {
                    worker.serve(*listener).await;
                    let _ = done.send(());
                }
                Some(Command::Close { name, done }) => {
                    drop(worker.retire(&name).await);
                    let _ = done.send(());
                }
                // The app is gone without saying stop: stop too.
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    // After a handover the successor serves every new connection: the old ones are asked to
    // close after their current exchange. On a plain stop idle ones are closed at once.
    let graceful = handed_over.load(Ordering::SeqCst);
    for registry in worker.registries.borrow().iter() {
        if graceful {
            registry.close_gracefully();
        } else {
            registry.stop();
        }
    }
    let connections = &worker.shared.connections;
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

/// Every listener's registry of waiting connections on this worker, ticked together; a
/// retired listener's stays until its last connection is gone.
type Registries = Rc<RefCell<Vec<Rc<IdleRegistry>>>>;

/// One worker's listeners, by name.
struct Worker {
    shared: WorkerShared,
    registries: Registries,
    serving: HashMap<String, Serving>,
    shutdown: watch::Receiver<bool>,
}

/// A listener being served: its accept loop, and its connections' registry.
struct Serving {
    retire: oneshot::Sender<()>,
    accept: tokio::task::JoinHandle<TcpListener>,
    idle: Rc<IdleRegistry>,
}

impl Worker {
    async fn serve(&mut self, mut l: WorkerListener) {
        let name = l.config.name.clone();
        let kept = self.retire(&name).await;
        let socket = match std::mem::replace(&mut l.socket, ListenerSocket::Kept) {
            ListenerSocket::Kept => match kept {
                Some(socket) => socket,
                None => {
                    tracing::error!(listener = %name, "no socket to keep; listener not served");
                    return;
                }
            },
            ListenerSocket::Bound(socket) => match TcpListener::from_std(socket) {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "cannot register listener");
                    return;
                }
            },
        };
        let idle = Rc::new(IdleRegistry::default());
        let Some(service) = service_for(&l, &self.shared, &idle) else {
            tracing::error!(listener = %name, "listener without a pool");
            return;
        };
        self.registries.borrow_mut().push(Rc::clone(&idle));
        let (retire, retired) = oneshot::channel();
        let admission = Rc::new(Admission {
            listener: l.config.name.clone(),
            proxy_protocol: l.config.proxy_protocol.clone(),
            max_connections: l.config.max_connections,
            max_connections_per_ip: l.config.max_connections_per_ip,
            stats: Arc::clone(&l.stats),
        });
        let front = Front {
            stats: l.stats,
            tls: l.tls,
            admission,
        };
        let accept = tokio::task::spawn_local(accept_loop(
            socket,
            service,
            front,
            Rc::clone(&self.shared.connections),
            self.shutdown.clone(),
            retired,
        ));
        self.serving.insert(
            name,
            Serving {
                retire,
                accept,
                idle,
            },
        );
    }

    /// Stops accepting on `name` and tells its connections to close after their current
    /// request; returns its socket.
    async fn retire(&mut self, name: &str) -> Option<TcpListener> {
        let serving = self.serving.remove(name)?;
        let _ = serving.retire.send(());
        let socket = serving.accept.await.ok();
        serving.idle.close_gracefully();
        socket
    }
}

/// Advances every listener's idle clock and closes client connections idle too long; drops
/// the registries of retired listeners once nothing uses them.
async fn tick_idle(registries: Registries, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let mut all = registries.borrow_mut();
                all.retain(|r| !r.is_stopped() || Rc::strong_count(r) > 1);
                for registry in all.iter() {
                    registry.tick(now);
                }
            }
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
#[derive(Debug, Default)]
pub struct ConnTracker {
    open: Cell<usize>,
    closed: Notify,
    /// An accept loop waits for a connection to close (it ran out of file descriptors).
    one_waited: Cell<bool>,
    one_closed: Notify,
}

#[derive(Debug)]
pub struct OpenConn(Rc<ConnTracker>);

impl ConnTracker {
    pub fn open(self: &Rc<Self>) -> OpenConn {
        self.open.set(self.open.get() + 1);
        OpenConn(Rc::clone(self))
    }

    /// Until one of this worker's connections closes (and frees its descriptor).
    pub async fn one_closed(&self) {
        let closed = self.one_closed.notified();
        self.one_waited.set(true);
        closed.await;
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
        if self.0.one_waited.replace(false) {
            self.0.one_closed.notify_waiters();
        }
        if open == 0 {
            self.0.closed.notify_waiters();
        }
    }
}
