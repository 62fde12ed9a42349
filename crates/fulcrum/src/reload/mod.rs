//! `fulcrum run`'s configuration reload (SIGHUP, `POST /api/reload`): the file is read and
//! checked again, its difference with the running configuration computed as data
//! (`fulcrum_core::reload`), and applied in place — or refused whole, leaving the running
//! configuration untouched, when the file has an error or holds a change this version cannot
//! make without a restart.
//!
//! A reload runs in two steps. **Prepare** does everything that can fail: secrets read, new
//! sockets bound, new pools built. **Commit** cannot fail: pools are added and changed first
//! (so a listener finds the pool it now names), then listeners are served, re-served or
//! closed worker by worker, then removed pools stop. What is applied where:
//!
//! - a pool's settings (algorithm, timeouts, hashing, health, outlier detection, discovery)
//!   are swapped as one; its backends keep their state, counters and history; the health
//!   checks restart when their section changed, the discovery watch when its section did;
//! - backends added to the file warm up through slow start; removed ones drain, then go;
//!   backends the admin API or discovery added are not the file's and are left alone;
//! - a listener whose address is the same keeps its socket (nothing queued on it is lost);
//!   when anything else about it changed its new connections get the new settings and its
//!   open ones finish their current request and close (HTTP/1.1 `Connection: close`,
//!   HTTP/2 GOAWAY); an unchanged listener is not touched at all;
//! - refused: `[admin]`, `[ha]`, `runtime.workers` and `runtime.shutdown_grace` changes.

pub mod command;
mod record;

pub use record::{Outcome, ReloadFigures, ReloadRecord, ReloadRequest, Reloader, Trigger};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::{Config, Pool as PoolConfig};
use fulcrum_core::health::Cause;
use fulcrum_core::reload::{self, Change};

use crate::app::{self, ListenerTargets, RunningApp};
use crate::pool::Pool;
use crate::proxy::counters::ListenerStats;
use crate::proxy::worker::{Command, ListenerSocket, WorkerListener};
use crate::secrets::{self, Secrets};
use crate::tls::Terminator;

/// How long a reload waits for each worker to confirm a listener change.
const WORKER_CONFIRM: Duration = Duration::from_secs(5);

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// The file's errors, each with its path.
    Invalid(Vec<String>),
    /// Changes this version makes only by a restart.
    NotInPlace(Vec<Change>),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Invalid(errors) => write!(f, "{}", errors.join("; ")),
            ReloadError::NotInPlace(changes) => {
                let named: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "not applied in place by this version (restart to apply): {}",
                    named.join("; ")
                )
            }
        }
    }
}

/// Whether this version applies `change` to a running fulcrum.
fn applies_in_place(change: &Change) -> bool {
    !matches!(
        change,
        Change::AdminChanged
            | Change::HaChanged
            | Change::WorkersChanged { .. }
            | Change::ShutdownGraceChanged
            | Change::UpgradeSocketChanged
    )
}

/// Everything a reload needs, prepared before anything changes.
struct Plan {
    new: Config,
    secrets: Secrets,
    /// Pools the file adds, built but not yet running.
    added_pools: Vec<Arc<Pool>>,
    /// Listeners to (re)serve: per worker, in worker order.
    serve: Vec<(String, Vec<WorkerListener>)>,
    /// Listeners to close.
    close: Vec<String>,
    /// The new address and counters of every listener served anew.
    addrs: HashMap<String, (std::net::SocketAddr, Arc<ListenerStats>)>,
    /// Each TLS listener's termination after the reload.
    tls: HashMap<String, Arc<Terminator>>,
}

impl RunningApp {
    /// Makes `new` the running configuration; returns what changed. On an error nothing
    /// has changed.
    pub fn reload(&mut self, new: Config) -> Result<Vec<Change>, ReloadError> {
        let secrets = secrets::read(&new).map_err(ReloadError::Invalid)?;
        let changes = reload::diff(self.config(), &new);
        let refused: Vec<Change> = changes
            .iter()
            .filter(|c| !applies_in_place(c))
            .cloned()
            .collect();
        if !refused.is_empty() {
            return Err(ReloadError::NotInPlace(refused));
        }
        if changes.is_empty() {
            return Ok(changes);
        }
        let plan = self
            .prepare(new, secrets, &changes)
            .map_err(|e| ReloadError::Invalid(vec![e]))?;
        self.commit(plan, &changes);
        Ok(changes)
    }

