//! A pool's control plane: backend membership, the lifecycle state machine from
//! `fulcrum-core`, and publishing a new snapshot whenever what the data path should see
//! changes. Everything here runs under the pool's control mutex, off the data path.
//!
//! Every backend is known by its [`BackendId`], given when it joins and never reused, so a
//! state change queued before another backend's removal still reaches the right one. Each
//! change is a transaction: the lock is taken once, the membership edited, and one snapshot
//! published at the end ([`Pool::apply`]).
//!
//! - `membership`: add, drain, remove, disable, enable, replace the whole set;
//! - `discovery`: the blast-radius window for discovery removals, holds and their release;
//! - `publish`: transitions applied and logged, the snapshot and balancer built;
//! - `tick`: the control loop's step and the probe inputs;
//! - `status`: what the admin API reports.

mod discovery;
mod membership;
mod publish;
mod status;
mod tick;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use fulcrum_core::balance::{self, Rotation};
use fulcrum_core::config;
use fulcrum_core::health::{self, BackendId, PoolHealth};
use fulcrum_core::warn_gate::WarnGate;

pub use status::{AdminError, BackendStatus, DiscoveryStatus, PoolCounters, PoolStatus};

use super::snapshot::PoolSnapshot;
use super::stats::BackendStats;
use super::Clock;
use crate::ws_registry::RedisRegistry;
use discovery::DiscoveryState;
use publish::Published;

#[derive(Debug)]
struct Member {
    id: BackendId,
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
    /// The latest result of each active check, and when.
    probes: LastProbes,
}

/// What the last active probe of a backend saw.
#[derive(Debug, Clone)]
struct LastProbe {
    /// `liveness` or `readiness`.
    check: &'static str,
    passed: bool,
    /// "status 503", "connect refused", "timed out after 1s", …
    detail: String,
}

impl LastProbe {
    fn new(check: &'static str, passed: bool, detail: &str) -> Self {
        Self {
            check,
            passed,
            detail: detail.to_string(),
        }
    }
}

/// The latest liveness and readiness results of one backend. Kept apart because the two
/// checks run side by side: a backend that is live but not ready passes one and fails the
/// other every round, and the passing one must not hide why it is out of rotation.
#[derive(Debug, Clone, Default)]
struct LastProbes {
    liveness: Option<(LastProbe, Duration)>,
    readiness: Option<(LastProbe, Duration)>,
}

impl LastProbes {
    fn record(&mut self, probe: LastProbe, at: Duration) {
        let slot = if probe.check == "liveness" {
            &mut self.liveness
        } else {
            &mut self.readiness
        };
        *slot = Some((probe, at));
    }

    /// The probe that explains the backend's state: the later of the checks whose latest
    /// result failed; when none did, readiness (the stronger statement) if it is checked.
    fn explaining(&self) -> Option<&(LastProbe, Duration)> {
        type Seen = (LastProbe, Duration);
        fn later<'a>(a: Option<&'a Seen>, b: Option<&'a Seen>) -> Option<&'a Seen> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y.1 >= x.1 { y } else { x }),
                (x, y) => x.or(y),
            }
        }
        fn failed(seen: &Option<Seen>) -> Option<&Seen> {
            seen.as_ref().filter(|(probe, _)| !probe.passed)
        }
        later(failed(&self.liveness), failed(&self.readiness))
            .or(self.readiness.as_ref())
            .or(self.liveness.as_ref())
    }
}

#[derive(Debug, Clone, Copy)]
struct Drain {
    timeout: Duration,
    deadline: Duration,
    /// Its WebSockets have been told to go away.
    told: bool,
}

#[derive(Debug)]
struct Control {
    health: PoolHealth,
    members: Vec<Member>,
    published: Published,
    /// Round-robin position shared by every balancer this pool builds.
    rotation: Rotation,
    last_rotation: Duration,
    /// When discovery removed backends recently (for the blast-radius window).
    discovery_removals: Vec<Duration>,
    drains: DrainCounters,
}

/// How drains ended, for the metrics (the requests they cut are `drain_failures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainCounters {
    /// Drains that ended with nothing in flight.
    pub completed: u64,
    /// Drains whose timeout passed with requests or connections still open (closed then).
    pub timed_out: u64,
}

impl Control {
    fn member(&self, addr: SocketAddr) -> Option<&Member> {
        self.members.iter().find(|m| m.addr == addr)
    }

    fn member_mut(&mut self, addr: SocketAddr) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.addr == addr)
    }

    fn by_id(&self, id: BackendId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn by_id_mut(&mut self, id: BackendId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }
}

