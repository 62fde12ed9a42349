//! Forwarding headers believed only from trusted proxies (`trusted_proxies`), and header names
//! with underscores (`headers_with_underscores`), through the running proxy: clients connect
//! from two distinct loopback addresses, 127.0.0.2 (a trusted proxy) and 127.0.0.3 (anyone),
//! over HTTP/1.1 and HTTP/2, and a recording backend shows what went on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use common::recorder::Recorder;
use common::*;
use tokio::io::AsyncWriteExt;

const TRUSTED: [u8; 4] = [127, 0, 0, 2];
const UNTRUSTED: [u8; 4] = [127, 0, 0, 3];

/// Sends `request` (which closes) from `source`; returns the response and the head the
/// backend received (lower case).
async fn send_from(
    source: [u8; 4],
    proxy: SocketAddr,
    backend: &Recorder,
    request: &str,
) -> (String, Option<String>) {
    let before = backend.requests().len();
    let mut stream = connect_from(source, proxy).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_to_close(&mut stream).await;
    let head = backend.requests().get(before).map(|r| r.head.clone());
    (response, head)
}

/// One HTTP/2 GET from `source` with these extra headers; its status.
async fn h2_get_from(source: [u8; 4], proxy: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let tcp = connect_from(source, proxy).await;
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::get("http://shop.example/h2");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, _) = client
        .send_request(request.body(()).unwrap(), true)
        .unwrap();
    let response = response.await.unwrap();
    let mut body = response.body().is_end_stream();
    let status = response.status().as_u16();
    let mut stream = response.into_body();
    while !body {
        match stream.data().await {
            Some(chunk) => {
                let chunk: Bytes = chunk.unwrap();
                let _ = stream.flow_control().release_capacity(chunk.len());
            }
            None => body = true,
        }
    }
    status
}

const SPOOFING: &str = "GET /x HTTP/1.1\r\nhost: shop.example\r\n\
    x-forwarded-for: 203.0.113.9\r\nx-forwarded-proto: https\r\n\
    x-forwarded-host: front.example\r\nforwarded: for=203.0.113.9;proto=https\r\n\
    connection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_kept_from_a_trusted_proxy_and_replaced_from_anyone_else() {
    let backend = Recorder::start().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "trusted_proxies = [\"127.0.0.2/32\", \"2001:db8::/32\"]",
        "",
    );

    let (response, head) = send_from(TRUSTED, proxy.addr, &backend, SPOOFING).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let head = head.unwrap();
    for line in [
        "x-forwarded-for: 203.0.113.9, 127.0.0.2",
        "x-forwarded-proto: https",
        "x-forwarded-host: front.example",
        "forwarded: for=203.0.113.9;proto=https",
        "forwarded: for=127.0.0.2;host=\"shop.example\";proto=http",
    ] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
    }
    assert_eq!(head.matches("x-forwarded-proto:").count(), 1, "{head}");

    let (response, head) = send_from(UNTRUSTED, proxy.addr, &backend, SPOOFING).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let head = head.unwrap();
    for line in [
        "x-forwarded-for: 127.0.0.3",
        "x-forwarded-proto: http",
        "x-forwarded-host: shop.example",
    ] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
    }
    for spoofed in ["203.0.113.9", "https", "front.example", "forwarded:"] {
        assert!(
            !head.contains(spoofed),
            "{spoofed} reached the backend: {head}"
        );
    }

    // The same over HTTP/2 (prior knowledge): one set of rules for both protocols.
    let spoofs = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=203.0.113.9"),
    ];
    assert_eq!(h2_get_from(TRUSTED, proxy.addr, &spoofs).await, 200);
    let trusted = backend.requests().last().unwrap().head.clone();
    assert!(
        trusted.contains("\r\nx-forwarded-for: 203.0.113.9, 127.0.0.2\r\n")
            && trusted.contains("\r\nx-forwarded-proto: https\r\n")
            && trusted
                .contains("\r\nforwarded: for=127.0.0.2;host=\"shop.example\";proto=http\r\n"),
        "{trusted}"
    );
    assert_eq!(h2_get_from(UNTRUSTED, proxy.addr, &spoofs).await, 200);
    let untrusted = backend.requests().last().unwrap().head.clone();
    assert!(
        untrusted.contains("\r\nx-forwarded-for: 127.0.0.3\r\n")
            && !untrusted.contains("203.0.113.9")
            && !untrusted.contains("https"),
        "{untrusted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_nobody_can_spoof_the_client_address() {
    let backend = Recorder::start().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    for source in [TRUSTED, UNTRUSTED] {
        let (_, head) = send_from(source, proxy.addr, &backend, SPOOFING).await;
        let head = head.unwrap();
        let peer = IpAddr::from(source);
        assert!(
            head.contains(&format!("\r\nx-forwarded-for: {peer}\r\n"))
                && !head.contains("203.0.113.9"),
            "{head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_with_underscores_follow_the_listeners_choice() {
    let request = "GET /u HTTP/1.1\r\nhost: a\r\nx_forwarded_for: 203.0.113.9\r\n\
                   x-ok: 1\r\nconnection: close\r\n\r\n";
    for (choice, status, forwarded) in [
        ("", 200, false),
        ("headers_with_underscores = \"drop\"", 200, false),
        ("headers_with_underscores = \"allow\"", 200, true),
        ("headers_with_underscores = \"reject\"", 400, false),
    ] {
        let backend = Recorder::start().await;
        let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], choice, "");
        let (response, head) = send_from(UNTRUSTED, proxy.addr, &backend, request).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{choice}: {response}"
        );
        match head {
            Some(head) => {
                assert_eq!(status, 200, "{choice}: the backend got {head}");
                assert_eq!(
                    head.contains("\r\nx_forwarded_for: "),
                    forwarded,
                    "{choice}: {head}"
                );
                assert!(head.contains("\r\nx-ok: 1\r\n"), "{choice}: {head}");
            }
            None => assert_eq!(status, 400, "{choice}: nothing reached the backend"),
        }
    }
}
