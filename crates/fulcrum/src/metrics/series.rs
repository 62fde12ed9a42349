//! What the request path counts, per listener and pool: one shard per worker thread (see
//! [`super::cell`]), created when a worker starts serving the listener and kept across
//! reloads with the listener's own counters, so a reload never resets a counter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::cell::{HistogramSum, OwnedCounter, OwnedHistogram, DURATION, ROUTING};
use crate::proxy::error::{ErrorSide, ProxyError};
use crate::proxy::marks::Marks;

/// The status classes requests are counted by; `none` when no response began (the client
/// left, or the exchange broke before a head).
pub const CODE_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_of(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

/// One worker's HTTP counters for one (listener, pool).
#[derive(Debug)]
pub struct HttpShard {
    /// False for a listener with `metrics = false`: every method returns at once (one
    /// predictable branch), so the benchmark can measure what counting costs.
    counting: bool,
    requests: [OwnedCounter; 6],
    errors: [OwnedCounter; ErrorSide::ALL.len()],
    routing: OwnedHistogram,
    upstream: OwnedHistogram,
    duration: OwnedHistogram,
}

impl Default for HttpShard {
    fn default() -> Self {
        Self {
            counting: true,
            requests: Default::default(),
            errors: Default::default(),
            routing: OwnedHistogram::new(ROUTING),
            upstream: OwnedHistogram::new(DURATION),
            duration: OwnedHistogram::new(DURATION),
        }
    }
}

impl HttpShard {
    /// A shard that counts nothing, for a listener with `metrics = false`.
    pub fn off() -> Self {
        Self {
            counting: false,
            ..Self::default()
        }
    }

    /// A request forwarded (or answered by fulcrum) is over: its status class, and the
    /// times its marks hold.
    pub fn finished(&self, marks: &Marks, end: Instant) {
        if !self.counting {
            return;
        }
        self.requests[class_of(marks.status())].inc();
        if let Some(sent) = marks.sent() {
            self.routing
                .observe(ROUTING, sent.saturating_duration_since(marks.received));
            if let Some(answered) = marks.answered() {
                self.upstream
                    .observe(DURATION, answered.saturating_duration_since(sent));
            }
        }
        let end = marks.exchange_end(end);
        self.duration
            .observe(DURATION, end.saturating_duration_since(marks.received));
    }

    /// fulcrum answered with its own error.
    pub fn error(&self, error: ProxyError) {
        if !self.counting {
            return;
        }
        self.errors[error.side() as usize].inc();
    }

    /// A request refused before it was parsed whole (a malformed head, a header timeout):
    /// it has no marks, only a status and a side.
    pub fn refused(&self, error: ProxyError) {
        if !self.counting {
            return;
        }
        self.requests[class_of(error.status())].inc();
        self.error(error);
    }
}

/// One worker's TCP counters for one (listener, pool).
#[derive(Debug)]
pub struct TcpShard {
    /// As [`HttpShard`]'s.
    counting: bool,
    connections: OwnedCounter,
    errors: [OwnedCounter; ErrorSide::ALL.len()],
    /// Bytes read from clients (sent on to backends).
    received: OwnedCounter,
    /// Bytes written to clients.
    sent: OwnedCounter,
    duration: OwnedHistogram,
}

impl Default for TcpShard {
    fn default() -> Self {
        Self {
            counting: true,
            connections: OwnedCounter::default(),
            errors: Default::default(),
            received: OwnedCounter::default(),
            sent: OwnedCounter::default(),
            duration: OwnedHistogram::new(DURATION),
        }
    }
}

impl TcpShard {
    /// A shard that counts nothing, for a listener with `metrics = false`.
    pub fn off() -> Self {
        Self {
            counting: false,
            ..Self::default()
        }
    }

    pub fn accepted(&self) {
        if self.counting {
            self.connections.inc();
        }
    }

    /// The connection was closed without a backend: none could be picked or reached.
    pub fn refused(&self, side: ErrorSide) {
        if self.counting {
            self.errors[side as usize].inc();
        }
    }

    pub fn ended(&self, lasted: Duration) {
        if self.counting {
            self.duration.observe(DURATION, lasted);
        }
    }

    /// The counter of bytes read from the client, `None` when not counting.
    pub fn received(&self) -> Option<&OwnedCounter> {
        self.counting.then_some(&self.received)
    }

    /// The counter of bytes written to the client, `None` when not counting.
    pub fn sent(&self) -> Option<&OwnedCounter> {
        self.counting.then_some(&self.sent)
    }
}

/// One shard per worker.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Arc<T>]>,
}

