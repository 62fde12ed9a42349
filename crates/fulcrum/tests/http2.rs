//! HTTP/2 from clients, end to end: curl over TLS (ALPN) and in clear text (prior knowledge)
//! next to HTTP/1.1 on the same port, h2load's streams balanced one by one over the pool,
//! the connection's limits and abuse defences (a raw frame writer sends what no client
//! library would), malformed requests stopped before any backend, GOAWAY on shutdown and the
//! idle timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::h2raw::*;
use common::pki::*;
use common::*;

/// A listener with TLS (ALPN h2 and http/1.1) for `a.test`.
fn tls_listener(pki: &Pki) -> String {
    let (cert, key) = pki.server("a", &["a.test"]);
    format!(
        "tls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}",
        toml_path(&cert),
        toml_path(&key)
    )
}

/// curl's answer as "HTTP-VERSION BODY".
fn curl(args: &[&str], url: &str, extra: &[String]) -> String {
    let curl = installed(&["/usr/bin/curl"], "curl");
    let out = Command::new(curl)
        .args(["-sS", "-w", " %{http_version}"])
        .args(args)
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?} {url}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http2_and_http11_on_one_port_in_clear_text_and_over_tls() {
    let backend = Backend::named("backend", Duration::ZERO).await;
    let plain = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let url = format!("http://127.0.0.1:{}/", plain.addr.port());
    let run = |args: &'static [&'static str], url: String| {
        tokio::task::spawn_blocking(move || curl(args, &url, &[]))
    };
    assert_eq!(
        run(&["--http2-prior-knowledge"], url.clone())
            .await
            .unwrap(),
        "backend 2"
    );
    assert_eq!(
        run(&["--http1.1"], url.clone()).await.unwrap(),
        "backend 1.1"
    );
    // An h2c upgrade request is answered in HTTP/1.1 (Upgrade is hop-by-hop and dropped).
    assert_eq!(run(&["--http2"], url).await.unwrap(), "backend 1.1");
    assert_eq!(
        connections_by_protocol(&plain).await,
        serde_json::json!({ "http1": 2, "http2": 1, "tcp": 0 })
    );

    let pki = Pki::new("h2-curl");
    let tls = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        &tls_listener(&pki),
        "",
    );
    let port = tls.addr.port();
    let url = format!("https://a.test:{port}/");
    let trust = vec![
        "--cacert".to_string(),
        pki.ca_path().display().to_string(),
        "--resolve".to_string(),
        format!("a.test:{port}:127.0.0.1"),
    ];
    for (args, expected) in [(["--http2"], "backend 2"), (["--http1.1"], "backend 1.1")] {
        let (url, trust) = (url.clone(), trust.clone());
        let got = tokio::task::spawn_blocking(move || curl(&args, &url, &trust))
            .await
            .unwrap();
        assert_eq!(got, expected, "{args:?}");
    }
    assert_eq!(backend.requests(), 5);
    assert_eq!(
        connections_by_protocol(&tls).await,
        serde_json::json!({ "http1": 1, "http2": 1, "tcp": 0 })
    );
}

/// The front listener's client connections by protocol, as the admin API counts them.
async fn connections_by_protocol(proxy: &Proxy) -> serde_json::Value {
    let admin = proxy.app().admin_addr().unwrap();
    let (status, body) = Client::connect(admin).await.get("/api/listeners").await;
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let front = &all["listeners"][0];
    assert_eq!(
        (&front["name"], &front["protocol"]),
        (&"front".into(), &"http".into())
    );
    front["connections"].clone()
}

