//! A pool's retry budget (Linkerd's and Finagle's): over a sliding window, retries may be at
//! most `ratio` of the requests, plus `min_retries` so that a pool with little traffic can
//! still retry. When a whole pool fails, clients' N requests then cost the backends at most
//! N × (1 + ratio) + min_retries attempts, not N × (1 + max_retries).
//!
//! Counts are kept per second in a ring of buckets shared by every worker (atomics, no
//! lock): a request adds one to its second's bucket, a retry is allowed when the window's
//! retries are still under the budget. Two workers may both pass the check at the same
//! instant; the budget is then exceeded by at most the number of workers, once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    /// Retries per request, over the window (0.2: one retry per five requests).
    pub ratio: f64,
    /// Retries always allowed per window, whatever the traffic.
    pub min_retries: u32,
    /// How far back requests and retries count (whole seconds, 1 … 60).
    pub window: Duration,
}

impl Default for BudgetSettings {
    /// Envoy's and Linkerd's defaults: 20 %, at least 3, over 10 s.
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries: 3,
            window: Duration::from_secs(10),
        }
    }
}

const BUCKETS: usize = 60;

/// One second's counts, tagged with the second they belong to.
#[derive(Debug, Default)]
struct Bucket {
    /// The second (since the clock's start) + 1; 0: never used.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    buckets: Vec<Bucket>,
}

impl RetryBudget {
    pub fn new(settings: BudgetSettings) -> Self {
        Self {
            settings,
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
        }
    }

    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// The bucket of `now`'s second, emptied first when it last held an older second.
    fn bucket(&self, now: Duration) -> &Bucket {
        let second = now.as_secs() + 1;
        let bucket = &self.buckets[(second as usize) % BUCKETS];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Release);
            bucket.retries.store(0, Ordering::Release);
        }
        bucket
    }

    /// A request (a first attempt) started at `now`.
    pub fn request(&self, now: Duration) {
        self.bucket(now).requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget at `now`; `false` (nothing taken) when it is spent.
    pub fn try_retry(&self, now: Duration) -> bool {
        let (requests, retries) = self.window_counts(now);
        let allowed = (requests as f64 * self.settings.ratio).floor() as u64
            + u64::from(self.settings.min_retries);
        if retries >= allowed {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Requests and retries within the window ending at `now`.
    pub fn window_counts(&self, now: Duration) -> (u64, u64) {
        let second = now.as_secs() + 1;
        let span = self.settings.window.as_secs().clamp(1, BUCKETS as u64);
        let oldest = second.saturating_sub(span - 1);
        let (mut requests, mut retries) = (0, 0);
        for bucket in &self.buckets {
            let at = bucket.second.load(Ordering::Acquire);
            if at >= oldest && at <= second {
                requests += bucket.requests.load(Ordering::Acquire);
                retries += bucket.retries.load(Ordering::Acquire);
            }
        }
        (requests, retries)
    }
}
