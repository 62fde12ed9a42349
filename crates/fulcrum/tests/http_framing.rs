//! HTTP/1.1 message framing through the running proxy, as a spec: what a client sends, what
//! the backend answers, and what the client must receive — pipelining, HTTP/1.0 clients,
//! close-delimited and chunked bodies, HEAD, 1xx, and answers that come before the upload
//! ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads one request head per connection, answers `response` as it is (the
/// test decides the framing), and closes.
async fn scripted_backend(response: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// Reads one response with a known length (`content-length`) from `stream`.
async fn read_sized_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed early after {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_framings_reach_clients_of_both_versions_intact() {
    struct Case {
        backend: &'static str,
        request: &'static str,
        /// What the client reads, up to the proxy closing the connection.
        expect_start: &'static str,
        expect_end: &'static str,
        absent: &'static str,
    }
    let cases = [
        Case {
            // An HTTP/1.0 client cannot read chunked coding: fulcrum removes it and closes.
            backend: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            request: "GET / HTTP/1.0\r\n\r\n",
            expect_start: "HTTP/1.1 200 OK\r\n",
            expect_end: "connection: close\r\n\r\nhello world",
            absent: "transfer-encoding",
        },
        Case {
            // An HTTP/1.1 client gets the chunks as they came.
            backend: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            request: "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
            expect_start: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
            expect_end: "\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            absent: "content-length",
        },
        Case {
            // A body that ends when the backend closes ends the client connection too.
            backend: "HTTP/1.1 200 OK\r\nx-kind: until-close\r\n\r\nall of it",
            request: "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
            expect_start: "HTTP/1.1 200 OK\r\nx-kind: until-close\r\n",
            expect_end: "connection: close\r\n\r\nall of it",
            absent: "transfer-encoding",
        },
        Case {
            // HEAD: the length describes the body a GET would get; no body follows.
            backend: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
            request: "HEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
            expect_start: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n",
            expect_end: "connection: close\r\n\r\n",
            absent: "hello",
        },
    ];
    for case in cases {
        let backend = scripted_backend(case.backend).await;
        let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", "");
        let response = raw_exchange(proxy.addr, case.request.as_bytes()).await;
        assert!(
            response.starts_with(case.expect_start) && response.ends_with(case.expect_end),
            "{:?} with backend {:?} gave {response:?}",
            case.request,
            case.backend
        );
        assert!(
            !response.to_ascii_lowercase().contains(case.absent),
            "{response:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let backend = Backend::with_handler(Arc::new(|req| {
        let path = req.uri().path().to_string();
        Box::pin(async move { Response::new(Full::new(Bytes::from(path))) })
    }))
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /first HTTP/1.1\r\nhost: a\r\n\r\nHEAD /second HTTP/1.1\r\nhost: a\r\n\r\n\
              GET /third HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let all = read_to_close(&mut stream).await;
    let first = all.find("/first").unwrap_or_else(|| panic!("{all}"));
    let third = all.find("/third").unwrap_or_else(|| panic!("{all}"));
    assert!(first < third, "{all}");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
    assert!(
        !all.contains("/second"),
        "a HEAD response has no body: {all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_relayed_and_the_body_follows() {
    let backend = body_length_backend().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("100 Continue before the body was sent")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    stream.write_all(b"hello world").await.unwrap();
    let response = read_sized_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("\r\n\r\n11"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_upload_ends_reaches_the_client_and_closes() {
    let backend = scripted_backend(
        "HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
    )
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", "");
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // Announces a megabyte, sends a little, then waits for the answer.
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1048576\r\n\r\nsome")
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(response.contains("connection: close\r\n"), "{response}");
    assert!(response.ends_with("too large"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_backend_answer_gives_502() {
    for backend in [
        "HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
        "NOT HTTP AT ALL\r\n\r\n",
        "HTTP/1.1 099 Too Low\r\ncontent-length: 0\r\n\r\n",
    ] {
        let addr = scripted_backend(backend).await;
        let proxy = start_proxy("http", "round_robin", &[(addr, 1)], "", "");
        let (status, _) = Client::connect(proxy.addr).await.get("/").await;
        assert_eq!(status, 502, "for {backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_upload_gets_400_and_is_not_the_backends_fault() {
    let backend = body_length_backend().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let response = raw_exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    let status = proxy.app().pools().get("app").unwrap().status();
    assert_eq!(status.backends[0].failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_request_without_host_names_the_backend_as_host() {
    let backend = Backend::named("a", Duration::ZERO).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let response = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let seen = backend.last_headers();
    assert_eq!(seen["host"], backend.addr.to_string().as_str());
    assert!(seen.get("x-forwarded-host").is_none(), "{seen:?}");
}
