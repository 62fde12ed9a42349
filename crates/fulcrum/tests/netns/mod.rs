//! A small data centre in network namespaces, created and removed by each test: a bridge
//! "switch", and hosts (the store, two or three fulcrum instances, a backend, a client), each
//! with one veth leg `eth0` on 10.77.0.0/24. Every address lives inside these namespaces.
//!
//! Test threads enter a host with `setns` (a thread's network namespace is its own), so the
//! client, the backend and the VIP sampler run in-process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

pub const SUBNET: &str = "10.77.0";
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const STORE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 31);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);
pub const PROXY_PORT: u16 = 8080;

/// The namespaces of one test. Dropping it kills what it started and removes everything.
pub struct Lab {
    prefix: String,
    hosts: Vec<String>,
    pub dir: PathBuf,
    children: Mutex<Vec<Child>>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` (Debian's iproute2; scripts/test installs it): {e}")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// A switch plus `hosts` (name, last address byte). `tag` keeps parallel tests apart.
    pub fn new(tag: &str, hosts: &[(&str, u8)]) -> Lab {
        let prefix = format!("fh{}{}", std::process::id() % 100_000, tag);
        let dir = std::env::temp_dir().join(format!("fulcrum-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Lab {
            prefix,
            hosts: Vec::new(),
            dir,
            children: Mutex::new(Vec::new()),
        };
        let sw = lab.ns("sw");
        ip(&["netns", "add", &sw]);
        lab.hosts.push("sw".into());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for (host, last) in hosts {
            let ns = lab.ns(host);
            ip(&["netns", "add", &ns]);
            lab.hosts.push(host.to_string());
            let leg = format!("p-{host}");
            ip(&[
                "link", "add", &leg, "netns", &sw, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &sw, "link", "set", &leg, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{SUBNET}.{last}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// A command run inside `host`.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host), program]);
        command
    }

    /// Runs a command in `host` and asserts it succeeded.
    pub fn run(&self, host: &str, program: &str, args: &[&str]) -> String {
        let out = self.command(host, program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {} in {host}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process in `host`, logging to `DIR/<log>`; killed on drop.
    pub fn spawn(&self, host: &str, program: &str, args: &[&str], log: &str) -> u32 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .unwrap();
        let child = self
            .command(host, program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {host}: {e}"));
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        pid
    }

    /// Runs `f` on a thread inside `host`'s network namespace.
    pub fn in_host<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = Path::new("/run/netns").join(self.ns(host));
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Whether `host` currently has `address` on an interface.
    pub fn owns(&self, host: &str, address: Ipv4Addr) -> bool {
        let path = Path::new("/run/netns").join(self.ns(host));
        std::thread::spawn(move || {
            enter(&path);
            owns(address)
        })
        .join()
        .unwrap()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
}

/// Binding to an address without IP_FREEBIND succeeds only if it is local.
pub fn owns(address: Ipv4Addr) -> bool {
    UdpSocket::bind((address, 0)).is_ok()
}

/// Samples which hosts own the VIP every 10 ms, from one thread that hops between their
/// namespaces (so both answers of one sample are microseconds apart).
pub struct VipSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub owners: Vec<bool>,
}

impl VipSampler {
    pub fn start(lab: &Lab, hosts: &[&str]) -> VipSampler {
        let paths: Vec<PathBuf> = hosts
            .iter()
            .map(|h| Path::new("/run/netns").join(lab.ns(h)))
            .collect();
        let files: Vec<File> = paths.iter().map(|p| File::open(p).unwrap()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let at = Instant::now();
                let owners = files
                    .iter()
                    .map(|f| {
                        nix::sched::setns(f, CloneFlags::CLONE_NEWNET).unwrap();
                        owns(VIP)
                    })
                    .collect();
                samples.push(Sample { at, owners });
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        VipSampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Samples in which more than one host owned the VIP.
pub fn overlaps(samples: &[Sample]) -> usize {
    samples
        .iter()
        .filter(|s| s.owners.iter().filter(|o| **o).count() > 1)
        .count()
}

/// A backend answering every request with `200 ok`, keep-alive, on BACKEND:8000.
pub fn start_backend(lab: &Lab) {
    let ready = lab.in_host("be", || {
        let listener = TcpListener::bind((BACKEND, 8000)).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream));
            }
        });
    });
    ready.join().unwrap();
}

fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// One GET through the VIP on a new connection: `Ok` on `200 ok`.
pub fn get_once(timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from((VIP, PROXY_PORT));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: vip\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok") {
        Ok(())
    } else {
        Err(format!("unexpected answer: {answer:?}"))
    }
}

/// What a client retrying idempotent requests experienced.
#[derive(Debug, Default, Clone)]
pub struct ClientReport {
    /// Requests that succeeded, possibly after retries.
    pub ok: usize,
    /// Requests that never succeeded within the retry budget.
    pub failed: Vec<String>,
    /// Attempts that failed and were retried.
    pub retried: usize,
    /// Every failed attempt: when (since the load started) and why.
    pub errors: Vec<(Duration, String)>,
}

/// A client in the "client" host sending a GET every 10 ms until stopped, each retried on
/// failure (idempotent) for up to `budget`.
pub struct ClientLoad {
    stop: Arc<AtomicBool>,
    /// Requests completed so far.
    pub ok: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<ClientReport>>,
}

impl ClientLoad {
    pub fn start(lab: &Lab, attempt_timeout: Duration, budget: Duration) -> ClientLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&ok);
        let thread = lab.in_host("client", move || {
            let mut report = ClientReport::default();
            let load_started = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let started = Instant::now();
                loop {
                    match get_once(attempt_timeout) {
                        Ok(()) => {
                            report.ok += 1;
                            counter.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) if started.elapsed() >= budget => {
                            report.errors.push((load_started.elapsed(), e.clone()));
                            report.failed.push(e);
                            break;
                        }
                        Err(e) => {
                            report.errors.push((load_started.elapsed(), e));
                            report.retried += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            report
        });
        ClientLoad {
            stop,
            ok,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> ClientReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }

    /// Waits until `n` more requests have completed.
    pub fn wait_for_more(&self, n: usize, limit: Duration) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait_until(limit, "client requests complete", || {
            self.ok.load(Ordering::Relaxed) >= target
        });
    }
}

/// Polls `condition` every 10 ms for up to `limit`; returns how long it took.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}
