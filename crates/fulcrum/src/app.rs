//! Builds the running load balancer from a validated [`Config`]: binds every socket first (so
//! a bad address fails before anything starts), then starts the workers and the admin API.
//! Shutdown stops accepting everywhere and gives open connections the grace period.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use fulcrum_core::config::{Config, ListenerProtocol};
use tokio::sync::watch;

use crate::admin;
use crate::ha::{self, HaShared};
use crate::health;
use crate::pool::{Clock, Pools};
use crate::proxy::counters::ListenerStats;
use crate::proxy::worker::{self, WorkerListener};
use crate::secrets;
use crate::tls;

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
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningApp {
    pub fn start(config: &Config) -> Result<Self, StartError> {
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
        let mut listeners = HashMap::new();
        let mut listener_stats = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let pool_named = |key: String, name: &str| {
                pools
                    .get(name)
                    .cloned()
                    .ok_or_else(|| StartError(format!("{key}: unknown pool `{name}`")))
            };
            let pool = match &l.pool {
                Some(name) => Some(pool_named(format!("listeners[{i}].pool"), name)?),
                None => None,
            };
            let mut route_pools = HashMap::new();
            if let ListenerProtocol::TlsPassthrough(routes) = &l.protocol {
                for (j, route) in routes.iter().enumerate() {
                    let pool = pool_named(format!("listeners[{i}].routes[{j}].pool"), &route.pool)?;
                    route_pools.insert(route.pool.clone(), pool);
                }
            }
            let freebind_here = freebind.contains(&l.bind.ip());
            worker::ensure_unused(l.bind, freebind_here).map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                    "the address is already in use (another fulcrum, or another server, listens there)".to_string()
                } else {
                    e.to_string()
                };
                StartError(format!(
                    "listeners[{i}] ({}): cannot listen on {}: {why}",
                    l.name, l.bind
                ))
            })?;
            let mut addr = l.bind;
            let mut stats: Option<Arc<ListenerStats>> = None;
            for sockets in per_worker.iter_mut() {
                let socket =
                    worker::bind_reuseport(addr, freebind.contains(&addr.ip())).map_err(|e| {
                        StartError(format!(
                            "listeners[{i}] ({}): cannot listen on {}: {e}",
                            l.name, l.bind
                        ))
                    })?;
                // With port 0 the first bind picks the port; the other workers share it.
                addr = socket.local_addr().map_err(|e| StartError(e.to_string()))?;
                let stats = stats.get_or_insert_with(|| {
                    Arc::new(ListenerStats::new(&l.name, l.protocol.name(), addr))
                });
                sockets.push(WorkerListener {
                    stats: Arc::clone(stats),
                    config: l.clone(),
                    socket,
                    pool: pool.clone(),
                    route_pools: route_pools.clone(),
                    tls: secrets.tls.get(&l.name).cloned(),
                    backend_tls: Arc::clone(&secrets.backend_tls),
                });
            }
            listeners.insert(l.name.clone(), addr);
            listener_stats.extend(stats);
        }
        let admin_socket = match &config.admin {
            Some(a) => Some(std::net::TcpListener::bind(a.bind).map_err(|e| {
                StartError(format!("admin.bind: cannot listen on {}: {e}", a.bind))
            })?),
            None => None,
        };
        let admin = match &admin_socket {
            Some(s) => Some(s.local_addr().map_err(|e| StartError(e.to_string()))?),
            None => None,
        };

        let mut threads = Vec::new();
        let ha = match &config.ha {
            Some(settings) => {
                let (shared, thread) = ha::start(settings, secrets.heartbeat_key.clone(), clock)
                    .map_err(StartError)?;
                threads.extend(thread);
                Some(shared)
            }
            None => None,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let spawn_error = |e: std::io::Error| StartError(format!("cannot start a thread: {e}"));
        for (id, sockets) in per_worker.into_iter().enumerate() {
            threads.push(
                worker::spawn(
                    id,
                    sockets,
                    shutdown_rx.clone(),
                    config.runtime.shutdown_grace,
                )
                .map_err(spawn_error)?,
            );
        }
        threads.push(
            health::spawn(
                Arc::clone(&pools),
                Arc::clone(&secrets.backend_tls),
                shutdown_rx.clone(),
            )
            .map_err(spawn_error)?,
        );
        threads.extend(
            tls::rotation::spawn(secrets.tls.clone(), shutdown_rx.clone()).map_err(spawn_error)?,
        );
        if let Some(socket) = admin_socket {
            threads.push(
                admin::spawn(
                    socket,
                    admin::AdminState {
                        pools: Arc::clone(&pools),
                        ha: ha.clone(),
                        tls: config
                            .listeners
                            .iter()
                            .filter_map(|l| secrets.tls.get(&l.name).cloned())
                            .collect(),
                        listeners: listener_stats,
                    },
                    admin_token,
                    shutdown_rx,
                )
                .map_err(spawn_error)?,
            );
        }
        for l in &config.listeners {
            tracing::info!(
                listener = %l.name,
                addr = %listeners[&l.name],
                protocol = l.protocol.name(),
                pool = l.pool.as_deref().unwrap_or("(routes only)"),
                "listening"
            );
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
            shutdown,
            threads,
        })
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

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
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
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
