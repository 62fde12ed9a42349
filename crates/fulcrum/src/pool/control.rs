//! A pool's control plane: backend membership, the lifecycle state machine from
//! `fulcrum-core`, and publishing a new snapshot whenever what the data path should see
//! changes. Everything here runs under the pool's control mutex, off the data path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_core::balance::{self, Balancer, HashParams};
use fulcrum_core::config::{self, defaults, Algorithm, DrainTimeout};
use fulcrum_core::health::{self, BackendState, Cause, PoolHealth, ProbeOutcome, Transition};
use serde::Serialize;

use super::snapshot::{LiveBackend, PoolSnapshot};
use super::stats::BackendStats;
use super::Clock;

/// How often latency windows rotate: "observed p99" means the last one to two minutes.
const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// Discovery removals within this window count together against the ejection cap: a mass
/// lease expiry looks exactly like the store or the network failing.
pub const DISCOVERY_WINDOW: Duration = Duration::from_secs(10);
/// A backend held in rotation by that cap leaves after this long even if nothing confirms it
/// dead (health checks confirming it release it sooner).
pub const DISCOVERY_HOLD: Duration = Duration::from_secs(60);

/// Effective weights are published in thousandths of the configured weight.
const WEIGHT_UNITS: f64 = 1000.0;

#[derive(Debug)]
struct Member {
    addr: SocketAddr,
    weight: u32,
    stats: Arc<BackendStats>,
    drain: Option<Drain>,
    /// Remove from the pool once drained (admin DELETE, discovery removal).
    remove_after_drain: bool,
    /// Gone from the store, but kept in rotation by the discovery blast-radius cap since then.
    held_since: Option<Duration>,
    /// `stats.successes()` at the last tick, to tell whether live traffic succeeded since.
    seen_successes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Drain {
    timeout: Duration,
    deadline: Duration,
}

/// A hashing balancer and the membership (address, configured weight) it was built for.
type HashedTable = (Vec<(SocketAddr, u32)>, Arc<dyn Balancer>);

#[derive(Debug)]
struct Control {
    health: PoolHealth,
    members: Vec<Member>,
    /// What the current snapshot holds: (address, weight units, configured weight).
    published: Vec<(SocketAddr, u32, u32)>,
    /// The hashing table and the membership it was built for.
    hashed: Option<HashedTable>,
    last_rotation: Duration,
    /// When discovery removed backends recently (for the blast-radius window).
    discovery_removals: Vec<Duration>,
}

/// A pool: its settings, its current snapshot, and its control state.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub settings: config::Pool,
    snapshot: ArcSwap<PoolSnapshot>,
    control: Mutex<Control>,
    clock: Clock,
    drain_failures: AtomicU64,
    discovery: Mutex<DiscoveryState>,
}

#[derive(Debug, Default)]
struct DiscoveryState {
    connected: bool,
    revision: i64,
    disconnected_since: Option<std::time::Instant>,
    discovered: usize,
    malformed: u64,
    /// Removals the blast-radius cap held back.
    held: u64,
    last_error: Option<String>,
}

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

impl Pool {
    pub fn new(name: &str, settings: config::Pool, clock: Clock) -> Self {
        let now = clock.now();
        let members: Vec<Member> = settings
            .backends
            .iter()
            .map(|b| new_member(&settings, b.addr, b.weight))
            .collect();
        let health = PoolHealth::new(health::rules_for(&settings), members.len(), now);
        let pool = Self {
            name: name.to_string(),
            snapshot: ArcSwap::from_pointee(PoolSnapshot::new(
                Vec::new(),
                Arc::from(balance::build(settings.algorithm, &[])),
                None,
            )),
            control: Mutex::new(Control {
                health,
                members,
                published: Vec::new(),
                hashed: None,
                last_rotation: now,
                discovery_removals: Vec::new(),
            }),
            settings,
            clock,
            drain_failures: AtomicU64::new(0),
            discovery: Mutex::new(DiscoveryState::default()),
        };
        let mut control = pool.lock();
        pool.apply(&mut control, now);
        drop(control);
        pool
    }

