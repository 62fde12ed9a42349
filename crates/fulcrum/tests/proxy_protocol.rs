//! The PROXY protocol through the running proxy: headers in (v1 and v2, from allowed and
//! other sources, malformed, in pieces, too late) on HTTP and TCP listeners, with curl's
//! `--haproxy-protocol` as one real sender; and headers out to backends of pools that ask for
//! them, on L7 (one connection per request) and L4.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::recorder::Recorder;
use common::*;
use fulcrum_core::proxy_protocol::{self, Header, Parsed, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ALLOWED: [u8; 4] = [127, 0, 0, 2];
const OTHER: [u8; 4] = [127, 0, 0, 3];

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A v2 header for `source` → `destination`.
fn v2(source: &str, destination: &str) -> Vec<u8> {
    let mut out = Vec::new();
    proxy_protocol::write(&mut out, Version::V2, addr(source), addr(destination));
    out
}

/// What a client sends, write by write.
type Pieces<'a> = Vec<&'a [u8]>;

const GET: &[u8] = b"GET /pp HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";

/// Sends `pieces` (with a pause between them) from `source`; the answer and whether the
/// backend got a request, with its head.
async fn exchange(
    proxy: SocketAddr,
    backend: &Recorder,
    source: [u8; 4],
    pieces: &[&[u8]],
) -> (String, Option<String>) {
    let before = backend.requests().len();
    let mut stream = connect_from(source, proxy).await;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        if stream.write_all(piece).await.is_err() {
            break;
        }
    }
    let answer = read_to_close(&mut stream).await;
    let head = backend.requests().get(before).map(|r| r.head.clone());
    (answer, head)
}

fn http_proxy(backend: &Recorder, listener_extra: &str) -> Proxy {
    start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        listener_extra,
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_listener_serves_the_client_a_proxy_header_names_and_only_from_allowed_sources() {
    let backend = Recorder::start().await;
    let proxy = http_proxy(
        &backend,
        "proxy_protocol = { allow = [\"127.0.0.2\"], timeout = \"1s\" }",
    );
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n".as_slice();
    let v2_ipv6 = v2("[2001:db8::7]:5555", "[2001:db8::1]:443");
    let v2_local = {
        let mut local = proxy_protocol::V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        local
    };
    let in_pieces = v2("198.51.100.9:1", "192.0.2.1:80");
    let joined = [v1, GET].concat();
    let served: &[(&str, Pieces, &str)] = &[
        ("v1", vec![v1, GET], "x-forwarded-for: 203.0.113.7"),
        (
            "v1 and the request in one write",
            vec![&joined],
            "x-forwarded-for: 203.0.113.7",
        ),
        (
            "v2 with IPv6",
            vec![&v2_ipv6, GET],
            "x-forwarded-for: 2001:db8::7",
        ),
        (
            "v2 LOCAL: the socket's address",
            vec![&v2_local, GET],
            "x-forwarded-for: 127.0.0.2",
        ),
        (
            "v2 in three pieces",
            vec![&in_pieces[..5], &in_pieces[5..20], &in_pieces[20..], GET],
            "x-forwarded-for: 198.51.100.9",
        ),
    ];
    for (what, pieces, line) in served {
        let (answer, head) = exchange(proxy.addr, &backend, ALLOWED, pieces).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{what}: {answer}");
        let head = head.unwrap_or_else(|| panic!("{what}: nothing reached the backend"));
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{what}: {head}");
    }
    let refused: &[(&str, [u8; 4], Pieces)] = &[
        (
            "a valid header from a source not allowed",
            OTHER,
            vec![v1, GET],
        ),
        ("no header at all", ALLOWED, vec![GET]),
        (
            "a malformed v1 header",
            ALLOWED,
            vec![b"PROXY TCP4 203.0.113.7 192.0.2.1 5555\r\n", GET],
        ),
        (
            "a v1 header ended by a bare LF",
            ALLOWED,
            vec![b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\n", GET],
        ),
    ];
    for (what, source, pieces) in refused {
        let (answer, head) = exchange(proxy.addr, &backend, *source, pieces).await;
        assert_eq!(answer, "", "{what}: closed without an answer");
        assert!(head.is_none(), "{what}: {head:?}");
    }
    // Half a header, then silence: closed at the deadline, not before and not never.
    let mut stream = connect_from(ALLOWED, proxy.addr).await;
    stream.write_all(&v1[..10]).await.unwrap();
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut stream).await;
    let waited = started.elapsed();
    assert_eq!(answer, "");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "closed after {waited:?}, the timeout is 1 s"
    );
    assert_eq!(
        listener_counter(&proxy, "fulcrum_listener_refused_total", "proxy_protocol").await,
        refused.len() as u64 + 1,
        "every connection closed for its PROXY header is counted"
    );
}

