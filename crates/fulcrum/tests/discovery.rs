//! Discovery through a real etcd (Debian's etcd-server, started here on free loopback ports
//! with a temporary data directory): registered backends get traffic, a dead registrar's
//! lease expires and its backend drains away, a graceful one deregisters at once, malformed
//! values are skipped, and a lost store leaves the fleet serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Etcd {
    child: Child,
    dir: PathBuf,
    endpoint: String,
    peer: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    async fn start() -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let dir =
            std::env::temp_dir().join(format!("fulcrum-etcd-{}-{client}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let endpoint = format!("127.0.0.1:{client}");
        let child = spawn_etcd(&dir, &endpoint, peer);
        let etcd = Etcd {
            child,
            dir,
            endpoint,
            peer,
        };
        etcd.wait_ready().await;
        etcd
    }

    /// Starts the same member again on its data directory and ports.
    async fn restart(&mut self) {
        self.child = spawn_etcd(&self.dir, &self.endpoint, self.peer);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(mut c) = etcd_client::Client::connect([self.endpoint.as_str()], None).await {
                if c.status().await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        panic!("etcd did not start within 10 s:\n{log}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_etcd(dir: &std::path::Path, endpoint: &str, peer: u16) -> Child {
    let binary = installed(&["/usr/bin/etcd", "/usr/local/bin/etcd"], "etcd-server");
    let log = append_log(&dir.join("etcd.log"));
    Command::new(binary)
        .args(["--name", "test", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &format!("http://{endpoint}")])
        .args(["--advertise-client-urls", &format!("http://{endpoint}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("test=http://127.0.0.1:{peer}"),
        ])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start etcd: {e}"))
}

const PREFIX: &str = "/fulcrum/pools/app/";

fn discovery(etcd: &Etcd) -> String {
    format!(
        "[pools.app.discovery]\ntype = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{PREFIX}\"\n",
        etcd.endpoint
    )
}

fn register(etcd: &Etcd, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "register",
            "--etcd",
            &etcd.endpoint,
            "--prefix",
            PREFIX,
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

fn states(status: &serde_json::Value) -> Vec<(String, String)> {
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["addr"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_backends_get_traffic_and_leave_when_their_registrar_goes() {
    let etcd = Etcd::start().await;
    let backends = [
        Backend::named("r0", Duration::ZERO).await,
        Backend::named("r1", Duration::ZERO).await,
        Backend::named("r2", Duration::ZERO).await,
    ];
    let health = "[pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\n";
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[],
        "",
        &format!("slow_start = \"0s\"\n{}{health}", discovery(&etcd)),
    );
    let mut registrars: Vec<Child> = backends.iter().map(|b| register(&etcd, b.addr)).collect();
    proxy
        .wait_for(
            Duration::from_secs(3),
            "three registered backends within 3 s of their sidecars starting",
            |s| {
                s["discovery"]["discovered"] == 3
                    && states(s).iter().filter(|(_, st)| st == "active").count() == 3
            },
        )
        .await;
    let mut client = Client::connect(proxy.addr).await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(client.get("/").await.1);
    }
    let counts = tally(seen);
    assert_eq!(counts.len(), 3, "{counts:?}");

    // SIGTERM under load: deregisters at once, exits 0; the backend drains and leaves, and
    // no client request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(proxy.addr, 4, std::sync::Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = registrars[1].id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = registrars[1].wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let leaving = backends[1].addr.to_string();
    proxy
        .wait_for(Duration::from_secs(3), "deregistered backend gone", |s| {
            !states(s).iter().any(|(a, _)| *a == leaving)
        })
        .await;

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = running.await.unwrap();
    assert!(failed.is_empty() && ok > 0, "{ok} ok, failed: {failed:?}");

    // SIGKILL of a backend and its registrar: the lease (2 s) expires. A second removal so
    // soon is beyond the cap for 3 backends, so it is held until the checks confirm death.
    backends[0].kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(backends[0].addr)
            .await
            .is_err(),
        "killed backend still accepts"
    );
    registrars[0].kill().unwrap();
    let _ = registrars[0].wait();
    let gone = backends[0].addr.to_string();
    proxy
        .wait_for(Duration::from_secs(10), "killed backend gone", |s| {
            !states(s).iter().any(|(a, _)| *a == gone)
        })
        .await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await, (200, "r2".to_string()));
    }
    let _ = registrars[2].kill();
    let _ = registrars[2].wait();
}

/// One discovery metric of pool `app` (source etcd), as `/metrics` shows it now.
async fn discovery_metric(proxy: &Proxy, name: &str) -> f64 {
    let admin = proxy.app().admin_addr().unwrap();
    let (status, text) = Client::connect(admin).await.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let series = format!("{name}{{pool=\"app\",source=\"etcd\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series}in the scrape:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_registrations_are_skipped_and_counted() {
    let etcd = Etcd::start().await;
    let good = Backend::named("good", Duration::ZERO).await;
    let mut store = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    store
        .put(
            format!("{PREFIX}{}", good.addr),
            format!("{{\"addr\": \"{}\", \"weight\": 2}}", good.addr),
            None,
        )
        .await
        .unwrap();
    store
        .put(format!("{PREFIX}broken"), "{not json", None)
        .await
        .unwrap();
    let proxy = start_proxy("http", "round_robin", &[], "", &discovery(&etcd));
    let status = proxy
        .wait_for(Duration::from_secs(10), "listing applied", |s| {
            s["discovery"]["discovered"] == 1
        })
        .await;
    assert_eq!(status["discovery"]["malformed"], 1);
    assert_eq!(status["backends"][0]["weight"], 2);
    // A malformed update later is skipped too, and the pool stays intact.
    store
        .put(
            format!("{PREFIX}also-broken"),
            "{\"addr\": \"nowhere\"}",
            None,
        )
        .await
        .unwrap();
    proxy
        .wait_for(
            Duration::from_secs(5),
            "second malformed value counted",
            |s| s["discovery"]["malformed"] == 2,
        )
        .await;
    assert_eq!(
        Client::connect(proxy.addr).await.get("/").await,
        (200, "good".to_string())
    );
    // The metrics say the same: connected, one backend registered, two values skipped, the
    // listing and the later change applied.
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_connected").await,
        1.0
    );
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_stale_seconds").await,
        0.0
    );
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_backends").await,
        1.0
    );
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_malformed_total").await,
        2.0
    );
    assert!(discovery_metric(&proxy, "fulcrum_discovery_updates_total").await >= 2.0);
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_removals_held_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_store_keeps_the_fleet_serving_and_says_so() {
    let mut etcd = Etcd::start().await;
    let backend = Backend::named("kept", Duration::ZERO).await;
    let mut store = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    store
        .put(
            format!("{PREFIX}{}", backend.addr),
            format!("{{\"addr\": \"{}\"}}", backend.addr),
            None,
        )
        .await
        .unwrap();
    let proxy = start_proxy("http", "round_robin", &[], "", &discovery(&etcd));
    proxy
        .wait_for(Duration::from_secs(10), "backend discovered", |s| {
            s["discovery"]["discovered"] == 1
        })
        .await;
    let second = start_proxy("http", "round_robin", &[], "", &discovery(&etcd));
    second
        .wait_for(Duration::from_secs(10), "second instance in step", |s| {
            s["discovery"]["discovered"] == 1
        })
        .await;
    assert_eq!(
        states(&proxy.status().await),
        states(&second.status().await)
    );
    // Traffic runs through the whole outage: 30 s without the store, nothing may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(proxy.addr, 2, std::sync::Arc::clone(&stop));
    let outage = tokio::time::Instant::now();
    etcd.stop();
    proxy
        .wait_for(Duration::from_secs(10), "store reported unreachable", |s| {
            s["discovery"]["connected"] == false
                && s["discovery"]["stale_seconds"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_connected").await,
        0.0
    );
    let stale_at_first = discovery_metric(&proxy, "fulcrum_discovery_stale_seconds").await;
    let first_read = tokio::time::Instant::now();
    assert!(stale_at_first > 0.0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    // Staleness keeps counting through the outage, in seconds.
    let stale = discovery_metric(&proxy, "fulcrum_discovery_stale_seconds").await;
    let between = first_read.elapsed().as_secs_f64();
    assert!(
        stale >= stale_at_first + between - 1.0,
        "stale {stale_at_first} s, then {stale} s after {between} s more"
    );
    let updates_before = discovery_metric(&proxy, "fulcrum_discovery_updates_total").await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = running.await.unwrap();
    assert!(failed.is_empty() && ok > 100, "{ok} ok, failed: {failed:?}");
    // The store returns with a changed membership (written while fulcrum could not see it).
    etcd.restart().await;
    let added = Backend::named("added", Duration::ZERO).await;
    let mut store = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    store
        .put(
            format!("{PREFIX}{}", added.addr),
            format!("{{\"addr\": \"{}\"}}", added.addr),
            None,
        )
        .await
        .unwrap();
    for p in [&proxy, &second] {
        p.wait_for(
            Duration::from_secs(15),
            "resynchronised after the store came back",
            |s| s["discovery"]["connected"] == true && s["discovery"]["discovered"] == 2,
        )
        .await;
    }
    assert_eq!(
        states(&proxy.status().await),
        states(&second.status().await)
    );
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_connected").await,
        1.0
    );
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_stale_seconds").await,
        0.0
    );
    assert_eq!(
        discovery_metric(&proxy, "fulcrum_discovery_backends").await,
        2.0
    );
    assert!(discovery_metric(&proxy, "fulcrum_discovery_updates_total").await > updates_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_expiry_removes_only_the_capped_share_until_checks_confirm() {
    let etcd = Etcd::start().await;
    let mut backends = Vec::new();
    for name in ["m0", "m1", "m2", "m3", "m4"] {
        backends.push(Backend::named(name, Duration::ZERO).await);
    }
    let mut store = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    let lease = store.lease_grant(60, None).await.unwrap().id();
    for b in &backends {
        let options = etcd_client::PutOptions::new().with_lease(lease);
        store
            .put(
                format!("{PREFIX}{}", b.addr),
                format!("{{\"addr\": \"{}\"}}", b.addr),
                Some(options),
            )
            .await
            .unwrap();
    }
    let health =
        "[pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\n";
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[],
        "",
        &format!("slow_start = \"0s\"\n{}{health}", discovery(&etcd)),
    );
    proxy
        .wait_for(Duration::from_secs(10), "five discovered", |s| {
            s["discovery"]["discovered"] == 5
        })
        .await;
    // Every registration vanishes at once (one lease).
    store.lease_revoke(lease).await.unwrap();
    let status = proxy
        .wait_for(Duration::from_secs(5), "four held", |s| {
            s["discovery"]["held"] == 4
        })
        .await;
    let remaining: Vec<_> = states(&status)
        .into_iter()
        .filter(|(_, st)| st == "active")
        .collect();
    assert_eq!(remaining.len(), 4, "cap for 5 backends is 1: {status:#}");
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..20 {
        assert_eq!(client.get("/").await.0, 200);
    }
    // Two of the held backends really die: checks confirm it and they leave.
    let held: Vec<String> = remaining.iter().map(|(a, _)| a.clone()).collect();
    let dying: Vec<&Backend> = backends
        .iter()
        .filter(|b| held.contains(&b.addr.to_string()))
        .take(2)
        .collect();
    for b in &dying {
        b.kill();
    }
    let dead: Vec<String> = dying.iter().map(|b| b.addr.to_string()).collect();
    let status = proxy
        .wait_for(
            Duration::from_secs(10),
            "dead held backends released",
            |s| !states(s).iter().any(|(a, _)| dead.contains(a)),
        )
        .await;
    assert_eq!(
        states(&status).len(),
        2,
        "the two live held backends stay: {status:#}"
    );
    for _ in 0..20 {
        assert_eq!(client.get("/").await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_withdraws_while_its_check_fails() {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    let etcd = Etcd::start().await;
    let health = Arc::new(AtomicU16::new(500));
    let status_code = Arc::clone(&health);
    let backend = Backend::with_handler(Arc::new(
        move |req: hyper::Request<hyper::body::Incoming>| {
            let code = if req.uri().path() == "/health" {
                status_code.load(Ordering::SeqCst)
            } else {
                200
            };
            Box::pin(async move {
                let mut response = hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"checked"),
                ));
                *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                response
            })
        },
    ))
    .await;
    let proxy = start_proxy("http", "round_robin", &[], "", &discovery(&etcd));
    let mut sidecar = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "register",
            "--etcd",
            &etcd.endpoint,
            "--prefix",
            PREFIX,
            "--ttl",
            "1s",
            "--addr",
        ])
        .arg(backend.addr.to_string())
        .arg("--check")
        .arg(format!("http://{}/health", backend.addr))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Failing check: never registered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.status().await["discovery"]["discovered"], 0);
    // Passing: registered; failing again: withdrawn.
    health.store(200, Ordering::SeqCst);
    proxy
        .wait_for(
            Duration::from_secs(5),
            "registered once the check passes",
            |s| s["discovery"]["discovered"] == 1,
        )
        .await;
    health.store(503, Ordering::SeqCst);
    proxy
        .wait_for(
            Duration::from_secs(5),
            "withdrawn while the check fails",
            |s| s["discovery"]["discovered"] == 0,
        )
        .await;
    let _ = sidecar.kill();
    let _ = sidecar.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_configured_etcd_keeps_the_watch_for_fifteen_seconds() {
    // etcd refuses clients that ping more often than its --grpc-keepalive-min-time (5 s by
    // default, not changed here): such a client is cut off every few seconds.
    let etcd = Etcd::start().await;
    let backend = Backend::named("kept", Duration::ZERO).await;
    let _registrar = KillOnDrop(register(&etcd, backend.addr));
    let proxy = start_proxy("http", "round_robin", &[], "", &discovery(&etcd));
    proxy
        .wait_for(Duration::from_secs(5), "the registered backend", |s| {
            s["discovery"]["discovered"] == 1
        })
        .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < until {
        let status = proxy.status().await;
        assert_eq!(
            status["discovery"]["connected"], true,
            "the store connection dropped: {status:#}"
        );
        assert!(
            status["discovery"]["last_error"].is_null(),
            "{:#}",
            status["discovery"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process that ends with the test, even when an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
