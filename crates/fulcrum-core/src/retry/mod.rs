//! When a failed attempt may be sent again to another backend, how long to wait first, and
//! how many retries a pool may make at all (`budget.rs`). Pure, with time and randomness as
//! arguments, so every rule is tested exactly.
//!
//! The rules, in order: never once any of the response reached the client; connect failures
//! always (nothing reached the backend); other failures only for a request that is safe to
//! send twice — an idempotent method (RFC 9110 §9.2.2), or any method with an
//! `Idempotency-Key` where the pool allows it — whose body fulcrum still holds, and only for
//! the failures the pool's `retry_on` names.

mod budget;
#[cfg(test)]
mod tests;

pub use budget::{BudgetSettings, RetryBudget};

use std::time::Duration;

/// How one attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made: the request never left.
    Connect,
    /// The backend reset or closed the connection before any response began.
    Reset,
    /// No response began within the (per-try) response timeout.
    Timeout,
    /// The backend answered with this status (before anything reached the client).
    Status(u16),
}

/// What a pool retries, from its `retry_on`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub reset: bool,
    pub timeout: bool,
    /// Statuses that make an attempt fail over (each 500 … 599, or 429).
    pub statuses: Vec<u16>,
}

/// A pool's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub on: RetryOn,
    /// Retries after the first attempt (connect failures included).
    pub max_retries: u32,
    /// The response timeout of each attempt; `None`: the pool's `response_timeout`.
    pub per_try_timeout: Option<Duration>,
    /// The first backoff's ceiling; each retry doubles it, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Requests with an `Idempotency-Key` header count as safe to repeat, whatever the method.
    pub idempotency_key: bool,
    /// The largest request body kept for a replay; a bigger one makes the request not
    /// retryable once any of it was sent.
    pub buffer_bytes: u64,
    pub budget: BudgetSettings,
}

/// What the proxy knows of a request when an attempt fails.
#[derive(Debug, Clone, Copy)]
pub struct Attempted<'a> {
    pub method: &'a [u8],
    pub has_idempotency_key: bool,
    /// The whole body is held (or there is none), so it can be sent again.
    pub body_replayable: bool,
    /// Some of the response already went to the client.
    pub response_started: bool,
    /// Retries already made for this request.
    pub retries: u32,
}

/// RFC 9110 §9.2.2: methods whose effect is the same however often they are applied.
pub fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

impl RetryPolicy {
    /// Whether `failure` of `request` may be tried again on another backend (the budget
    /// aside, which the caller asks last, so that a refused retry costs it nothing).
    pub fn allows(&self, failure: Failure, request: &Attempted<'_>) -> bool {
        if request.response_started || request.retries >= self.max_retries {
            return false;
        }
        if failure == Failure::Connect {
            return true;
        }
        let safe =
            idempotent(request.method) || (self.idempotency_key && request.has_idempotency_key);
        if !safe || !request.body_replayable {
            return false;
        }
        match failure {
            Failure::Connect => true,
            Failure::Reset => self.on.reset,
            Failure::Timeout => self.on.timeout,
            Failure::Status(status) => self.on.statuses.contains(&status),
        }
    }

    /// How long to wait before retry number `retry` (1, 2, …): "full jitter" (AWS's
    /// architecture blog) — uniform in [0, min(max, base × 2^(retry−1))], from `random`.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.backoff_max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        match nanos {
            0 => Duration::ZERO,
            n => Duration::from_nanos(random % (n + 1)),
        }
    }
}