/// Runs curl from `source` for `url`, with `--haproxy-protocol` when `send_header`; its
/// status code.
fn curl_status(source: &str, url: &str, send_header: bool, extra: &[String]) -> String {
    let curl = installed(&["/usr/bin/curl"], "curl");
    let mut command = std::process::Command::new(curl);
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--interface",
        source,
    ]);
    if send_header {
        command.arg("--haproxy-protocol");
    }
    let output = command.args(extra).arg(url).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_reads_the_proxy_header_before_the_handshake() {
    let backend = Recorder::start().await;
    let pki = pki::Pki::new("proxy-protocol-tls");
    let (cert, key) = pki.server("a", &["a.test"]);
    let proxy = http_proxy(
        &backend,
        &format!(
            "proxy_protocol = {{ allow = [\"127.0.0.2\"] }}\n\
             tls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}",
            pki::toml_path(&cert),
            pki::toml_path(&key)
        ),
    );
    let url = format!("https://a.test:{}/tls", proxy.addr.port());
    let extra = vec![
        "--cacert".to_string(),
        pki.ca_path().display().to_string(),
        "--resolve".to_string(),
        format!("a.test:{}:127.0.0.1", proxy.addr.port()),
    ];
    let run = |source: &'static str, header: bool| {
        let (url, extra) = (url.clone(), extra.clone());
        tokio::task::spawn_blocking(move || curl_status(source, &url, header, &extra))
    };
    // curl writes the header, then the TLS handshake, in the same connection.
    assert_eq!(run("127.0.0.2", true).await.unwrap(), "200");
    let head = backend.requests().last().unwrap().head.clone();
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.2\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-forwarded-proto: https\r\n"), "{head}");
    // Without the header the handshake's first bytes are not a PROXY header: closed.
    assert_eq!(run("127.0.0.2", false).await.unwrap(), "000");
    assert_eq!(run("127.0.0.3", true).await.unwrap(), "000");
    assert_eq!(backend.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_haproxy_protocol_is_served_from_an_allowed_source_only() {
    let backend = Recorder::start().await;
    let proxy = http_proxy(&backend, "proxy_protocol = { allow = [\"127.0.0.2/32\"] }");
    let url = format!("http://{}/curl", proxy.addr);
    let run = |source: &'static str, header: bool| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || curl_status(source, &url, header, &[]))
    };
    assert_eq!(run("127.0.0.2", true).await.unwrap(), "200");
    let head = backend.requests().last().unwrap().head.clone();
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.2\r\n"),
        "{head}"
    );
    // 000: curl got no HTTP answer (the connection was closed).
    assert_eq!(run("127.0.0.3", true).await.unwrap(), "000");
    assert_eq!(run("127.0.0.2", false).await.unwrap(), "000");
    assert_eq!(backend.requests().len(), 1);
}

/// A backend that reads a PROXY header and then one HTTP request per connection, answers
/// it and closes; records each connection's header.
async fn header_reading_backend() -> (SocketAddr, Arc<Mutex<Vec<Header>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&headers);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut input = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    if let Ok(Parsed::Complete { header, len }) = proxy_protocol::parse(&input) {
                        seen.lock().unwrap().push(header);
                        input.drain(..len);
                        break;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => input.extend_from_slice(&buf[..n]),
                    }
                }
                // Echo (TCP) or answer (HTTP): whatever follows the header.
                loop {
                    if input.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        input.clear();
                    } else if input.starts_with(b"echo:") {
                        let _ = stream.write_all(&input).await;
                        input.clear();
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => input.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_that_ask_get_a_header_naming_the_client_on_every_backend_connection() {
    let (backend, headers) = header_reading_backend().await;
    for version in ["v1", "v2"] {
        headers.lock().unwrap().clear();
        let proxy = start_proxy(
            "http",
            "round_robin",
            &[(backend, 1)],
            "",
            &format!("proxy_protocol = \"{version}\""),
        );
        // Two requests on one client connection: two backend connections, each with the
        // header (a connection that names one client is never pooled for another).
        let mut stream = connect_from(OTHER, proxy.addr).await;
        let client_port = stream.local_addr().unwrap().port();
        stream
            .write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut stream).await;
        assert_eq!(
            answer.matches("HTTP/1.1 200 OK").count(),
            2,
            "{version}: {answer}"
        );
        let seen = headers.lock().unwrap().clone();
        let want = Header::Proxied {
            source: SocketAddr::new(IpAddr::from(OTHER), client_port),
            destination: proxy.addr,
        };
        assert_eq!(seen, vec![want, want], "{version}");
    }

    // L4, with the client's address taken from the header it sent fulcrum.
    headers.lock().unwrap().clear();
    let proxy = start_proxy(
        "tcp",
        "round_robin",
        &[(backend, 1)],
        "proxy_protocol = { allow = [\"127.0.0.2\"] }",
        "proxy_protocol = \"v2\"",
    );
    let mut stream = connect_from(ALLOWED, proxy.addr).await;
    stream
        .write_all(
            &[
                v2("203.0.113.7:4444", "192.0.2.1:5432"),
                b"echo:hello".to_vec(),
            ]
            .concat(),
        )
        .await
        .unwrap();
    let mut echoed = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"echo:hello");
    assert_eq!(
        headers.lock().unwrap().clone(),
        vec![Header::Proxied {
            source: addr("203.0.113.7:4444"),
            destination: addr("192.0.2.1:5432"),
        }]
    );
}
