//! Configuration reload in place, through the running proxy: what changes, what is kept, and
//! that a reload which cannot be applied changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{backend_state, dead_addr, Backend, Client};
use fulcrum::reload::ReloadError;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;
use fulcrum_core::reload::Change;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEAD: &str =
    "[admin]\nbind = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\nshutdown_grace = \"5s\"\n";

fn config(rest: &str) -> Config {
    let text = format!("{HEAD}{rest}");
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn http_listener(name: &str, bind: &str, pool: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\nprotocol = \"http\"\npool = \"{pool}\"\n{extra}\n"
    )
}

fn pool(name: &str, algorithm: &str, backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[pools.{name}]\nalgorithm = \"{algorithm}\"\nslow_start = \"0s\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// Reloads off the async threads: a reload waits for every worker to confirm.
fn reload(app: &mut RunningApp, new: Config) -> Result<Vec<Change>, ReloadError> {
    tokio::task::block_in_place(|| app.reload(new))
}

fn texts(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

async fn pool_status(app: &RunningApp, name: &str) -> serde_json::Value {
    let admin = app.admin_addr().unwrap();
    let (status, body) = Client::connect(admin)
        .await
        .get(&format!("/api/pools/{name}"))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// One request on a raw keep-alive connection; returns the response head (lowercase) and
/// body. The backends answer with a Content-Length.
async fn exchange(stream: &mut TcpStream, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("response within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_algorithm_in_place_and_open_connections_follow_it() {
    let a = Backend::named("a", Duration::ZERO).await;
    let b = Backend::named("b", Duration::ZERO).await;
    let listeners = http_listener("front", "127.0.0.1:0", "app", "");
    let mut app = RunningApp::start(&config(&format!(
        "{listeners}{}",
        pool("app", "round_robin", &[a.addr, b.addr], "")
    )))
    .unwrap();
    let front = app.listener_addr("front").unwrap();
    let mut client = Client::connect(front).await;
    let mut before = Vec::new();
    for _ in 0..20 {
        before.push(client.get("/cart").await.1);
    }
    let (on_a, on_b) = (a.requests(), b.requests());
    assert_eq!(on_a + on_b, 20);
    assert!(on_a >= 5 && on_b >= 5, "round robin spreads: {before:?}");

    let changes = reload(
        &mut app,
        config(&format!(
            "{listeners}{}",
            pool("app", "ring_hash", &[a.addr, b.addr], "hash_key = \"path\"")
        )),
    )
    .unwrap();
    assert_eq!(
        texts(&changes),
        [
            "pool app: algorithm round_robin -> ring_hash",
            "pool app: settings changed"
        ]
    );
    // The same keep-alive connection: one path now always lands on one backend.
    let mut after = Vec::new();
    for _ in 0..20 {
        let (status, body) = client.get("/cart").await;
        assert_eq!(status, 200);
        after.push(body);
    }
    after.dedup();
    assert_eq!(after.len(), 1, "hashing by path: {after:?}");
    let status = pool_status(&app, "app").await;
    assert_eq!(status["algorithm"], "ring_hash");
    for addr in [a.addr, b.addr] {
        assert_eq!(
            backend_state(&status, addr),
            "active",
            "the backends kept their state (no new slow start): {status:#}"
        );
    }
    tokio::task::block_in_place(|| app.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_answers_when_the_reload_returns_and_one_removed_finishes_its_requests() {
    let web = Backend::named("web", Duration::ZERO).await;
    let slow = Backend::named("slow", Duration::from_millis(1500)).await;
    let front = http_listener("front", "127.0.0.1:0", "web", "");
    let web_pool = pool("web", "round_robin", &[web.addr], "");
    let mut app = RunningApp::start(&config(&format!("{front}{web_pool}"))).unwrap();

    let with_extra = format!(
        "{front}{}{web_pool}{}",
        http_listener("extra", "127.0.0.1:0", "slow", ""),
        pool("slow", "least_conn", &[slow.addr], "")
    );
    let changes = reload(&mut app, config(&with_extra)).unwrap();
    assert_eq!(texts(&changes), ["pool slow added", "listener extra added"]);
    let extra = app
        .listener_addr("extra")
        .expect("the new listener's address");
    let in_flight = tokio::spawn(async move { Client::connect(extra).await.get("/").await });
    // The request reaches the slow backend, then the listener and its pool go.
    for _ in 0..100 {
        if slow.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.requests(), 1, "the request through the new listener");
    let changes = reload(&mut app, config(&format!("{front}{web_pool}"))).unwrap();
    assert_eq!(
        texts(&changes),
        ["listener extra removed", "pool slow removed"]
    );
    let refused = TcpStream::connect(extra).await;
    assert!(
        refused.is_err(),
        "a removed listener refuses new connections"
    );
    assert_eq!(
        in_flight.await.unwrap(),
        (200, "slow".to_string()),
        "its in-flight request finished"
    );
    assert!(app.listener_addr("extra").is_none());
    let front = app.listener_addr("front").unwrap();
    assert_eq!(Client::connect(front).await.get("/").await.1, "web");
    tokio::task::block_in_place(|| app.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listener_keeps_its_socket_and_asks_its_connections_to_close_others_notice_nothing(
) {
    let a = Backend::named("a", Duration::ZERO).await;
    let app_pool = pool("app", "round_robin", &[a.addr], "");
    let other = http_listener("other", "127.0.0.1:0", "app", "");
    let mut app = RunningApp::start(&config(&format!(
        "{}{other}{app_pool}",
        http_listener("front", "127.0.0.1:0", "app", "idle_timeout = \"60s\"")
    )))
    .unwrap();
    let (front, other_addr) = (
        app.listener_addr("front").unwrap(),
        app.listener_addr("other").unwrap(),
    );
    let mut on_front = TcpStream::connect(front).await.unwrap();
    let mut on_other = TcpStream::connect(other_addr).await.unwrap();
    for stream in [&mut on_front, &mut on_other] {
        let (head, body) = exchange(stream, "/").await;
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, "a");
    }

    // Nothing changed at all: nothing happens.
    let same = format!(
        "{}{other}{app_pool}",
        http_listener("front", "127.0.0.1:0", "app", "idle_timeout = \"60s\"")
    );
    assert_eq!(reload(&mut app, config(&same)).unwrap(), []);
    let changes = reload(
        &mut app,
        config(&format!(
            "{}{other}{app_pool}",
            http_listener("front", "127.0.0.1:0", "app", "idle_timeout = \"30s\"")
        )),
    )
    .unwrap();
    assert_eq!(texts(&changes), ["listener front settings changed"]);
    assert_eq!(app.listener_addr("front"), Some(front), "same socket");

    // The changed listener's connection: its next response says close, then it closes.
    let (head, body) = exchange(&mut on_front, "/").await;
    assert_eq!(body, "a");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut on_front).await);
    // The other listener's connection goes on as if nothing happened.
    for _ in 0..3 {
        let (head, body) = exchange(&mut on_other, "/").await;
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, "a");
    }
    // New connections to the changed listener are served with its new settings.
    assert_eq!(Client::connect(front).await.get("/").await.1, "a");
    tokio::task::block_in_place(|| app.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_be_applied_whole_changes_nothing_and_says_why_with_the_path() {
    let a = Backend::named("a", Duration::ZERO).await;
    let b = Backend::named("b", Duration::ZERO).await;
    let front = http_listener("front", "127.0.0.1:0", "app", "");
    let start = config(&format!(
        "{front}{}",
        pool("app", "round_robin", &[a.addr, b.addr], "")
    ));
    let mut app = RunningApp::start(&start).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let changed_pool = pool("app", "least_conn", &[a.addr], "");

    let unbindable = config(&format!(
        "{front}{}{changed_pool}",
        http_listener("extra", &format!("127.0.0.1:{port}"), "app", "")
    ));
    let missing_certificate = config(&format!(
        "{}{changed_pool}",
        http_listener(
            "front",
            "127.0.0.1:0",
            "app",
            "tls = { certificates = [{ cert = \"/nonexistent/fulcrum.pem\", key = \"/nonexistent/fulcrum.key\" }] }"
        )
    ));
    let more_workers = {
        let mut c = config(&format!("{front}{changed_pool}"));
        c.runtime.workers = 3;
        c
    };
    let expectations = [
        (
            unbindable,
            format!("listeners[1] (extra): cannot listen on 127.0.0.1:{port}"),
        ),
        (missing_certificate, "listeners[0].tls".to_string()),
        (
            more_workers,
            "runtime.workers 2 -> 3 (needs a restart or a binary upgrade)".to_string(),
        ),
    ];
    for (new, expected) in expectations {
        let error = reload(&mut app, new).expect_err("refused").to_string();
        assert!(error.contains(&expected), "`{expected}` not in: {error}");
        assert_eq!(*app.config(), start, "the running configuration is kept");
        let status = pool_status(&app, "app").await;
        assert_eq!(status["algorithm"], "round_robin", "{error}");
        assert_eq!(backend_state(&status, b.addr), "active", "{error}");
    }
    assert!(app.listener_addr("extra").is_none());
    drop(taken);
    tokio::task::block_in_place(|| app.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_added_by_a_reload_start_and_backends_the_admin_api_added_stay() {
    let a = Backend::named("a", Duration::ZERO).await;
    let dead = dead_addr().await;
    let front = http_listener("front", "127.0.0.1:0", "app", "");
    let mut app = RunningApp::start(&config(&format!(
        "{front}{}",
        pool("app", "round_robin", &[a.addr, dead], "")
    )))
    .unwrap();
    let extra = Backend::named("extra", Duration::ZERO).await;
    let admin = app.admin_addr().unwrap();
    let (status, body) = Client::connect(admin)
        .await
        .call(
            "POST",
            "/api/pools/app/backends",
            &format!("{{\"addr\": \"{}\"}}", extra.addr),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");

    let changes = reload(
        &mut app,
        config(&format!(
            "{front}{}",
            pool(
                "app",
                "round_robin",
                &[a.addr, dead],
                "[pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nliveness = { tcp = true }"
            )
        )),
    )
    .unwrap();
    assert_eq!(texts(&changes), ["pool app: health checks changed"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = pool_status(&app, "app").await;
        if backend_state(&status, dead) == "dead" {
            assert_eq!(backend_state(&status, a.addr), "active");
            assert_ne!(
                backend_state(&status, extra.addr),
                "missing",
                "a backend the admin API added survives a reload that does not name it"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new health checks never found the dead backend: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| app.shutdown());
}