    fn prepare(&self, new: Config, secrets: Secrets, changes: &[Change]) -> Result<Plan, String> {
        let old = self.config();
        let added_pools: Vec<Arc<Pool>> = changes
            .iter()
            .filter_map(|c| match c {
                Change::PoolAdded { name } => new
                    .pools
                    .get(name)
                    .map(|settings| Arc::new(Pool::new(name, settings.clone(), self.live.clock))),
                _ => None,
            })
            .collect();
        let pool_named = |name: &str| {
            added_pools
                .iter()
                .find(|p| p.name == name)
                .cloned()
                .or_else(|| self.pools().get(name))
        };
        // TLS to a pool's backends changed: the listeners sending to it are served anew.
        let tls_changed =
            |pool: &str| old.pools.get(pool).map(|p| &p.tls) != new.pools.get(pool).map(|p| &p.tls);
        let mut tls = HashMap::new();
        let mut serve = Vec::new();
        let mut addrs = HashMap::new();
        let workers = self.live.workers.len();
        for (i, l) in new.listeners.iter().enumerate() {
            let before = old.listeners.iter().find(|o| o.name == l.name);
            let targets = ListenerTargets::resolve(i, l, pool_named)?;
            let terminator = match before {
                // The same TLS settings: the termination (and its rotation state) is kept.
                Some(b) if b.tls == l.tls => self.live.tls.get(&l.name).cloned(),
                _ => secrets.tls.get(&l.name).cloned(),
            };
            if let Some(t) = &terminator {
                tls.insert(l.name.clone(), Arc::clone(t));
            }
            let changed = before != Some(l);
            if !changed && !targets.pools().any(|p| tls_changed(&p.name)) {
                continue;
            }
            let same_bind = before.is_some_and(|b| b.bind == l.bind);
            let (sockets, addr): (Vec<ListenerSocket>, _) = if same_bind {
                let kept = (0..workers).map(|_| ListenerSocket::Kept).collect();
                (kept, self.listener_addr(&l.name).unwrap_or(l.bind))
            } else {
                let (bound, addr) = app::bind_listener(i, l, workers, &self.live.freebind)?;
                (bound.into_iter().map(ListenerSocket::Bound).collect(), addr)
            };
            // Counters carry on while the address and the protocol stay.
            let kept_stats = match before {
                Some(b) if same_bind && b.protocol.name() == l.protocol.name() => {
                    self.live.stats.get(&l.name).cloned()
                }
                _ => None,
            };
            let stats = kept_stats.unwrap_or_else(|| {
                Arc::new(ListenerStats::new(
                    &l.name,
                    l.protocol.name(),
                    addr,
                    workers,
                ))
            });
            let access_log = app::start_access_log(l, &stats, &self.live.reopen_logs)?;
            addrs.insert(l.name.clone(), (addr, Arc::clone(&stats)));
            let per_worker = sockets
                .into_iter()
                .map(|socket| {
                    targets.for_worker(
                        l,
                        socket,
                        &stats,
                        terminator.clone(),
                        &secrets.backend_tls,
                        access_log.as_ref(),
                    )
                })
                .collect();
            serve.push((l.name.clone(), per_worker));
        }
        let close = old
            .listeners
            .iter()
            .filter(|o| !new.listeners.iter().any(|l| l.name == o.name))
            .map(|o| o.name.clone())
            .collect();
        Ok(Plan {
            new,
            secrets,
            added_pools,
            serve,
            close,
            addrs,
            tls,
        })
    }

    fn commit(&mut self, plan: Plan, changes: &[Change]) {
        let Plan {
            new,
            secrets,
            added_pools,
            serve,
            close,
            addrs,
            tls,
        } = plan;
        let old = self.config().clone();
        // Every access log reopens: a reload is also how an operator says "the files moved".
        self.live.reopen_logs.request();
        // Pools first: a listener served below may name a pool that starts now.
        for pool in added_pools {
            self.pools().insert(Arc::clone(&pool));
            self.live
                .control
                .start_pool(&pool, secrets.backend_tls.get(&pool.name).cloned());
        }
        for (name, settings) in &new.pools {
            let Some(before) = old.pools.get(name) else {
                continue;
            };
            if before != settings {
                self.update_pool(name, before, settings, &secrets);
            }
        }
        for change in changes {
            self.apply_backend_change(change);
        }
        // Listeners, one at a time; each worker confirms before the next listener.
        for (name, per_worker) in serve {
            if let Some((addr, _)) = addrs.get(&name) {
                self.register_sockets(*addr, &per_worker);
            }
            let done = self.tell_workers(per_worker.into_iter().map(|listener| {
                move |done| Command::Serve {
                    listener: Box::new(listener),
                    done,
                }
            }));
            if !done {
                tracing::warn!(listener = %name, "a worker did not confirm the listener change in time");
            }
        }
        for name in &close {
            let done = self.tell_workers((0..self.live.workers.len()).map(|_| {
                let name = name.clone();
                move |done| Command::Close { name, done }
            }));
            if !done {
                tracing::warn!(listener = %name, "a worker did not confirm closing the listener in time");
            }
            self.listeners_mut().remove(name);
            self.live.stats.remove(name);
            self.live.sockets.remove_listener(name);
        }
        for change in changes {
            if let Change::PoolRemoved { name } = change {
                if let Some(pool) = self.pools().remove(name) {
                    self.live.control.stop_pool(&pool);
                }
            }
        }
        for (name, (addr, stats)) in addrs {
            self.listeners_mut().insert(name.clone(), addr);
            self.live.stats.insert(name, stats);
        }
        for l in &new.listeners {
            let added = !old
                .listeners
                .iter()
                .any(|o| o.name == l.name && o.bind == l.bind);
            if added {
                if let Some(addr) = self.listener_addr(&l.name) {
                    app::log_listening(l, addr);
                }
            }
        }
        let stats_in_order = new
            .listeners
            .iter()
            .filter_map(|l| self.live.stats.get(&l.name).cloned())
            .collect();
        self.live
            .views
            .replace(stats_in_order, app::tls_in_order(&new, &tls));
        self.live.tls = tls;
        self.live.backend_tls = Arc::clone(&secrets.backend_tls);
        self.set_config(new);
    }

