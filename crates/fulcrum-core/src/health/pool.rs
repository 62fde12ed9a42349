//! The pool-level rules around the per-backend lifecycles:
//!
//! - **Ejection cap** (blast radius): at most `max_ejection_percent` of the pool is out of
//!   rotation because of checks or outliers at any moment: cap = max(1, ⌊N × pct / 100⌋) for
//!   N ≥ 2, and 0 for a single backend. An ejection beyond the cap is *suppressed*: the backend
//!   stays in rotation, the suppression is counted and reported once per episode, and the
//!   ejection is retried on every tick until the cap allows it or the backend recovers.
//! - **Panic**: when at least `panic_threshold_percent` of the pool fails its checks at the
//!   same time, the checks are lying (a broken health endpoint, a network blip): traffic goes
//!   to every backend that is not drained or disabled, ignoring health, until the failing
//!   share falls below the threshold again.
//!
//! Weights are fractions of the configured weight: 1.0 is full, 0.0 is out of rotation.

use std::time::Duration;

use super::lifecycle::{BackendId, BackendState, Cause, Lifecycle, ProbeOutcome};

/// The settings the state machine runs by (from `[pools.NAME]`, `.health` and `.outlier`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRules {
    /// Slow start window; zero turns slow start off.
    pub slow_start: Duration,
    /// Where slow start begins, as a fraction of the weight (0.10 = 10 %).
    pub slow_start_min: f64,
    pub rise: u32,
    pub fall: u32,
    /// How long a failing backend's weight takes to decay to 0 before it is ejected.
    pub failure_decay: Duration,
    pub max_ejection_percent: u32,
    pub panic_threshold_percent: u32,
    /// A readiness timeout this soon after a successful live response is a slow check.
    pub slow_check_window: Duration,
    pub outlier: Option<OutlierRules>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierRules {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            slow_start: Duration::from_secs(30),
            slow_start_min: 0.10,
            rise: 2,
            fall: 3,
            failure_decay: Duration::from_secs(30),
            max_ejection_percent: 20,
            panic_threshold_percent: 50,
            slow_check_window: Duration::from_secs(3),
            outlier: None,
        }
    }
}

/// Something the operator should hear about (the daemon logs each one).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    State {
        backend: BackendId,
        from: BackendState,
        to: BackendState,
        cause: Cause,
    },
    /// An ejection the cap did not allow; the backend stays in rotation.
    Suppressed {
        backend: BackendId,
        wanted: BackendState,
        cause: Cause,
    },
    Panic {
        entered: bool,
        failing: usize,
        of: usize,
    },
}

/// A backend ejected again this soon after it came back into rotation has *flapped*: the
/// check, or the backend, is unstable.
pub const FLAP_WINDOW: Duration = Duration::from_secs(300);

/// What the pool's checks have done since it was created, for the metrics: how accurate
/// the health checks are, and how deployments went. Counters only ever rise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Ejections after readiness failed and the weight decayed to 0.
    pub ejected_readiness: u64,
    /// Ejections at once after liveness failed.
    pub ejected_liveness: u64,
    /// Timed ejections by outlier detection.
    pub ejected_outlier: u64,
    /// Ejections the cap did not allow (once per backend and episode).
    pub suppressed: u64,
    /// Times the pool entered panic mode.
    pub panics: u64,
    /// Backends ejected again within [`FLAP_WINDOW`] of coming back.
    pub flaps: u64,
    /// Readiness timeouts not counted as failures because live traffic was succeeding.
    pub slow_checks: u64,
    /// Failing backends that recovered while their weight decayed, before they were
    /// ejected: a false positive the decay corrected.
    pub false_positives: u64,
    /// Drains started (admin, discovery, reload).
    pub drains: u64,
    /// Backends that entered slow start.
    pub slow_starts: u64,
}

/// What the admin API shows about one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendView {
    pub state: BackendState,
    pub since: Duration,
    pub cause: Cause,
    /// Effective weight as a fraction of the configured weight.
    pub weight_fraction: f64,
    pub ejections: u32,
    pub suppressed: bool,
    pub slow_checks: u64,
}

