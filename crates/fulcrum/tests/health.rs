//! Health checks and the backend lifecycle end to end, with short intervals: a dead backend
//! leaves rotation without failing a request, a lying health endpoint takes nothing down, the
//! ejection cap holds, drains drop nothing, and slow start follows its ramp.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const FAST_HEALTH: &str =
    "[pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 3\nrise = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_leaves_rotation_quickly_and_no_request_fails() {
    let backends = [
        Backend::named("a", Duration::ZERO).await,
        Backend::named("b", Duration::ZERO).await,
        Backend::named("c", Duration::ZERO).await,
    ];
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy("http", "round_robin", &weighted, "", FAST_HEALTH);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy.addr, 4, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(300)).await;

    backends[1].kill();
    let killed_at = tokio::time::Instant::now();
    let dead = backends[1].addr;
    proxy
        .wait_for(Duration::from_secs(3), "killed backend marked dead", |s| {
            backend_state(s, dead) == "dead"
        })
        .await;
    let took = killed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = running.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests made it");
    // interval × fall = 300 ms, plus a probe timeout and a generous margin for a busy machine.
    assert!(
        took < Duration::from_millis(2000),
        "took {took:?} to leave rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_endpoint_failing_on_most_of_the_pool_means_panic_not_an_outage() {
    let mut backends = Vec::new();
    for (name, health) in [("a", 500), ("b", 500), ("c", 500), ("d", 200), ("e", 200)] {
        backends.push(with_health(name, health, Duration::ZERO).await);
    }
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let health =
        format!("{FAST_HEALTH}readiness = {{ path = \"/health\" }}\nfailure_decay = \"200ms\"\n");
    let proxy = start_proxy("http", "round_robin", &weighted, "", &health);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy.addr, 4, Arc::clone(&stop));
    proxy
        .wait_for(Duration::from_secs(5), "panic mode", |s| s["panic"] == true)
        .await;
    // Past the decay: in panic every backend takes traffic anyway.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before: Vec<usize> = backends.iter().map(Backend::requests).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = running.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > 100);
    for (b, before) in backends.iter().zip(before) {
        assert!(
            b.requests() > before,
            "backend {} got nothing during panic",
            b.addr
        );
    }
    assert_eq!(proxy.status().await["panic"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_ten_dead_means_exactly_two_out_and_one_suppressed() {
    let mut backends = Vec::new();
    for _ in 0..10 {
        backends.push(Backend::named("x", Duration::ZERO).await);
    }
    let weighted: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy("http", "round_robin", &weighted, "", FAST_HEALTH);
    for b in &backends[..3] {
        b.kill();
    }
    let status = proxy
        .wait_for(Duration::from_secs(5), "two dead, one suppressed", |s| {
            s["suppressed_ejections"] == 1
                && s["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|b| b["state"] == "dead")
                    .count()
                    == 2
        })
        .await;
    let suppressed: Vec<_> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["ejection_suppressed"] == true)
        .collect();
    assert_eq!(suppressed.len(), 1, "{status:#}");
    assert_eq!(suppressed[0]["state"], "active");
    assert_eq!(status["panic"], false);
    // Clients still get answers: the suppressed one fails to connect and the next serves.
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..30 {
        assert_eq!(client.get("/").await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_under_load_drops_nothing_and_sends_nothing_new() {
    let slow_a = Backend::named("a", Duration::from_millis(300)).await;
    let slow_b = Backend::named("b", Duration::from_millis(300)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(slow_a.addr, 1), (slow_b.addr, 1)],
        "",
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy.addr, 200, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(700)).await;

    let admin = proxy.app().admin_addr().unwrap();
    let (code, body) = Client::connect(admin)
        .await
        .call(
            "POST",
            &format!("/api/pools/app/backends/{}/drain", slow_a.addr),
            "",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Whatever reaches `a` from now on was picked before the drain: it is in flight now.
    let arrived = slow_a.requests();
    let status = proxy.status().await;
    let in_flight = status["backends"][0]["in_flight"].as_u64().unwrap() as usize;
    assert_eq!(backend_state(&status, slow_a.addr), "draining");

    tokio::time::sleep(Duration::from_millis(900)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = running.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= 400, "{ok}");
    assert!(
        slow_a.requests() <= arrived + in_flight,
        "new requests reached the drained backend"
    );
    let status = proxy
        .wait_for(Duration::from_secs(3), "drain finished", |s| {
            backend_state(s, slow_a.addr) == "drained"
        })
        .await;
    assert_eq!(status["drain_failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_drain_timeout_is_twice_the_observed_p99() {
    let slow = Backend::named("slow", Duration::from_millis(700)).await;
    let other = Backend::named("other", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(slow.addr, 1), (other.addr, 1)],
        "",
        "",
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            Client::connect(addr).await.get("/").await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let admin = proxy.app().admin_addr().unwrap();
    let (code, body) = Client::connect(admin)
        .await
        .call(
            "POST",
            &format!("/api/pools/app/backends/{}/drain", slow.addr),
            "",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let timeout = answer["drain_timeout_ms"].as_u64().unwrap();
    // p99 ≈ 700 ms (histogram buckets are within 25 %) → about 1.4 s.
    assert!(
        (1300..=1800).contains(&timeout),
        "drain timeout {timeout} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_follows_the_slow_start_ramp() {
    let old = Backend::named("old", Duration::ZERO).await;
    let new = Backend::named("new", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(old.addr, 1)],
        "",
        "slow_start = \"2s\"\n",
    );
    let admin = proxy.app().admin_addr().unwrap();
    let (code, body) = Client::connect(admin)
        .await
        .call(
            "POST",
            "/api/pools/app/backends",
            &format!("{{\"addr\": \"{}\", \"weight\": 1}}", new.addr),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let added = tokio::time::Instant::now();
    let mut client = Client::connect(proxy.addr).await;
    // Four windows of 500 ms: the new backend's share of each.
    let mut shares = Vec::new();
    for window in 1..=4u32 {
        let mut counts = (0usize, 0usize);
        while added.elapsed() < Duration::from_millis(500) * window {
            match client.get("/").await.1.as_str() {
                "new" => counts.1 += 1,
                _ => counts.0 += 1,
            }
        }
        shares.push(counts.1 as f64 / (counts.0 + counts.1).max(1) as f64);
    }
    // weight f(t) = 0.1 + 0.9 t / 2 s against 1.0: share f / (1 + f) at each window's middle.
    let expected: Vec<f64> = [0.25, 0.75, 1.25, 1.75]
        .iter()
        .map(|t| {
            let f = 0.1 + 0.9 * t / 2.0;
            f / (1.0 + f)
        })
        .collect();
    for (i, (got, want)) in shares.iter().zip(&expected).enumerate() {
        assert!(
            (got - want).abs() < 0.08,
            "window {i}: share {got:.3}, ramp says {want:.3} ({shares:?})"
        );
    }
    assert!(shares.windows(2).all(|w| w[1] > w[0]), "{shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_errors_is_ejected_by_outlier_detection() {
    let broken = Backend::with_handler(Arc::new(|_req| {
        Box::pin(async {
            let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                b"oops",
            )));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }))
    .await;
    let fine = Backend::named("fine", Duration::ZERO).await;
    let spare = Backend::named("spare", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(broken.addr, 1), (fine.addr, 1), (spare.addr, 1)],
        "",
        "[pools.app.outlier]\nconsecutive_failures = 3\nbase_ejection = \"10s\"\n",
    );
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..12 {
        client.get("/").await;
    }
    proxy
        .wait_for(Duration::from_secs(3), "outlier ejection", |s| {
            backend_state(s, broken.addr) == "ejected"
        })
        .await;
    let before = broken.requests();
    for _ in 0..30 {
        assert_eq!(client.get("/").await.0, 200);
    }
    assert_eq!(broken.requests(), before, "an ejected backend got traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_and_their_errors() {
    let a = Backend::named("a", Duration::ZERO).await;
    let b = Backend::named("b", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(a.addr, 1), (b.addr, 1)], "", "");
    let mut admin = Client::connect(proxy.app().admin_addr().unwrap()).await;
    let at = |action: &str| format!("/api/pools/app/backends/{}/{action}", a.addr);
    assert_eq!(admin.call("POST", &at("disable"), "").await.0, 200);
    assert_eq!(backend_state(&proxy.status().await, a.addr), "disabled");
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.1, "b");
    }
    assert_eq!(admin.call("POST", &at("enable"), "").await.0, 200);
    assert_eq!(backend_state(&proxy.status().await, a.addr), "warming");
    // Errors: unknown pool, unknown backend, bad body, duplicate, wrong method, bad action.
    assert_eq!(
        admin.call("POST", "/api/pools/nope/backends", "{}").await.0,
        404
    );
    assert_eq!(
        admin
            .call("POST", "/api/pools/app/backends/127.0.0.1:1/drain", "")
            .await
            .0,
        404
    );
    let (code, body) = admin
        .call("POST", "/api/pools/app/backends", "{\"adr\": 1}")
        .await;
    assert_eq!(code, 400);
    assert!(body.contains("\"error\""), "{body}");
    let dup = format!("{{\"addr\": \"{}\"}}", b.addr);
    assert_eq!(
        admin.call("POST", "/api/pools/app/backends", &dup).await.0,
        409
    );
    assert_eq!(admin.call("GET", &at("drain"), "").await.0, 405);
    assert_eq!(admin.call("POST", &at("explode"), "").await.0, 404);
    // DELETE drains, then removes.
    assert_eq!(
        admin
            .call("DELETE", &format!("/api/pools/app/backends/{}", a.addr), "")
            .await
            .0,
        200
    );
    proxy
        .wait_for(Duration::from_secs(3), "removal", |s| {
            backend_state(s, a.addr) == "missing"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_closes_what_is_left_and_counts_it() {
    let stuck = Backend::named("stuck", Duration::from_secs(5)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(stuck.addr, 1)],
        "",
        "drain_timeout = \"300ms\"\n",
    );
    let addr = proxy.addr;
    // A POST is never retried elsewhere, so the client sees what the drain did.
    let waiting = tokio::spawn(async move {
        let request = hyper::Request::post("/")
            .header("host", "a")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"data",
            )))
            .unwrap();
        Client::connect(addr).await.send(request).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = proxy.app().admin_addr().unwrap();
    let (code, body) = Client::connect(admin)
        .await
        .call(
            "POST",
            &format!("/api/pools/app/backends/{}/drain", stuck.addr),
            "",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (status, _) = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 502);
    let status = proxy
        .wait_for(Duration::from_secs(2), "drain finished", |s| {
            backend_state(s, stuck.addr) == "drained"
        })
        .await;
    assert_eq!(status["drain_failures"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_closes_open_tcp_connections_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = echo_backend().await;
    let proxy = start_proxy(
        "tcp",
        "round_robin",
        &[(backend, 1)],
        "",
        "drain_timeout = \"300ms\"\n",
    );
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    proxy
        .app()
        .pools()
        .get("app")
        .unwrap()
        .drain(backend, fulcrum_core::health::Cause::Admin)
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let status = proxy
        .wait_for(Duration::from_secs(2), "drain finished", |s| {
            backend_state(s, backend) == "drained"
        })
        .await;
    assert_eq!(status["drain_failures"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_view_says_what_the_last_probe_saw() {
    let sick = with_health("sick", 503, Duration::ZERO).await;
    let fine = with_health("fine", 200, Duration::ZERO).await;
    let gone = dead_addr().await;
    let list = [(sick.addr, 1), (fine.addr, 1), (gone, 1)];
    let health = format!("{FAST_HEALTH}readiness = {{ path = \"/health\" }}\n");
    let proxy = start_proxy("http", "round_robin", &list, "", &health);
    let probe_of = |status: &serde_json::Value, addr: std::net::SocketAddr| {
        status["backends"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["addr"] == addr.to_string()))
            .map(|b| b["last_probe"].clone())
            .unwrap_or_default()
    };
    let status = proxy
        .wait_for(
            Duration::from_secs(5),
            "every backend probed for readiness",
            |s| {
                [sick.addr, fine.addr, gone]
                    .iter()
                    .all(|a| probe_of(s, *a)["check"] == "readiness")
            },
        )
        .await;
    let sick_probe = probe_of(&status, sick.addr);
    assert_eq!(sick_probe["check"], "readiness", "{sick_probe}");
    assert_eq!(sick_probe["passed"], false, "{sick_probe}");
    assert_eq!(sick_probe["result"], "status 503", "{sick_probe}");
    assert!(sick_probe["at"].as_f64().unwrap() > 1.7e9, "{sick_probe}");
    let fine_probe = probe_of(&status, fine.addr);
    assert_eq!(fine_probe["passed"], true, "{fine_probe}");
    assert_eq!(fine_probe["result"], "status 200", "{fine_probe}");
    // Liveness and readiness both find nothing listening; either explains it.
    let gone_probe = probe_of(&status, gone);
    assert_eq!(gone_probe["passed"], false, "{gone_probe}");
    assert_eq!(gone_probe["result"], "connect refused", "{gone_probe}");
}