    /// The current snapshot: one atomic load, no lock.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<PoolSnapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot as an owned handle, for holding across awaits.
    pub fn snapshot_full(&self) -> Arc<PoolSnapshot> {
        self.snapshot.load_full()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the control plane would; keep going.
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- control loop --------------------------------------------------------------------

    /// One step of the control loop: feeds live-traffic outcomes to the state machine,
    /// finishes drains, advances timers, and publishes what changed.
    pub fn tick(&self) {
        let now = self.clock.now();
        let mut control = self.lock();
        let c = &mut *control;
        for (i, m) in c.members.iter_mut().enumerate() {
            let successes = m.stats.successes();
            let succeeded = successes > m.seen_successes;
            m.seen_successes = successes;
            c.health
                .live_traffic(i, now, succeeded, m.stats.failure_streak());
            if let Some(drain) = m.drain {
                let in_flight = m.stats.in_flight();
                if in_flight == 0 {
                    m.drain = None;
                    c.health.drained(i, now);
                } else if now >= drain.deadline {
                    self.drain_failures.fetch_add(in_flight, Ordering::Relaxed);
                    tracing::warn!(
                        pool = %self.name,
                        backend = %m.addr,
                        timeout = ?drain.timeout,
                        closed = in_flight,
                        "drain timed out; closing the remaining requests and connections"
                    );
                    m.stats.abort_all();
                    m.drain = None;
                    c.health.drained(i, now);
                }
            }
        }
        c.health.tick(now);
        for i in (0..c.members.len()).rev() {
            let drained = c
                .health
                .view(i, now)
                .is_some_and(|v| v.state == BackendState::Drained);
            if drained && c.members[i].remove_after_drain {
                let m = c.members.remove(i);
                c.health.remove(i);
                tracing::info!(pool = %self.name, backend = %m.addr, "removed after drain");
            }
        }
        if now.saturating_sub(c.last_rotation) >= LATENCY_WINDOW {
            c.last_rotation = now;
            for m in &c.members {
                m.stats.latency.rotate();
            }
        }
        self.apply(&mut control, now);
        drop(control);
        if self.settings.discovery.is_some() {
            self.release_held();
        }
    }

    /// Addresses that active checks should probe (every backend not drained or disabled).
    pub fn probe_targets(&self) -> Vec<SocketAddr> {
        let now = self.clock.now();
        let control = self.lock();
        control
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                control
                    .health
                    .view(*i, now)
                    .is_some_and(|v| !v.state.is_administrative())
            })
            .map(|(_, m)| m.addr)
            .collect()
    }

    pub fn report_liveness(&self, addr: SocketAddr, pass: bool) {
        self.with_member(addr, |health, i, now| health.liveness(i, now, pass));
    }

    pub fn report_readiness(&self, addr: SocketAddr, outcome: ProbeOutcome) {
        self.with_member(addr, |health, i, now| health.readiness(i, now, outcome));
    }

    fn with_member(&self, addr: SocketAddr, f: impl FnOnce(&mut PoolHealth, usize, Duration)) {
        let now = self.clock.now();
        let mut control = self.lock();
        if let Some(i) = control.members.iter().position(|m| m.addr == addr) {
            f(&mut control.health, i, now);
            self.apply(&mut control, now);
        }
    }

    // --- admin ---------------------------------------------------------------------------

    /// Adds a backend at runtime; it warms up through slow start.
    pub fn add_backend(&self, addr: SocketAddr, weight: u32) -> Result<(), AdminError> {
        if !(1..=defaults::MAX_WEIGHT).contains(&weight) {
            return Err(AdminError::BadRequest(format!(
                "weight must be between 1 and {}",
                defaults::MAX_WEIGHT
            )));
        }
        let now = self.clock.now();
        let mut control = self.lock();
        if control.members.iter().any(|m| m.addr == addr) {
            return Err(AdminError::Conflict(format!(
                "{addr} is already in pool {}",
                self.name
            )));
        }
        control
            .members
            .push(new_member(&self.settings, addr, weight));
        control.health.add(now, Cause::Admin);
        tracing::info!(pool = %self.name, backend = %addr, weight, "backend added");
        self.apply(&mut control, now);
        Ok(())
    }

    /// Stops new requests to `addr`; in-flight ones finish within the drain timeout. The
    /// snapshot without it is published before this returns.
    pub fn drain(&self, addr: SocketAddr, cause: Cause) -> Result<Duration, AdminError> {
        self.admin(addr, |pool, c, i, now| {
            let timeout = pool.drain_timeout(&c.members[i].stats);
            if c.members[i].drain.is_none() {
                c.members[i].drain = Some(Drain {
                    timeout,
                    deadline: now.saturating_add(timeout),
                });
            }
            c.health.drain(i, now, cause);
            timeout
        })
    }

    /// Drains `addr`, then removes it from the pool.
    pub fn remove_backend(&self, addr: SocketAddr, cause: Cause) -> Result<Duration, AdminError> {
        let timeout = self.drain(addr, cause)?;
        let mut control = self.lock();
        if let Some(m) = control.members.iter_mut().find(|m| m.addr == addr) {
            m.remove_after_drain = true;
        }
        Ok(timeout)
    }

    pub fn disable(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.admin(addr, |_, c, i, now| {
            c.members[i].drain = None;
            c.health.disable(i, now);
        })
    }

    pub fn enable(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.admin(addr, |_, c, i, now| {
            c.members[i].drain = None;
            c.members[i].remove_after_drain = false;
            c.health.enable(i, now);
        })
    }

    /// Replaces the whole backend set (as a discovery source does): new backends warm up,
    /// missing ones are drained and then removed, returning ones stop draining, and changed
    /// weights apply.
    pub fn set_backends(&self, backends: &[config::Backend], cause: Cause) {
        let existing: Vec<(SocketAddr, u32, bool)> = self
            .lock()
            .members
            .iter()
            .map(|m| (m.addr, m.weight, m.remove_after_drain))
            .collect();
        let vanished: Vec<SocketAddr> = existing
            .iter()
            .filter(|(addr, _, leaving)| !leaving && !backends.iter().any(|b| b.addr == *addr))
            .map(|(addr, _, _)| *addr)
            .collect();
        let allowed = if cause == Cause::Discovery {
            self.discovery_removal_room()
        } else {
            usize::MAX
        };
        for (n, addr) in vanished.iter().enumerate() {
            if n < allowed {
                if cause == Cause::Discovery {
                    let now = self.clock.now();
                    self.lock().discovery_removals.push(now);
                }
                let _ = self.remove_backend(*addr, cause);
            } else {
                self.hold(*addr);
            }
        }
        for b in backends {
            match existing.iter().find(|(addr, _, _)| *addr == b.addr) {
                None => {
                    let _ = self.add_backend(b.addr, b.weight);
                }
                Some((_, _, true)) => {
                    let _ = self.enable(b.addr);
                }
                Some((_, weight, false)) if *weight != b.weight => {
                    let _ = self.admin(b.addr, |_, c, i, _| c.members[i].weight = b.weight);
                }
                Some(_) => {}
            }
            let _ = self.admin(b.addr, |_, c, i, _| c.members[i].held_since = None);
        }
    }

    /// How many more backends discovery may remove now: the ejection cap, less what it
    /// removed within the window.
    fn discovery_removal_room(&self) -> usize {
        let now = self.clock.now();
        let mut control = self.lock();
        control
            .discovery_removals
            .retain(|t| now.saturating_sub(*t) < DISCOVERY_WINDOW);
        control
            .health
            .cap()
            .saturating_sub(control.discovery_removals.len())
    }

    /// Keeps a backend the store no longer lists in rotation (blast-radius cap).
    fn hold(&self, addr: SocketAddr) {
        let now = self.clock.now();
        let newly = self
            .admin(addr, |_, c, i, _| {
                c.members[i].held_since.get_or_insert(now) == &now
            })
            .unwrap_or(false);
        if newly {
            self.discovery_state().held += 1;
            tracing::warn!(
                pool = %self.name,
                backend = %addr,
                "discovery removal held back: more of the pool vanished from the store at once than the ejection cap allows; it stays until checks confirm it dead or the hold times out"
            );
        }
    }

    /// Releases held backends that checks now confirm dead or that waited out the hold.
    fn release_held(&self) {
        let now = self.clock.now();
        let held: Vec<(SocketAddr, bool)> = {
            let control = self.lock();
            control
                .members
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let since = m.held_since?;
                    let confirmed = control
                        .health
                        .view(i, now)
                        .is_some_and(|v| v.state.is_ejected() || v.suppressed);
                    Some((
                        m.addr,
                        confirmed || now.saturating_sub(since) >= DISCOVERY_HOLD,
                    ))
                })
                .collect()
        };
        for (addr, due) in held {
            if due {
                let _ = self.admin(addr, |_, c, i, _| c.members[i].held_since = None);
                self.lock().discovery_removals.push(now);
                tracing::info!(pool = %self.name, backend = %addr, "releasing a held discovery removal");
                let _ = self.remove_backend(addr, Cause::Discovery);
            }
        }
    }

    /// A discovery source listed (or followed) its store: the pool becomes the static
    /// backends plus the discovered ones (a static entry wins for its address).
    pub fn discovery_synced(&self, found: &[config::Backend], revision: i64) {
        {
            let mut state = self.discovery_state();
            state.connected = true;
            state.revision = revision;
            state.disconnected_since = None;
            state.discovered = found.len();
            state.last_error = None;
        }
        let mut all = self.settings.backends.clone();
        for b in found {
            if !all.iter().any(|s| s.addr == b.addr) {
                all.push(*b);
            }
        }
        self.set_backends(&all, Cause::Discovery);
    }

    /// The store cannot be reached: the last known backends stay.
    pub fn discovery_lost(&self, error: &str) {
        let mut state = self.discovery_state();
        if state.connected || state.disconnected_since.is_none() {
            tracing::warn!(pool = %self.name, %error, "discovery store unreachable; keeping the last known backends");
        }
        state.connected = false;
        state
            .disconnected_since
            .get_or_insert_with(std::time::Instant::now);
        state.last_error = Some(error.to_string());
    }

    pub fn discovery_malformed(&self) {
        self.discovery_state().malformed += 1;
    }

    fn discovery_state(&self) -> MutexGuard<'_, DiscoveryState> {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admin<T>(
        &self,
        addr: SocketAddr,
        f: impl FnOnce(&Self, &mut Control, usize, Duration) -> T,
    ) -> Result<T, AdminError> {
        let now = self.clock.now();
        let mut control = self.lock();
        let i = control
            .members
            .iter()
            .position(|m| m.addr == addr)
            .ok_or_else(|| {
                AdminError::NotFound(format!("no backend {addr} in pool {}", self.name))
            })?;
        let out = f(self, &mut control, i, now);
        self.apply(&mut control, now);
        Ok(out)
    }

    fn drain_timeout(&self, stats: &BackendStats) -> Duration {
        match self.settings.drain_timeout {
            DrainTimeout::Fixed(d) => d,
            DrainTimeout::Auto => stats
                .latency
                .quantile(0.99)
                .map(|p99| (p99 * 2).clamp(defaults::DRAIN_MIN, defaults::DRAIN_MAX))
                .unwrap_or(defaults::DRAIN_WITHOUT_DATA),
        }
    }

    // --- publishing ----------------------------------------------------------------------

    /// Logs what happened and publishes a new snapshot if what the data path sees changed.
    fn apply(&self, control: &mut Control, now: Duration) {
        for t in control.health.take_transitions() {
            self.log(control, &t);
            if let Transition::State {
                backend, to, cause, ..
            } = t
            {
                let Some(m) = control.members.get(backend) else {
                    continue;
                };
                if to == BackendState::Ejected && cause == Cause::Outlier {
                    m.stats.reset_failure_streak();
                }
                m.stats.set_closing(to.is_administrative());
            }
        }
        // (address, weight units, share) for every backend the snapshot should hold: all of
        // them for hashing (so only an excluded backend's own keys move), else those in
        // rotation.
        let hashing = self.settings.algorithm.is_hashing();
        let desired: Vec<(SocketAddr, u32, u32)> = control
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let fraction = control.health.fraction(i, now);
                let units = (f64::from(m.weight) * WEIGHT_UNITS * fraction).round() as u32;
                (hashing || fraction > 0.0).then_some((
                    m.addr,
                    units.max(u32::from(fraction > 0.0)),
                    m.weight,
                ))
            })
            .collect();
        if desired == control.published {
            return;
        }
        let backends: Vec<LiveBackend> = desired
            .iter()
            .filter_map(|(addr, units, weight)| {
                let m = control.members.iter().find(|m| m.addr == *addr)?;
                Some(LiveBackend {
                    addr: *addr,
                    weight: *units,
                    fraction: f64::from(*units) / (f64::from(*weight) * WEIGHT_UNITS),
                    stats: Arc::clone(&m.stats),
                })
            })
            .collect();
        let balancer = self.balancer_for(control, &backends);
        let latency_clock = (self.settings.algorithm == Algorithm::P2cEwma).then_some(self.clock);
        self.snapshot.store(Arc::new(PoolSnapshot::new(
            backends,
            balancer,
            latency_clock,
        )));
        control.published = desired;
    }

    /// Hashing tables depend only on who is in the pool with which configured weight, so
    /// they are rebuilt only when that changes; other balancers follow effective weights.
    fn balancer_for(&self, control: &mut Control, backends: &[LiveBackend]) -> Arc<dyn Balancer> {
        let params = HashParams {
            ring_points: self.settings.ring_points,
            maglev_table_size: self.settings.maglev_table_size,
            balance_factor: self.settings.hash_balance_factor,
            fallback: self.settings.hash_fallback,
        };
        if !self.settings.algorithm.is_hashing() {
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            let ids: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
            let ids: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
            return Arc::from(balance::build_for(
                self.settings.algorithm,
                &ids,
                &weights,
                &params,
            ));
        }
        let membership: Vec<(SocketAddr, u32)> =
            control.members.iter().map(|m| (m.addr, m.weight)).collect();
        if let Some((cached, balancer)) = &control.hashed {
            if *cached == membership {
                return Arc::clone(balancer);
            }
        }
        let ids: Vec<String> = membership.iter().map(|(a, _)| a.to_string()).collect();
        let ids: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
        let weights: Vec<u32> = membership.iter().map(|(_, w)| *w).collect();
        let balancer: Arc<dyn Balancer> = Arc::from(balance::build_for(
            self.settings.algorithm,
            &ids,
            &weights,
            &params,
        ));
        control.hashed = Some((membership, Arc::clone(&balancer)));
        balancer
    }

    fn log(&self, control: &Control, t: &Transition) {
        let addr = |i: usize| {
            control
                .members
                .get(i)
                .map(|m| m.addr.to_string())
                .unwrap_or_default()
        };
        match t {
            Transition::State {
                backend,
                from,
                to,
                cause,
            } => tracing::info!(
                pool = %self.name, backend = %addr(*backend), %from, %to, %cause, "backend state changed"
            ),
            Transition::Suppressed {
                backend,
                wanted,
                cause,
            } => tracing::warn!(
                pool = %self.name, backend = %addr(*backend), %wanted, %cause,
                cap = control.health.cap(),
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

    // --- status --------------------------------------------------------------------------

    pub fn status(&self) -> PoolStatus {
        let now = self.clock.now();
        let control = self.lock();
        let discovery = self.settings.discovery.as_ref().map(|d| {
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
                malformed: state.malformed,
                held: state.held,
                last_error: state.last_error.clone(),
            }
        });
        PoolStatus {
            discovery,
            name: self.name.clone(),
            algorithm: self.settings.algorithm.name(),
            panic: control.health.panic(),
            suppressed_ejections: control.health.suppressed_ejections(),
            drain_failures: self.drain_failures.load(Ordering::Relaxed),
            backends: control
                .members
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let view = control.health.view(i, now)?;
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
                    })
                })
                .collect(),
        }
    }
}