/// The lifecycles of a pool's backends, each known by its [`BackendId`]. Backends are kept
/// in the order they joined; the internal positions never leave this type.
#[derive(Debug, Clone)]
pub struct PoolHealth {
    rules: HealthRules,
    backends: Vec<Lifecycle>,
    next_id: u64,
    panic: bool,
    counters: HealthCounters,
    events: Vec<Transition>,
}

impl PoolHealth {
    /// A pool whose `n` backends were there from the start: they begin active, with ids
    /// 0 … n − 1 in order.
    pub fn new(rules: HealthRules, n: usize, now: Duration) -> Self {
        let mut pool = Self {
            rules,
            backends: Vec::with_capacity(n),
            next_id: 0,
            panic: false,
            counters: HealthCounters::default(),
            events: Vec::new(),
        };
        for _ in 0..n {
            pool.add_present(now);
        }
        pool
    }

    /// A backend that was there from the start: it begins active.
    pub fn add_present(&mut self, now: Duration) -> BackendId {
        let id = self.new_id();
        self.backends
            .push(Lifecycle::new(id, BackendState::Active, now, Cause::Start));
        id
    }

    fn new_id(&mut self) -> BackendId {
        let id = BackendId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The position of backend `id` in this pool's list, if it is a member.
    fn find(&self, id: BackendId) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    /// The ids of every member, in the order they joined.
    pub fn ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.backends.iter().map(|b| b.id)
    }

    pub fn rules(&self) -> &HealthRules {
        &self.rules
    }

    /// A reload's new rules. Every backend keeps its state, its counters and its ejection
    /// history; the new rules apply from the next input on (a ramp in progress follows the
    /// new slow start, a running ejection keeps the end it was given).
    pub fn set_rules(&mut self, rules: HealthRules) {
        self.rules = rules;
        self.update_panic();
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn panic(&self) -> bool {
        self.panic
    }

    pub fn suppressed_ejections(&self) -> u64 {
        self.counters.suppressed
    }

    /// What the checks have done since the pool was created.
    pub fn counters(&self) -> &HealthCounters {
        &self.counters
    }

    /// Everything that happened since the last call, in order.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.events)
    }

    /// A backend added at runtime: it warms up (slow start). Returns its id.
    pub fn add(&mut self, now: Duration, cause: Cause) -> BackendId {
        let id = self.new_id();
        let mut lifecycle = Lifecycle::new(id, BackendState::Warming, now, cause);
        lifecycle.ramp_from = self.rules.slow_start_min;
        if self.rules.slow_start.is_zero() {
            lifecycle.state = BackendState::Active;
        }
        self.backends.push(lifecycle);
        id
    }

    /// Forgets backend `id`; every other id stays what it was.
    pub fn remove(&mut self, id: BackendId) {
        if let Some(i) = self.find(id) {
            self.backends.remove(i);
        }
    }

    /// How many backends checks and outliers may hold out of rotation at once.
    pub fn cap(&self) -> usize {
        let n = self.eligible();
        if n <= 1 {
            0
        } else {
            (n * self.rules.max_ejection_percent as usize / 100).max(1)
        }
    }

