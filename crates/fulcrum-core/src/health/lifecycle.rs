//! One backend's lifecycle. Pure bookkeeping: it never decides alone to leave rotation; it
//! asks the pool ([`super::pool`]), which applies the ejection cap.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Slow start: weight ramps from the minimum to full.
    Warming,
    Active,
    /// Readiness failing: weight decays towards 0, then the backend is ejected.
    Failing,
    /// Out of rotation: readiness decay finished, or outlier detection (timed).
    Ejected,
    /// Out of rotation at once: liveness failed.
    Dead,
    /// Admin or discovery: no new requests; in-flight ones finish.
    Draining,
    /// Drain finished; nothing is sent to it.
    Drained,
    /// Admin: out of rotation until enabled.
    Disabled,
}

impl BackendState {
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Warming => "warming",
            BackendState::Active => "active",
            BackendState::Failing => "failing",
            BackendState::Ejected => "ejected",
            BackendState::Dead => "dead",
            BackendState::Draining => "draining",
            BackendState::Drained => "drained",
            BackendState::Disabled => "disabled",
        }
    }

    /// Out of rotation because of checks or outliers (what the ejection cap counts).
    pub fn is_ejected(self) -> bool {
        matches!(self, BackendState::Ejected | BackendState::Dead)
    }

    /// Taken out by an operator or by discovery: health does not apply.
    pub fn is_administrative(self) -> bool {
        matches!(
            self,
            BackendState::Draining | BackendState::Drained | BackendState::Disabled
        )
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a backend is in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Present when the pool started.
    Start,
    Probe,
    Outlier,
    Admin,
    Discovery,
    /// The configuration file, read again (SIGHUP).
    Reload,
    /// A timer ran out (slow start finished, ejection time over).
    Timer,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Start => "start",
            Cause::Probe => "probe",
            Cause::Outlier => "outlier",
            Cause::Admin => "admin",
            Cause::Discovery => "discovery",
            Cause::Reload => "reload",
            Cause::Timer => "timer",
        })
    }
}

/// The result of one active probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Pass,
    Fail,
    /// No answer within the probe timeout.
    Timeout,
}

/// Consecutive passes and failures of one kind of check.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Streak {
    pub passes: u32,
    pub failures: u32,
}

impl Streak {
    pub fn record(&mut self, pass: bool) {
        if pass {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
    }
}

/// A backend's identity within its pool for as long as it is a member: given once, never
/// reused, and never shifted by another backend's removal (a position in a list would be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BackendId(pub u64);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Lifecycle {
    pub id: BackendId,
    pub state: BackendState,
    pub since: Duration,
    pub cause: Cause,
    /// Weight fraction when the current ramp (warming or failing) began.
    pub ramp_from: f64,
    pub liveness: Streak,
    pub readiness: Streak,
    /// Live-traffic failures in a row.
    pub outlier_failures: u32,
    /// Times ejected, in all (reported).
    pub ejections: u32,
    /// What the next outlier ejection's length is multiplied by: one more per outlier
    /// ejection, one less per `base_ejection` spent back in rotation since (Envoy's rule), so a
    /// backend that was ejected a few times long ago is not punished as a repeat offender.
    pub ejection_multiplier: u32,
    /// When the multiplier last changed, or the backend last came back into rotation.
    pub multiplier_since: Duration,
    /// End of a timed (outlier) ejection.
    pub ejected_until: Option<Duration>,
    /// The last time live traffic to this backend succeeded.
    pub last_live_success: Option<Duration>,
    /// When it last came back into rotation after an ejection (to count flaps).
    pub recovered_at: Option<Duration>,
    /// The backend should be out of rotation, but the ejection cap keeps it in.
    pub suppressed: bool,
    /// Readiness timeouts forgiven because live traffic was succeeding.
    pub slow_checks: u64,
}

impl Lifecycle {
    pub fn new(id: BackendId, state: BackendState, now: Duration, cause: Cause) -> Self {
        Self {
            id,
            state,
            since: now,
            cause,
            ramp_from: 0.0,
            liveness: Streak::default(),
            readiness: Streak::default(),
            outlier_failures: 0,
            ejections: 0,
            ejection_multiplier: 0,
            multiplier_since: now,
            ejected_until: None,
            last_live_success: None,
            recovered_at: None,
            suppressed: false,
            slow_checks: 0,
        }
    }
}
