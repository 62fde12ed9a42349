//! Live counters of one backend, shared by every snapshot generation and every worker. The
//! data path only ever touches atomics here.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use fulcrum_core::config::defaults;
use fulcrum_core::ewma::PeakEwma;
use fulcrum_core::latency::LatencyHistogram;
use fulcrum_core::warn_gate::WarnGate;
use tokio::sync::Notify;

#[derive(Debug)]
pub struct BackendStats {
    in_flight: AtomicU64,
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    /// Live failures in a row (outlier detection); any success resets it.
    failure_streak: AtomicU32,
    /// Request (L7) or connection (L4) durations, for the automatic drain timeout.
    pub latency: LatencyHistogram,
    /// Cleared while the backend is draining, drained or disabled: workers keep no idle
    /// keep-alive connection to it (and close the ones they have).
    pool_connections: AtomicBool,
    /// Fired when a drain times out: every connection to the backend is closed.
    abort: Arc<Notify>,
    /// Fired when a drain's deadline nears: WebSockets with `close_on_drain` are told to go
    /// away (close code 1001), so their clients reconnect elsewhere before the deadline.
    going_away: Arc<Notify>,
    /// Peak-EWMA of time to response headers (L7) or connect time (L4), for `p2c_ewma`.
    pub ewma: PeakEwma,
    /// Data-path warnings about this backend: one per 10 s, with a count of the rest.
    pub warnings: WarnGate,
}

impl Default for BackendStats {
    fn default() -> Self {
        Self::new(defaults::EWMA_DECAY, defaults::EWMA_DEFAULT_RTT)
    }
}

impl BackendStats {
    pub fn new(ewma_decay: Duration, ewma_default_rtt: Duration) -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failure_streak: AtomicU32::new(0),
            latency: LatencyHistogram::default(),
            pool_connections: AtomicBool::new(true),
            abort: Arc::new(Notify::new()),
            going_away: Arc::new(Notify::new()),
            ewma: PeakEwma::new(ewma_decay, ewma_default_rtt),
            warnings: WarnGate::default(),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    pub fn failure_streak(&self) -> u32 {
        self.failure_streak.load(Ordering::Relaxed)
    }

    /// A request (L7) or connection (L4) was handed to this backend.
    pub fn record_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        // Avoid writing a shared cache line on every request when there is nothing to reset.
        if self.failure_streak.load(Ordering::Relaxed) != 0 {
            self.failure_streak.store(0, Ordering::Relaxed);
        }
    }

    /// Connect failure, upstream error, timeout or a failure status.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failure_streak.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reset_failure_streak(&self) {
        self.failure_streak.store(0, Ordering::Relaxed);
    }

    /// Whether idle keep-alive connections to this backend may be kept for reuse.
    pub fn pools_connections(&self) -> bool {
        self.pool_connections.load(Ordering::Relaxed)
    }

    pub(super) fn set_pool_connections(&self, allowed: bool) {
        self.pool_connections.store(allowed, Ordering::Relaxed);
    }

    /// Resolves when the backend's remaining connections must be closed (drain timeout).
    pub fn aborted(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.abort).notified_owned()
    }

    pub(super) fn abort_all(&self) {
        self.abort.notify_waiters();
    }

    /// Resolves when the backend's drain deadline nears (see `going_away`).
    pub fn going_away(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.going_away).notified_owned()
    }

    pub(super) fn tell_going_away(&self) {
        self.going_away.notify_waiters();
    }
}

/// Counts one request or connection as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<BackendStats>);

impl InFlight {
    pub fn start(stats: &Arc<BackendStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }

    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
