//! Discovery through a real ZooKeeper (Debian's zookeeper, started here on a free loopback
//! port with a temporary data directory and a 200 ms tick so sessions expire fast).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct ZooKeeper {
    child: Child,
    dir: PathBuf,
    servers: String,
}

impl ZooKeeper {
    async fn start() -> ZooKeeper {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("fulcrum-zk-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxSessionTimeout=10000\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let zk = ZooKeeper {
            child: spawn_zookeeper(&dir),
            dir,
            servers: format!("127.0.0.1:{port}"),
        };
        zk.wait_ready().await;
        zk
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same server again on its data directory and port.
    async fn restart(&mut self) {
        self.child = spawn_zookeeper(&self.dir);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        for _ in 0..150 {
            if zookeeper_client::Client::connect(&self.servers)
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("zk.log")).unwrap_or_default();
        panic!("ZooKeeper did not start within 15 s:\n{log}");
    }
}

fn spawn_zookeeper(dir: &std::path::Path) -> Child {
    let script = installed(
        &[
            "/usr/share/zookeeper/bin/zkServer.sh",
            "/usr/bin/zkServer.sh",
        ],
        "zookeeper",
    );
    let log = append_log(&dir.join("zk.log"));
    Command::new(script)
        .args(["start-foreground"])
        .arg(dir.join("zoo.cfg"))
        .env("ZOO_LOG_DIR", dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start ZooKeeper: {e}"))
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ZNODE: &str = "/fulcrum/pools/app";

fn register(zk: &ZooKeeper, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "register",
            "--zookeeper",
            &zk.servers,
            "--path",
            ZNODE,
            "--ttl",
            "2s",
            "--addr",
        ])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn addrs(status: &serde_json::Value) -> Vec<String> {
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["addr"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_registrations_come_and_go_with_their_sessions() {
    let zk = ZooKeeper::start().await;
    let backends = [
        Backend::named("z0", Duration::ZERO).await,
        Backend::named("z1", Duration::ZERO).await,
        Backend::named("z2", Duration::ZERO).await,
    ];
    let config = format!(
        "slow_start = \"0s\"\n[pools.app.discovery]\ntype = \"zookeeper\"\nservers = \"{}\"\npath = \"{ZNODE}\"\n\
         [pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\n",
        zk.servers
    );
    let proxy = start_proxy("http", "round_robin", &[], "", &config);
    let mut registrars: Vec<Child> = backends.iter().map(|b| register(&zk, b.addr)).collect();
    proxy
        .wait_for(
            Duration::from_secs(3),
            "three registered within 3 s of their sidecars starting",
            |s| s["discovery"]["discovered"] == 3,
        )
        .await;
    let mut client = Client::connect(proxy.addr).await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(client.get("/").await.1);
    }
    assert_eq!(tally(seen).len(), 3);

    // Graceful stop under load: the node is deleted at once and no request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(proxy.addr, 4, std::sync::Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = registrars[1].id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(registrars[1].wait().unwrap().success());
    let leaving = backends[1].addr.to_string();
    proxy
        .wait_for(Duration::from_secs(3), "deregistered backend gone", |s| {
            !addrs(s).contains(&leaving)
        })
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = running.await.unwrap();
    assert!(failed.is_empty() && ok > 0, "{ok} ok, failed: {failed:?}");

    // SIGKILL of a backend and its registrar: the session expires, the node goes, and the
    // checks confirm the death the cap would otherwise hold back.
    backends[0].kill();
    registrars[0].kill().unwrap();
    let _ = registrars[0].wait();
    let gone = backends[0].addr.to_string();
    proxy
        .wait_for(
            Duration::from_secs(12),
            "expired session's backend gone",
            |s| !addrs(s).contains(&gone),
        )
        .await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await, (200, "z2".to_string()));
    }
    let _ = registrars[2].kill();
    let _ = registrars[2].wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_malformed_values_store_loss_and_two_instances() {
    use zookeeper_client::{Acls, CreateMode};
    let mut zk = ZooKeeper::start().await;
    let good = Backend::named("good", Duration::ZERO).await;
    let store = zookeeper_client::Client::connect(&zk.servers)
        .await
        .unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    store.mkdir(ZNODE, &persistent).await.unwrap();
    let value = format!("{{\"addr\": \"{}\", \"weight\": 3}}", good.addr);
    store
        .create(
            &format!("{ZNODE}/{}", good.addr),
            value.as_bytes(),
            &persistent,
        )
        .await
        .unwrap();
    store
        .create(&format!("{ZNODE}/broken"), b"{not json", &persistent)
        .await
        .unwrap();
    let config = format!(
        "[pools.app.discovery]\ntype = \"zookeeper\"\nservers = \"{}\"\npath = \"{ZNODE}\"\n",
        zk.servers
    );
    let first = start_proxy("http", "round_robin", &[], "", &config);
    let second = start_proxy("http", "round_robin", &[], "", &config);
    for proxy in [&first, &second] {
        let status = proxy
            .wait_for(Duration::from_secs(10), "listing applied", |s| {
                s["discovery"]["discovered"] == 1
            })
            .await;
        assert_eq!(status["discovery"]["malformed"], 1);
        assert_eq!(status["backends"][0]["weight"], 3);
    }
    assert_eq!(addrs(&first.status().await), addrs(&second.status().await));
    drop(store);
    // The store goes away: the fleet keeps serving and the pool says it is stale.
    // Traffic runs through the whole outage: 30 s without the store, nothing may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(first.addr, 2, std::sync::Arc::clone(&stop));
    let outage = tokio::time::Instant::now();
    zk.stop();
    first
        .wait_for(Duration::from_secs(15), "store reported unreachable", |s| {
            s["discovery"]["connected"] == false
        })
        .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = running.await.unwrap();
    assert!(failed.is_empty() && ok > 100, "{ok} ok, failed: {failed:?}");
    // It comes back with a changed membership: both instances apply it.
    zk.restart().await;
    let added = Backend::named("added", Duration::ZERO).await;
    let store = zookeeper_client::Client::connect(&zk.servers)
        .await
        .unwrap();
    let value = format!("{{\"addr\": \"{}\"}}", added.addr);
    store
        .create(
            &format!("{ZNODE}/{}", added.addr),
            value.as_bytes(),
            &persistent,
        )
        .await
        .unwrap();
    for proxy in [&first, &second] {
        proxy
            .wait_for(Duration::from_secs(15), "resynchronised", |s| {
                s["discovery"]["connected"] == true && s["discovery"]["discovered"] == 2
            })
            .await;
    }
    assert_eq!(addrs(&first.status().await), addrs(&second.status().await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_mass_expiry_removes_only_the_capped_share() {
    use zookeeper_client::{Acls, CreateMode};
    let zk = ZooKeeper::start().await;
    let mut backends = Vec::new();
    for name in ["m0", "m1", "m2", "m3", "m4"] {
        backends.push(Backend::named(name, Duration::ZERO).await);
    }
    // One session holds all five ephemeral registrations.
    let holder = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(1))
        .connect(&zk.servers)
        .await
        .unwrap();
    holder
        .mkdir(ZNODE, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    for b in &backends {
        let value = format!("{{\"addr\": \"{}\"}}", b.addr);
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        holder
            .create(&format!("{ZNODE}/{}", b.addr), value.as_bytes(), &ephemeral)
            .await
            .unwrap();
    }
    let config = format!(
        "slow_start = \"0s\"\n[pools.app.discovery]\ntype = \"zookeeper\"\nservers = \"{}\"\npath = \"{ZNODE}\"\n",
        zk.servers
    );
    let proxy = start_proxy("http", "round_robin", &[], "", &config);
    proxy
        .wait_for(Duration::from_secs(10), "five discovered", |s| {
            s["discovery"]["discovered"] == 5
        })
        .await;
    drop(holder); // the session ends: all five nodes vanish together
    let status = proxy
        .wait_for(Duration::from_secs(10), "four held", |s| {
            s["discovery"]["held"] == 4
        })
        .await;
    let active = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "active")
        .count();
    assert_eq!(active, 4, "the cap for 5 backends is 1: {status:#}");
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..20 {
        assert_eq!(client.get("/").await.0, 200);
    }
}
