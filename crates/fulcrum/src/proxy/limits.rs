//! Per-client limits a listener's workers share: the connections each client address holds
//! open, and each address's request-rate bucket. Sharded maps behind short locks, touched once
//! per connection or request, and only when the listener sets the limit. Kept across reloads
//! with the listener's counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use fulcrum_core::config::RateLimit;
use fulcrum_core::limits::TokenBucket;
use tokio::time::Instant;

const SHARDS: usize = 16;
/// Buckets one shard keeps; past it, full buckets (idle clients) are forgotten, and if that
/// is not enough the shard starts afresh — every client then gets a full bucket, so a flood
/// of addresses makes the limit lenient, never wrong about a client it still tracks.
const BUCKETS_PER_SHARD: usize = 1 << 14;

#[derive(Debug)]
pub struct ClientLimits {
    connections: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    buckets: [Mutex<HashMap<IpAddr, TokenBucket>>; SHARDS],
    epoch: Instant,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            connections: Default::default(),
            buckets: Default::default(),
            epoch: Instant::now(),
        }
    }
}

/// One connection counted against its client address until dropped.
#[derive(Debug)]
pub struct ClientConnection {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

/// The shard of an address: a multiply-xor over its last bytes (where addresses of one
/// network differ). Only lock spreading depends on it.
fn shard(ip: IpAddr) -> usize {
    let octets = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let hash = octets.iter().fold(0u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash >> 32) as usize % SHARDS
}

impl ClientLimits {
    /// Counts a connection from `ip`; `None` when `ip` already holds `max`.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ClientConnection> {
        let ip = ip.to_canonical();
        let mut counts = lock(&self.connections[shard(ip)]);
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientConnection {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Connections `ip` holds open now.
    pub fn connections_of(&self, ip: IpAddr) -> u32 {
        let ip = ip.to_canonical();
        lock(&self.connections[shard(ip)])
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    /// Takes a token from `ip`'s bucket; `false` when it has none (the request is over the
    /// limit).
    pub fn allow_request(&self, ip: IpAddr, limit: &RateLimit) -> bool {
        let ip = ip.to_canonical();
        let now = self.epoch.elapsed();
        let (rate, burst) = (f64::from(limit.requests_per_second), f64::from(limit.burst));
        let mut buckets = lock(&self.buckets[shard(ip)]);
        if buckets.len() >= BUCKETS_PER_SHARD && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| !bucket.is_full(now, rate, burst));
            if buckets.len() >= BUCKETS_PER_SHARD {
                buckets.clear();
            }
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(burst, now))
            .take(now, rate, burst)
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut counts = lock(&self.limits.connections[shard(self.ip)]);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A poisoned shard (a panic while it was held, which the code under it cannot do) is still
/// a valid map of counts.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_core::config::RateLimitAction;

    #[test]
    fn connections_are_counted_per_address_and_freed_when_dropped() {
        let limits = Arc::new(ClientLimits::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or_else(|e| panic!("{e}"));
        let first = limits.connect(a, 2);
        let second = limits.connect(mapped, 2);
        assert!(first.is_some() && second.is_some());
        assert!(
            limits.connect(a, 2).is_none(),
            "the same address, mapped or not"
        );
        assert!(limits.connect(b, 2).is_some());
        drop(first);
        assert_eq!(limits.connections_of(a), 1);
        assert!(limits.connect(a, 2).is_some());
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let limits = ClientLimits::default();
        let limit = RateLimit {
            requests_per_second: 1,
            burst: 3,
            action: RateLimitAction::Status429,
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: IpAddr = "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}"));
        let passed = (0..10).filter(|_| limits.allow_request(a, &limit)).count();
        assert_eq!(passed, 3);
        assert!(
            limits.allow_request(b, &limit),
            "another address is not limited"
        );
        assert!(!limits.allow_request(a, &limit));
    }
}
