//! The active-passive pair of the HA suites: a lab (see `netns/`) with a real election store
//! (Debian's etcd-server or ZooKeeper), two fulcrum instances sharing a VIP, a backend and a
//! client host, and the helpers to drive and observe them.

#![allow(dead_code)]

use std::time::Duration;

use crate::netns::*;

pub const TTL: Duration = Duration::from_secs(1);
pub const ZK_SESSION: Duration = Duration::from_millis(400);
pub const TOKEN: &str = "ha-test-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Etcd,
    ZooKeeper,
}

impl Store {
    /// The lease: etcd's 1 s TTL (with the fast etcd election settings below), ZooKeeper's
    /// 400 ms session (the minimum with a 200 ms tick).
    pub fn ttl(self) -> Duration {
        match self {
            Store::Etcd => TTL,
            Store::ZooKeeper => ZK_SESSION,
        }
    }

    pub fn heartbeat(self) -> &'static str {
        match self {
            Store::Etcd => "100ms",
            Store::ZooKeeper => "40ms",
        }
    }

    pub fn election(self) -> String {
        match self {
            Store::Etcd => format!(
                r#"{{ type = "etcd", endpoints = ["{STORE}:2379"], key = "/fulcrum/ha/test", ttl = "1s" }}"#
            ),
            Store::ZooKeeper => format!(
                r#"{{ type = "zookeeper", servers = "{STORE}:2181", path = "/fulcrum/ha/test", session_timeout = "400ms" }}"#
            ),
        }
    }

    pub fn start(self, lab: &Lab) -> u32 {
        match self {
            Store::Etcd => start_etcd(lab),
            Store::ZooKeeper => start_zookeeper(lab),
        }
    }
}

/// The lab plus the processes of one pair.
pub struct Pair {
    pub lab: Lab,
    pub store: Store,
    pub store_pid: u32,
    pub pids: [u32; 2],
}

pub fn etcd_binary() -> &'static str {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("etcd not found: install Debian's etcd-server (scripts/test does)")
        })
}

pub fn start_etcd(lab: &Lab) -> u32 {
    let data = lab.dir.join("etcd");
    let client = format!("http://{STORE}:2379");
    let pid = lab.spawn(
        "store",
        etcd_binary(),
        &[
            "--name",
            "s",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "s=http://127.0.0.1:2380",
            // A 1 s lease is honoured only with elections faster than etcd's default.
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ],
        "etcd.log",
    );
    wait_until(Duration::from_secs(10), "etcd answers", || {
        lab.in_host("client", || {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((STORE, 2379)),
                Duration::from_millis(200),
            )
            .is_ok()
        })
        .join()
        .unwrap()
    });
    pid
}

pub fn start_zookeeper(lab: &Lab) -> u32 {
    let script = [
        "/usr/share/zookeeper/bin/zkServer.sh",
        "/usr/bin/zkServer.sh",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or_else(|| {
        panic!("zkServer.sh not found: install Debian's zookeeper (scripts/test does)")
    });
    let data = lab.dir.join("zk");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = lab.dir.join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=200\ndataDir={}\nclientPort=2181\nclientPortAddress={STORE}\nadmin.enableServer=false\n",
            data.display()
        ),
    )
    .unwrap();
    // ZooKeeper logs beside the data; `env` and the script exec, so the pid is the server's.
    let log_dir = format!("ZOO_LOG_DIR={}", lab.dir.display());
    let pid = lab.spawn(
        "store",
        "env",
        &[&log_dir, script, "start-foreground", cfg.to_str().unwrap()],
        "zk.log",
    );
    wait_until(Duration::from_secs(20), "zookeeper answers", || {
        lab.in_host("client", || {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((STORE, 2181)),
                Duration::from_millis(200),
            )
            .is_ok()
        })
        .join()
        .unwrap()
    });
    pid
}