fn new_member(settings: &config::Pool, addr: SocketAddr, weight: u32) -> Member {
    Member {
        addr,
        weight,
        stats: Arc::new(BackendStats::new(
            settings.ewma_decay,
            settings.ewma_default_rtt,
        )),
        drain: None,
        remove_after_drain: false,
        held_since: None,
        seen_successes: 0,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(addrs: &[u16]) -> config::Pool {
        let text = format!(
            "[[listeners]]\nname='l'\nbind='127.0.0.1:1'\nprotocol='tcp'\npool='p'\n[pools.p]\nbackends=[{}]\n",
            addrs
                .iter()
                .map(|p| format!("{{addr='127.0.0.1:{p}'}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let config = config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
        config.pools["p"].clone()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn counters_survive_a_new_snapshot() {
        let pool = Pool::new("p", settings(&[1, 2]), Clock::new());
        let stats = Arc::clone(&pool.snapshot().backends[1].stats);
        let _held = super::super::InFlight::start(&stats);
        stats.record_request();
        pool.add_backend(addr(3), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let snapshot = pool.snapshot();
        assert_eq!(snapshot.backends.len(), 3);
        let same = snapshot.backends.iter().find(|b| b.addr.port() == 2);
        assert_eq!(
            same.map(|b| (b.stats.in_flight(), b.stats.requests())),
            Some((1, 1))
        );
    }

    #[test]
    fn drain_takes_the_backend_out_of_the_snapshot_before_returning() {
        let pool = Pool::new("p", settings(&[1, 2]), Clock::new());
        pool.drain(addr(1), Cause::Admin)
            .unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<u16> = pool
            .snapshot()
            .backends
            .iter()
            .map(|b| b.addr.port())
            .collect();
        assert_eq!(ports, vec![2]);
        assert_eq!(
            pool.drain(addr(9), Cause::Admin),
            Err(AdminError::NotFound(
                "no backend 127.0.0.1:9 in pool p".into()
            ))
        );
        // Nothing in flight: the next tick finishes the drain.
        pool.tick();
        assert_eq!(pool.status().backends[0].state, BackendState::Drained);
    }

    #[test]
    fn a_new_backend_starts_at_the_slow_start_minimum() {
        let pool = Pool::new("p", settings(&[1]), Clock::new());
        pool.add_backend(addr(2), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let snapshot = pool.snapshot();
        let weights: Vec<(u16, u32)> = snapshot
            .backends
            .iter()
            .map(|b| (b.addr.port(), b.weight))
            .collect();
        assert_eq!(weights[0], (1, 1000));
        assert_eq!(weights[1].0, 2);
        assert!((200..=210).contains(&weights[1].1), "{weights:?}");
    }

    #[test]
    fn the_auto_drain_timeout_is_twice_the_observed_p99() {
        let pool = Pool::new("p", settings(&[1, 2]), Clock::new());
        assert_eq!(
            pool.drain_timeout(&BackendStats::default()),
            Duration::from_secs(30)
        );
        let stats = BackendStats::default();
        for _ in 0..100 {
            stats.latency.record(Duration::from_millis(700));
        }
        let timeout = pool.drain_timeout(&stats);
        assert!(
            timeout >= Duration::from_millis(1400) && timeout <= Duration::from_millis(1800),
            "{timeout:?}"
        );
        let fast = BackendStats::default();
        fast.latency.record(Duration::from_millis(5));
        assert_eq!(
            pool.drain_timeout(&fast),
            Duration::from_secs(1),
            "clamped to at least 1 s"
        );
    }
}
