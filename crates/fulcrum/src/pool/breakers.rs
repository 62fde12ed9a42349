//! A pool's circuit breakers at run time: what it has in flight now, shared by every worker,
//! and the admission of each request against the configured limit. A request beyond it is
//! refused at once (503, naming the limit) instead of queueing behind the others: a pool
//! that is overwhelmed sheds load rather than taking more of it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proxy::error::Breaker;

#[derive(Debug, Default)]
pub struct Breakers {
    /// Requests in flight now, counted only while the pool has `max_requests`.
    requests: AtomicU64,
    /// Requests refused by `max_requests` since the start.
    pub refused_requests: AtomicU64,
}

/// A request's place under `max_requests`, given back when it is dropped.
#[derive(Debug)]
pub struct RequestSlot<'a>(&'a AtomicU64);

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breakers {
    /// Admits one request under `max_requests` (`None`: no limit, nothing counted); `Err`
    /// when the pool is at its limit. Across workers: one compare-and-swap, no lock.
    pub fn admit_request(&self, max: Option<u64>) -> Result<Option<RequestSlot<'_>>, Breaker> {
        let Some(max) = max else {
            return Ok(None);
        };
        match self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(_) => Ok(Some(RequestSlot(&self.requests))),
            Err(_) => {
                self.refused_requests.fetch_add(1, Ordering::Relaxed);
                Err(Breaker::MaxRequests)
            }
        }
    }

    /// Requests in flight now (0 while the pool has no `max_requests`).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_limit_are_refused_until_one_finishes() {
        let breakers = Breakers::default();
        let first = breakers.admit_request(Some(2));
        let second = breakers.admit_request(Some(2));
        assert!(matches!(first, Ok(Some(_))) && matches!(second, Ok(Some(_))));
        assert!(matches!(
            breakers.admit_request(Some(2)),
            Err(Breaker::MaxRequests)
        ));
        assert_eq!(breakers.requests(), 2);
        drop(first);
        assert!(matches!(breakers.admit_request(Some(2)), Ok(Some(_))));
        assert_eq!(breakers.refused_requests.load(Ordering::Relaxed), 1);
        assert!(
            matches!(breakers.admit_request(None), Ok(None)),
            "no limit: not counted"
        );
    }
}
