//! `/metrics` after a scripted run: requests that succeed and fail on each side, a malformed
//! request, TCP bytes, an ejection, panic mode, a drain — every figure checked against what
//! the script did, and the scrape linted by promtool (Debian's prometheus package), the tool
//! an operator's CI would run on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend whose `/health` answers what `health` holds, `/fail` answers 500, and
/// everything else 200.
async fn switchable() -> (Backend, Arc<AtomicU16>) {
    let health = Arc::new(AtomicU16::new(200));
    let status = Arc::clone(&health);
    let backend = Backend::with_handler(Arc::new(move |req: Request<hyper::body::Incoming>| {
        let status = Arc::clone(&status);
        Box::pin(async move {
            let code = match req.uri().path() {
                "/health" => status.load(Ordering::SeqCst),
                "/fail" => 500,
                _ => 200,
            };
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
            response
        })
    }))
    .await;
    (backend, health)
}

/// One scrape, as sample name + sorted labels → value.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut pairs: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    pairs.sort_unstable();
                    format!("{name}{{{}}}", pairs.join(","))
                }
                None => series.to_string(),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("{line}")),
            };
            samples.insert(key, value);
        }
        Scrape { text, samples }
    }

    /// The value of `name` with exactly `labels`; a missing series fails the test.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        pairs.sort_unstable();
        let key = if pairs.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", pairs.join(","))
        };
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key} in the scrape:\n{}", self.text))
    }
}

/// `base` with one more label.
fn with<'a>(base: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut labels = base.to_vec();
    labels.push(extra);
    labels
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let (status, body) = Client::connect(admin).await.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body)
}

