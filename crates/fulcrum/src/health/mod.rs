//! The control plane's tasks: every pool's control loop (live-traffic outcomes, drains,
//! timers, snapshot publishing), its active health probes and its discovery source. They run on one dedicated
//! thread, so a saturated worker never delays a health decision, and they never touch the
//! data path except through the snapshots they publish.

pub(crate) mod probe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fulcrum_core::config::{Health, Probe};
use fulcrum_core::health::ProbeOutcome;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::pool::{Pool, Pools};
use crate::tls::upstream::BackendTls;
use crate::ws_registry::RedisRegistry;

/// How often each pool's control loop runs: the resolution of slow start, decay, drains and
/// outlier detection.
pub const CONTROL_TICK: Duration = Duration::from_millis(50);

/// How much longer than the shutdown grace the control thread waits for lingering tasks.
const LINGER_SLACK: Duration = Duration::from_secs(3);

/// The control thread's tasks, per pool: started with the pool, restarted one kind at a time
/// by a reload (the pool's state lives in the pool, not in its tasks, so a restart loses
/// nothing), stopped with the pool.
#[derive(Debug)]
pub struct ControlPlane {
    runtime: tokio::runtime::Handle,
    tasks: Mutex<HashMap<String, PoolTasks>>,
    shutdown: watch::Receiver<bool>,
    /// Tasks the control thread waits for at shutdown, each bounded by its own deadline
    /// (the WebSocket registries' writers: they delete what they wrote as connections close).
    lingering: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    shutdown_grace: Duration,
}

#[derive(Debug)]
struct PoolTasks {
    control: AbortHandle,
    discovery: AbortHandle,
    probes: Option<AbortHandle>,
}

impl PoolTasks {
    fn abort(&self) {
        self.control.abort();
        self.discovery.abort();
        if let Some(probes) = &self.probes {
            probes.abort();
        }
    }
}

