//! What the admin API reports about a pool, and why an admin action was refused.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use fulcrum_core::config;
use fulcrum_core::health::{BackendState, Cause, HealthCounters};
use serde::Serialize;

use super::{DrainCounters, Pool};

/// Why an admin action on a pool was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    NotFound(String),
    Conflict(String),
    BadRequest(String),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::NotFound(m) | AdminError::Conflict(m) | AdminError::BadRequest(m) => {
                f.write_str(m)
            }
        }
    }
}

/// What a pool's checks and drains have done since it was created (the metrics).
#[derive(Debug, Clone)]
pub struct PoolCounters {
    pub health: HealthCounters,
    pub drains: DrainCounters,
    /// Requests and connections closed by drain timeouts.
    pub drain_cut: u64,
}

impl Pool {
    pub fn counters(&self) -> PoolCounters {
        let control = self.lock();
        PoolCounters {
            health: control.health.counters().clone(),
            drains: control.drains,
            drain_cut: self.drain_failures.load(Ordering::Relaxed),
        }
    }

    pub fn status(&self) -> PoolStatus {
        let now = self.clock.now();
        let control = self.lock();
        let discovery = self.settings().discovery.as_ref().map(|d| {
            let state = self.discovery_state();
            DiscoveryStatus {
                source: match d {
                    config::Discovery::Etcd { .. } => "etcd",
                    config::Discovery::ZooKeeper { .. } => "zookeeper",
                },
                connected: state.connected,
                revision: state.revision,
                stale_seconds: state
                    .disconnected_since
                    .map_or(0.0, |t| t.elapsed().as_secs_f64()),
                discovered: state.discovered,
                updates: state.updates,
                malformed: state.malformed,
                held: state.held,
                last_error: state.last_error.clone(),
            }
        });
        PoolStatus {
            discovery,
            name: self.name.clone(),
            algorithm: self.settings().algorithm.name(),
            panic: control.health.panic(),
            suppressed_ejections: control.health.suppressed_ejections(),
            drain_failures: self.drain_failures.load(Ordering::Relaxed),
            backends: control
                .members
                .iter()
                .filter_map(|m| {
                    let view = control.health.view(m.id, now)?;
                    Some(BackendStatus {
                        addr: m.addr,
                        state: view.state,
                        cause: view.cause,
                        weight: m.weight,
                        effective_weight: f64::from(m.weight) * view.weight_fraction,
                        in_flight: m.stats.in_flight(),
                        requests: m.stats.requests(),
                        failures: m.stats.failures(),
                        ejections: view.ejections,
                        ejection_suppressed: view.suppressed,
                        slow_checks: view.slow_checks,
                        state_since: self.clock.unix_seconds(view.since),
                        discovery_held: m.held_since.is_some(),
                        drain_timeout_ms: m.drain.map(|d| d.timeout.as_millis() as u64),
                        last_probe: m.probes.explaining().map(|(probe, at)| ProbeStatus {
                            check: probe.check,
                            passed: probe.passed,
                            result: probe.detail.clone(),
                            at: self.clock.unix_seconds(*at),
                        }),
                    })
                })
                .collect(),
        }
    }
}

/// What the admin API reports about a pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub algorithm: &'static str,
    pub panic: bool,
    pub suppressed_ejections: u64,
    pub drain_failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryStatus>,
    pub backends: Vec<BackendStatus>,
}

/// The state of a pool's discovery source.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryStatus {
    pub source: &'static str,
    pub connected: bool,
    /// The store revision the pool reflects.
    pub revision: i64,
    /// How long the store has been unreachable (0 while connected).
    pub stale_seconds: f64,
    /// Backends currently registered in the store.
    pub discovered: usize,
    /// Lists and changes from the store applied to the pool.
    pub updates: u64,
    /// Registrations skipped because their value could not be read.
    pub malformed: u64,
    /// Removals held back by the blast-radius cap (counted once per backend and episode).
    pub held: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub addr: SocketAddr,
    pub state: BackendState,
    pub cause: Cause,
    pub weight: u32,
    pub effective_weight: f64,
    pub in_flight: u64,
    pub requests: u64,
    pub failures: u64,
    pub ejections: u32,
    pub ejection_suppressed: bool,
    pub slow_checks: u64,
    /// When the backend entered its state (Unix seconds).
    pub state_since: f64,
    /// Gone from the discovery store but kept by the blast-radius cap.
    pub discovery_held: bool,
    /// The drain timeout chosen when it started draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
    /// The last active probe: why a backend is out of rotation, or that it is fine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeStatus>,
}

/// The last active probe of a backend.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    /// `liveness` or `readiness`.
    pub check: &'static str,
    pub passed: bool,
    /// What it saw: "status 503", "connect refused", "timed out after 1s", "connected".
    pub result: String,
    /// When (Unix seconds).
    pub at: f64,
}
