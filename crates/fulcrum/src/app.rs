//! Builds the running load balancer from a validated [`Config`]: binds every socket first (so
//! a bad address fails before anything starts), then starts the workers and the admin API.
//! Shutdown stops accepting everywhere and gives open connections the grace period.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use fulcrum_core::config::{Config, HaMode, Listener, ListenerProtocol};
use tokio::sync::{mpsc, watch};

use crate::access_log::{AccessLog, Reopen};
use crate::admin;
use crate::ha::{self, HaShared};
use crate::health::ControlPlane;
use crate::pool::{Clock, Pool, Pools};
use crate::proxy::counters::ListenerStats;
use crate::proxy::worker::{self, Command, ListenerSocket, WorkerListener};
use crate::reload::{ReloadRecord, ReloadRequest, Reloader};
use crate::secrets;
use crate::tls::upstream::BackendTls;
use crate::tls::{self, Terminator};
use crate::upgrade::handover::Received;
use crate::upgrade::{self, SocketRegistry};
use crate::views::ListenerViews;

/// Why fulcrum could not start.
#[derive(Debug)]
pub struct StartError(String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A started fulcrum: its bound addresses, its pools, and the handle to stop it.
#[derive(Debug)]
pub struct RunningApp {
    /// The configuration running now (the file's, as of start or the last reload).
    config: Config,
    listeners: HashMap<String, SocketAddr>,
    admin: Option<SocketAddr>,
    pools: Arc<Pools>,
    ha: Option<Arc<HaShared>>,
    /// The HA loop's thread: joined at shutdown, left behind after a handover (it keeps the
    /// claim's store session open for the successor until this process exits).
    ha_thread: Option<JoinHandle<()>>,
    /// A successor of an HA instance: where its predecessor's role goes once received.
    ha_successor: Option<tokio::sync::oneshot::Sender<ha::Handover>>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    /// What a reload changes in place.
    pub(crate) live: Live,
    /// The reload counters the admin API shows.
    reloads: Arc<ReloadRecord>,
    /// `POST /api/reload` requests, for the owner of the app to answer.
    reload_requests: Option<mpsc::UnboundedReceiver<ReloadRequest>>,
}

/// The running parts a reload reaches: the workers, the control thread, and what the
/// listeners are served with now.
#[derive(Debug)]
pub(crate) struct Live {
    pub clock: Clock,
    pub workers: Vec<mpsc::UnboundedSender<Command>>,
    pub control: Arc<ControlPlane>,
    pub views: Arc<ListenerViews>,
    /// Each listener's counters, by name (kept while its address and protocol stay).
    pub stats: HashMap<String, Arc<ListenerStats>>,
    /// Each TLS listener's termination, by listener name.
    pub tls: HashMap<String, Arc<Terminator>>,
    /// TLS to backends, by pool name.
    pub backend_tls: Arc<HashMap<String, Arc<BackendTls>>>,
    /// Addresses that may be bound before they are on this host (HA virtual IPs).
    pub freebind: Vec<IpAddr>,
    /// Asks the access-log writers to reopen their files (SIGUSR1, reload).
    pub reopen_logs: Reopen,
    /// Copies of the listening sockets, for a binary upgrade.
    pub sockets: Arc<SocketRegistry>,
    /// Set before stopping for a binary upgrade: connections are asked to close gracefully
    /// instead of being closed when idle.
    pub handed_over: Arc<AtomicBool>,
    pub generation: u64,
}

impl RunningApp {
    /// Every access log closes its file and opens it again by its path (after logrotate
    /// moved it): what SIGUSR1 does.
    pub fn reopen_access_logs(&self) {
        self.live.reopen_logs.request();
    }

    pub fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, None)
    }

    /// Starts on the listening sockets a running fulcrum handed over (a binary upgrade), for
    /// every listener whose name and address are the same; the others are bound anew.
    pub fn start_with(
        config: &Config,
        mut inherited: Option<Received>,
    ) -> Result<Self, StartError> {
        if let Some(handed) = inherited.as_ref().and_then(|r| r.header.ha.as_ref()) {
            handed.accepts(config.ha.as_ref()).map_err(StartError)?;
        }
        let generation = inherited.as_ref().map_or(0, |r| r.header.generation + 1);
        let registry = Arc::new(SocketRegistry::default());
        let secrets = secrets::read(config).map_err(|errors| StartError(errors.join("\n")))?;
        let admin_token = secrets.admin_token;
        let clock = Clock::new();
        let pools = Arc::new(Pools::from_config(config, clock));
        let freebind = ha::freebind_addresses(config.ha.as_ref());
        let workers = match config.runtime.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Bind everything before starting anything.
        let mut per_worker: Vec<Vec<WorkerListener>> = (0..workers).map(|_| Vec::new()).collect();
        let reopen_logs = Reopen::default();
        let mut listeners = HashMap::new();
        let mut stats_by_name = HashMap::new();
        let mut listener_stats = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let targets =
                ListenerTargets::resolve(i, l, |name| pools.get(name)).map_err(StartError)?;
            let taken = inherited
                .as_mut()
                .and_then(|r| take_inherited(r, i, l, workers, &freebind));
            let (sockets, addr) = match taken {
                Some(taken) => taken,
                None => bind_listener(i, l, workers, &freebind),
            }
            .map_err(StartError)?;
            registry
                .insert_listener(&l.name, l.bind, addr, &sockets)
                .map_err(|e| StartError(format!("listeners[{i}] ({}): {e}", l.name)))?;
            let stats = Arc::new(ListenerStats::new(
                &l.name,
                l.protocol.name(),
                addr,
                workers,
            ));
            let access_log = start_access_log(l, &stats, &reopen_logs).map_err(StartError)?;
            for (worker, socket) in per_worker.iter_mut().zip(sockets) {
                worker.push(targets.for_worker(
                    l,
                    ListenerSocket::Bound(socket),
                    &stats,
                    secrets.tls.get(&l.name).cloned(),
                    &secrets.backend_tls,
                    access_log.as_ref(),
                ));
            }
            listeners.insert(l.name.clone(), addr);
            stats_by_name.insert(l.name.clone(), Arc::clone(&stats));
            listener_stats.push(stats);
        }
        // An HA predecessor's heartbeat socket (same address) and, after `ready`, its role.
        let (ha_inherit, ha_successor) = match inherited.as_mut() {
            Some(r) if r.header.ha.is_some() => {
                let (sender, handover) = tokio::sync::oneshot::channel();
                let same_address =
                    heartbeat_bind(config.ha.as_ref()) == r.header.ha.as_ref().map(|h| h.heartbeat);
                let socket = r.heartbeat.take().filter(|_| same_address);
                (Some(ha::Inherit { socket, handover }), Some(sender))
            }
            _ => (None, None),
        };
        let inherited_admin = inherited.and_then(|r| r.header.admin.zip(r.admin));
        let admin_socket = match (&config.admin, inherited_admin) {
            (Some(a), Some((addr, socket)))
                if a.bind == addr || (a.bind.port() == 0 && a.bind.ip() == addr.ip()) =>
            {
                Some(socket)
            }
            (Some(a), _) => Some(std::net::TcpListener::bind(a.bind).map_err(|e| {
                StartError(format!("admin.bind: cannot listen on {}: {e}", a.bind))
            })?),
            (None, _) => None,
        };
        if let Some(socket) = &admin_socket {
            registry
                .set_admin(socket)
                .map_err(|e| StartError(format!("admin.bind: {e}")))?;
        }
        let admin = match &admin_socket {
            Some(s) => Some(s.local_addr().map_err(|e| StartError(e.to_string()))?),
            None => None,
        };

        let mut threads = Vec::new();
        let (ha, ha_thread) = match &config.ha {
            Some(settings) => {
                let started = ha::start(settings, secrets.heartbeat_key.clone(), clock, ha_inherit)
                    .map_err(StartError)?;
                if let Some(socket) = &started.heartbeat_socket {
                    let bound = socket
                        .local_addr()
                        .map_err(|e| StartError(format!("ha.heartbeat_bind: {e}")))?;
                    if let Some(handed) = ha::HandedHa::of(settings, bound) {
                        registry
                            .set_ha(handed, socket)
                            .map_err(|e| StartError(format!("ha.heartbeat_bind: {e}")))?;
                    }
                }
                (Some(started.shared), started.thread)
            }
            None => (None, None),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let spawn_error = |e: std::io::Error| StartError(format!("cannot start a thread: {e}"));
        let mut worker_commands = Vec::new();
        let handed_over = Arc::new(AtomicBool::new(false));
        for (id, sockets) in per_worker.into_iter().enumerate() {
            let (commands, received) = mpsc::unbounded_channel();
            worker_commands.push(commands);
            threads.push(
                worker::spawn(
                    id,
                    sockets,
                    received,
                    shutdown_rx.clone(),
                    Arc::clone(&handed_over),
                    config.runtime.shutdown_grace,
                )
                .map_err(spawn_error)?,
            );
        }
        let (control, thread) = ControlPlane::spawn(
            &pools,
            &secrets.backend_tls,
            shutdown_rx.clone(),
            config.runtime.shutdown_grace,
        )
        .map_err(spawn_error)?;
        threads.push(thread);
        let views = Arc::new(ListenerViews::new(
            listener_stats,
            tls_in_order(config, &secrets.tls),
        ));
        control.spawn_task(tls::rotation::run(Arc::clone(&views), shutdown_rx.clone()));
        let reloads = Arc::new(ReloadRecord::new(generation));
        let (reloader, reload_requests) = Reloader::channel();
        if let Some(socket) = admin_socket {
            threads.push(
                admin::spawn(
                    socket,
                    admin::AdminState {
                        pools: Arc::clone(&pools),
                        ha: ha.clone(),
                        listeners: Arc::clone(&views),
                        reloads: Arc::clone(&reloads),
                        reloader,
                        started_unix: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()),
                    },
                    admin_token,
                    shutdown_rx,
                )
                .map_err(spawn_error)?,
            );
        }
        for l in &config.listeners {
            log_listening(l, listeners[&l.name]);
        }
        for terminator in secrets.tls.values() {
            terminator.log_expiry(std::time::SystemTime::now());
        }
        for (name, pool) in &config.pools {
            let backends: Vec<String> = pool
                .backends
                .iter()
                .map(|b| format!("{} (weight {})", b.addr, b.weight))
                .collect();
            tracing::info!(
                pool = %name,
                algorithm = pool.algorithm.name(),
                backends = %backends.join(", "),
                discovery = pool.discovery.is_some(),
                "pool"
            );
        }
        if let Some(addr) = admin {
            tracing::info!(%addr, "admin API listening");
        }
        tracing::info!(workers, "fulcrum serving");
        Ok(Self {
            config: config.clone(),
            listeners,
            admin,
            pools,
            ha,
            ha_thread,
            ha_successor,
            shutdown,
            threads,
            live: Live {
                clock,
                workers: worker_commands,
                control,
                views,
                stats: stats_by_name,
                tls: secrets.tls,
                backend_tls: secrets.backend_tls,
                freebind,
                reopen_logs,
                sockets: registry,
                handed_over,
                generation,
            },
            reloads,
            reload_requests: Some(reload_requests),
        })
    }

    /// The reload counters (the owner of the app records each reload it makes).
    pub fn reload_record(&self) -> &Arc<ReloadRecord> {
        &self.reloads
    }

    /// The admin API's reload requests, to be answered by whoever owns the app (`fulcrum
    /// run`'s main thread); until they are taken and answered, `POST /api/reload` waits and
    /// then answers 503.
    pub fn take_reload_requests(&mut self) -> Option<mpsc::UnboundedReceiver<ReloadRequest>> {
        self.reload_requests.take()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    pub(crate) fn listeners_mut(&mut self) -> &mut HashMap<String, SocketAddr> {
        &mut self.listeners
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// After a binary upgrade handed the sockets over: stops accepting, asks every connection
    /// to close after its current exchange (`Connection: close`, GOAWAY), gives them the grace
    /// period, and returns when every thread has ended.
    pub fn shutdown_after_handover(mut self) {
        self.live.handed_over.store(true, Ordering::SeqCst);
        // Frozen for the successor: never ends by itself, ends with the process.
        drop(self.ha_thread.take());
        self.shutdown();
    }

    /// A successor of an HA instance: takes the role its predecessor froze after `ready`
    /// from `stream`. Without it (the predecessor went away, or sent nothing usable) this
    /// instance starts standing by, like a fresh one.
    pub fn take_ha_role(&mut self, stream: &std::os::unix::net::UnixStream) {
        let Some(successor) = self.ha_successor.take() else {
            return;
        };
        match upgrade::handover::receive_role(stream) {
            Ok(Some(handover)) => {
                let _ = successor.send(handover);
            }
            Ok(None) => tracing::warn!("upgrade: the previous process handed no HA role over"),
            Err(e) => tracing::error!(error = %e, "upgrade: no HA role received"),
        }
    }

    /// Serves binary upgrades on the Unix socket at `path`; `handed_over` gets the new
    /// process's pid once it is ready (then the caller stops this app with
    /// [`shutdown_after_handover`](Self::shutdown_after_handover)).
    pub fn serve_upgrades(
        &mut self,
        path: &std::path::Path,
    ) -> std::io::Result<mpsc::UnboundedReceiver<u32>> {
        let listener = upgrade::bind(path)?;
        let (handed_over, receiver) = mpsc::unbounded_channel();
        // The HA loop stops its store task within a round trip (bounded by the TTL) or
        // resigns, which takes at most another TTL.
        let freeze_limit = match self.config.ha.as_ref().map(|h| &h.mode) {
            Some(HaMode::ActivePassive(pair)) => pair.election.ttl * 4,
            _ => std::time::Duration::ZERO,
        };
        let ha = self.ha.clone().map(|ha| (ha, freeze_limit));
        let thread = upgrade::serve(
            listener,
            Arc::clone(&self.live.sockets),
            self.live.generation,
            ha,
            handed_over,
        )?;
        // Not joined at shutdown: it blocks in accept, and ends with the process.
        drop(thread);
        Ok(receiver)
    }

    /// Stops accepting, lets open connections finish within the grace period, and returns
    /// when every thread has ended.
    ///
    /// An active HA instance first gives up its role (a standby takes over at once), then
    /// drains.
    pub fn shutdown(self) {
        if let Some(ha) = &self.ha {
            ha.resign(std::time::Duration::from_secs(3));
        }
        let _ = self.shutdown.send(true);
        for thread in self.threads.into_iter().chain(self.ha_thread) {
            let _ = thread.join();
        }
    }
}

/// The heartbeat address of an active-passive `[ha]`.
fn heartbeat_bind(config: Option<&fulcrum_core::config::Ha>) -> Option<std::net::SocketAddr> {
    match config.map(|c| &c.mode) {
        Some(HaMode::ActivePassive(pair)) => Some(pair.heartbeat_bind),
        _ => None,
    }
}

/// The TLS terminations of `config`'s listeners, in configuration order.
pub(crate) fn tls_in_order(
    config: &Config,
    tls: &HashMap<String, Arc<Terminator>>,
) -> Vec<Arc<Terminator>> {
    config
        .listeners
        .iter()
        .filter_map(|l| tls.get(&l.name).cloned())
        .collect()
}

pub(crate) fn log_listening(l: &Listener, addr: SocketAddr) {
    tracing::info!(
        listener = %l.name,
        %addr,
        protocol = l.protocol.name(),
        pool = l.pool.as_deref().unwrap_or("(routes only)"),
        "listening"
    );
}

/// The pools a listener sends to, found by name.
pub(crate) struct ListenerTargets {
    pool: Option<Arc<Pool>>,
    route_pools: HashMap<String, Arc<Pool>>,
}

impl ListenerTargets {
    /// `i`: the listener's position in the file, for error paths.
    pub fn resolve(
        i: usize,
        l: &Listener,
        pools: impl Fn(&str) -> Option<Arc<Pool>>,
    ) -> Result<Self, String> {
        let pool_named = |key: String, name: &str| {
            pools(name).ok_or_else(|| format!("{key}: unknown pool `{name}`"))
        };
        let pool = match &l.pool {
            Some(name) => Some(pool_named(format!("listeners[{i}].pool"), name)?),
            None => None,
        };
        let mut route_pools = HashMap::new();
        let route_pool_names: Vec<&str> = match &l.protocol {
            ListenerProtocol::TlsPassthrough(routes) => {
                routes.iter().map(|r| r.pool.as_str()).collect()
            }
            _ => l.routes.routes.iter().map(|r| r.pool.as_str()).collect(),
        };
        for (j, name) in route_pool_names.into_iter().enumerate() {
            let pool = pool_named(format!("listeners[{i}].routes[{j}].pool"), name)?;
            route_pools.insert(name.to_string(), pool);
        }
        Ok(Self { pool, route_pools })
    }

    /// Every pool the listener sends to.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pool.iter().chain(self.route_pools.values())
    }

    pub fn for_worker(
        &self,
        l: &Listener,
        socket: ListenerSocket,
        stats: &Arc<ListenerStats>,
        tls: Option<Arc<Terminator>>,
        backend_tls: &Arc<HashMap<String, Arc<BackendTls>>>,
        access_log: Option<&AccessLog>,
    ) -> WorkerListener {
        WorkerListener {
            access_log: access_log.cloned(),
            stats: Arc::clone(stats),
            config: l.clone(),
            socket,
            pool: self.pool.clone(),
            route_pools: self.route_pools.clone(),
            tls,
            backend_tls: Arc::clone(backend_tls),
        }
    }
}

