//! The phases every proxied request lives through, whatever protocol it came in and goes out
//! in, written once: **pick** a backend from the pool's snapshot → **attempt** the exchange on
//! it (the codecs' part) → **account** for the outcome (in-flight, requests, failures,
//! latency, the warnings an operator sees) → **retry** on another backend when nothing reached
//! this one, or when the request is safe to send twice → **answer** with fulcrum's own error
//! when no backend did.
//!
//! A codec pair (HTTP/1.1 or HTTP/2 downstream, HTTP/1.1 upstream today) implements
//! [`Exchange`]: one attempt on one backend. Static dispatch: each pair compiles to its own
//! copy of this loop.

use fulcrum_core::config::{Algorithm, StatusRange};
use tokio::time::Instant;

use crate::pool::{InFlight, LiveBackend, Pool, Tried};
use crate::proxy::error::ProxyError;
use crate::proxy::marks::Marks;

/// What the pipeline needs to know about a request, from whichever codec parsed it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    /// A bodiless GET, HEAD or OPTIONS: safe to send again to another backend.
    pub replayable: bool,
    /// The hash key, for hashing pools.
    pub key: Option<u64>,
}

/// How one attempt on one backend ended.
#[derive(Debug)]
pub enum Attempt<T> {
    /// The exchange is over: the response reached the client, or the client went away, or
    /// the exchange broke after the response had started (nothing more can be said).
    Done(T),
    /// Nothing reached the backend; another backend may be tried.
    NotSent(String),
    /// A pooled connection turned out closed by the backend before it answered anything, and
    /// the request was sent (it may have been applied): it is not sent again.
    Stale,
    /// The exchange failed before any response reached the client.
    Failed(ProxyError),
}

/// One attempt of one request on one backend: the codecs' part of the pipeline.
#[allow(
    async_fn_in_trait,
    reason = "exchanges run on one worker thread's LocalSet: their futures are !Send by design"
)]
pub trait Exchange {
    type Done;

    /// The request's marks (each attempt's backend goes there, for the access log).
    fn marks(&self) -> &Marks;

    /// Sends the request to `backend` and relays its answer. `picked`: when the backend was
    /// picked (the response timeout and latency count from there).
    async fn attempt(&mut self, backend: &LiveBackend, picked: Instant) -> Attempt<Self::Done>;
}

/// Forwards one request: picks backends in turn until an attempt ends the exchange or no
/// attempt is left. `Err`: the error the client is to be answered with.
pub async fn forward<E: Exchange>(
    pool: &Pool,
    request: RequestFacts,
    exchange: &mut E,
) -> Result<E::Done, ProxyError> {
    let settings = pool.settings();
    // The circuit breaker first: a pool at its limit answers at once, touching no backend.
    let _slot = pool
        .breakers
        .admit_request(settings.circuit_breakers.max_requests)
        .map_err(ProxyError::Overloaded)?;
    let snapshot = pool.snapshot_owned();
    let mut tried = Tried::default();
    let attempts = settings.connect_attempts;
    drop(settings);
    let replay = request.replayable && attempts > 1 && snapshot.backends.len() > 1;
    let mut broke = false;
    let mut now = Instant::now();
    for attempt_number in 0..attempts {
        if attempt_number > 0 {
            now = Instant::now();
        }
        let Some(index) = snapshot.pick(&tried, request.key) else {
            break;
        };
        tried.push(index);
        let backend = &snapshot.backends[index];
        // Counted from the pick, as L4 does: a backend whose connects hang is busy, not idle,
        // to least_conn and p2c, and a drain waits for connects still pending. Each attempt
        // is one request with exactly one outcome, so failures never exceed requests.
        let in_flight = InFlight::start(&backend.stats);
        backend.stats.record_request();
        exchange.marks().attempting(backend.addr);
        let attempt = exchange.attempt(backend, now).await;
        let took = exchange.marks().exchange_end(Instant::now());
        backend
            .stats
            .latency
            .record(took.saturating_duration_since(now));
        drop(in_flight);
        match attempt {
            Attempt::Done(done) => return Ok(done),
            Attempt::NotSent(error) => {
                backend.stats.record_failure();
                if let Some(more) = backend.stats.warnings.pass(pool.clock().now()) {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, %error, more_since_last = more, "connect failed; trying another backend");
                }
            }
            // The client's fault (a stalled or malformed body), not the backend's.
            Attempt::Failed(
                error @ (ProxyError::ClientBodyTimeout | ProxyError::BadRequest(_)),
            ) => {
                tracing::debug!(pool = %pool.name, %error, "request body not received whole");
                return Err(error);
            }
            Attempt::Failed(ProxyError::UpstreamFailed) if replay => {
                backend.stats.record_failure();
                if let Some(more) = backend.stats.warnings.pass(pool.clock().now()) {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, more_since_last = more, "upstream broke the exchange; retrying the idempotent request on another backend");
                }
                broke = true;
            }
            Attempt::Stale => {
                // A request that may have been applied is not sent twice (RFC 9112 §9.3.1).
                if let Some(more) = backend.stats.warnings.pass(pool.clock().now()) {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, more_since_last = more, "a pooled connection closed before any answer, after the request was sent; not resending a request that is not safe to repeat");
                }
                return Err(ProxyError::UpstreamFailed);
            }
            Attempt::Failed(error) => {
                backend.stats.record_failure();
                if let Some(more) = backend.stats.warnings.pass(pool.clock().now()) {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, %error, more_since_last = more, "upstream failed");
                }
                return Err(error);
            }
        }
    }
    Err(if broke {
        ProxyError::UpstreamFailed
    } else if tried.is_empty() {
        ProxyError::NoBackend
    } else {
        ProxyError::ConnectFailed
    })
}

/// A response head arrived from `backend`: marks the request answered, feeds the time to it
/// to p2c_ewma, and says whether its status counts as a backend failure (the outcome is
/// recorded once the body has been relayed, with [`record_outcome`]).
pub fn observe_head(
    pool: &Pool,
    backend: &LiveBackend,
    marks: &Marks,
    status: u16,
    picked: Instant,
) -> bool {
    marks.answered_now(status);
    let settings = pool.settings();
    if settings.algorithm == Algorithm::P2cEwma {
        backend
            .stats
            .ewma
            .observe(pool.clock().now(), picked.elapsed());
    }
    // Without outlier detection, 5xx still count as failures (counters, the pool view).
    settings
        .outlier
        .as_ref()
        .map_or(
            StatusRange {
                low: 500,
                high: 599,
            },
            |o| o.failure_statuses,
        )
        .contains(status)
}

/// The exchange's passive-health outcome, once its response has been relayed.
pub fn record_outcome(backend: &LiveBackend, failed: bool) {
    if failed {
        backend.stats.record_failure();
    } else {
        backend.stats.record_success();
    }
}