impl<T: Default> Sharded<T> {
    fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// Worker `worker`'s shard (the last one for an id out of range, which a worker never
    /// has: the set is sized by the worker count when the listener starts).
    pub fn shard(&self, worker: usize) -> Arc<T> {
        let last = self.shards.len().saturating_sub(1);
        Arc::clone(&self.shards[worker.min(last)])
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|s| &**s)
    }
}

/// A listener's series, by pool name.
#[derive(Debug)]
pub struct ListenerSeries {
    workers: usize,
    http: Mutex<BTreeMap<String, Arc<Sharded<HttpShard>>>>,
    tcp: Mutex<BTreeMap<String, Arc<Sharded<TcpShard>>>>,
}

fn series<T: Default>(
    map: &Mutex<BTreeMap<String, Arc<Sharded<T>>>>,
    pool: &str,
    workers: usize,
) -> Arc<Sharded<T>> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(
        map.entry(pool.to_string())
            .or_insert_with(|| Arc::new(Sharded::new(workers))),
    )
}

impl ListenerSeries {
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            http: Mutex::default(),
            tcp: Mutex::default(),
        }
    }

    /// Worker `worker`'s HTTP shard for requests to `pool` (created on first use).
    pub fn http(&self, pool: &str, worker: usize) -> Arc<HttpShard> {
        series(&self.http, pool, self.workers).shard(worker)
    }

    pub fn tcp(&self, pool: &str, worker: usize) -> Arc<TcpShard> {
        series(&self.tcp, pool, self.workers).shard(worker)
    }

    /// The HTTP counters, added up over workers, by pool.
    pub fn http_totals(&self) -> Vec<(String, HttpTotals)> {
        let map = self.http.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(pool, sharded)| (pool.clone(), HttpTotals::of(sharded)))
            .collect()
    }

    pub fn tcp_totals(&self) -> Vec<(String, TcpTotals)> {
        let map = self.tcp.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(pool, sharded)| (pool.clone(), TcpTotals::of(sharded)))
            .collect()
    }
}

fn add_counters<const N: usize>(total: &mut [u64; N], shard: &[OwnedCounter; N]) {
    for (t, c) in total.iter_mut().zip(shard) {
        *t += c.get();
    }
}

/// One (listener, pool)'s HTTP counters over all workers.
#[derive(Debug, Clone)]
pub struct HttpTotals {
    /// By [`CODE_CLASSES`].
    pub requests: [u64; 6],
    /// By [`ErrorSide::ALL`].
    pub errors: [u64; ErrorSide::ALL.len()],
    pub routing: HistogramSum,
    pub upstream: HistogramSum,
    pub duration: HistogramSum,
}

impl HttpTotals {
    fn of(sharded: &Sharded<HttpShard>) -> Self {
        let mut totals = Self {
            requests: [0; 6],
            errors: [0; ErrorSide::ALL.len()],
            routing: HistogramSum::empty(ROUTING),
            upstream: HistogramSum::empty(DURATION),
            duration: HistogramSum::empty(DURATION),
        };
        for shard in sharded.iter() {
            add_counters(&mut totals.requests, &shard.requests);
            add_counters(&mut totals.errors, &shard.errors);
            totals.routing.add(&shard.routing);
            totals.upstream.add(&shard.upstream);
            totals.duration.add(&shard.duration);
        }
        totals
    }
}

/// One (listener, pool)'s TCP counters over all workers.
#[derive(Debug, Clone)]
pub struct TcpTotals {
    pub connections: u64,
    pub errors: [u64; ErrorSide::ALL.len()],
    pub received: u64,
    pub sent: u64,
    pub duration: HistogramSum,
}

impl TcpTotals {
    fn of(sharded: &Sharded<TcpShard>) -> Self {
        let mut totals = Self {
            connections: 0,
            errors: [0; ErrorSide::ALL.len()],
            received: 0,
            sent: 0,
            duration: HistogramSum::empty(DURATION),
        };
        for shard in sharded.iter() {
            totals.connections += shard.connections.get();
            add_counters(&mut totals.errors, &shard.errors);
            totals.received += shard.received.get();
            totals.sent += shard.sent.get();
            totals.duration.add(&shard.duration);
        }
        totals
    }
}
