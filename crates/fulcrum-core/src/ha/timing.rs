//! The election's timing rules, all derived from the lease TTL and the heartbeat interval so
//! that operators set two numbers and the safety margins follow.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the store keeps a silent leader's claim.
    pub ttl: Duration,
    /// How often instances tell each other their role and whether they reach the store.
    pub heartbeat: Duration,
}

impl Timing {
    /// The active renews its claim this often: three tries before the store could expire it.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// An active whose last confirmed renewal *started* longer ago than this stops trusting its
    /// claim. The store measures the TTL from when it received that renewal, which is later,
    /// so a fifth of the TTL is left for the two clocks to disagree in rate.
    pub fn fence_after(&self) -> Duration {
        self.ttl - self.ttl / 5
    }

    /// A peer not heard for this long is gone (three missed heartbeats).
    pub fn peer_timeout(&self) -> Duration {
        self.heartbeat * 3
    }

    /// A peer "reaches the store" if its last successful round trip started this recently.
    /// Short enough that a store which died for everybody is no longer reported as reachable
    /// when the active's own confirmation runs out (at least 2/3 TTL − margin after the store
    /// died), long enough to cover a peer's poll interval plus a heartbeat.
    pub fn store_fresh(&self) -> Duration {
        self.ttl / 3
    }

    /// An active holding on while the store was down for everybody gets this long to renew
    /// once peers reach the store again, before it gives up its role.
    pub fn rejoin_grace(&self) -> Duration {
        self.ttl
    }
}
