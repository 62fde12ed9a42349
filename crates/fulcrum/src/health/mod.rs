//! The control plane's tasks: every pool's control loop (live-traffic outcomes, drains,
//! timers, snapshot publishing), its active health probes and its discovery source. They run on one dedicated
//! thread, so a saturated worker never delays a health decision, and they never touch the
//! data path except through the snapshots they publish.

pub(crate) mod probe;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fulcrum_core::config::{Health, Probe};
use fulcrum_core::health::ProbeOutcome;
use tokio::sync::watch;

use crate::pool::{Pool, Pools};
use crate::tls::upstream::BackendTls;

/// How often each pool's control loop runs: the resolution of slow start, decay, drains and
/// outlier detection.
pub const CONTROL_TICK: Duration = Duration::from_millis(50);

pub fn spawn(
    pools: Arc<Pools>,
    backend_tls: Arc<HashMap<String, Arc<BackendTls>>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("fulcrum-control".into())
        .spawn(move || {
            runtime.block_on(async move {
                for pool in pools.iter() {
                    tokio::spawn(control_loop(Arc::clone(pool), shutdown.clone()));
                    tokio::spawn(crate::discovery::run(Arc::clone(pool), shutdown.clone()));
                    if let Some(health) = pool.settings.health.clone() {
                        let tls = backend_tls.get(&pool.name).cloned();
                        tokio::spawn(probe_loop(Arc::clone(pool), health, tls, shutdown.clone()));
                    }
                }
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
        })
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
                        let protocol = pool.settings.protocol;
                        probe::http(addr, check, health.timeout, tls.as_deref(), protocol).await
                    }
                };
                pool.report_liveness(addr, alive.outcome == ProbeOutcome::Pass, &alive.detail);
                if let Some(check) = &health.readiness {
                    let protocol = pool.settings.protocol;
                    let ready =
                        probe::http(addr, check, health.timeout, tls.as_deref(), protocol).await;
                    pool.report_readiness(addr, ready.outcome, &ready.detail);
                }
            });
        }
        while round.join_next().await.is_some() {}
    }
}
