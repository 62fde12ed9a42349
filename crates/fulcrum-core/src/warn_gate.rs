//! Rate limiting for a warning that can repeat on every request ("connect failed" to a dead
//! backend under load): one line per window, carrying how many were held back since the
//! last one, instead of thousands of identical lines. Lock-free, so the data path can ask
//! it; time is an argument, so it is tested exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One warning per this window, at most.
pub const WARN_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct WarnGate {
    /// When the next warning may pass, in milliseconds on the caller's clock.
    next_ms: AtomicU64,
    /// Warnings held back since the last one that passed.
    held: AtomicU64,
}

impl WarnGate {
    /// A warning wants out at `now`: `Some(n)` when it may be logged, `n` being how many were
    /// held back since the last one; `None` (and counted) otherwise.
    pub fn pass(&self, now: Duration) -> Option<u64> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let window = WARN_WINDOW.as_millis() as u64;
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(window),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_window_with_the_count_of_those_held_back() {
        let gate = WarnGate::default();
        let at = Duration::from_millis;
        assert_eq!(gate.pass(at(0)), Some(0));
        for ms in 1..=37 {
            assert_eq!(gate.pass(at(ms * 100)), None, "at {ms}00 ms");
        }
        assert_eq!(gate.pass(at(9_999)), None);
        assert_eq!(gate.pass(at(10_000)), Some(38), "37 + the one at 9999 ms");
        assert_eq!(gate.pass(at(10_001)), None);
        // Quiet for a long while: the next one passes with what was held before.
        assert_eq!(gate.pass(at(60_000)), Some(1));
    }
}