    fn eligible(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| !b.state.is_administrative())
            .count()
    }

    fn ejected(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.state.is_ejected())
            .count()
    }

    // --- inputs ------------------------------------------------------------------------------

    /// A liveness probe ("is the process alive?"): `fall` failures make it dead at once.
    pub fn liveness(&mut self, id: BackendId, now: Duration, pass: bool) {
        let rules = self.rules.clone();
        let Some(i) = self.find(id) else {
            return;
        };
        let b = &mut self.backends[i];
        b.liveness.record(pass);
        if pass {
            // Failures from before the backend answered its probe again are history.
            b.outlier_failures = 0;
        }
        if b.state.is_administrative() {
            return;
        }
        if pass {
            if b.liveness.passes >= rules.rise {
                if b.state == BackendState::Dead {
                    self.warm(i, now, Cause::Probe);
                } else if b.suppressed && b.state != BackendState::Failing {
                    b.suppressed = false;
                }
            }
        } else if b.liveness.failures >= rules.fall && b.state != BackendState::Dead {
            self.eject(i, now, BackendState::Dead, Cause::Probe);
        }
    }

    /// A readiness probe ("should it get traffic?"): `fall` failures start the weight decay.
    pub fn readiness(&mut self, id: BackendId, now: Duration, outcome: ProbeOutcome) {
        let rules = self.rules.clone();
        let Some(i) = self.find(id) else {
            return;
        };
        let b = &mut self.backends[i];
        let pass = match outcome {
            ProbeOutcome::Pass => true,
            ProbeOutcome::Fail => false,
            ProbeOutcome::Timeout => {
                let serving = b
                    .last_live_success
                    .is_some_and(|t| now.saturating_sub(t) <= rules.slow_check_window);
                if serving {
                    // A busy server is not a sick one.
                    b.slow_checks += 1;
                    self.counters.slow_checks += 1;
                    return;
                }
                false
            }
        };
        b.readiness.record(pass);
        if pass {
            b.outlier_failures = 0;
        }
        if b.state.is_administrative() {
            return;
        }
        match b.state {
            BackendState::Active | BackendState::Warming
                if !pass && b.readiness.failures >= rules.fall =>
            {
                let fraction = self.health_fraction(i, now);
                self.set_state(i, now, BackendState::Failing, Cause::Probe, fraction);
            }
            BackendState::Failing if pass && b.readiness.passes >= rules.rise => {
                // A false positive corrects itself without a removal.
                self.warm(i, now, Cause::Probe);
            }
            BackendState::Ejected
                if pass && b.readiness.passes >= rules.rise && b.cause == Cause::Probe =>
            {
                self.warm(i, now, Cause::Probe);
            }
            _ => {}
        }
    }

    /// The outcome of one live request or connection (passive checks).
    pub fn live_outcome(&mut self, id: BackendId, now: Duration, ok: bool) {
        let Some(i) = self.find(id) else {
            return;
        };
        let b = &mut self.backends[i];
        if ok {
            b.last_live_success = Some(now);
            b.outlier_failures = 0;
        } else {
            b.outlier_failures = b.outlier_failures.saturating_add(1);
            self.check_outlier(i, now);
        }
    }

    /// Live traffic as the data path counts it between two control ticks: whether anything
    /// succeeded, and the current run of consecutive failures (reset by every success).
    pub fn live_traffic(
        &mut self,
        id: BackendId,
        now: Duration,
        succeeded: bool,
        failure_streak: u32,
    ) {
        let Some(i) = self.find(id) else {
            return;
        };
        let b = &mut self.backends[i];
        if succeeded {
            b.last_live_success = Some(now);
        }
        b.outlier_failures = failure_streak;
        self.check_outlier(i, now);
    }

    fn check_outlier(&mut self, i: usize, now: Duration) {
        let Some(outlier) = self.rules.outlier.clone() else {
            return;
        };
        let b = &self.backends[i];
        let eligible = matches!(
            b.state,
            BackendState::Active | BackendState::Warming | BackendState::Failing
        );
        if !eligible || b.outlier_failures < outlier.consecutive_failures {
            return;
        }
        let times = b.ejection_multiplier.saturating_add(1);
        let duration = outlier
            .base_ejection
            .saturating_mul(times)
            .min(outlier.max_ejection);
        if self.eject(i, now, BackendState::Ejected, Cause::Outlier) {
            let b = &mut self.backends[i];
            b.ejected_until = Some(now.saturating_add(duration));
            b.outlier_failures = 0;
            b.ejection_multiplier = times;
        }
    }

    /// Stop sending new requests; in-flight ones finish.
    pub fn drain(&mut self, id: BackendId, now: Duration, cause: Cause) {
        let Some(i) = self.find(id) else {
            return;
        };
        if !matches!(
            self.backends[i].state,
            BackendState::Draining | BackendState::Drained
        ) {
            self.set_state(i, now, BackendState::Draining, cause, 0.0);
        }
    }

    /// The drain finished (nothing in flight any more, or the drain timeout passed).
    pub fn drained(&mut self, id: BackendId, now: Duration) {
        let Some(i) = self.find(id) else {
            return;
        };
        if self.backends[i].state == BackendState::Draining {
            let cause = self.backends[i].cause;
            self.set_state(i, now, BackendState::Drained, cause, 0.0);
        }
    }

    pub fn disable(&mut self, id: BackendId, now: Duration) {
        let Some(i) = self.find(id) else {
            return;
        };
        if self.backends[i].state != BackendState::Disabled {
            self.set_state(i, now, BackendState::Disabled, Cause::Admin, 0.0);
        }
    }

    /// Back into rotation after drain or disable, through slow start.
    pub fn enable(&mut self, id: BackendId, now: Duration) {
        let Some(i) = self.find(id) else {
            return;
        };
        if self.backends[i].state.is_administrative() {
            let b = &mut self.backends[i];
            b.liveness = Default::default();
            b.readiness = Default::default();
            b.outlier_failures = 0;
            self.warm(i, now, Cause::Admin);
        }
    }

    /// Advances time: slow starts finish, decays end in ejection, timed ejections expire,
    /// suppressed ejections are retried, and panic is entered or left.
    pub fn tick(&mut self, now: Duration) {
        for i in 0..self.backends.len() {
            let b = &self.backends[i];
            let elapsed = now.saturating_sub(b.since);
            match b.state {
                BackendState::Warming
                    if self.rules.slow_start.is_zero() || elapsed >= self.rules.slow_start =>
                {
                    self.set_state(i, now, BackendState::Active, Cause::Timer, 1.0);
                }
                BackendState::Failing if elapsed >= self.rules.failure_decay => {
                    self.eject(i, now, BackendState::Ejected, Cause::Probe);
                }
                BackendState::Ejected if b.ejected_until.is_some_and(|t| now >= t) => {
                    self.backends[i].ejected_until = None;
                    self.warm(i, now, Cause::Outlier);
                }
                BackendState::Active | BackendState::Warming
                    if b.suppressed && b.liveness.failures >= self.rules.fall =>
                {
                    self.eject(i, now, BackendState::Dead, Cause::Probe);
                }
                _ => {}
            }
            self.forgive(i, now);
        }
        self.update_panic();
    }

    /// One outlier ejection is forgiven per `base_ejection` the backend spends in rotation.
    fn forgive(&mut self, i: usize, now: Duration) {
        let Some(base) = self.rules.outlier.as_ref().map(|o| o.base_ejection) else {
            return;
        };
        let b = &mut self.backends[i];
        let in_rotation = matches!(b.state, BackendState::Active | BackendState::Warming);
        if in_rotation
            && b.ejection_multiplier > 0
            && now.saturating_sub(b.multiplier_since) >= base
        {
            b.ejection_multiplier -= 1;
            b.multiplier_since = now;
        }
    }

    // --- outputs -----------------------------------------------------------------------------

    /// Effective weight of backend `id` as a fraction of its configured weight.
    pub fn fraction(&self, id: BackendId, now: Duration) -> f64 {
        self.find(id).map_or(0.0, |i| self.fraction_at(i, now))
    }

    fn fraction_at(&self, i: usize, now: Duration) -> f64 {
        let b = &self.backends[i];
        if b.state.is_administrative() {
            return 0.0;
        }
        if self.panic {
            // Ignore health; slow start is not health, so it still applies.
            return match b.state {
                BackendState::Warming => self.health_fraction(i, now),
                _ => 1.0,
            };
        }
        self.health_fraction(i, now)
    }

    pub fn view(&self, id: BackendId, now: Duration) -> Option<BackendView> {
        let i = self.find(id)?;
        let b = &self.backends[i];
        Some(BackendView {
            state: b.state,
            since: b.since,
            cause: b.cause,
            weight_fraction: self.fraction_at(i, now),
            ejections: b.ejections,
            suppressed: b.suppressed,
            slow_checks: b.slow_checks,
        })
    }

    // --- internals ---------------------------------------------------------------------------

    fn health_fraction(&self, i: usize, now: Duration) -> f64 {
        let b = &self.backends[i];
        let elapsed = now.saturating_sub(b.since).as_secs_f64();
        match b.state {
            BackendState::Active => 1.0,
            BackendState::Warming => {
                let window = self.rules.slow_start.as_secs_f64();
                let from = b.ramp_from.max(self.rules.slow_start_min).min(1.0);
                if window <= 0.0 {
                    1.0
                } else {
                    (from + (1.0 - from) * elapsed / window).min(1.0)
                }
            }
            BackendState::Failing => {
                let decay = self.rules.failure_decay.as_secs_f64();
                let left = if decay <= 0.0 {
                    0.0
                } else {
                    b.ramp_from * (1.0 - elapsed / decay).max(0.0)
                };
                if b.suppressed {
                    // Held in rotation by the cap: keep a small share rather than none.
                    left.max(self.rules.slow_start_min.min(b.ramp_from))
                } else {
                    left
                }
            }
            BackendState::Ejected
            | BackendState::Dead
            | BackendState::Draining
            | BackendState::Drained
            | BackendState::Disabled => 0.0,
        }
    }

    fn set_state(
        &mut self,
        i: usize,
        now: Duration,
        to: BackendState,
        cause: Cause,
        ramp_from: f64,
    ) {
        let b = &mut self.backends[i];
        let from = b.state;
        b.state = to;
        b.since = now;
        b.cause = cause;
        b.ramp_from = ramp_from;
        b.suppressed = false;
        if from != to {
            let backend = b.id;
            self.count_transition(i, now, from, to, cause);
            self.events.push(Transition::State {
                backend,
                from,
                to,
                cause,
            });
        }
    }

    /// Counts what a state change of backend `i` says about the checks and deployments.
    fn count_transition(
        &mut self,
        i: usize,
        now: Duration,
        from: BackendState,
        to: BackendState,
        cause: Cause,
    ) {
        let out = |s: BackendState| matches!(s, BackendState::Ejected | BackendState::Dead);
        let b = &mut self.backends[i];
        let c = &mut self.counters;
        match to {
            BackendState::Ejected if cause == Cause::Outlier => c.ejected_outlier += 1,
            BackendState::Ejected => c.ejected_readiness += 1,
            BackendState::Dead => c.ejected_liveness += 1,
            BackendState::Draining => c.drains += 1,
            BackendState::Warming => c.slow_starts += 1,
            _ => {}
        }
        if out(to)
            && b.recovered_at
                .is_some_and(|t| now.saturating_sub(t) < FLAP_WINDOW)
        {
            c.flaps += 1;
        }
        let back = matches!(to, BackendState::Warming | BackendState::Active);
        if back && from == BackendState::Failing {
            c.false_positives += 1;
        }
        if back && out(from) {
            b.recovered_at = Some(now);
        }
    }

    /// Back into rotation through slow start. Failures counted before it left are history:
    /// a backend that recovered is not ejected again for what it did while it was down.
    fn warm(&mut self, i: usize, now: Duration, cause: Cause) {
        let current = self.health_fraction(i, now);
        let b = &mut self.backends[i];
        b.readiness.failures = 0;
        b.liveness.failures = 0;
        b.outlier_failures = 0;
        b.multiplier_since = now;
        if self.rules.slow_start.is_zero() {
            self.set_state(i, now, BackendState::Active, cause, 1.0);
        } else {
            self.set_state(i, now, BackendState::Warming, cause, current);
        }
    }

    /// Takes backend `i` out of rotation if the cap allows; returns whether it did.
    fn eject(&mut self, i: usize, now: Duration, to: BackendState, cause: Cause) -> bool {
        if self.ejected() >= self.cap() {
            let b = &mut self.backends[i];
            if !b.suppressed {
                b.suppressed = true;
                self.counters.suppressed += 1;
                self.events.push(Transition::Suppressed {
                    backend: b.id,
                    wanted: to,
                    cause,
                });
            }
            return false;
        }
        self.backends[i].ejections = self.backends[i].ejections.saturating_add(1);
        self.set_state(i, now, to, cause, 0.0);
        true
    }

    fn update_panic(&mut self) {
        let of = self.eligible();
        let failing = self
            .backends
            .iter()
            .filter(|b| {
                matches!(
                    b.state,
                    BackendState::Failing | BackendState::Ejected | BackendState::Dead
                ) || b.suppressed
            })
            .count();
        let threshold = self.rules.panic_threshold_percent as usize;
        let panic = threshold > 0 && of > 0 && failing * 100 >= threshold * of;
        if panic != self.panic {
            self.panic = panic;
            if panic {
                self.counters.panics += 1;
            }
            self.events.push(Transition::Panic {
                entered: panic,
                failing,
                of,
            });
        }
    }
}