/// `promtool check metrics` on a scrape: its exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let promtool = installed(&["/usr/bin/promtool"], "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_counts_what_a_scripted_run_did_and_promtool_accepts_it() {
    let mut checked = Vec::new();
    let mut switches = Vec::new();
    for _ in 0..5 {
        let (backend, health) = switchable().await;
        checked.push(backend);
        switches.push(health);
    }
    let gone = dead_addr().await;
    let echo = echo_backend().await;
    let app_backends: Vec<String> = checked
        .iter()
        .map(|b| format!("{{ addr = \"{}\" }}", b.addr))
        .collect();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         [[listeners]]\nname = \"broken\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"gone\"\n\
         [[listeners]]\nname = \"raw\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\npool = \"echo\"\n\
         [pools.app]\nalgorithm = \"round_robin\"\nbackends = [{}]\n\
         [pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\n\
         readiness = {{ path = \"/health\" }}\nfailure_decay = \"200ms\"\n\
         [pools.gone]\nbackends = [{{ addr = \"{gone}\" }}]\n\
         [pools.echo]\nbackends = [{{ addr = \"{echo}\" }}]\n",
        app_backends.join(", ")
    );
    let app = RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap();
    let admin = app.admin_addr().unwrap();
    let web = app.listener_addr("web").unwrap();
    let broken = app.listener_addr("broken").unwrap();
    let raw = app.listener_addr("raw").unwrap();

    // Before any traffic every series exists at zero (a rate() needs its first sample).
    let before = scrape(admin).await;
    assert_eq!(
        before.get(
            "fulcrum_http_requests_total",
            &[("listener", "web"), ("pool", "app"), ("code_class", "2xx")]
        ),
        0.0
    );

    // HTTP: 20 answered by backends, 3 of them with the backend's own 500.
    let mut client = Client::connect(web).await;
    for _ in 0..17 {
        assert_eq!(client.get("/").await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(client.get("/fail").await.0, 500);
    }
    // A malformed request: the client's fault.
    let answer = raw_exchange(web, b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A pool whose only backend refuses connections: the upstream's fault.
    let mut to_broken = Client::connect(broken).await;
    for _ in 0..4 {
        assert_eq!(to_broken.get("/").await.0, 502);
    }
    // TCP: 11 bytes each way.
    let mut tcp = tokio::net::TcpStream::connect(raw).await.unwrap();
    tcp.write_all(b"hello world").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tcp.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"hello world");
    drop(tcp);

    // A drain on the broken pool ends at once (nothing in flight); then it has no backend.
    let drained = format!("/api/pools/gone/backends/{gone}/drain");
    let (status, body) = Client::connect(admin)
        .await
        .call("POST", &drained, "")
        .await;
    assert_eq!(status, 200, "{body}");
    let mut admin_client = Client::connect(admin).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = admin_client.get("/api/pools/gone").await;
        if body.contains("\"drained\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drain did not end: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(to_broken.get("/").await.0, 503);

    // Checks: one backend's readiness fails and it is ejected; then two more fail, which with
    // three of five failing is panic mode (and the cap, one of five, holds the others back).
    switches[0].store(500, Ordering::SeqCst);
    let wait_pool = |what: &'static str, ready: fn(&serde_json::Value) -> bool| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = Client::connect(admin).await.get("/api/pools/app").await;
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            if ready(&status) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {status:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_pool("one backend ejected", |s| {
        s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["state"] == "ejected")
    })
    .await;
    switches[1].store(500, Ordering::SeqCst);
    switches[2].store(500, Ordering::SeqCst);
    wait_pool("panic with suppressed ejections", |s| {
        s["panic"] == true && s["suppressed_ejections"].as_u64() >= Some(1)
    })
    .await;

    let m = scrape(admin).await;
    let web_app = [("listener", "web"), ("pool", "app")];
    let requests = |base: &[(&str, &str)], class| {
        m.get(
            "fulcrum_http_requests_total",
            &with(base, ("code_class", class)),
        )
    };
    let errors = |base: &[(&str, &str)], side| {
        m.get("fulcrum_http_errors_total", &with(base, ("side", side)))
    };
    assert_eq!(requests(&web_app, "2xx"), 17.0);
    assert_eq!(requests(&web_app, "5xx"), 3.0, "the backend's own 500s");
    assert_eq!(requests(&web_app, "4xx"), 1.0, "the malformed request");
    assert_eq!(errors(&web_app, "client"), 1.0);
    assert_eq!(
        errors(&web_app, "upstream"),
        0.0,
        "a backend's 500 is not fulcrum's error"
    );
    let broken_gone = [("listener", "broken"), ("pool", "gone")];
    assert_eq!(requests(&broken_gone, "5xx"), 5.0);
    assert_eq!(
        errors(&broken_gone, "upstream"),
        4.0,
        "502: connect refused"
    );
    assert_eq!(
        errors(&broken_gone, "none_available"),
        1.0,
        "503 after the drain"
    );

    // Routing latency counts the requests that went upstream; duration counts all answered.
    let count = |name: &str, base: &[(&str, &str)]| m.get(name, base);
    assert_eq!(
        count("fulcrum_http_routing_latency_seconds_count", &web_app),
        20.0
    );
    assert_eq!(
        count("fulcrum_http_upstream_latency_seconds_count", &web_app),
        20.0
    );
    assert_eq!(
        count("fulcrum_http_request_duration_seconds_count", &web_app),
        20.0
    );
    assert_eq!(
        count("fulcrum_http_routing_latency_seconds_count", &broken_gone),
        0.0,
        "nothing reached a backend"
    );
    assert_eq!(
        count("fulcrum_http_request_duration_seconds_count", &broken_gone),
        5.0
    );
    let routing_sum = count("fulcrum_http_routing_latency_seconds_sum", &web_app);
    let duration_sum = count("fulcrum_http_request_duration_seconds_sum", &web_app);
    assert!(
        routing_sum > 0.0 && routing_sum < duration_sum,
        "routing {routing_sum} s is part of the requests' {duration_sum} s"
    );
    assert_eq!(
        m.get(
            "fulcrum_http_routing_latency_seconds_bucket",
            &with(&web_app, ("le", "+Inf"))
        ),
        20.0
    );

    // Backends: every attempt counted; the 500s are failures.
    let total: f64 = checked
        .iter()
        .map(|b| {
            m.get(
                "fulcrum_backend_requests_total",
                &[("pool", "app"), ("backend", &b.addr.to_string())],
            )
        })
        .sum();
    assert_eq!(total, 20.0);
    let failures: f64 = checked
        .iter()
        .map(|b| {
            m.get(
                "fulcrum_backend_failures_total",
                &[("pool", "app"), ("backend", &b.addr.to_string())],
            )
        })
        .sum();
    assert_eq!(failures, 3.0);
    let first = checked[0].addr.to_string();
    let first = [("pool", "app"), ("backend", first.as_str())];
    assert_eq!(
        m.get("fulcrum_backend_state", &with(&first, ("state", "ejected"))),
        1.0
    );
    assert_eq!(
        m.get("fulcrum_backend_state", &with(&first, ("state", "active"))),
        0.0
    );
    // In panic every backend takes traffic at full weight, the ejected one too.
    assert_eq!(m.get("fulcrum_backend_effective_weight", &first), 1.0);
    assert_eq!(m.get("fulcrum_backend_weight", &first), 1.0);

    // TCP.
    let raw_echo = [("listener", "raw"), ("pool", "echo")];
    assert_eq!(m.get("fulcrum_tcp_connections_total", &raw_echo), 1.0);
    assert_eq!(m.get("fulcrum_tcp_received_bytes_total", &raw_echo), 11.0);
    assert_eq!(m.get("fulcrum_tcp_sent_bytes_total", &raw_echo), 11.0);
    assert_eq!(
        m.get("fulcrum_tcp_connection_duration_seconds_count", &raw_echo),
        1.0
    );
    assert_eq!(
        m.get(
            "fulcrum_listener_connections_total",
            &[("listener", "raw"), ("protocol", "tcp")]
        ),
        1.0
    );

    // Health-check accuracy and deployments.
    let app_pool = [("pool", "app")];
    assert_eq!(m.get("fulcrum_pool_panic", &app_pool), 1.0);
    assert_eq!(m.get("fulcrum_pool_panics_total", &app_pool), 1.0);
    assert_eq!(
        m.get(
            "fulcrum_pool_ejections_total",
            &with(&app_pool, ("reason", "readiness"))
        ),
        1.0
    );
    assert!(m.get("fulcrum_pool_ejections_suppressed_total", &app_pool) >= 1.0);
    let gone_pool = [("pool", "gone")];
    assert_eq!(m.get("fulcrum_pool_drains_started_total", &gone_pool), 1.0);
    assert_eq!(
        m.get("fulcrum_pool_drains_completed_total", &gone_pool),
        1.0
    );
    assert_eq!(
        m.get("fulcrum_pool_drains_timed_out_total", &gone_pool),
        0.0
    );
    assert_eq!(m.get("fulcrum_reloads_total", &[("result", "ok")]), 0.0);
    assert_eq!(
        m.get(
            "fulcrum_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // The format Prometheus and promtool read by default, linted clean.
    let (clean, said) = promtool_check(&m.text);
    assert!(
        clean && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{}",
        m.text
    );

    // OpenMetrics when asked for it.
    let request = Request::get("/metrics")
        .header("host", "admin")
        .header(
            "accept",
            "application/openmetrics-text; version=1.0.0, text/plain;q=0.5",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let openmetrics = String::from_utf8_lossy(&body);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE fulcrum_http_requests counter\n"));
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_metrics_off_serves_and_is_not_counted() {
    let (backend, _) = switchable().await;
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"counted\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         [[listeners]]\nname = \"quiet\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\nmetrics = false\n\
         [pools.app]\nbackends = [{{ addr = \"{}\" }}]\n",
        backend.addr
    );
    let app = RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap();
    let admin = app.admin_addr().unwrap();
    for name in ["counted", "quiet"] {
        let mut client = Client::connect(app.listener_addr(name).unwrap()).await;
        for _ in 0..3 {
            assert_eq!(client.get("/").await.0, 200, "{name}");
        }
    }
    let m = scrape(admin).await;
    assert_eq!(
        m.get(
            "fulcrum_http_requests_total",
            &[
                ("listener", "counted"),
                ("pool", "app"),
                ("code_class", "2xx")
            ]
        ),
        3.0
    );
    assert!(
        !m.text.contains("listener=\"quiet\",pool="),
        "no request series for the quiet listener:\n{}",
        m.text
    );
    // The backend still counts every request: its figures are the pool's, not a listener's.
    assert_eq!(
        m.get(
            "fulcrum_backend_requests_total",
            &[("pool", "app"), ("backend", &backend.addr.to_string())]
        ),
        6.0
    );
    app.shutdown();
}
