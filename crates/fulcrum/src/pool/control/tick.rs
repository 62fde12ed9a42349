//! The control loop's step, and the probe results that feed it: live-traffic outcomes go to
//! the state machine, drains finish or time out, drained backends marked for removal leave,
//! timers advance, and what changed is published.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fulcrum_core::health::{BackendId, BackendState, ProbeOutcome};
use fulcrum_core::websocket::going_away_due;

use super::{Control, Drain, LastProbe, Pool};

/// How often latency windows rotate: "observed p99" means the last one to two minutes.
const LATENCY_WINDOW: Duration = Duration::from_secs(60);

impl Pool {
    /// One step of the control loop.
    pub fn tick(&self) {
        let now = self.clock.now();
        let mut guard = self.lock();
        let c = &mut *guard;
        for m in c.members.iter_mut() {
            let successes = m.stats.successes();
            let succeeded = successes > m.seen_successes;
            m.seen_successes = successes;
            c.health
                .live_traffic(m.id, now, succeeded, m.stats.failure_streak());
            if let Some(drain) = m.drain {
                let in_flight = m.stats.in_flight();
                if in_flight == 0 {
                    m.drain = None;
                    c.health.drained(m.id, now);
                    c.drains.completed += 1;
                } else if now >= drain.deadline {
                    self.drain_failures.fetch_add(in_flight, Ordering::Relaxed);
                    c.drains.timed_out += 1;
                    tracing::warn!(
                        pool = %self.name,
                        backend = %m.addr,
                        timeout = ?drain.timeout,
                        closed = in_flight,
                        "drain timed out; closing the remaining requests and connections"
                    );
                    m.stats.abort_all();
                    m.drain = None;
                    c.health.drained(m.id, now);
                } else if !drain.told && going_away_due(now, drain.deadline, drain.timeout) {
                    m.stats.tell_going_away();
                    m.drain = Some(Drain {
                        told: true,
                        ..drain
                    });
                }
            }
        }
        c.health.tick(now);
        // Transitions are applied (and logged, with their backends' addresses) before any
        // member leaves.
        self.apply_transitions(c);
        self.remove_drained(c, now);
        if now.saturating_sub(c.last_rotation) >= LATENCY_WINDOW {
            c.last_rotation = now;
            for m in &c.members {
                m.stats.latency.rotate();
            }
        }
        if self.settings().discovery.is_some() {
            self.release_held_locked(c, now);
        }
        self.apply(c, now);
    }

    /// Members marked for removal whose drain is over leave the pool.
    fn remove_drained(&self, c: &mut Control, now: Duration) {
        let leaving: Vec<BackendId> = c
            .members
            .iter()
            .filter(|m| {
                m.remove_after_drain
                    && c.health
                        .view(m.id, now)
                        .is_some_and(|v| v.state == BackendState::Drained)
            })
            .map(|m| m.id)
            .collect();
        for id in leaving {
            c.health.remove(id);
            if let Some(at) = c.members.iter().position(|m| m.id == id) {
                let m = c.members.remove(at);
                tracing::info!(pool = %self.name, backend = %m.addr, "removed after drain");
            }
        }
    }

    /// Addresses that active checks should probe (every backend not drained or disabled).
    pub fn probe_targets(&self) -> Vec<SocketAddr> {
        let now = self.clock.now();
        let control = self.lock();
        control
            .members
            .iter()
            .filter(|m| {
                control
                    .health
                    .view(m.id, now)
                    .is_some_and(|v| !v.state.is_administrative())
            })
            .map(|m| m.addr)
            .collect()
    }

    /// A liveness probe's result; `detail` says what it saw ("connect refused").
    pub fn report_liveness(&self, addr: SocketAddr, pass: bool, detail: &str) {
        let probe = LastProbe::new("liveness", pass, detail);
        self.probed(addr, probe, |c, id, now| c.health.liveness(id, now, pass));
    }

    /// A readiness probe's result; `detail` says what it saw ("status 503").
    pub fn report_readiness(&self, addr: SocketAddr, outcome: ProbeOutcome, detail: &str) {
        let probe = LastProbe::new("readiness", outcome == ProbeOutcome::Pass, detail);
        self.probed(addr, probe, |c, id, now| {
            c.health.readiness(id, now, outcome)
        });
    }

    /// A probe result for `addr`, remembered (why a backend is out of rotation) before the
    /// state machine hears it, so a state change it causes is logged with it. A pass also
    /// clears the live-failure streak the data path counts: failures from while the backend
    /// was down do not eject it once it is back.
    fn probed(
        &self,
        addr: SocketAddr,
        probe: LastProbe,
        report: impl FnOnce(&mut Control, BackendId, Duration),
    ) {
        let _ = self.edit(addr, |_, c, id, now| {
            if let Some(m) = c.by_id_mut(id) {
                if probe.passed {
                    m.stats.reset_failure_streak();
                }
                m.probes.record(probe, now);
            }
            report(c, id, now);
        });
    }
}