impl ControlPlane {
    /// Starts the control thread and every pool's tasks.
    pub fn spawn(
        pools: &Pools,
        backend_tls: &HashMap<String, Arc<BackendTls>>,
        shutdown: watch::Receiver<bool>,
        shutdown_grace: Duration,
    ) -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let lingering = Arc::new(Mutex::new(Vec::new()));
        let plane = Arc::new(Self {
            runtime: runtime.handle().clone(),
            tasks: Mutex::default(),
            shutdown: shutdown.clone(),
            lingering: Arc::clone(&lingering),
            shutdown_grace,
        });
        for pool in pools.all() {
            plane.start_pool(&pool, backend_tls.get(&pool.name).cloned());
        }
        let mut shutdown = shutdown;
        let thread = std::thread::Builder::new()
            .name("fulcrum-control".into())
            .spawn(move || {
                // The tasks run while this thread waits here.
                runtime.block_on(async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                    let finishing =
                        std::mem::take(&mut *lingering.lock().unwrap_or_else(|p| p.into_inner()));
                    for task in finishing {
                        let _ = tokio::time::timeout(shutdown_grace + LINGER_SLACK, task).await;
                    }
                });
            })?;
        Ok((plane, thread))
    }

    /// A pool's control loop, discovery source and active checks (if it has any).
    pub fn start_pool(&self, pool: &Arc<Pool>, tls: Option<Arc<BackendTls>>) {
        let tasks = PoolTasks {
            control: self.spawn_task(control_loop(Arc::clone(pool), self.shutdown.clone())),
            discovery: self.spawn_task(crate::discovery::run(
                Arc::clone(pool),
                self.shutdown.clone(),
            )),
            probes: self.spawn_probes(pool, tls),
        };
        if let Some(old) = self.lock().insert(pool.name.clone(), tasks) {
            old.abort();
        }
        self.restart_ws_registry(pool);
    }

    /// A removed pool: its tasks end (its backends are no longer probed); its registry's
    /// writer ends once the pool's last WebSocket has closed.
    pub fn stop_pool(&self, pool: &Pool) {
        if let Some(tasks) = self.lock().remove(&pool.name) {
            tasks.abort();
        }
        if let Some(old) = pool.set_ws_registry(None) {
            old.retire();
        }
    }

    /// The pool's `websocket.registry` is new or changed: new connections go to a new
    /// registry (with its own writer); the old one keeps its connections until they close.
    pub fn restart_ws_registry(&self, pool: &Arc<Pool>) {
        let registry = pool.settings().websocket.registry.clone().and_then(|settings| {
            // The connection manager finds its runtime when it is built.
            let _runtime = self.runtime.enter();
            match RedisRegistry::start(&pool.name, settings) {
                Ok((registry, writer)) => {
                    let task = self
                        .runtime
                        .spawn(writer.run(self.shutdown.clone(), self.shutdown_grace));
                    self.lingering
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(task);
                    Some(registry)
                }
                Err(e) => {
                    tracing::error!(pool = %pool.name, error = %e, "cannot start the WebSocket registry; connections are not recorded in Redis");
                    None
                }
            }
        });
        if let Some(old) = pool.set_ws_registry(registry) {
            old.retire();
        }
    }

    /// The pool's health section or its backend TLS changed: its probes start over with
    /// the new settings (every backend keeps its state until the new probes say otherwise).
    pub fn restart_probes(&self, pool: &Arc<Pool>, tls: Option<Arc<BackendTls>>) {
        let probes = self.spawn_probes(pool, tls);
        let mut tasks = self.lock();
        match tasks.get_mut(&pool.name) {
            Some(t) => {
                if let Some(old) = std::mem::replace(&mut t.probes, probes) {
                    old.abort();
                }
            }
            None => {
                if let Some(p) = probes {
                    p.abort();
                }
            }
        }
    }

    /// The pool's discovery section changed: its watch on the store starts over.
    pub fn restart_discovery(&self, pool: &Arc<Pool>) {
        let discovery = self.spawn_task(crate::discovery::run(
            Arc::clone(pool),
            self.shutdown.clone(),
        ));
        let mut tasks = self.lock();
        match tasks.get_mut(&pool.name) {
            Some(t) => std::mem::replace(&mut t.discovery, discovery).abort(),
            None => discovery.abort(),
        }
    }

    fn spawn_probes(&self, pool: &Arc<Pool>, tls: Option<Arc<BackendTls>>) -> Option<AbortHandle> {
        let health = pool.settings().health.clone()?;
        Some(self.spawn_task(probe_loop(
            Arc::clone(pool),
            health,
            tls,
            self.shutdown.clone(),
        )))
    }

    /// A task of the control thread's own (certificate rotation).
    pub fn spawn_task(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        self.runtime.spawn(task).abort_handle()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PoolTasks>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn control_loop(pool: Arc<Pool>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CONTROL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => pool.tick(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Every interval, probes every backend (liveness, then readiness when configured); each
/// probe is bounded by the timeout, so a round never outlasts the interval.
async fn probe_loop(
    pool: Arc<Pool>,
    health: Health,
    tls: Option<Arc<BackendTls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let health = Arc::new(health);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let mut round = tokio::task::JoinSet::new();
        for addr in pool.probe_targets() {
            let pool = Arc::clone(&pool);
            let health = Arc::clone(&health);
            let tls = tls.clone();
            round.spawn(async move {
                let alive = match &health.liveness {
                    Probe::Tcp => probe::tcp(addr, health.timeout).await,
                    Probe::Http(check) => {
                        let protocol = pool.settings().protocol;
                        probe::http(addr, check, health.timeout, tls.as_deref(), protocol).await
                    }
                };
                pool.report_liveness(addr, alive.outcome == ProbeOutcome::Pass, &alive.detail);
                if let Some(check) = &health.readiness {
                    let protocol = pool.settings().protocol;
                    let ready =
                        probe::http(addr, check, health.timeout, tls.as_deref(), protocol).await;
                    pool.report_readiness(addr, ready.outcome, &ready.detail);
                }
            });
        }
        while round.join_next().await.is_some() {}
    }
}
