//! Following a pool's znode in ZooKeeper: a persistent recursive watch on the path, then a
//! listing of its children (ephemeral nodes named by address, JSON values); every node event
//! re-lists (the children of one pool are few), and a session that ends — expiry, lost
//! connection — means a new session and a new listing. Meanwhile the pool keeps its last
//! known backends.

use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::Backend;
use tokio::sync::watch;
use zookeeper_client::{AddWatchMode, Client, EventType, SessionState};

use super::{keep_following, registration, Lost};
use crate::pool::Pool;

pub const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

pub async fn connect(servers: &str, session_timeout: Duration) -> Result<Client, String> {
    Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(Duration::from_secs(2))
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to zookeeper: {e}"))
}

pub async fn follow(
    pool: Arc<Pool>,
    servers: String,
    path: String,
    shutdown: watch::Receiver<bool>,
) {
    keep_following(&pool, shutdown, || async {
        let mut synced = false;
        let result = session(&pool, &servers, &path, &mut synced).await;
        Lost::after(result, synced)
    })
    .await;
}

async fn session(pool: &Pool, servers: &str, path: &str, synced: &mut bool) -> Result<(), String> {
    let client = connect(servers, SESSION_TIMEOUT).await?;
    // Watch first, then list: nothing that changes in between is missed.
    let mut watcher = client
        .watch(path, AddWatchMode::PersistentRecursive)
        .await
        .map_err(|e| format!("cannot watch {path}: {e}"))?;
    let zxid = list(pool, &client, path).await?;
    *synced = true;
    tracing::info!(pool = %pool.name, path, zxid, "following zookeeper");
    loop {
        let event = watcher.changed().await;
        match event.event_type {
            EventType::Session => match event.session_state {
                SessionState::SyncConnected => {}
                other => return Err(format!("zookeeper session {other:?}; starting a new one")),
            },
            _ => {
                list(pool, &client, path).await?;
            }
        }
    }
}

/// Reads every registration under `path` and applies the set; returns the highest zxid seen.
async fn list(pool: &Pool, client: &Client, path: &str) -> Result<i64, String> {
    let children = match client.list_children(path).await {
        Ok(children) => children,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => return Err(format!("cannot list {path}: {e}")),
    };
    let mut found: Vec<Backend> = Vec::new();
    let mut zxid = 0;
    for child in children {
        let node = format!("{}/{child}", path.trim_end_matches('/'));
        match client.get_data(&node).await {
            Ok((value, stat)) => {
                zxid = zxid.max(stat.mzxid);
                match registration::parse(&value) {
                    Ok(backend) => found.push(backend),
                    Err(why) => {
                        pool.discovery_malformed();
                        tracing::warn!(pool = %pool.name, node, %why, "skipping a malformed registration");
                    }
                }
            }
            // Deleted between the listing and the read: simply gone.
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(format!("cannot read {node}: {e}")),
        }
    }
    pool.discovery_synced(&found, zxid);
    Ok(zxid)
}
