//! The arithmetic of per-client limits, with time as an argument: a token bucket for request
//! rates, and the moving deadline of an upload held to a minimum rate.

use std::time::Duration;

/// A token bucket (requests per second with a burst): full when created, refilled
/// continuously at `rate`, never above `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    pub fn full(burst: f64, now: Duration) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token at `now`; `false` (and nothing taken) when there is none.
    pub fn take(&mut self, now: Duration, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now`: it then says nothing a new one would not,
    /// and can be forgotten.
    pub fn is_full(&self, now: Duration, rate: f64, burst: f64) -> bool {
        let mut copy = *self;
        copy.refill(now, rate, burst);
        copy.tokens >= burst
    }

    fn refill(&mut self, now: Duration, rate: f64, burst: f64) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = self.at.max(now);
    }
}

/// The latest moment an upload may have received `received` bytes by, when it must average
/// at least `bytes_per_second` after a `grace` period (Apache mod_reqtimeout's rule): every
/// `bytes_per_second` bytes buy one more second. Measured from the upload's start.
pub fn upload_deadline(grace: Duration, received: u64, bytes_per_second: u64) -> Duration {
    let earned = Duration::from_secs_f64(received as f64 / bytes_per_second.max(1) as f64);
    grace.saturating_add(earned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let (rate, burst) = (10.0, 5.0);
        let mut bucket = TokenBucket::full(burst, at(0));
        let allowed = (0..8).filter(|_| bucket.take(at(0), rate, burst)).count();
        assert_eq!(allowed, 5, "the burst at once");
        assert!(
            !bucket.take(at(50), rate, burst),
            "half a token after 50 ms"
        );
        assert!(bucket.take(at(100), rate, burst), "one token after 100 ms");
        assert!(!bucket.take(at(100), rate, burst));
        // Over one second at a steady 20 requests a second, 10 pass.
        let passed = (1..=20)
            .filter(|i| bucket.take(at(100 + i * 50), rate, burst))
            .count();
        assert_eq!(passed, 10);
        // Idle long enough, it is full again, and never above its burst.
        assert!(bucket.is_full(at(10_000), rate, burst));
        let allowed = (0..8)
            .filter(|_| bucket.take(at(10_000), rate, burst))
            .count();
        assert_eq!(allowed, 5);
        assert!(!bucket.is_full(at(10_000), rate, burst));
    }

    #[test]
    fn a_clock_that_goes_back_takes_nothing_and_gives_nothing() {
        let mut bucket = TokenBucket::full(1.0, at(1000));
        assert!(bucket.take(at(1000), 1.0, 1.0));
        assert!(!bucket.take(at(500), 1.0, 1.0));
        assert!(bucket.take(at(2000), 1.0, 1.0));
    }

    #[test]
    fn every_rate_worth_of_bytes_buys_a_second_after_the_grace() {
        let grace = Duration::from_secs(5);
        assert_eq!(upload_deadline(grace, 0, 1000), Duration::from_secs(5));
        assert_eq!(upload_deadline(grace, 1000, 1000), Duration::from_secs(6));
        assert_eq!(
            upload_deadline(grace, 2500, 1000),
            Duration::from_millis(7500)
        );
        assert_eq!(
            upload_deadline(grace, 10, 0),
            grace + Duration::from_secs(10)
        );
    }
}
