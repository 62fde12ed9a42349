//! Sticky sessions and latency-aware balancing through the running proxy: consistent hashing
//! survives fleet changes, instances agree, sticky cookies stick, bounded load spills a hot
//! key, and p2c_ewma steers away from a backend that turns slow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, Response};

const NAMES: [&str; 11] = [
    "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10",
];

async fn fleet(n: usize) -> Vec<Backend> {
    let mut backends = Vec::new();
    for name in &NAMES[..n] {
        backends.push(Backend::named(name, Duration::ZERO).await);
    }
    backends
}

/// Which backend answers each of `sessions` cookie values.
async fn route_sessions(addr: SocketAddr, sessions: usize) -> Vec<String> {
    let mut client = Client::connect(addr).await;
    let mut answers = Vec::with_capacity(sessions);
    for s in 0..sessions {
        let request = Request::get("/")
            .header("host", "shop")
            .header("cookie", format!("theme=dark; sid=session-{s}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, body) = client.send(request).await;
        assert_eq!(status, 200);
        answers.push(body);
    }
    answers
}

fn changed(a: &[String], b: &[String]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_backend_moves_few_sessions() {
    const SESSIONS: usize = 10_000;
    // Backends are hashed by their (random) addresses, so the new backend's share varies run
    // to run: ideally 1/11 = 0.091, with 160 points per backend σ ≈ 0.091/√160 = 0.007, plus
    // 0.003 sampling noise over 10 000 sessions. The ring bound is 1/11 + 4σ; Maglev also
    // reshuffles a few slots between old backends, so its bound is wider.
    for (algorithm, limit) in [("ring_hash", 0.125), ("maglev", 0.15)] {
        let backends = fleet(11).await;
        let ten: Vec<_> = backends[..10].iter().map(|b| (b.addr, 1)).collect();
        let proxy = start_proxy(
            "http",
            algorithm,
            &ten,
            "",
            "hash_key = \"cookie:sid\"\nslow_start = \"0s\"\n",
        );
        let before = route_sessions(proxy.addr, SESSIONS).await;
        let mut admin = Client::connect(proxy.app().admin_addr().unwrap()).await;
        let add = format!("{{\"addr\": \"{}\"}}", backends[10].addr);
        assert_eq!(
            admin.call("POST", "/api/pools/app/backends", &add).await.0,
            201
        );
        let after_add = route_sessions(proxy.addr, SESSIONS).await;
        let moved = changed(&before, &after_add);
        assert!(
            moved <= limit,
            "{algorithm}: {moved:.3} of sessions moved when adding one backend to ten"
        );
        assert!(
            moved > 0.04,
            "{algorithm}: the new backend got almost nothing ({moved:.3})"
        );
        if algorithm == "ring_hash" {
            for (was, now) in before.iter().zip(&after_add) {
                if was != now {
                    assert_eq!(now, "b10", "a ring session moved between old backends");
                }
            }
            // Remove one of the original ten: only its own sessions move.
            let gone = backends[3].addr;
            let path = format!("/api/pools/app/backends/{gone}");
            assert_eq!(admin.call("DELETE", &path, "").await.0, 200);
            let after_remove = route_sessions(proxy.addr, SESSIONS).await;
            for (was, now) in after_add.iter().zip(&after_remove) {
                if was != "b3" {
                    assert_eq!(was, now, "a session of a surviving backend moved");
                }
            }
            assert!(!after_remove.iter().any(|b| b == "b3"));
        }
    }
}

/// Active-active HA: two instances (`[ha] mode = "active_active"`) both serve and route a
/// 10 000-key sample identically, so ECMP or DNS may send a client to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_active_active_instances_agree_on_every_key() {
    let backends = fleet(5).await;
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    for algorithm in ["ring_hash", "maglev"] {
        let instance = |node: &str| {
            start_proxy(
                "http",
                algorithm,
                &weighted,
                "",
                &format!("hash_key = \"cookie:sid\"\n[ha]\nmode = \"active_active\"\nnode = \"{node}\"\n"),
            )
        };
        let (first, second) = (instance("lb1"), instance("lb2"));
        for proxy in [&first, &second] {
            let admin = proxy.app().admin_addr().unwrap();
            let (status, _) = Client::connect(admin).await.get("/healthz").await;
            assert_eq!(status, 200, "every active-active instance is healthy");
            let (status, body) = Client::connect(admin).await.get("/api/ha").await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("\"role\": \"active\""), "{body}");
        }
        let a = route_sessions(first.addr, 10_000).await;
        let b = route_sessions(second.addr, 10_000).await;
        assert_eq!(changed(&a, &b), 0.0, "{algorithm}: instances disagree");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_makes_a_new_client_stick() {
    let backends = fleet(4).await;
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy(
        "http",
        "ring_hash",
        &weighted,
        "",
        "hash_key = \"cookie:sid\"\nsticky_cookie = { name = \"sid\", ttl = \"1h\" }\n",
    );
    let response = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    let set_cookie = response
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no Set-Cookie in:\n{response}"));
    assert!(
        set_cookie.contains("Max-Age=3600") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let first = response.rsplit("\r\n\r\n").next().unwrap().to_string();
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..100 {
        let request = Request::get("/")
            .header("host", "a")
            .header("cookie", cookie.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(client.send(request).await.1, first);
    }
}

/// A backend whose delay can be changed while it runs.
async fn adjustable(name: &'static str, delay_ms: Arc<AtomicU64>) -> Backend {
    Backend::with_handler(Arc::new(move |_req| {
        let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Response::new(Full::new(Bytes::from_static(name.as_bytes())))
        })
    }))
    .await
}

/// Runs 8 concurrent clients for `time` and counts answers per backend name.
async fn spread_for(addr: SocketAddr, time: Duration) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let end = tokio::time::Instant::now() + time;
            let mut seen = Vec::new();
            while tokio::time::Instant::now() < end {
                seen.push(client.get("/").await.1);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    tally(all)
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    counts.get(name).copied().unwrap_or(0) as f64 / counts.values().sum::<usize>().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_steers_away_from_a_backend_that_turns_slow_and_back_when_it_recovers() {
    let delays: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(5))).collect();
    let mut backends = Vec::new();
    for (name, delay) in ["s0", "s1", "s2", "s3"].into_iter().zip(&delays) {
        backends.push(adjustable(name, Arc::clone(delay)).await);
    }
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    // A short decay keeps the test short; the default (10 s) reacts the same way, only slower.
    let proxy = start_proxy(
        "http",
        "p2c_ewma",
        &weighted,
        "",
        "ewma_decay = \"500ms\"\n",
    );
    let warm = spread_for(proxy.addr, Duration::from_millis(500)).await;
    assert!(share(&warm, "s0") > 0.10, "{warm:?}");

    delays[0].store(100, Ordering::SeqCst); // 20 × slower
                                            // Requests already on their way finish slowly; count from half a second after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow = spread_for(proxy.addr, Duration::from_secs(2)).await;
    assert!(
        share(&slow, "s0") < 0.10,
        "slow backend kept {:.3} of requests: {slow:?}",
        share(&slow, "s0")
    );

    delays[0].store(5, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let recovered = spread_for(proxy.addr, Duration::from_millis(1500)).await;
    assert!(
        share(&recovered, "s0") > 0.15,
        "no share back after recovery: {recovered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_spills_a_hot_key_to_the_next_backends() {
    let mut backends = Vec::new();
    for name in &NAMES[..4] {
        backends.push(Backend::named(name, Duration::from_millis(400)).await);
    }
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    for (extra, spread_expected) in [("", false), ("hash_balance_factor = 1.25\n", true)] {
        let proxy = start_proxy(
            "http",
            "maglev",
            &weighted,
            "",
            &format!("hash_key = \"header:x-tenant\"\n{extra}"),
        );
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let addr = proxy.addr;
            tasks.push(tokio::spawn(async move {
                let request = Request::get("/")
                    .header("host", "a")
                    .header("x-tenant", "the-hot-one")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                Client::connect(addr).await.send(request).await.1
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let counts = tally(answers);
        if spread_expected {
            // ⌈1.25 × 8 / 4⌉ = 3: no backend may hold more than 3 of the 8 at once.
            assert!(counts.len() >= 3, "{counts:?}");
            assert!(counts.values().all(|&c| c <= 3), "{counts:?}");
        } else {
            assert_eq!(
                counts.len(),
                1,
                "without bounded load a key has one home: {counts:?}"
            );
        }
    }
}