/// h2load's summary line: (succeeded, failed).
fn h2load(args: &[&str], url: &str) -> (u64, u64) {
    let h2load = installed(&["/usr/bin/h2load"], "nghttp2-client");
    let out = Command::new(h2load).args(args).arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary from h2load: {out:?}"));
    let count = |word: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',') == word)
            .unwrap();
        words[at - 1].parse().unwrap()
    };
    (count("succeeded"), count("failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_is_balanced_on_its_own_under_h2load() {
    let backends = [
        Backend::named("a", Duration::ZERO).await,
        Backend::named("b", Duration::ZERO).await,
        Backend::named("c", Duration::ZERO).await,
    ];
    let list: Vec<(SocketAddr, u32)> = backends.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy("http", "round_robin", &list, "", "");
    let url = format!("http://127.0.0.1:{}/", proxy.addr.port());
    // One connection: its 300 streams go round the pool, not to one backend.
    let one = url.clone();
    let (ok, failed) =
        tokio::task::spawn_blocking(move || h2load(&["-c", "1", "-m", "32", "-n", "300"], &one))
            .await
            .unwrap();
    assert_eq!((ok, failed), (300, 0));
    let counts: Vec<usize> = backends.iter().map(Backend::requests).collect();
    assert_eq!(counts, vec![100, 100, 100], "round robin per stream");
    // 16 connections × 32 streams.
    let (ok, failed) =
        tokio::task::spawn_blocking(move || h2load(&["-c", "16", "-m", "32", "-n", "4800"], &url))
            .await
            .unwrap();
    assert_eq!((ok, failed), (4800, 0));
    let counts: Vec<usize> = backends.iter().map(Backend::requests).collect();
    assert_eq!(counts.iter().sum::<usize>(), 5100);
    assert!(counts.iter().all(|&n| n == 1700), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused_and_the_connection_carries_on() {
    let backend = Backend::named("slow", Duration::from_millis(300)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "http2 = { max_concurrent_streams = 100 }",
        "",
    );
    let mut raw = RawH2::connect(proxy.addr).await;
    let mut burst = Vec::new();
    for i in 0..200u32 {
        let headers = block(&get_fields("/", &[]));
        burst.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1 + 2 * i,
            &headers,
        ));
    }
    raw.send(&burst).await.unwrap();
    let frames = raw
        .frames_until(|seen| {
            seen.iter()
                .filter(|f| (f.kind == DATA && f.flags & END_STREAM != 0) || f.kind == RST_STREAM)
                .count()
                >= 200
        })
        .await;
    let refused = frames
        .iter()
        .filter(|f| f.kind == RST_STREAM && f.error_code() == REFUSED_STREAM)
        .count();
    let answered = frames
        .iter()
        .filter(|f| f.kind == DATA && f.flags & END_STREAM != 0)
        .count();
    assert_eq!((answered, refused), (100, 100));
    assert!(!frames.iter().any(|f| f.kind == GOAWAY), "{frames:?}");
    // The same connection takes a new stream.
    let headers = block(&get_fields("/after", &[]));
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 401, &headers))
        .await
        .unwrap();
    let after = raw
        .frames_until(|seen| {
            seen.iter()
                .any(|f| f.stream == 401 && f.flags & END_STREAM != 0)
        })
        .await;
    assert!(
        after.iter().any(|f| f.stream == 401 && f.kind == HEADERS),
        "{after:?}"
    );
    assert_eq!(backend.requests(), 101);
}

