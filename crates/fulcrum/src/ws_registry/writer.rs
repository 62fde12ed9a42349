//! A pool registry's writer: the one task that talks to Redis for it.
//!
//! It applies queued changes in pipelines while Redis answers. Every third of the TTL, and
//! whenever it cannot trust its incremental view (a round trip failed, the queue
//! overflowed), it *rewrites*: every open connection written again, every id it may have
//! written that is no longer open deleted, every backend set pruned. A rewrite that fails
//! is retried with backoff until one succeeds, so an outage ends with Redis holding exactly
//! the open connections — whether Redis kept its data or came back empty.
//!
//! `written` is every id this writer may have put in Redis and not yet deleted for sure:
//! an id enters before its write is sent and leaves only when its delete was acknowledged,
//! which is what makes "none left behind for a closed connection" hold across failures.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Change, Layout, RedisRegistry};
use crate::proxy::websockets::WsConnection;

/// Changes taken off the queue per pipeline.
const BATCH: usize = 1024;
/// Connections per pipeline in a rewrite, so one round trip stays small.
const REWRITE_CHUNK: usize = 512;
/// A round trip (and a connection attempt) slower than this counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Writer {
    registry: Arc<RedisRegistry>,
    changes: mpsc::Receiver<Change>,
    redis: ConnectionManager,
    layout: Layout,
    written: HashMap<u64, SocketAddr>,
    /// A rewrite is owed (after a failure: at `retry_at`).
    dirty: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Writer {
    pub(super) fn new(
        registry: Arc<RedisRegistry>,
        changes: mpsc::Receiver<Change>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(registry.settings.redis.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(BACKOFF_MAX);
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        let layout = Layout::new(&registry.settings.key_prefix, registry.settings.ttl);
        Ok(Self {
            registry,
            changes,
            redis,
            layout,
            written: HashMap::new(),
            dirty: false,
            retry_at: None,
            backoff: BACKOFF_MIN,
        })
    }

    /// Runs until fulcrum stops (then, within `grace`, deletes what it wrote as the
    /// connections close) or until the registry is retired and its last connection closed.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let mut refresh = tokio::time::interval(self.registry.settings.ttl / 3);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let (mut rewrite, mut stopping) = (false, false);
            let retry_at = self.retry_at;
            tokio::select! {
                _ = self.changes.recv_many(&mut batch, BATCH) => {}
                _ = refresh.tick() => rewrite = true,
                () = self.registry.wake.notified() => {}
                () = sleep_until(retry_at), if retry_at.is_some() => rewrite = true,
                _ = shutdown.wait_for(|stop| *stop) => stopping = true,
            }
            if stopping {
                self.finish(grace).await;
                return;
            }
            if self.registry.resync.swap(false, Ordering::Relaxed) {
                self.dirty = true;
                rewrite = true;
            }
            if self.registry.retired.load(Ordering::Relaxed) && self.registry.lock().is_empty() {
                batch.clear();
                if self.rewrite().await || shutdown.has_changed().is_err() {
                    return;
                }
                continue;
            }
            if rewrite {
                // A rewrite covers everything the batch says.
                batch.clear();
                self.rewrite().await;
            } else if !self.dirty {
                self.apply(&batch).await;
                batch.clear();
            } else {
                // Waiting to retry: the table and `written` hold what the batch says.
                batch.clear();
            }
        }
    }

    /// The queued changes, as one pipeline.
    async fn apply(&mut self, changes: &[Change]) {
        let now_ms = unix_ms();
        let mut pipe = redis::pipe();
        let mut closed = Vec::new();
        {
            let live = self.registry.lock();
            for change in changes {
                match *change {
                    Change::Opened(id) => {
                        // Gone already: its `Closed` follows in the queue.
                        if let Some(c) = live.get(&id) {
                            self.layout.write(&mut pipe, id, c, now_ms);
                            self.written.insert(id, c.backend);
                        }
                    }
                    Change::Closed(id, backend) => {
                        self.layout.delete(&mut pipe, id, backend);
                        closed.push(id);
                    }
                }
            }
        }
        if pipe.is_empty() {
            return;
        }
        if self.send(&pipe).await {
            for id in closed {
                self.written.remove(&id);
            }
        }
    }

    /// Redis made to match the table. True when every round trip succeeded.
    async fn rewrite(&mut self) -> bool {
        let open: Vec<(u64, WsConnection)> = self
            .registry
            .lock()
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        let open_ids: HashSet<u64> = open.iter().map(|(id, _)| *id).collect();
        let stale: Vec<(u64, SocketAddr)> = self
            .written
            .iter()
            .filter(|(id, _)| !open_ids.contains(id))
            .map(|(id, backend)| (*id, *backend))
            .collect();
        let mut backends: HashSet<SocketAddr> = open.iter().map(|(_, c)| c.backend).collect();
        backends.extend(stale.iter().map(|(_, backend)| *backend));
        for (id, c) in &open {
            self.written.insert(*id, c.backend);
        }
        let now_ms = unix_ms();
        let mut all_sent = true;
        for chunk in open.chunks(REWRITE_CHUNK) {
            let mut pipe = redis::pipe();
            for (id, c) in chunk {
                self.layout.write(&mut pipe, *id, c, now_ms);
            }
            all_sent &= self.send(&pipe).await;
            if !all_sent {
                break;
            }
        }
        if all_sent {
            let backends: Vec<SocketAddr> = backends.into_iter().collect();
            for chunk in stale.chunks(REWRITE_CHUNK) {
                let mut pipe = redis::pipe();
                for (id, backend) in chunk {
                    self.layout.delete(&mut pipe, *id, *backend);
                }
                if !self.send(&pipe).await {
                    all_sent = false;
                    break;
                }
                for (id, _) in chunk {
                    self.written.remove(id);
                }
            }
            if all_sent {
                // The last round trip also tells whether Redis answers when nothing is open.
                let mut chunks = backends.chunks(REWRITE_CHUNK).peekable();
                let none: &[SocketAddr] = &[];
                let first = chunks.peek().is_none().then_some(none);
                for chunk in first.into_iter().chain(chunks) {
                    let mut pipe = redis::pipe();
                    for backend in chunk {
                        self.layout.prune(&mut pipe, *backend, now_ms);
                    }
                    pipe.cmd("PING").ignore();
                    all_sent &= self.send(&pipe).await;
                    if !all_sent {
                        break;
                    }
                }
            }
        }
        if all_sent {
            if self.dirty {
                self.registry
                    .counters
                    .rewrites
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(pool = %self.registry.pool, connections = open.len(), "WebSocket registry rewritten in Redis");
            }
            self.dirty = false;
            self.retry_at = None;
            self.backoff = BACKOFF_MIN;
        }
        all_sent
    }

    /// One round trip. A failure is counted and shown, and owes a rewrite after backoff.
    async fn send(&mut self, pipe: &redis::Pipeline) -> bool {
        let counters = &self.registry.counters;
        counters.round_trips.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut self.redis))
            .await
            .map_err(|_| {
                format!(
                    "no answer within {}",
                    humantime::format_duration(REDIS_TIMEOUT)
                )
            })
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                counters.last_success_ms.store(unix_ms(), Ordering::Relaxed);
                if !counters.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(pool = %self.registry.pool, redis = %super::masked(&self.registry.settings.redis), "WebSocket registry: Redis answers");
                }
                true
            }
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if counters.up.swap(false, Ordering::Relaxed) || !self.dirty {
                    tracing::warn!(pool = %self.registry.pool, redis = %super::masked(&self.registry.settings.redis), %error, "WebSocket registry: cannot write to Redis; connections are unaffected, the registry is rewritten when it answers");
                }
                *counters
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some((error, unix_ms() as f64 / 1000.0));
                self.dirty = true;
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                false
            }
        }
    }

    /// fulcrum is stopping: entries go as their connections close within the grace, and
    /// whatever is left then goes too (those connections end with the process).
    async fn finish(&mut self, grace: Duration) {
        let until = Instant::now() + grace;
        let mut batch = Vec::with_capacity(BATCH);
        while !self.registry.lock().is_empty() && !self.dirty {
            tokio::select! {
                _ = self.changes.recv_many(&mut batch, BATCH) => {}
                () = tokio::time::sleep_until(until) => break,
            }
            self.apply(&batch).await;
            batch.clear();
        }
        let mut pipe = redis::pipe();
        for (id, backend) in &self.written {
            self.layout.delete(&mut pipe, *id, *backend);
        }
        if !pipe.is_empty() {
            let _ =
                tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut self.redis)).await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