/// The writer of `l`'s access log, when it has one.
pub(crate) fn start_access_log(
    l: &Listener,
    stats: &ListenerStats,
    reopen: &Reopen,
) -> Result<Option<AccessLog>, String> {
    l.access_log
        .as_ref()
        .map(|config| AccessLog::start(&l.name, config, Arc::clone(&stats.access_log), reopen))
        .transpose()
}

/// One socket per worker on `l.bind` (all on the same port when it is 0), after making sure
/// no other process listens there. `i`: the listener's position in the file, for error paths.
pub(crate) fn bind_listener(
    i: usize,
    l: &Listener,
    workers: usize,
    freebind: &[IpAddr],
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), String> {
    let freebind_here = freebind.contains(&l.bind.ip());
    let cannot = |why: String| {
        format!(
            "listeners[{i}] ({}): cannot listen on {}: {why}",
            l.name, l.bind
        )
    };
    worker::ensure_unused(l.bind, freebind_here).map_err(|e| {
        cannot(if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is already in use (another fulcrum, or another server, listens there)"
                .to_string()
        } else {
            e.to_string()
        })
    })?;
    let mut addr = l.bind;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket =
            worker::bind_reuseport(addr, freebind_here).map_err(|e| cannot(e.to_string()))?;
        // With port 0 the first bind picks the port; the other workers share it.
        addr = socket.local_addr().map_err(|e| cannot(e.to_string()))?;
        sockets.push(socket);
    }
    Ok((sockets, addr))
}

