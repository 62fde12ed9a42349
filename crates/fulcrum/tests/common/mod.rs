//! The integration harness: the real proxy, started in-process from a TOML config on
//! 127.0.0.1 port 0, in front of in-process backends that can be slowed, failed and counted.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cli;
pub mod h2raw;
pub mod pki;
pub mod recorder;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What an in-process backend saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    pub last_headers: Mutex<Option<http::HeaderMap>>,
}

pub type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Backend {
    /// A backend answering every request with its `name` after `delay`.
    pub async fn named(name: &'static str, delay: Duration) -> Backend {
        Backend::with_handler(Arc::new(move |_req| {
            Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Response::new(Full::new(Bytes::from_static(name.as_bytes())))
            })
        }))
        .await
    }

    pub async fn with_handler(handler: Handler) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let seen_task = Arc::clone(&seen);
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let handles = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                seen_task.connections.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen_task);
                let handler = Arc::clone(&handler);
                let handle = tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        *seen.last_headers.lock().unwrap() = Some(req.headers().clone());
                        let response = handler(req);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                handles.lock().unwrap().push(handle.abort_handle());
            }
        });
        Backend {
            addr,
            seen,
            task,
            connections,
        }
    }

    /// Like a process dying: the listener and every open connection close at once.
    pub fn kill(&self) {
        self.task.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    pub fn last_headers(&self) -> http::HeaderMap {
        self.seen
            .last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

/// A TCP backend that echoes everything; when the client half-closes, it finishes echoing
/// and half-closes back.
pub async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A backend answering `name` on every path except `/health`, which answers `health_status`.
pub async fn with_health(name: &'static str, health_status: u16, delay: Duration) -> Backend {
    Backend::with_handler(Arc::new(move |req: Request<Incoming>| {
        Box::pin(async move {
            if req.uri().path() == "/health" {
                let mut r = Response::new(Full::new(Bytes::from_static(b"health")));
                *r.status_mut() = hyper::StatusCode::from_u16(health_status).unwrap();
                return r;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Response::new(Full::new(Bytes::from_static(name.as_bytes())))
        })
    }))
    .await
}

/// An address nothing listens on: a free port on a loopback address other than 127.0.0.1,
/// where no test binds (a port released on 127.0.0.1 could be reused by a parallel test).
pub async fn dead_addr() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let host = 2 + (NEXT.fetch_add(1, Ordering::SeqCst) + std::process::id() as usize) % 250;
    SocketAddr::from(([127, 0, 0, host as u8], port))
}

/// Starts fulcrum with one listener `front` of `protocol` over `backends`.
/// `pool_extra` and `listener_extra` are TOML lines added to the pool and the listener.
pub fn start_proxy(
    protocol: &str,
    algorithm: &str,
    backends: &[(SocketAddr, u32)],
    listener_extra: &str,
    pool_extra: &str,
) -> Proxy {
    let config = proxy_config(protocol, algorithm, backends, listener_extra, pool_extra);
    let app = RunningApp::start(&config).unwrap();
    Proxy {
        addr: app.listener_addr("front").unwrap(),
        app: Some(app),
    }
}

/// The configuration [`start_proxy`] runs (to reload a started proxy with another).
pub fn proxy_config(
    protocol: &str,
    algorithm: &str,
    backends: &[(SocketAddr, u32)],
    listener_extra: &str,
    pool_extra: &str,
) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\nshutdown_grace = \"5s\"\n\
         [[listeners]]\nname = \"front\"\nbind = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\npool = \"app\"\n{listener_extra}\n\
         [pools.app]\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n{pool_extra}\n",
        list.join(", ")
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub app: Option<RunningApp>,
}

impl Proxy {
    pub fn app(&self) -> &RunningApp {
        self.app.as_ref().unwrap()
    }

    pub fn app_mut(&mut self) -> &mut RunningApp {
        self.app.as_mut().unwrap()
    }

    /// The pool's status as the admin API reports it.
    pub async fn status(&self) -> serde_json::Value {
        let admin = self.app().admin_addr().unwrap();
        let (status, body) = Client::connect(admin).await.get("/api/pools/app").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls the admin status until `ready` holds (or panics after `within`).
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status().await;
            if ready(&status) {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{what}: not reached within {within:?}; last status:\n{status:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The state of the backend at `addr` in an admin status document.
pub fn backend_state(status: &serde_json::Value, addr: SocketAddr) -> String {
    status["backends"]
        .as_array()
        .and_then(|list| list.iter().find(|b| b["addr"] == addr.to_string()))
        .and_then(|b| b["state"].as_str())
        .unwrap_or("missing")
        .to_string()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown();
        }
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    /// GET `path`; returns the status and the body as text.
    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let request = Request::get(path)
            .header("host", "test.local")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(request).await
    }

    /// `method` `path` with a JSON body (the admin API).
    pub async fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.send(request).await
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> (u16, String) {
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A connection to `to` from the loopback address `source` (127.0.0.2, 127.0.0.3, …: distinct
/// client addresses for tests of per-client rules).
pub async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(std::net::IpAddr::from(source), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends raw bytes on a new connection and reads until the proxy closes it (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `clients` keep-alive clients sending GETs until `stop`; returns (ok, failed) counts.
pub fn load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let stop = Arc::clone(&stop);
            let ok = Arc::clone(&ok);
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut client = Client::connect(addr).await;
                while !stop.load(Ordering::SeqCst) {
                    let (status, body) = client.get("/").await;
                    if status == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.push(format!("{status} {body}"));
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for t in tasks {
            failures.extend(t.await.unwrap());
        }
        (ok.load(Ordering::SeqCst), failures)
    })
}

/// The first of `candidates` that exists; a missing server fails the test with a clear message.
pub fn installed(candidates: &[&'static str], package: &str) -> &'static str {
    candidates
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("{candidates:?} not found: install Debian's {package} (scripts/test does)")
        })
}

/// A log file a test server appends to (kept across restarts).
pub fn append_log(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Counts how often each body text came back.
pub fn tally(bodies: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for b in bodies {
        *counts.entry(b).or_insert(0) += 1;
    }
    counts
}

/// A backend that reads the whole body, then answers with its length.
pub async fn body_length_backend() -> Backend {
    Backend::with_handler(Arc::new(|req| {
        Box::pin(async move {
            let body = http_body_util::BodyExt::collect(req.into_body()).await;
            let len = body.map(|b| b.to_bytes().len()).unwrap_or(0);
            Response::new(Full::new(Bytes::from(len.to_string())))
        })
    }))
    .await
}

/// What an HTTP/2 test backend saw.
#[derive(Default)]
pub struct H2Seen {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    /// The most streams open at once on one connection.
    pub most_open: AtomicUsize,
    pub last_headers: Mutex<Option<http::HeaderMap>>,
}

/// An HTTP/2-only backend (the `h2` crate, clear text) allowing `max_streams` streams per
/// connection; it answers `h2 PATH` after `delay`, with an `x-served-by: h2` trailer, and
/// sends `103 Early Hints` (a `link` header) first for a path starting `/early`. With
/// `goaway_after`, each connection sends GOAWAY once it has taken that many streams.
pub async fn h2_backend(
    max_streams: u32,
    delay: Duration,
    goaway_after: Option<usize>,
) -> (SocketAddr, Arc<H2Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(H2Seen::default());
    let seen_task = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            seen_task.connections.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen_task);
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                builder.max_concurrent_streams(max_streams);
                let Ok(mut conn) = builder.handshake::<_, Bytes>(stream).await else {
                    return;
                };
                let open = Arc::new(AtomicUsize::new(0));
                let mut taken = 0;
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    taken += 1;
                    if goaway_after == Some(taken) {
                        conn.graceful_shutdown();
                    }
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most_open.fetch_max(now, Ordering::SeqCst);
                    *seen.last_headers.lock().unwrap() = Some(request.headers().clone());
                    let open = Arc::clone(&open);
                    tokio::spawn(async move {
                        let path = request.uri().path().to_string();
                        let mut body = request.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        if path.starts_with("/early") {
                            let hints = http::Response::builder()
                                .status(103)
                                .header("link", "</style.css>; rel=preload")
                                .body(())
                                .unwrap();
                            let _ = respond.send_informational(hints);
                        }
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let response = http::Response::builder().status(200).body(()).unwrap();
                        if let Ok(mut send) = respond.send_response(response, false) {
                            let _ = send.send_data(Bytes::from(format!("h2 {path}")), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("x-served-by", http::HeaderValue::from_static("h2"));
                            let _ = send.send_trailers(trailers);
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
    });
    (addr, seen)
}

/// A counter of the listener's from the admin API's `/metrics`: the line of `name` whose
/// `reason` label is `reason`.
pub async fn listener_counter(proxy: &Proxy, name: &str, reason: &str) -> u64 {
    let admin = proxy.app().admin_addr().unwrap();
    let (status, body) = Client::connect(admin).await.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    let label = format!("reason=\"{reason}\"");
    body.lines()
        .find(|line| line.starts_with(&format!("{name}{{")) && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {label} in:\n{body}"))
}
