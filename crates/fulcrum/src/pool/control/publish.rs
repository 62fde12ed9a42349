//! Publishing: the state machine's transitions applied to the data path's counters and
//! logged, and a new snapshot (backends in rotation with their effective weights, and the
//! balancer built for exactly those) stored whenever what the data path sees changed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::balance::{self, Balancer, HashParams};
use fulcrum_core::config::Algorithm;
use fulcrum_core::health::{BackendId, BackendState, Cause, Transition};

use super::{Control, Pool};
use crate::pool::snapshot::{LiveBackend, PoolSnapshot};

/// Effective weights are published in thousandths of the configured weight.
const WEIGHT_UNITS: f64 = 1000.0;
/// Effective weights move in steps of 1 % of the configured weight: a 30 s ramp rebuilds
/// the balancer about a hundred times instead of on every 50 ms tick.
const WEIGHT_STEPS: f64 = 100.0;

/// A hashing balancer and the membership (address, configured weight) it was built for.
type HashedTable = (Vec<(SocketAddr, u32)>, Arc<dyn Balancer>);

/// What the current snapshot was built from.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// (backend, weight units, configured weight) of every backend in the snapshot.
    backends: Vec<(BackendId, u32, u32)>,
    /// The hashing table and the membership it was built for.
    hashed: Option<HashedTable>,
    /// Snapshots published so far.
    pub generations: u64,
    /// The settings changed: publish even if the weights did not.
    stale: bool,
}

impl Published {
    /// The next publish builds a new snapshot and balancer whatever the weights (the
    /// settings they are built with changed).
    pub(super) fn invalidate(&mut self) {
        self.stale = true;
        self.hashed = None;
    }
}

impl Pool {
    /// Applies and logs what happened, then publishes a new snapshot if what the data path
    /// sees changed.
    pub(super) fn apply(&self, c: &mut Control, now: Duration) {
        self.apply_transitions(c);
        self.publish(c, now);
    }

    /// Logs each transition and sets the data path's per-backend flags from it.
    pub(super) fn apply_transitions(&self, c: &mut Control) {
        for t in c.health.take_transitions() {
            self.log(c, &t);
            let Transition::State {
                backend, to, cause, ..
            } = t
            else {
                continue;
            };
            let Some(m) = c.by_id(backend) else {
                continue;
            };
            // Out of rotation by an outlier ejection, or back into it: the live-failure
            // streak starts again from zero.
            if (to == BackendState::Ejected && cause == Cause::Outlier)
                || to == BackendState::Warming
            {
                m.stats.reset_failure_streak();
            }
            m.stats.set_pool_connections(!to.is_administrative());
        }
    }

    fn publish(&self, c: &mut Control, now: Duration) {
        // Every backend the snapshot should hold: all of them for hashing (so only an
        // excluded backend's own keys move), else those in rotation.
        let settings = self.settings();
        let hashing = settings.algorithm.is_hashing();
        let desired: Vec<(BackendId, u32, u32)> = c
            .members
            .iter()
            .filter_map(|m| {
                let fraction = quantize(c.health.fraction(m.id, now));
                let units = (f64::from(m.weight) * WEIGHT_UNITS * fraction).round() as u32;
                (hashing || fraction > 0.0).then_some((
                    m.id,
                    units.max(u32::from(fraction > 0.0)),
                    m.weight,
                ))
            })
            .collect();
        if desired == c.published.backends && !c.published.stale {
            return;
        }
        let backends: Vec<LiveBackend> = desired
            .iter()
            .filter_map(|(id, units, weight)| {
                let m = c.by_id(*id)?;
                Some(LiveBackend {
                    addr: m.addr,
                    weight: *units,
                    fraction: f64::from(*units) / (f64::from(*weight) * WEIGHT_UNITS),
                    stats: Arc::clone(&m.stats),
                })
            })
            .collect();
        let balancer = self.balancer_for(c, &backends);
        let latency_clock = (settings.algorithm == Algorithm::P2cEwma).then_some(self.clock);
        self.snapshot.store(Arc::new(PoolSnapshot::new(
            backends,
            balancer,
            latency_clock,
        )));
        c.published.backends = desired;
        c.published.generations += 1;
        c.published.stale = false;
    }

    /// Hashing tables depend only on who is in the pool with which configured weight, so
    /// they are rebuilt only when that changes; other balancers follow effective weights and
    /// continue the pool's rotation.
    fn balancer_for(&self, c: &mut Control, backends: &[LiveBackend]) -> Arc<dyn Balancer> {
        let settings = self.settings();
        let params = HashParams {
            ring_points: settings.ring_points,
            maglev_table_size: settings.maglev_table_size,
            balance_factor: settings.hash_balance_factor,
            fallback: settings.hash_fallback,
        };
        let build = |ids: &[String], weights: &[u32]| -> Arc<dyn Balancer> {
            let ids: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
            Arc::from(balance::build_continuing(
                settings.algorithm,
                &ids,
                weights,
                &params,
                &c.rotation,
            ))
        };
        if !settings.algorithm.is_hashing() {
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            let ids: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
            return build(&ids, &weights);
        }
        let membership: Vec<(SocketAddr, u32)> =
            c.members.iter().map(|m| (m.addr, m.weight)).collect();
        if let Some((cached, balancer)) = &c.published.hashed {
            if *cached == membership {
                return Arc::clone(balancer);
            }
        }
        let ids: Vec<String> = membership.iter().map(|(a, _)| a.to_string()).collect();
        let weights: Vec<u32> = membership.iter().map(|(_, w)| *w).collect();
        let balancer = build(&ids, &weights);
        c.published.hashed = Some((membership, Arc::clone(&balancer)));
        balancer
    }

    fn log(&self, c: &Control, t: &Transition) {
        // Why: what the backend's last probe saw ("readiness: status 503"), if it had one.
        let last_probe = |id: &BackendId| {
            c.by_id(*id)
                .and_then(|m| m.probes.explaining())
                .map_or_else(String::new, |(p, _)| format!("{}: {}", p.check, p.detail))
        };
        let addr = |id: &BackendId| {
            c.by_id(*id)
                .map_or_else(|| id.to_string(), |m| m.addr.to_string())
        };
        match t {
            Transition::State {
                backend,
                from,
                to,
                cause,
            } => tracing::info!(
                pool = %self.name, backend = %addr(backend), %from, %to, %cause,
                last_probe = %last_probe(backend), "backend state changed"
            ),
            Transition::Suppressed {
                backend,
                wanted,
                cause,
            } => tracing::warn!(
                pool = %self.name, backend = %addr(backend), %wanted, %cause,
                cap = c.health.cap(),
                "ejection suppressed: the pool is at its ejection cap; the backend stays in rotation"
            ),
            Transition::Panic {
                entered: true,
                failing,
                of,
            } => tracing::error!(
                pool = %self.name, failing, of,
                "panic mode: too much of the pool fails its checks at once; routing to every backend"
            ),
            Transition::Panic {
                entered: false,
                failing,
                of,
            } => tracing::warn!(
                pool = %self.name, failing, of, "panic mode over"
            ),
        }
    }
}

/// A weight fraction rounded to the publishing step; anything above zero stays above zero.
fn quantize(fraction: f64) -> f64 {
    if fraction <= 0.0 {
        return 0.0;
    }
    ((fraction * WEIGHT_STEPS).round() / WEIGHT_STEPS).max(1.0 / WEIGHT_STEPS)
}