/// The sockets a predecessor handed over for `l`, when it had a listener of that name on the
/// same configured address: one per worker (more workers than it had get new sockets on the
/// same address; fewer cannot take them all, which would leave connections queued on a
/// socket nobody accepts from).
fn take_inherited(
    received: &mut Received,
    i: usize,
    l: &Listener,
    workers: usize,
    freebind: &[IpAddr],
) -> Option<Result<(Vec<std::net::TcpListener>, SocketAddr), String>> {
    let (handed, mut sockets) = received.listeners.remove(&l.name)?;
    if handed.bind != l.bind {
        return None;
    }
    if sockets.len() > workers {
        return Some(Err(format!(
            "runtime.workers: the running fulcrum serves listeners[{i}] ({}) with {} sockets; \
             this one has {workers} workers, and an upgrade cannot serve fewer",
            l.name,
            sockets.len()
        )));
    }
    while sockets.len() < workers {
        match worker::bind_reuseport(handed.addr, freebind.contains(&handed.addr.ip())) {
            Ok(socket) => sockets.push(socket),
            Err(e) => {
                return Some(Err(format!(
                    "listeners[{i}] ({}): cannot listen on {}: {e}",
                    l.name, handed.addr
                )))
            }
        }
    }
    Some(Ok((sockets, handed.addr)))
}