pub fn config(lab: &Lab, store: Store, n: usize) -> std::path::PathBuf {
    let token = lab.dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    // Every pair authenticates its heartbeats: the suite runs the HMAC path end to end.
    let key = lab.dir.join("heartbeat.key");
    std::fs::write(&key, "a shared heartbeat key for the lab\n").unwrap();
    let text = format!(
        r#"
[admin]
bind = "{SUBNET}.1{n}:9901"
token_file = "{token}"

[runtime]
# Both instances share the file system: each needs its own upgrade socket.
upgrade_socket = "{dir}/lb{n}-upgrade.sock"

[[listeners]]
name = "web"
bind = "{VIP}:{PROXY_PORT}"
protocol = "http"
pool = "app"

[pools.app]
backends = [{{ addr = "{BACKEND}:8000" }}]

[ha]
node = "lb{n}"
election = {election}
vip = {{ address = "{VIP}/24", interface = "eth0", garp_count = 3, garp_interval = "100ms" }}
peers = ["{SUBNET}.11:7946", "{SUBNET}.12:7946"]
heartbeat = "{heartbeat}"
heartbeat_key_file = "{key}"
on_promote = ["sh", "-c", "echo $FULCRUM_HA_EPOCH > {dir}/promoted-$FULCRUM_HA_NODE"]
on_demote = ["sh", "-c", "echo $FULCRUM_HA_REASON >> {dir}/demoted-$FULCRUM_HA_NODE"]
"#,
        token = token.display(),
        key = key.display(),
        dir = lab.dir.display(),
        election = store.election(),
        heartbeat = store.heartbeat(),
    );
    let path = lab.dir.join(format!("lb{n}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn start_lb(lab: &Lab, store: Store, n: usize) -> u32 {
    let path = config(lab, store, n);
    lab.spawn(
        &format!("lb{n}"),
        env!("CARGO_BIN_EXE_fulcrum"),
        &["run", "-c", path.to_str().unwrap()],
        &format!("lb{n}.log"),
    )
}

/// `GET /api/ha` of instance `n`, from the client host.
pub fn ha_status(lab: &Lab, n: usize) -> Option<serde_json::Value> {
    api(lab, n, "/api/ha")
}

/// `GET path` on instance `n`'s admin API, from the client host: the JSON body.
pub fn api(lab: &Lab, n: usize, path: &str) -> Option<serde_json::Value> {
    let path = path.to_string();
    lab.in_host("client", move || {
        use std::io::{Read, Write};
        let addr: std::net::SocketAddr = format!("{SUBNET}.1{n}:9901").parse().unwrap();
        let mut s =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        let body = answer.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    })
    .join()
    .unwrap()
}

pub fn role(lab: &Lab, n: usize) -> String {
    ha_status(lab, n)
        .and_then(|s| s["role"].as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

impl Pair {
    /// lb1 active with the VIP, lb2 standing by and hearing it.
    pub fn start(tag: &str, store: Store) -> Pair {
        let lab = Lab::new(
            tag,
            &[
                ("store", 2),
                ("lb1", 11),
                ("lb2", 12),
                ("client", 21),
                ("be", 31),
            ],
        );
        let store_pid = store.start(&lab);
        start_backend(&lab);
        let lb1 = start_lb(&lab, store, 1);
        wait_until(Duration::from_secs(15), "lb1 owns the VIP", || {
            lab.owns("lb1", VIP)
        });
        let lb2 = start_lb(&lab, store, 2);
        let pair = Pair {
            lab,
            store,
            store_pid,
            pids: [lb1, lb2],
        };
        pair.wait_standby(2, 1);
        pair
    }

    /// Waits until instance `n` stands by and hears `active` as active.
    pub fn wait_standby(&self, n: usize, active: usize) {
        wait_until(Duration::from_secs(5), "standby ready", || {
            ha_status(&self.lab, n).is_some_and(|s| {
                s["role"] == "standby"
                    && s["peers"].as_array().is_some_and(|peers| {
                        peers.iter().any(|p| {
                            p["node"] == format!("lb{active}").as_str() && p["role"] == "active"
                        })
                    })
            })
        });
    }

    pub fn host(n: usize) -> String {
        format!("lb{n}")
    }
}