    /// A pool in both files whose section changed: its settings swapped, and the tasks whose
    /// section changed restarted.
    fn update_pool(&self, name: &str, before: &PoolConfig, after: &PoolConfig, secrets: &Secrets) {
        let Some(pool) = self.pools().get(name) else {
            return;
        };
        pool.set_settings(after.clone());
        if before.health != after.health || before.tls != after.tls {
            self.live
                .control
                .restart_probes(&pool, secrets.backend_tls.get(name).cloned());
        }
        if before.discovery != after.discovery {
            self.live.control.restart_discovery(&pool);
        }
        if before.websocket.registry != after.websocket.registry {
            self.live.control.restart_ws_registry(&pool);
        }
    }

    /// A listener served on new sockets (bound at `addr`): copies of them replace its old
    /// ones for a binary upgrade (the old copies close, so the old sockets go once the workers
    /// let them go). Kept sockets are registered already.
    fn register_sockets(&self, addr: std::net::SocketAddr, per_worker: &[WorkerListener]) {
        let Some(listener) = per_worker.first().map(|l| &l.config) else {
            return;
        };
        let bound: Vec<&std::net::TcpListener> = per_worker
            .iter()
            .filter_map(|l| match &l.socket {
                ListenerSocket::Bound(socket) => Some(socket),
                ListenerSocket::Kept => None,
            })
            .collect();
        if bound.is_empty() {
            return;
        }
        if let Err(e) =
            self.live
                .sockets
                .insert_listener(&listener.name, listener.bind, addr, bound)
        {
            tracing::warn!(listener = %listener.name, error = %e, "cannot keep the listener's sockets for a binary upgrade");
        }
    }

    /// Sends one command to each worker and waits for every confirmation; false when one
    /// did not confirm in time (the worker may be gone at shutdown).
    fn tell_workers<F>(&self, commands: impl Iterator<Item = F>) -> bool
    where
        F: FnOnce(std::sync::mpsc::Sender<()>) -> Command,
    {
        let (done, confirmed) = std::sync::mpsc::channel();
        let mut sent = 0;
        for (worker, command) in self.live.workers.iter().zip(commands) {
            if worker.send(command(done.clone())).is_ok() {
                sent += 1;
            }
        }
        (0..sent).all(|_| confirmed.recv_timeout(WORKER_CONFIRM).is_ok())
            && sent == self.live.workers.len()
    }

    fn apply_backend_change(&self, change: &Change) {
        let pool = |name: &str| self.pools().get(name);
        // The pool exists (the diff found the backend in it in both files). A backend the
        // file adds that the admin API added already keeps its state and takes the file's
        // weight; one the file removes that is already gone is left gone.
        match change {
            Change::BackendAdded {
                pool: name,
                addr,
                weight,
            } => {
                if let Some(p) = pool(name) {
                    if let Err(error) = p.ensure_backend(*addr, *weight, Cause::Reload) {
                        tracing::warn!(pool = %name, backend = %addr, %error, "reload could not add the backend");
                    }
                }
            }
            Change::BackendRemoved { pool: name, addr } => {
                if let Some(p) = pool(name) {
                    let _ = p.remove_backend(*addr, Cause::Reload);
                }
            }
            Change::BackendWeightChanged {
                pool: name,
                addr,
                to,
                ..
            } => {
                if let Some(p) = pool(name) {
                    let _ = p.set_weight(*addr, *to);
                }
            }
            _ => {}
        }
    }
}
