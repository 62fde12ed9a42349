//! The WebSocket connection registry against a real Redis (Debian redis-server, started by
//! each test on a free port), read the way another service would read it, by the key layout
//! the README documents: `{prefix}conn:{id}` (a hash) and `{prefix}backend:{ip:port}` (ids
//! scored by when their entry expires).
//!
//! What a user relies on: an entry per open connection naming the right backend, refreshed
//! while the connection lives and gone when it closes; Redis stopped or restarted empty under
//! open connections changes nothing for them, and once Redis answers again it holds exactly
//! the open connections; a killed fulcrum's entries expire within their TTL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cli::{free_port, fulcrum, wait_listening};
use common::ws::*;
use common::*;

/// A redis-server of the test's own, without persistence (a restart comes back empty),
/// killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fulcrum-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            child: None,
            port,
            dir,
        };
        redis.restart();
        redis
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    fn restart(&mut self) {
        let server = installed(&["/usr/bin/redis-server"], "redis-server");
        let child = Command::new(server)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if answered.is_ok() {
                return;
            }
            assert!(
                Instant::now() < until,
                "redis-server did not answer on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What another service reads: every open connection's hash, by id.
    fn entries(&self, prefix: &str) -> BTreeMap<String, HashMap<String, String>> {
        let mut c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}conn:*"))
            .query(&mut c)
            .unwrap();
        keys.into_iter()
            .filter_map(|key| {
                let fields: HashMap<String, String> =
                    redis::cmd("HGETALL").arg(&key).query(&mut c).unwrap();
                let id = key.strip_prefix(&format!("{prefix}conn:"))?.to_string();
                (!fields.is_empty()).then_some((id, fields))
            })
            .collect()
    }

    /// The ids a backend's set holds whose entries have not expired.
    fn on_backend(&self, prefix: &str, backend: SocketAddr) -> BTreeSet<String> {
        let mut c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(format!("{prefix}backend:{backend}"))
            .arg(now_ms.to_string())
            .arg("+inf")
            .query(&mut c)
            .unwrap();
        ids.into_iter().collect()
    }

    fn pttl(&self, key: &str) -> i64 {
        let mut c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("PTTL").arg(key).query(&mut c).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pool section that turns the registry on.
fn registry(redis: &Redis, prefix: &str, ttl: &str) -> String {
    format!(
        "[pools.app.websocket]\nclose_on_drain = true\nregistry = {{ redis = \"{}\", key_prefix = \"{prefix}\", ttl = \"{ttl}\" }}\n",
        redis.url()
    )
}

/// Waits until Redis holds exactly `ids` (each on the backend named beside it), within
/// `within`; what it held last otherwise.
async fn until_redis_holds(
    redis: &Redis,
    prefix: &str,
    ids: &[(String, String)],
    backends: &HashMap<String, SocketAddr>,
    within: Duration,
) {
    let want: BTreeSet<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    let until = Instant::now() + within;
    loop {
        let entries = redis.entries(prefix);
        let held: BTreeSet<String> = entries.keys().cloned().collect();
        let sets_match = backends.iter().all(|(name, addr)| {
            let on: BTreeSet<String> = ids
                .iter()
                .filter(|(_, b)| b == name)
                .map(|(id, _)| id.clone())
                .collect();
            redis.on_backend(prefix, *addr) == on
        });
        let backends_right = ids.iter().all(|(id, name)| {
            entries.get(id).map(|e| e["backend"].clone()) == Some(backends[name].to_string())
        });
        if held == want && sets_match && backends_right {
            return;
        }
        assert!(
            Instant::now() < until,
            "Redis should hold exactly {want:?}, holds {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn registry_status(proxy: &Proxy) -> serde_json::Value {
    let admin = proxy.app().admin_addr().unwrap();
    let (code, body) = Client::connect(admin).await.get("/api/ws/registry").await;
    assert_eq!(code, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    all["registries"][0].clone()
}

fn all_ids(holders: &[&Holder]) -> Vec<(String, String)> {
    holders.iter().flat_map(|h| h.ids()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open_websocket_has_an_entry_naming_its_backend_refreshed_until_it_closes() {
    let redis = Redis::start();
    let (a, b) = (ws_backend("ws-a"), ws_backend("ws-b"));
    let backends = HashMap::from([("ws-a".to_string(), a.addr), ("ws-b".to_string(), b.addr)]);
    let mut proxy = start_proxy(
        "http",
        "least_conn",
        &[(a.addr, 1), (b.addr, 1)],
        "",
        &registry(&redis, "t1:", "3s"),
    );
    let holder = Holder::open(proxy.addr, 4).await;
    let ids = holder.ids();
    assert_eq!(ids.len(), 4);
    until_redis_holds(&redis, "t1:", &ids, &backends, Duration::from_secs(5)).await;
    let entries = redis.entries("t1:");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (id, name) in &ids {
        let entry = &entries[id];
        assert_eq!(entry["backend"], backends[name].to_string(), "{entry:?}");
        assert_eq!(entry["pool"], "app");
        assert_eq!(entry["listener"], "front");
        assert!(entry["client"].starts_with("127.0.0.1:"), "{entry:?}");
        let since: f64 = entry["since"].parse().unwrap();
        assert!((now - 30.0..=now).contains(&since), "{since} vs now {now}");
        let ttl = redis.pttl(&format!("t1:conn:{id}"));
        assert!((1..=3000).contains(&ttl), "PTTL {ttl}");
    }
    // Longer than the TTL: the entries live on because fulcrum refreshes them.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    until_redis_holds(&redis, "t1:", &ids, &backends, Duration::ZERO).await;

    let status = registry_status(&proxy).await;
    assert_eq!(status["pool"], "app");
    assert_eq!(status["redis"], redis.url());
    assert_eq!(status["up"], true, "{status:#}");
    assert_eq!(status["connections"], 4);
    assert_eq!(status["errors"], 0);
    let admin = proxy.app().admin_addr().unwrap();
    let (_, metrics) = Client::connect(admin).await.get("/metrics").await;
    for line in [
        "fulcrum_ws_registry_up{pool=\"app\"} 1.0",
        "fulcrum_ws_registry_connections{pool=\"app\"} 4.0",
        "fulcrum_ws_registry_errors_total{pool=\"app\"} 0",
        "fulcrum_ws_registry_queue_full_total{pool=\"app\"} 0",
        "fulcrum_ws_registry_rewrites_total{pool=\"app\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let trips = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fulcrum_ws_registry_round_trips_total{pool=\"app\"} "))
        .unwrap_or_else(|| panic!("no round trips counted in\n{metrics}"));
    assert!(trips.parse::<u64>().unwrap() >= 2, "{trips}");

    // Closed: deleted at once. Refreshed every second with a 3 s TTL, an entry could not
    // expire within a second of the close, so gone within one means deleted.
    assert_eq!(holder.close(), 4);
    until_redis_holds(&redis, "t1:", &[], &backends, Duration::from_secs(1)).await;

    // fulcrum stopping: the connections it cuts leave Redis with it.
    let holder = Holder::open(proxy.addr, 2).await;
    until_redis_holds(
        &redis,
        "t1:",
        &holder.ids(),
        &backends,
        Duration::from_secs(5),
    )
    .await;
    tokio::task::spawn_blocking(move || proxy.app.take().unwrap().shutdown())
        .await
        .unwrap();
    until_redis_holds(&redis, "t1:", &[], &backends, Duration::ZERO).await;
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_goes_unnoticed_and_then_holds_exactly_the_open_connections() {
    let mut redis = Redis::start();
    let (a, b) = (ws_backend("ws-a"), ws_backend("ws-b"));
    let backends = HashMap::from([("ws-a".to_string(), a.addr), ("ws-b".to_string(), b.addr)]);
    // A TTL longer than the outage: what Redis kept through it must be corrected by
    // fulcrum, not by expiry.
    let proxy = start_proxy(
        "http",
        "least_conn",
        &[(a.addr, 1), (b.addr, 1)],
        "",
        &registry(&redis, "t2:", "30s"),
    );
    let mut kept = Holder::open(proxy.addr, 4).await;
    let leaving = Holder::open(proxy.addr, 3).await;
    let ids = all_ids(&[&kept, &leaving]);
    until_redis_holds(&redis, "t2:", &ids, &backends, Duration::from_secs(5)).await;

    // Redis frozen for 10 s (it keeps its data): connections close and open meanwhile.
    redis.signal("-STOP");
    let frozen = Instant::now();
    assert_eq!(leaving.close(), 3);
    let arriving = Holder::open(proxy.addr, 2).await;
    assert_eq!(kept.echo(), 4, "open WebSockets work while Redis is down");
    assert_eq!(arriving.ids().len(), 2);
    let status = registry_status(&proxy).await;
    assert_eq!(status["connections"], 6, "{status:#}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(frozen.elapsed())).await;
    let status = registry_status(&proxy).await;
    assert_eq!(status["up"], false, "{status:#}");
    assert!(status["errors"].as_u64().unwrap() >= 1, "{status:#}");
    assert!(status["last_error"].is_string(), "{status:#}");
    redis.signal("-CONT");
    let open = all_ids(&[&kept, &arriving]);
    until_redis_holds(&redis, "t2:", &open, &backends, Duration::from_secs(15)).await;
    // The rewrite is counted after its last round trip, a moment after Redis matches.
    let mut status = registry_status(&proxy).await;
    for _ in 0..50 {
        if status["rewrites"].as_u64().unwrap() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = registry_status(&proxy).await;
    }
    assert_eq!(status["up"], true, "{status:#}");
    assert!(status["rewrites"].as_u64().unwrap() >= 1, "{status:#}");

    // Redis killed and started again empty: every open connection is written back.
    redis.kill();
    let late = Holder::open(proxy.addr, 1).await;
    assert_eq!(kept.echo(), 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let open = all_ids(&[&kept, &arriving, &late]);
    until_redis_holds(&redis, "t2:", &open, &backends, Duration::from_secs(15)).await;
    assert_eq!(kept.echo(), 4);

    for holder in [kept, arriving, late] {
        holder.close();
    }
    until_redis_holds(&redis, "t2:", &[], &backends, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fulcrums_entries_expire_within_their_ttl() {
    let redis = Redis::start();
    let backend = ws_backend("ws-k");
    let backends = HashMap::from([("ws-k".to_string(), backend.addr)]);
    let dir = std::env::temp_dir().join(format!("fulcrum-wsreg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"front\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\npool = \"app\"\n\
             [pools.app]\nbackends = [{{ addr = \"{}\" }}]\n{}",
            backend.addr,
            registry(&redis, "t3:", "3s")
        ),
    )
    .unwrap();
    let mut child = fulcrum()
        .args(["run", "-c"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    let holder = Holder::open(proxy, 3).await;
    until_redis_holds(
        &redis,
        "t3:",
        &holder.ids(),
        &backends,
        Duration::from_secs(5),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    // Refreshed at most a third of the TTL before the kill, each entry has at most 3 s
    // left (plus Redis's expiry granularity).
    until_redis_holds(&redis, "t3:", &[], &backends, Duration::from_millis(3500)).await;
    assert!(
        killed.elapsed() > Duration::from_millis(500),
        "gone before the TTL could expire: deleted, not expired"
    );
    drop(holder);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sends_new_connections_to_the_new_registry_and_leaves_open_ones_where_they_are() {
    let redis = Redis::start();
    let backend = ws_backend("ws-r");
    let backends = HashMap::from([("ws-r".to_string(), backend.addr)]);
    let pool = [(backend.addr, 1)];
    let mut proxy = start_proxy(
        "http",
        "least_conn",
        &pool,
        "",
        &registry(&redis, "old:", "30s"),
    );
    let before = Holder::open(proxy.addr, 2).await;
    until_redis_holds(
        &redis,
        "old:",
        &before.ids(),
        &backends,
        Duration::from_secs(5),
    )
    .await;

    let moved = proxy_config(
        "http",
        "least_conn",
        &pool,
        "",
        &registry(&redis, "new:", "30s"),
    );
    let app = proxy.app_mut();
    tokio::task::block_in_place(|| app.reload(moved)).unwrap();
    let after = Holder::open(proxy.addr, 1).await;
    until_redis_holds(
        &redis,
        "new:",
        &after.ids(),
        &backends,
        Duration::from_secs(5),
    )
    .await;
    until_redis_holds(&redis, "old:", &before.ids(), &backends, Duration::ZERO).await;
    assert_eq!(registry_status(&proxy).await["key_prefix"], "new:");
    // The connections of the replaced registry leave it as they close.
    assert_eq!(before.close(), 2);
    until_redis_holds(&redis, "old:", &[], &backends, Duration::from_secs(5)).await;

    // The registry turned off: new connections are not recorded, open ones stay recorded
    // until they close.
    let off = proxy_config("http", "least_conn", &pool, "", "");
    let app = proxy.app_mut();
    tokio::task::block_in_place(|| app.reload(off)).unwrap();
    let unrecorded = Holder::open(proxy.addr, 1).await;
    assert_eq!(unrecorded.ids().len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    until_redis_holds(&redis, "new:", &after.ids(), &backends, Duration::ZERO).await;
    assert_eq!(after.close(), 1);
    until_redis_holds(&redis, "new:", &[], &backends, Duration::from_secs(5)).await;
    drop(unrecorded);
}
