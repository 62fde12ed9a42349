//! The HTTP proxy end to end: spread, headers, connection reuse, and every error status,
//! each provoked for real through the running proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn three_backends() -> Vec<Backend> {
    vec![
        Backend::named("a", Duration::ZERO).await,
        Backend::named("b", Duration::ZERO).await,
        Backend::named("c", Duration::ZERO).await,
    ]
}

/// Sends `n` sequential requests and counts which backend answered each.
async fn spread(algorithm: &str, n: usize) -> std::collections::HashMap<String, usize> {
    let backends = three_backends().await;
    let weighted: Vec<_> = backends
        .iter()
        .zip([1, 2, 3])
        .map(|(b, w)| (b.addr, w))
        .collect();
    let proxy = start_proxy("http", algorithm, &weighted, "", "");
    let mut client = Client::connect(proxy.addr).await;
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body) = client.get("/").await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    tally(bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_weights_exactly() {
    let counts = spread("round_robin", 600).await;
    assert_eq!((counts["a"], counts["b"], counts["c"]), (100, 200, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_on_an_idle_pool_follows_weights() {
    // Sequential requests leave every backend idle: ties, broken by weighted rotation.
    let counts = spread("least_conn", 600).await;
    assert_eq!((counts["a"], counts["b"], counts["c"]), (100, 200, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_p2c_follow_weights() {
    for algorithm in ["random", "p2c"] {
        let counts = spread(algorithm, 3000).await;
        for (name, weight) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
            let share = counts.get(name).copied().unwrap_or(0) as f64 / 3000.0;
            let want = weight / 6.0;
            assert!(
                (share - want).abs() < 0.05,
                "{algorithm}: {name} got {share:.3}, want {want:.3}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_away_from_a_busy_backend() {
    let slow = Backend::named("slow", Duration::from_millis(1500)).await;
    let fast = Backend::named("fast", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "least_conn",
        &[(slow.addr, 1), (fast.addr, 1)],
        "",
        "",
    );
    // Occupy one backend with a long request.
    let addr = proxy.addr;
    let held = tokio::spawn(async move { Client::connect(addr).await.get("/").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        bodies.push(client.get("/").await.1);
    }
    let first = held.await.unwrap().1;
    let counts = tally(bodies);
    // Whichever backend took the long request, the other one took all the rest.
    let other = if first == "slow" { "fast" } else { "slow" };
    assert_eq!(
        counts.get(other),
        Some(&20),
        "{first} held, then {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_forwarded_headers_added() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut client = Client::connect(proxy.addr).await;
    let request = Request::get("/x")
        .header("host", "shop.example")
        .header("connection", "close, X-Foo")
        .header("x-foo", "1")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(request).await.0, 200);
    let seen = backend.last_headers();
    assert!(seen.get("x-foo").is_none(), "{seen:?}");
    assert!(seen.get("keep-alive").is_none(), "{seen:?}");
    // 127.0.0.1 is no trusted proxy: its X-Forwarded-For is replaced (tests/forwarding.rs).
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert_eq!(seen["host"], "shop.example");
    // The client asked to close: fulcrum honours it on its side only.
    assert_ne!(
        seen.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_on_one_connection_reuse_backend_connections() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..1000 {
        assert_eq!(client.get("/").await.0, 200);
    }
    assert_eq!(backend.requests(), 1000);
    assert!(
        backend.connections() <= 3,
        "{} backend connections",
        backend.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_move_to_the_next_backend() {
    let dead = dead_addr().await;
    let live = Backend::named("live", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(dead, 1), (live.addr, 1)], "", "");
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await, (200, "live".to_string()));
    }
    let status = proxy.app().pools().get("app").unwrap().status();
    let dead_status = status.backends.iter().find(|b| b.addr == dead).unwrap();
    assert!(dead_status.failures >= 5, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_refusing_gives_502() {
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(dead_addr().await, 1), (dead_addr().await, 1)],
        "",
        "",
    );
    let (status, body) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(status, 502);
    assert_eq!(body, "could not connect to a backend\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_gives_503() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    proxy
        .app()
        .pools()
        .get("app")
        .unwrap()
        .set_backends(&[], fulcrum_core::health::Cause::Admin);
    let (status, body) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(status, 503);
    assert_eq!(body, "no backend available\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gives_504_after_the_response_timeout() {
    let backend = Backend::named("late", Duration::from_secs(3)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "",
        "response_timeout = \"200ms\"",
    );
    let (status, body) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(status, 504);
    assert_eq!(body, "the backend did not answer in time\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_breaks_mid_exchange_gives_502() {
    // Accepts, reads the request, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            drop(s);
        }
    });
    let proxy = start_proxy("http", "round_robin", &[(addr, 1)], "", "");
    let (status, _) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_line_gives_414() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let path = "/".to_string() + &"x".repeat(9000);
    let response = raw_exchange(
        proxy.addr,
        format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 414"), "{response}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_header_block_gives_431() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let big = "y".repeat(70 * 1024);
    let response = raw_exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_repeated_host_gives_400() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    for request in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        let response = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{request:?} -> {response}"
        );
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_past_the_header_deadline_gives_408() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "header_timeout = \"400ms\"",
        "",
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // One byte every 100 ms: an idle timer would never fire, a deadline does.
    let head = b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: abcdefghijklmnop";
    for byte in head.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_gets_408_and_an_idle_one_is_closed() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "header_timeout = \"300ms\"\nidle_timeout = \"300ms\"",
        "",
    );
    let response = raw_exchange(proxy.addr, b"").await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    // After a complete exchange, the idle timeout closes quietly.
    let response = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(!response.contains("408"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_reports_pools_and_counters() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "p2c", &[(backend.addr, 3)], "", "");
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..5 {
        client.get("/").await;
    }
    let admin = proxy.app().admin_addr().unwrap();
    let mut admin_client = Client::connect(admin).await;
    assert_eq!(
        admin_client.get("/healthz").await,
        (200, "ok\n".to_string())
    );
    let (status, body) = admin_client.get("/api/pools/app").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["algorithm"], "p2c");
    assert_eq!(json["backends"][0]["addr"], backend.addr.to_string());
    assert_eq!(json["backends"][0]["weight"], 3);
    assert_eq!(json["backends"][0]["requests"], 5);
    assert_eq!(json["backends"][0]["in_flight"], 0);
    let (status, body) = admin_client.get("/api/pools").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"app\""), "{body}");
    assert_eq!(admin_client.get("/api/pools/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish() {
    let backend = Backend::named("done", Duration::from_millis(800)).await;
    let mut proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { Client::connect(addr).await.get("/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = proxy.app.take().unwrap();
    let stopped = tokio::task::spawn_blocking(move || app.shutdown());
    assert_eq!(in_flight.await.unwrap(), (200, "done".to_string()));
    stopped.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_arrives_after_shutdown_began_tells_the_client_to_close() {
    let backend = Backend::named("done", Duration::from_millis(800)).await;
    let mut proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // Keep-alive: without shutdown the connection would stay open.
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = proxy.app.take().unwrap();
    let stopped = tokio::task::spawn_blocking(move || app.shutdown());
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{response}"
    );
    assert!(response.ends_with("done"), "{response}");
    stopped.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_head_is_timed_from_its_own_wait_not_from_accept() {
    // The first response takes longer than the header timeout; the second head, half of it
    // pipelined behind the first request, is finished only after that.
    let backend = Backend::named("slow", Duration::from_millis(1300)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "header_timeout = \"1s\"",
        "",
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with("slow") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("first response")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"host: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let rest = read_to_close(&mut stream).await;
    assert!(rest.starts_with("HTTP/1.1 200 "), "second answer: {rest}");
    assert!(rest.ends_with("slow"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_sized_bodies_pass_through_both_ways() {
    let backend = Backend::with_handler(Arc::new(|req| {
        Box::pin(async move {
            let te = req
                .headers()
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap().to_string());
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            let text = format!(
                "{}:{}",
                te.unwrap_or_default(),
                String::from_utf8_lossy(&body)
            );
            Response::new(Full::new(Bytes::from(text)))
        })
    }))
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let chunked = b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = raw_exchange(proxy.addr, chunked).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("chunked:hello world"), "{response}");
    let sized =
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    let response = raw_exchange(proxy.addr, sized).await;
    assert!(response.ends_with(":hello"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_timeout_starts_only_after_the_whole_upload() {
    let backend = body_length_backend().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "",
        "response_timeout = \"300ms\"",
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 8\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // The upload takes about 1.2 s, four times the response timeout.
    for byte in b"12345678" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\n8"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_gets_408() {
    let backend = body_length_backend().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "idle_timeout = \"300ms\"",
        "",
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly a part")
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let status = proxy.app().pools().get("app").unwrap().status();
    assert_eq!(
        status.backends[0].failures, 0,
        "a client stall is not the backend's fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_is_retried_elsewhere_when_a_backend_breaks_but_a_post_is_not() {
    // Reads the request, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let breaking = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        }
    });
    let fine = Backend::named("fine", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(breaking, 1), (fine.addr, 1)],
        "",
        "",
    );
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..4 {
        assert_eq!(client.get("/").await, (200, "fine".to_string()));
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let post = Request::post("/")
            .header("host", "a")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        statuses.push(Client::connect(proxy.addr).await.send(post).await.0);
    }
    // Round robin: half the POSTs land on the breaking backend and are not replayed.
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_listener_address_refuses_to_start() {
    let backend = Backend::named("first", Duration::ZERO).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\n\
         protocol = \"http\"\npool = \"app\"\n[pools.app]\nbackends = [{{ addr = \"{}\" }}]\n",
        backend.addr
    );
    let config = fulcrum_core::config::Config::from_toml(&text).unwrap();
    let first = fulcrum::RunningApp::start(&config).unwrap();
    let second = fulcrum::RunningApp::start(&config);
    match second {
        Ok(app) => {
            app.shutdown();
            panic!("a second instance shared 127.0.0.1:{port} silently");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&format!("127.0.0.1:{port}"))
                    && message.contains("already in use"),
                "{message}"
            );
        }
    }
    // The first one still serves everything.
    let (status, body) = Client::connect(first.listener_addr("web").unwrap())
        .await
        .get("/")
        .await;
    assert_eq!((status, body.as_str()), (200, "first"));
    first.shutdown();
}
