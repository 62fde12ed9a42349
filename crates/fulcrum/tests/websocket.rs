//! WebSockets through fulcrum, with the tools an application would use: Python's
//! `websockets` (Debian python3-websockets) as the backend server and as the client
//! (`tests/ws/server.py`, `tests/ws/client.py`), and raw bytes where the handshake's rules are
//! the point. A valid handshake is forwarded with its `Upgrade`; only a `101` turns the
//! connection into a tunnel; any other answer leaves it HTTP; an open WebSocket counts as in
//! flight for `least_conn` for its whole life; a silent one is closed after the pool's
//! `websocket.idle_timeout`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::cli::free_port;
use common::ws::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_through_fulcrum_echoes_both_ways_and_closes_cleanly() {
    let backend = ws_backend("ws-1");
    let proxy = start_proxy("http", "least_conn", &[(backend.addr, 1)], "", "");
    let lines = client(proxy.addr, &["echo"]).await;
    let greeting = &lines[0]["greeting"];
    assert_eq!(greeting["backend"], "ws-1");
    assert_eq!(greeting["path"], "/chat");
    // The backend saw a WebSocket handshake (fulcrum's own Upgrade and Connection) and who
    // the client is.
    assert_eq!(greeting["upgrade"], "websocket");
    assert_eq!(greeting["connection"], "upgrade");
    assert_eq!(greeting["x_forwarded_for"], "127.0.0.1");
    // fulcrum's id of the connection, and only that: the client's forged one is dropped.
    let ids = greeting["connection_id"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{greeting}");
    let id = ids[0].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(lines[1]["text"], "ping");
    assert_eq!(lines[2]["binary_echoed"], true, "512 KiB binary message");
    assert_eq!(lines[3]["close_code"], 1000, "a clean close handshake");
    // The handshake was counted as a request that got a 1xx, and nothing is left in flight.
    let status = proxy
        .wait_for(Duration::from_secs(5), "nothing in flight", |s| {
            s["backends"][0]["in_flight"] == 0
        })
        .await;
    assert_eq!(status["backends"][0]["requests"], 1);
    assert_eq!(status["backends"][0]["failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fragmented_and_control_messages_and_close_codes_pass_both_ways() {
    let backend = ws_backend("ws-msg");
    let log = std::env::temp_dir().join(format!("fulcrum-ws-log-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let access_log = format!(
        "access_log = {{ format = \"json\", path = \"{}\" }}",
        log.display()
    );
    let proxy = start_proxy("http", "least_conn", &[(backend.addr, 1)], &access_log, "");
    let lines = client(proxy.addr, &["messages"]).await;
    assert_eq!(lines[0]["greeting"]["backend"], "ws-msg");
    assert_eq!(lines[1]["mib_echoed"], true, "a 1 MiB message: {lines:?}");
    assert_eq!(
        lines[2]["fragmented"], "fragmented",
        "three fragments, one message"
    );
    assert_eq!(
        lines[3]["pong"], true,
        "a ping answered by the backend's pong"
    );
    // The backend's close code and reason reach the client, the client's the backend.
    assert_eq!(lines[4]["server_close"], 4002, "{lines:?}");
    assert_eq!(lines[4]["reason"], "server bye");
    assert_eq!(lines[5]["client_close"]["code"], 4001, "{lines:?}");
    assert_eq!(lines[5]["client_close"]["reason"], "client bye");
    // One access-log line per WebSocket, written when it ended, its bytes counting what
    // went through the tunnel both ways: the first carried the 1 MiB message each way.
    let mut logged = Vec::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if logged.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logged.len(), 3, "{logged:?}");
    let first: serde_json::Value = serde_json::from_str(&logged[0]).unwrap();
    assert_eq!(first["status"], 101, "{first}");
    for side in ["bytes_in", "bytes_out"] {
        let n = first[side].as_u64().unwrap();
        assert!(
            (1 << 20..(1 << 20) + 4096).contains(&n),
            "{side} {n}: {first}"
        );
    }
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websockets_spread_evenly_over_least_conn_backends() {
    let names = ["ws-1", "ws-2", "ws-3", "ws-4"];
    let backends: Vec<WsBackend> = names.iter().map(|n| ws_backend(n)).collect();
    let weighted: Vec<(SocketAddr, u32)> = backends.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy("http", "least_conn", &weighted, "", "");
    // Handshakes 50 at a time: picks race each other as they would under real load.
    let holder = Holder::open_in_batches(proxy.addr, 1000, 50).await;
    let spread = tally(holder.ids().into_iter().map(|(_, backend)| backend));
    assert_eq!(spread.values().sum::<usize>(), 1000, "{spread:?}");
    for name in names {
        let n = spread.get(name).copied().unwrap_or(0);
        assert!(
            (225..=275).contains(&n),
            "{name} holds {n}, not 250 ± 10 %: {spread:?}"
        );
    }
    // And fulcrum counts them where least_conn looks: in flight, per backend.
    let status = proxy.status().await;
    for b in status["backends"].as_array().unwrap() {
        let name = names[backends
            .iter()
            .position(|w| w.addr.to_string() == b["addr"])
            .unwrap()];
        assert_eq!(
            b["in_flight"].as_u64(),
            spread.get(name).map(|n| *n as u64),
            "{status:#}"
        );
    }
    assert_eq!(holder.close(), 1000);
}

/// `fulcrum_websockets_open` of the listener `front`, as `/metrics` shows it.
async fn open_gauge(admin: SocketAddr) -> f64 {
    let (code, text) = Client::connect(admin).await.get("/metrics").await;
    assert_eq!(code, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("fulcrum_websockets_open{listener=\"front\"} "))
        .unwrap_or_else(|| panic!("no fulcrum_websockets_open in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_counts_an_open_websocket_as_in_flight_for_its_whole_life() {
    let (a, b) = (ws_backend("ws-a"), ws_backend("ws-b"));
    let proxy = start_proxy("http", "least_conn", &[(a.addr, 1), (b.addr, 1)], "", "");
    let holder = Holder::open(proxy.addr, 6).await;
    let lines = holder.lines.clone();
    let names = tally(
        lines
            .iter()
            .filter_map(|l| l["greeting"]["backend"].as_str().map(str::to_string)),
    );
    assert_eq!(names.get("ws-a"), Some(&3), "{names:?}");
    assert_eq!(names.get("ws-b"), Some(&3), "{names:?}");
    // The registry lists each by the id its backend got, on that backend.
    let admin = proxy.app().admin_addr().unwrap();
    let addr_of = |name: &str| if name == "ws-a" { a.addr } else { b.addr };
    let (code, body) = Client::connect(admin)
        .await
        .get("/api/ws/connections")
        .await;
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["count"], 6, "{listed:#}");
    for line in lines.iter().filter(|l| l.get("greeting").is_some()) {
        let id = line["greeting"]["connection_id"][0].as_str().unwrap();
        let (code, body) = Client::connect(admin)
            .await
            .get(&format!("/api/ws/connections/{id}"))
            .await;
        assert_eq!(code, 200, "{id}: {body}");
        let one: serde_json::Value = serde_json::from_str(&body).unwrap();
        let name = line["greeting"]["backend"].as_str().unwrap();
        assert_eq!(one["backend"], addr_of(name).to_string(), "{one:#}");
        assert_eq!(one["pool"], "app");
        assert_eq!(one["listener"], "front");
        assert_eq!(
            one["client"].as_str().unwrap().split(':').next(),
            Some("127.0.0.1")
        );
    }
    let (_, body) = Client::connect(admin)
        .await
        .get(&format!("/api/ws/connections?backend={}", a.addr))
        .await;
    let on_a: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(on_a["count"], 3, "{on_a:#}");
    let (code, _) = Client::connect(admin)
        .await
        .get("/api/ws/connections?colour=blue")
        .await;
    assert_eq!(code, 400);
    assert_eq!(open_gauge(admin).await, 6.0);

    // Six open sockets, three on each backend, all in flight while they stay open.
    let status = proxy.status().await;
    for backend in status["backends"].as_array().unwrap() {
        assert_eq!(backend["in_flight"], 3, "{status:#}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = proxy.status().await;
    for backend in still["backends"].as_array().unwrap() {
        assert_eq!(backend["in_flight"], 3, "a moment later: {still:#}");
    }
    assert_eq!(holder.close(), 6);
    proxy
        .wait_for(
            Duration::from_secs(5),
            "closed sockets leave in-flight",
            |s| {
                s["backends"]
                    .as_array()
                    .is_some_and(|list| list.iter().all(|b| b["in_flight"] == 0))
            },
        )
        .await;
    let (_, body) = Client::connect(admin)
        .await
        .get("/api/ws/connections")
        .await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(open_gauge(admin).await, 0.0);
    assert_eq!(
        listed["count"], 0,
        "closed sockets leave the registry: {listed:#}"
    );
    let gone = lines[0]["greeting"]["connection_id"][0].as_str().unwrap();
    let (code, _) = Client::connect(admin)
        .await
        .get(&format!("/api/ws/connections/{gone}"))
        .await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_is_closed_after_the_pools_idle_timeout() {
    let backend = ws_backend("ws-idle");
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "",
        "websocket = { idle_timeout = \"1s\" }",
    );
    let lines = client(proxy.addr, &["idle", "2.5"]).await;
    assert_eq!(lines[0]["greeting"]["backend"], "ws-idle");
    assert_eq!(lines[1]["open"], false, "{lines:?}");
    // The socket lived over a second, but its request lasted until the 101: the tunnel
    // does not count as request latency (histograms, p2c_ewma, the auto drain timeout).
    let admin = proxy.app().admin_addr().unwrap();
    let (_, metrics) = Client::connect(admin).await.get("/metrics").await;
    let sum: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "fulcrum_http_request_duration_seconds_sum{listener=\"front\",pool=\"app\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no request duration in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(sum > 0.0 && sum < 0.5, "request duration sum {sum}");
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A handshake for `/ws` with `extra` header lines, and `close` asked when `last`.
fn handshake(method: &str, extra: &str, last: bool) -> String {
    format!(
        "{method} /ws HTTP/1.1\r\nhost: chat\r\n{extra}{}\r\n",
        if last { "connection: close\r\n" } else { "" }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_checked_and_a_refused_one_leaves_the_connection_in_http() {
    let plain = Backend::named("plain", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(plain.addr, 1)], "", "");
    let valid = format!(
        "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n"
    );

    // A valid handshake goes to the backend as one; it answers 200, not 101: the next bytes
    // are a request of their own, answered as HTTP, never tunnelled.
    let two = format!(
        "{}GET /next HTTP/1.1\r\nhost: chat\r\nconnection: close\r\n\r\n",
        handshake("GET", &valid, false)
    );
    let answer = raw_exchange(proxy.addr, two.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("upgrade"), "{answer}");
    assert_eq!(plain.requests(), 2);

    // What the backend saw of a handshake: fulcrum's Upgrade and Connection, the key and
    // version passed on.
    let _ = raw_exchange(proxy.addr, handshake("GET", &valid, true).as_bytes()).await;
    let seen = plain.last_headers();
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["connection"], "upgrade");
    assert_eq!(seen["sec-websocket-key"], KEY);
    assert_eq!(seen["sec-websocket-version"], "13");

    // Upgrade without `Connection: upgrade` is no handshake (RFC 9110 §7.8): served as HTTP,
    // the hop-by-hop Upgrade dropped.
    let no_token =
        format!("upgrade: websocket\r\nsec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n");
    let answer = raw_exchange(proxy.addr, handshake("GET", &no_token, true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!plain.last_headers().contains_key("upgrade"));

    // Broken handshakes never reach the backend.
    let before = plain.requests();
    for (what, request, status) in [
        (
            "no key",
            handshake(
                "GET",
                "upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n",
                false,
            ),
            "400",
        ),
        ("POST", handshake("POST", &valid, false), "400"),
        (
            "version 8",
            handshake("GET", &valid.replace("version: 13", "version: 8"), false),
            "426",
        ),
    ] {
        let answer = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        if status == "426" {
            let lower = answer.to_ascii_lowercase();
            assert!(
                lower.contains("\r\nsec-websocket-version: 13\r\n"),
                "{answer}"
            );
            assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{answer}");
        }
    }
    assert_eq!(
        plain.requests(),
        before,
        "a broken handshake reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_to_a_request_that_did_not_ask_for_one_is_a_bad_gateway() {
    // A backend that switches protocols whatever it is asked.
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let rogue = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0u8; 1024];
        let _ = std::io::Read::read(&mut stream, &mut head);
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nsmuggled")
            .unwrap();
    });
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(SocketAddr::from(([127, 0, 0, 1], port)), 1)],
        "",
        "",
    );
    let answer = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(!answer.contains("smuggled"), "{answer}");
    rogue.join().unwrap();
}

/// Starts the flooding client; resolves to its lines once the connection has closed.
fn flood_client(proxy: SocketAddr) -> tokio::task::JoinHandle<Vec<serde_json::Value>> {
    tokio::spawn(async move { client(proxy, &["flood"]).await })
}

/// The in-flight count of the backend at `addr` in an admin status document.
fn in_flight(status: &serde_json::Value, addr: SocketAddr) -> u64 {
    status["backends"]
        .as_array()
        .and_then(|list| list.iter().find(|b| b["addr"] == addr.to_string()))
        .and_then(|b| b["in_flight"].as_u64())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_drain_tells_clients_to_go_away_between_frames_before_the_deadline() {
    let (drained, other) = (ws_backend("ws-drain"), ws_backend("ws-other"));
    let proxy = start_proxy(
        "http",
        "least_conn",
        &[(drained.addr, 1), (other.addr, 1)],
        "",
        "drain_timeout = \"4s\"\nwebsocket = { close_on_drain = true }",
    );
    let admin = proxy.app().admin_addr().unwrap();
    let call = |action: &str, addr: SocketAddr| {
        let path = format!("/api/pools/app/backends/{addr}/{action}");
        async move {
            let (code, body) = Client::connect(admin).await.call("POST", &path, "").await;
            assert_eq!(code, 200, "{path}: {body}");
        }
    };
    // Three clients reading a stream of frames, all on the backend to drain (the other one
    // is out of rotation while they connect).
    call("disable", other.addr).await;
    let flooded: Vec<_> = (0..3)
        .map(|_| {
            let proxy = proxy.addr;
            tokio::spawn(async move { client(proxy, &["flood", "reconnect"]).await })
        })
        .collect();
    proxy
        .wait_for(Duration::from_secs(10), "the WebSockets open", |s| {
            in_flight(s, drained.addr) == 3
        })
        .await;
    call("enable", other.addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = tokio::time::Instant::now();
    call("drain", drained.addr).await;
    for flood in flooded {
        let lines = flood.await.unwrap();
        let took = began.elapsed();
        assert_eq!(lines[0]["greeting"]["backend"], "ws-drain");
        // 1001 with fulcrum's reason, after frames of every size were read whole, half the
        // 4 s timeout before the deadline; then a reconnection that lands on the other
        // backend.
        let end = &lines[lines.len() - 2];
        assert_eq!(end["code"], 1001, "{lines:?}");
        assert_eq!(end["reason"], "the backend is draining");
        assert!(end["received"].as_u64().unwrap() > 20, "{end}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(3900),
            "closed {took:?} after the drain began"
        );
        let again = &lines[lines.len() - 1];
        assert_eq!(again["reconnected"]["backend"], "ws-other", "{lines:?}");
    }
    // The clients left before the deadline: the drain completed, nothing was cut.
    let status = proxy
        .wait_for(Duration::from_secs(5), "the drain complete", |s| {
            backend_state(s, drained.addr) == "drained"
        })
        .await;
    assert_eq!(status["drain_failures"], 0, "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_drain_tells_clients_to_go_away_when_fulcrum_stops() {
    let backend = ws_backend("ws-stop");
    let mut proxy = start_proxy(
        "http",
        "least_conn",
        &[(backend.addr, 1)],
        "",
        "websocket = { close_on_drain = true }",
    );
    let flooded = flood_client(proxy.addr);
    proxy
        .wait_for(Duration::from_secs(10), "the WebSocket open", |s| {
            s["backends"][0]["in_flight"] == 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = proxy.app.take().unwrap();
    let stopped = tokio::task::spawn_blocking(move || app.shutdown());
    let lines = flooded.await.unwrap();
    let end = lines.last().unwrap();
    assert_eq!(end["code"], 1001, "{lines:?}");
    assert_eq!(end["reason"], "fulcrum is stopping");
    assert!(end["received"].as_u64().unwrap() > 20, "{end}");
    stopped.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_close_on_drain_a_drain_timeout_cuts_the_websocket() {
    let backend = ws_backend("ws-cut");
    let proxy = start_proxy(
        "http",
        "least_conn",
        &[(backend.addr, 1)],
        "",
        "drain_timeout = \"1s\"",
    );
    let flooded = flood_client(proxy.addr);
    proxy
        .wait_for(Duration::from_secs(10), "the WebSocket open", |s| {
            s["backends"][0]["in_flight"] == 1
        })
        .await;
    let admin = proxy.app().admin_addr().unwrap();
    let path = format!("/api/pools/app/backends/{}/drain", backend.addr);
    let (code, body) = Client::connect(admin).await.call("POST", &path, "").await;
    assert_eq!(code, 200, "{body}");
    let lines = flooded.await.unwrap();
    let end = lines.last().unwrap();
    assert_eq!(
        end["code"],
        serde_json::Value::Null,
        "no close frame, a cut: {lines:?}"
    );
    let status = proxy
        .wait_for(Duration::from_secs(5), "the drain over", |s| {
            s["backends"][0]["state"] == "drained"
        })
        .await;
    assert_eq!(status["drain_failures"], 1, "{status:#}");
}