/// A pool: its settings, its current snapshot, and its control state.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    /// Swapped whole by a reload; the data path reads it per request with one atomic load.
    settings: ArcSwap<config::Pool>,
    snapshot: ArcSwap<PoolSnapshot>,
    control: Mutex<Control>,
    clock: Clock,
    drain_failures: AtomicU64,
    discovery: Mutex<DiscoveryState>,
    /// "No backend could be reached": one warning per window for the whole pool, with how
    /// many clients it stands for, not one per client turned away.
    pub unreachable_warnings: WarnGate,
    /// The pool's Redis registry of WebSockets, with `websocket.registry`; replaced by a
    /// reload that changes the section (connections stay with the one they were put in).
    ws_registry: ArcSwapOption<RedisRegistry>,
    /// What the pool has in flight, against its circuit breakers.
    pub breakers: super::Breakers,
}

impl Pool {
    pub fn new(name: &str, settings: config::Pool, clock: Clock) -> Self {
        let now = clock.now();
        let mut health = PoolHealth::new(health::rules_for(&settings), 0, now);
        let members: Vec<Member> = settings
            .backends
            .iter()
            .map(|b| new_member(&settings, health.add_present(now), b.addr, b.weight))
            .collect();
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
                published: Published::default(),
                rotation: Rotation::default(),
                last_rotation: now,
                discovery_removals: Vec::new(),
                drains: DrainCounters::default(),
            }),
            settings: ArcSwap::from_pointee(settings),
            clock,
            unreachable_warnings: WarnGate::default(),
            drain_failures: AtomicU64::new(0),
            discovery: Mutex::new(DiscoveryState::default()),
            ws_registry: ArcSwapOption::empty(),
            breakers: super::Breakers::default(),
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
    pub fn snapshot_owned(&self) -> Arc<PoolSnapshot> {
        self.snapshot.load_full()
    }

    /// The pool's settings as of now (a reload may swap them between two requests).
    ///
    /// Read several times per request on every worker, and held across awaits: each thread
    /// keeps its own copy, refreshed when the shared one changed, so a read is one atomic
    /// load and a non-atomic reference count — no shared counter bouncing between cores and
    /// no arc-swap guard held for the length of a request.
    pub fn settings(&self) -> Rc<config::Pool> {
        let current = self.settings.load();
        LOCAL_SETTINGS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let key = std::ptr::from_ref(self) as usize;
            match cache.iter_mut().find(|entry| entry.pool == key) {
                Some(entry) if Arc::ptr_eq(&entry.shared, &current) => Rc::clone(&entry.local),
                Some(entry) => {
                    entry.shared = Arc::clone(&current);
                    entry.local = Rc::new(config::Pool::clone(&current));
                    Rc::clone(&entry.local)
                }
                None => {
                    let local = Rc::new(config::Pool::clone(&current));
                    cache.push(LocalCopy {
                        pool: key,
                        shared: Arc::clone(&current),
                        local: Rc::clone(&local),
                    });
                    local
                }
            }
        })
    }

    /// A reload's new settings, swapped in as one: the state machine takes the new health
    /// and outlier rules, and a new snapshot is published with a balancer for the new
    /// algorithm. What the backends carry (in-flight counts, latencies, ejection history,
    /// lifecycles) is kept; the configured backend list is not read here (a reload adds
    /// and removes backends one by one).
    /// The registry an upgrade records its connection in, if the pool has one.
    pub fn ws_registry(&self) -> Option<Arc<RedisRegistry>> {
        self.ws_registry.load_full()
    }

    /// Installs the registry new connections go to; returns the one they went to before.
    pub fn set_ws_registry(
        &self,
        registry: Option<Arc<RedisRegistry>>,
    ) -> Option<Arc<RedisRegistry>> {
        self.ws_registry.swap(registry)
    }

    pub fn set_settings(&self, settings: config::Pool) {
        let now = self.clock.now();
        let mut control = self.lock();
        control.health.set_rules(health::rules_for(&settings));
        self.settings.store(Arc::new(settings));
        control.published.invalidate();
        self.apply(&mut control, now);
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the control plane would; keep going.
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One thread's copy of one pool's settings. `shared` is the version it was copied from: kept
/// alive, its address cannot be reused, so comparing addresses tells a change exactly (the
/// pool is told apart by its address for the same reason: a pool freed and another built in
/// its place hold different `shared` versions).
struct LocalCopy {
    pool: usize,
    shared: Arc<config::Pool>,
    local: Rc<config::Pool>,
}

thread_local! {
    static LOCAL_SETTINGS: RefCell<Vec<LocalCopy>> = const { RefCell::new(Vec::new()) };
}

fn new_member(settings: &config::Pool, id: BackendId, addr: SocketAddr, weight: u32) -> Member {
    Member {
        id,
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
        probes: LastProbes::default(),
    }
}

#[cfg(test)]
mod tests;
