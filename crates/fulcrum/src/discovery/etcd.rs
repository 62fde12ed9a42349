//! Following a pool's prefix in etcd: list it, apply the set, then watch from the list's
//! revision and apply every change. Any error (store down, compaction, canceled watch) means
//! reconnect with capped exponential backoff and list again; meanwhile the pool keeps its last
//! known backends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use fulcrum_core::config::Backend;
use tokio::sync::watch;

use super::{keep_following, registration, Lost};
use crate::pool::Pool;

/// How often an idle-looking connection to etcd is pinged. etcd cuts off (GOAWAY, "too many
/// pings") a client that pings more often than its `--grpc-keepalive-min-time`, 5 s by
/// default; 10 s stays clear of it. A dead store is found sooner than this by the requests'
/// own deadlines.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(KEEPALIVE_INTERVAL, Duration::from_secs(5))
}

pub async fn follow(
    pool: Arc<Pool>,
    endpoints: Vec<String>,
    prefix: String,
    shutdown: watch::Receiver<bool>,
) {
    keep_following(&pool, shutdown, || async {
        let mut synced = false;
        let result = session(&pool, &endpoints, &prefix, &mut synced).await;
        Lost::after(result, synced)
    })
    .await;
}

/// One connection's life: list, apply, watch. Returns why it ended.
async fn session(
    pool: &Pool,
    endpoints: &[String],
    prefix: &str,
    synced: &mut bool,
) -> Result<(), String> {
    let mut client = Client::connect(endpoints, Some(connect_options()))
        .await
        .map_err(|e| format!("cannot connect to etcd: {e}"))?;
    let listing = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("cannot list {prefix}: {e}"))?;
    let mut revision = listing.header().map_or(0, |h| h.revision());
    let mut known: BTreeMap<Vec<u8>, Backend> = BTreeMap::new();
    for kv in listing.kvs() {
        read(pool, kv.key(), kv.value(), &mut known);
    }
    apply(pool, &known, revision);
    *synced = true;
    tracing::info!(pool = %pool.name, prefix, revision, backends = known.len(), "following etcd");

    let mut stream = client
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| format!("cannot watch {prefix}: {e}"))?;
    loop {
        let message = stream
            .message()
            .await
            .map_err(|e| format!("watch failed: {e}"))?
            .ok_or_else(|| "watch stream ended".to_string())?;
        if message.canceled() || message.compact_revision() > 0 {
            return Err(format!(
                "watch canceled (compacted at {}); listing again",
                message.compact_revision()
            ));
        }
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => read(pool, kv.key(), kv.value(), &mut known),
                EventType::Delete => {
                    known.remove(kv.key());
                }
            }
        }
        if let Some(header) = message.header() {
            revision = header.revision();
        }
        apply(pool, &known, revision);
    }
}

/// Records one registration, or counts and logs it when its value is unusable (it is then
/// ignored: a bad value never empties the pool).
fn read(pool: &Pool, key: &[u8], value: &[u8], known: &mut BTreeMap<Vec<u8>, Backend>) {
    match registration::parse(value) {
        Ok(backend) => {
            known.insert(key.to_vec(), backend);
        }
        Err(why) => {
            known.remove(key);
            pool.discovery_malformed();
            tracing::warn!(pool = %pool.name, key = %String::from_utf8_lossy(key), %why, "skipping a malformed registration");
        }
    }
}

fn apply(pool: &Pool, known: &BTreeMap<Vec<u8>, Backend>, revision: i64) {
    let found: Vec<Backend> = known.values().copied().collect();
    pool.discovery_synced(&found, revision);
}