/// Another client's request, over HTTP/2 with the `h2` crate: fulcrum still serves it.
async fn h2_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://h2.test{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_sent_away_and_other_clients_are_served() {
    let backend = Backend::named("backend", Duration::from_millis(50)).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut raw = RawH2::connect(proxy.addr).await;
    let mut flood = Vec::new();
    for i in 0..5000u32 {
        let id = 1 + 2 * i;
        flood.extend(frame(
            HEADERS,
            END_HEADERS,
            id,
            &block(&get_fields("/", &[])),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The server may close before it has read it all.
    let _ = raw.send(&flood).await;
    let frames = raw
        .frames_until(|seen| seen.iter().any(|f| f.kind == GOAWAY))
        .await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    assert_eq!(
        goaway.map(Frame::error_code),
        Some(ENHANCE_YOUR_CALM),
        "{frames:?}"
    );
    assert!(raw.next_frame().await.is_none(), "closed after GOAWAY");
    assert!(backend.requests() < 5000, "{}", backend.requests());
    assert_eq!(h2_get(proxy.addr, "/").await, (200, "backend".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_continuation_flood_ends_the_connection() {
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut raw = RawH2::connect(proxy.addr).await;
    let first = block(&get_fields("/", &[]));
    raw.send(&frame(HEADERS, 0, 1, &first)).await.unwrap();
    // 16 MiB of header fields in CONTINUATION frames that never end the block: the
    // connection must end long before (the header list limit is 64 KiB).
    let filler = block(&[("x-filler", &"f".repeat(4000))]);
    let continuation = frame(CONTINUATION, 0, 1, &filler);
    let mut sent = 0usize;
    while sent < 16 << 20 {
        if raw.send(&continuation).await.is_err() {
            break;
        }
        sent += continuation.len();
        if sent % (256 << 10) < continuation.len() {
            tokio::task::yield_now().await;
        }
    }
    let frames = raw.frames_until(|_| false).await;
    // Sent away with an error (the bytes already in flight are the kernel's buffers).
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    assert!(
        sent < 16 << 20 && goaway.is_some_and(|f| f.error_code() != 0),
        "sent {sent} bytes of CONTINUATION: {frames:?}"
    );
    assert_eq!(backend.requests(), 0);
    assert_eq!(h2_get(proxy.addr, "/").await, (200, "backend".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_trickled_past_the_header_timeout_ends_the_connection() {
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "header_timeout = \"400ms\"\nidle_timeout = \"30s\"",
        "",
    );
    let mut raw = RawH2::connect(proxy.addr).await;
    let opened = std::time::Instant::now();
    raw.send(&frame(HEADERS, 0, 1, &block(&get_fields("/", &[]))))
        .await
        .unwrap();
    // One CONTINUATION frame, a byte every 50 ms: it would take 5 s, a trickle no frame
    // count limit sees.
    let slow = "a".repeat(100);
    let filler = frame(CONTINUATION, 0, 1, &block(&[("x-slow", &slow)]));
    let mut sent = 0;
    for byte in &filler {
        if raw.send(std::slice::from_ref(byte)).await.is_err() || raw.closed_now().await {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sent < filler.len(),
        "the connection outlived a CONTINUATION frame trickled over 5 s"
    );
    // fulcrum's deadline starts when it reads the HEADERS frame, after `opened`.
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(400),
        "closed after {lasted:?} ({sent} bytes), before the header timeout"
    );
    assert_eq!(backend.requests(), 0);
    // Other connections are served.
    assert_eq!(h2_get(proxy.addr, "/").await, (200, "backend".to_string()));
    // A head in several frames sent at once is whole in time.
    let mut raw = RawH2::connect(proxy.addr).await;
    let mut head = frame(HEADERS, END_STREAM, 1, &block(&get_fields("/", &[])));
    head.extend(frame(
        CONTINUATION,
        END_HEADERS,
        1,
        &block(&[("x-more", "b")]),
    ));
    raw.send(&head).await.unwrap();
    let frames = raw
        .frames_until(|seen| seen.iter().any(|f| f.kind == HEADERS && f.stream == 1))
        .await;
    let response = frames.iter().find(|f| f.kind == HEADERS && f.stream == 1);
    assert!(response.is_some(), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_reach_the_backend() {
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    // Stream 1's whole request in one HEADERS frame, or its head and then one DATA frame.
    let request =
        |fields: &[(&str, &str)]| frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(fields));
    let get = |extra: &[(&str, &str)]| request(&get_fields("/", extra));
    let post_with = |length: &str, data: &[u8]| {
        let mut fields = get_fields("/", &[("content-length", length)]);
        fields[0] = (":method", "POST");
        let mut bytes = frame(HEADERS, END_HEADERS, 1, &block(&fields));
        bytes.extend(frame(DATA, END_STREAM, 1, data));
        bytes
    };
    let big = block(&[("x-big", &"b".repeat(40_000))]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "connection-specific header",
            get(&[("connection", "keep-alive")]),
        ),
        ("uppercase header name", get(&[("X-Upper", "1")])),
        (
            "missing :path",
            request(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "h2.test"),
            ]),
        ),
        (
            "body longer than Content-Length",
            post_with("3", b"too long"),
        ),
        (
            "body shorter than Content-Length",
            post_with("30", b"short"),
        ),
        ("TE other than trailers", get(&[("te", "gzip")])),
        ("header list over max_header_list_bytes", {
            let mut bytes = frame(HEADERS, END_STREAM, 1, &block(&get_fields("/", &[])));
            bytes.extend(frame(CONTINUATION, 0, 1, &big));
            bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &big));
            bytes
        }),
        (
            "Host contradicting :authority",
            get(&[("host", "elsewhere.test")]),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = RawH2::connect(proxy.addr).await;
        raw.send(&bytes).await.unwrap();
        let frames = raw
            .frames_until(|seen| {
                seen.iter().any(|f| {
                    (f.stream == 1 && (f.kind == RST_STREAM || f.kind == HEADERS))
                        || f.kind == GOAWAY
                })
            })
            .await;
        // A stream error, or an answer that is not the backend's.
        let refused = frames.iter().any(|f| {
            (f.kind == RST_STREAM && f.error_code() != 0)
                || f.kind == GOAWAY
                || (f.kind == HEADERS && status_of(f) != Some(200))
        });
        assert!(refused, "{what}: {frames:?}");
    }
    assert_eq!(backend.requests(), 0);
}

/// The status of a response HEADERS frame when HPACK's static table has it (200, 204, 206,
/// 304, 400, 404, 500: the first field, fully indexed); `None` for any other.
fn status_of(f: &Frame) -> Option<u16> {
    let statuses = [200, 204, 206, 304, 400, 404, 500];
    let index = f.payload.first()?.checked_sub(0x88)?;
    statuses.get(usize::from(index)).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_lets_the_open_stream_finish() {
    let backend = Backend::named("slow", Duration::from_millis(500)).await;
    let mut proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get("http://h2.test/slow").body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let app = proxy.app.take().unwrap();
    let stopping = tokio::task::spawn_blocking(move || app.shutdown());
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let chunk = body.data().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"slow");
    // GOAWAY came: the connection ends, and no new stream can start on it.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    let again = http::Request::get("http://h2.test/").body(()).unwrap();
    assert!(client.send_request(again, true).is_err());
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "idle_timeout = \"300ms\"",
        "",
    );
    let mut raw = RawH2::connect(proxy.addr).await;
    let headers = block(&get_fields("/", &[]));
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &headers))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let frames = raw.frames_until(|_| false).await;
    let idle = started.elapsed();
    assert!(frames.iter().any(|f| f.kind == HEADERS), "{frames:?}");
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    assert!(goaway.is_some_and(|f| f.error_code() == 0), "{frames:?}");
    assert!(
        idle >= Duration::from_millis(300) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
}

/// Sends `request` with `body` (as the window allows) over one HTTP/2 connection; returns
/// the status, the response headers and the body.
async fn h2_exchange(
    addr: SocketAddr,
    request: http::Request<()>,
    body: &[u8],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, mut upload) = client.send_request(request, body.is_empty()).unwrap();
    let sending = async move {
        let mut rest = body;
        while !rest.is_empty() {
            upload.reserve_capacity(rest.len());
            let capacity = loop {
                match upload.capacity() {
                    0 => std::future::poll_fn(|cx| upload.poll_capacity(cx)).await,
                    n => break n,
                };
            };
            let n = capacity.min(rest.len());
            upload
                .send_data(Bytes::copy_from_slice(&rest[..n]), n == rest.len())
                .unwrap();
            rest = &rest[n..];
        }
    };
    let receiving = async move {
        let response = response.await.unwrap();
        let (parts, mut received) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.unwrap();
            let _ = received.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        (parts.status.as_u16(), parts.headers, bytes)
    };
    let ((), answer) = tokio::join!(sending, receiving);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_cross_between_http2_clients_and_http11_backends_intact() {
    let counter = body_length_backend().await;
    let big = Backend::with_handler(std::sync::Arc::new(|req| {
        Box::pin(async move {
            let size: usize = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
            let body = (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
            hyper::Response::builder()
                .header("x-backend", "big")
                .body(http_body_util::Full::new(Bytes::from(body)))
                .unwrap()
        })
    }))
    .await;
    let upload = start_proxy("http", "round_robin", &[(counter.addr, 1)], "", "");
    let payload: Vec<u8> = (0..1_500_000u32).map(|i| i as u8).collect();
    // No Content-Length: the backend gets it chunked, whole.
    let request = http::Request::post("http://h2.test/up").body(()).unwrap();
    let (status, _, body) = h2_exchange(upload.addr, request, &payload).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (200, "1500000")
    );
    let seen = counter.last_headers();
    assert_eq!(seen["host"], "h2.test");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    // With Content-Length.
    let request = http::Request::put("http://h2.test/up")
        .header("content-length", "100000")
        .body(())
        .unwrap();
    let (status, _, body) = h2_exchange(upload.addr, request, &payload[..100_000]).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (200, "100000")
    );
    assert_eq!(counter.last_headers()["content-length"], "100000");

    // A download larger than every window: flow control paces it, nothing is lost.
    let download = start_proxy("http", "round_robin", &[(big.addr, 1)], "", "");
    let request = http::Request::get("http://h2.test/down?2000000")
        .body(())
        .unwrap();
    let (status, headers, body) = h2_exchange(download.addr, request, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-backend"], "big");
    assert_eq!(headers["content-length"], "2000000");
    assert!(!headers.contains_key("connection"));
    assert_eq!(body.len(), 2_000_000);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // HEAD: the length a GET would get, no body.
    let request = http::Request::head("http://h2.test/down?1000")
        .body(())
        .unwrap();
    let (status, headers, body) = h2_exchange(download.addr, request, &[]).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulcrums_own_errors_reach_http2_clients_as_responses() {
    let gone = dead_addr().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(gone, 1)],
        "",
        "connect_timeout = \"200ms\"",
    );
    let request = http::Request::get("http://h2.test/").body(()).unwrap();
    let (status, headers, body) = h2_exchange(proxy.addr, request, &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "could not connect to a backend\n"
    );
    // A request line over the listener's limit: 414, as over HTTP/1.1.
    let long = format!("http://h2.test/{}", "a".repeat(9000));
    let request = http::Request::get(long).body(()).unwrap();
    let (status, _, _) = h2_exchange(proxy.addr, request, &[]).await;
    assert_eq!(status, 414);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_pool_serves_both_kinds_of_client_over_multiplexed_connections() {
    let (backend, seen) = h2_backend(10, Duration::from_millis(5), None).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend, 1)],
        "",
        "protocol = \"http2\"",
    );
    let url = format!("http://127.0.0.1:{}/path?q=1", proxy.addr.port());
    // HTTP/1.1 client: chunked, since the backend gave no length; its trailer comes with the
    // last chunk (curl shows trailers with the headers, -i).
    let h1 = url.clone();
    let out = tokio::task::spawn_blocking(move || curl(&["--http1.1", "-i", "--raw"], &h1, &[]))
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("transfer-encoding: chunked"), "{out}");
    assert!(out.contains("x-served-by: h2"), "{out}");
    assert!(out.contains("h2 /path"), "{out}");
    let headers = seen.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(!headers.contains_key("host"), "Host travels as :authority");
    // HTTP/2 client.
    let h2 = url.clone();
    let out = tokio::task::spawn_blocking(move || curl(&["--http2-prior-knowledge"], &h2, &[]))
        .await
        .unwrap();
    assert_eq!(out, "h2 /path 2");
    // Requests of one client connection (one worker): one backend connection, reused.
    let before = seen.connections.load(Ordering::SeqCst);
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..5 {
        assert_eq!(client.get("/again").await, (200, "h2 /again".to_string()));
    }
    let opened = seen.connections.load(Ordering::SeqCst) - before;
    assert!(
        opened <= 1,
        "{opened} new backend connections for 5 requests"
    );
    // 4 clients × 32 streams against 10 streams per backend connection: more connections
    // open, none carries more than 10, and nothing fails.
    let (ok, failed) =
        tokio::task::spawn_blocking(move || h2load(&["-c", "4", "-m", "32", "-n", "800"], &url))
            .await
            .unwrap();
    assert_eq!((ok, failed), (800, 0));
    let connections = seen.connections.load(Ordering::SeqCst);
    assert!(
        (2..=16).contains(&connections),
        "{connections} backend connections"
    );
    assert!(seen.most_open.load(Ordering::SeqCst) <= 10);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 807);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_sending_goaway_gets_no_new_streams_and_nothing_fails() {
    let (backend, seen) = h2_backend(100, Duration::from_millis(2), Some(20)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend, 1)],
        "",
        "protocol = \"http2\"",
    );
    let url = format!("http://127.0.0.1:{}/", proxy.addr.port());
    let (ok, failed) =
        tokio::task::spawn_blocking(move || h2load(&["-c", "4", "-m", "8", "-n", "400"], &url))
            .await
            .unwrap();
    assert_eq!((ok, failed), (400, 0));
    // Each GOAWAY moved the next streams to a new connection (the `h2` crate's graceful
    // GOAWAY still takes the streams already on their way, so a connection carries a few
    // more than 20).
    let connections = seen.connections.load(Ordering::SeqCst);
    assert!(
        connections >= 5,
        "{connections} connections for 400 streams"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_reaches_an_http2_client_before_it_sends_the_body() {
    let counter = body_length_backend().await;
    let proxy = start_proxy("http", "round_robin", &[(counter.addr, 1)], "", "");
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post("http://h2.test/upload")
        .header("expect", "100-continue")
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (mut response, mut upload) = client.send_request(request, false).unwrap();
    // Nothing of the body yet: the backend's 100 Continue comes first.
    let informational = tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| response.poll_informational(cx)),
    )
    .await
    .expect("a 100 Continue within 5 s");
    let informational = informational.unwrap().unwrap();
    assert_eq!(informational.status(), 100);
    upload
        .send_data(Bytes::from_static(b"hello"), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let chunk = body.data().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_pool_is_probed_in_http2() {
    let (backend, seen) = h2_backend(100, Duration::ZERO, None).await;
    let pool =
        "protocol = \"http2\"\n[pools.app.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
                readiness = { path = \"/ready\" }\n";
    let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", pool);
    let status = proxy
        .wait_for(Duration::from_secs(5), "a readiness probe answered", |s| {
            s["backends"][0]["last_probe"]["check"] == "readiness"
        })
        .await;
    let probe = &status["backends"][0]["last_probe"];
    assert_eq!(
        (&probe["passed"], &probe["result"]),
        (&true.into(), &"status 200".into()),
        "{status:#}"
    );
    assert_eq!(backend_state(&status, backend), "active");
    assert!(seen.requests.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_from_an_http2_backend_reach_clients_that_know_1xx() {
    let (backend, _) = h2_backend(100, Duration::from_millis(20), None).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend, 1)],
        "",
        "protocol = \"http2\"",
    );
    // HTTP/1.1: the 103 head, then the response.
    let out = raw_exchange(
        proxy.addr,
        b"GET /early HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\n\r\n9\r\nh2 /early\r\n0\r\n"), "{out}");
    // HTTP/1.0 has no 1xx: only the response.
    let out = raw_exchange(proxy.addr, b"GET /early HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(!out.contains("103"), "{out}");
    // HTTP/2: a HEADERS frame of its own before the response's.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get("http://a.test/early").body(()).unwrap();
    let (mut response, _) = client.send_request(request, true).unwrap();
    let hints = tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| response.poll_informational(cx)),
    )
    .await
    .expect("103 within 5 s")
    .expect("an informational head")
    .unwrap();
    assert_eq!(hints.status(), 103);
    assert_eq!(hints.headers()["link"], "</style.css>; rel=preload");
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let chunk = body.data().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"h2 /early");
}
