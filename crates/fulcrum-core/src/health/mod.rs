//! Backend health and lifecycle: one state machine per backend, and the pool-level rules that
//! keep health checks from ever taking the fleet down. Time is always an argument (a
//! [`Duration`](std::time::Duration) since an epoch the caller chooses), so every curve and
//! timer is tested exactly. See `LIFECYCLE.md` beside this file for the states.
//!
//! The daemon feeds in probe results, live-traffic outcomes and admin actions, calls
//! [`PoolHealth::tick`] regularly, and publishes the resulting effective weights.

mod lifecycle;
mod pool;

pub use lifecycle::{BackendId, BackendState, Cause, ProbeOutcome};
pub use pool::{
    BackendView, HealthCounters, HealthRules, OutlierRules, PoolHealth, Transition, FLAP_WINDOW,
};

use crate::config::{defaults, Pool};

/// The state machine's rules for a configured pool. Without a `health` section the cap and
/// panic rules still apply to outlier ejections, with their defaults.
pub fn rules_for(pool: &Pool) -> HealthRules {
    let health = pool.health.as_ref();
    HealthRules {
        slow_start: pool.slow_start,
        slow_start_min: f64::from(pool.slow_start_min_percent) / 100.0,
        rise: health.map_or(defaults::RISE, |h| h.rise),
        fall: health.map_or(defaults::FALL, |h| h.fall),
        failure_decay: health.map_or(defaults::FAILURE_DECAY, |h| h.failure_decay),
        max_ejection_percent: health
            .map_or(defaults::MAX_EJECTION_PERCENT, |h| h.max_ejection_percent),
        panic_threshold_percent: health.map_or(defaults::PANIC_THRESHOLD_PERCENT, |h| {
            h.panic_threshold_percent
        }),
        // A probe timing out within two intervals of a successful live response is "slow".
        slow_check_window: health.map_or(defaults::HEALTH_INTERVAL * 2, |h| h.interval * 2),
        outlier: pool.outlier.as_ref().map(|o| OutlierRules {
            consecutive_failures: o.consecutive_failures,
            base_ejection: o.base_ejection,
            max_ejection: o.max_ejection,
        }),
    }
}

#[cfg(test)]
mod tests;
