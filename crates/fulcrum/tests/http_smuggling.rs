//! Request smuggling through the running proxy: each case sends what an attacker would, to a
//! recording backend that reads requests as leniently as real servers do (bare LF line ends
//! in chunked coding, as nginx accepts them), and asserts that the backend saw exactly the
//! requests the client meant — never one hidden inside another.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::recorder::{read_request, Recorder};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_the_framing_headers_hides_no_request_in_a_body() {
    for connection in [
        "content-length",
        "Content-Length, host",
        "transfer-encoding",
    ] {
        let backend = Recorder::start().await;
        let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
        let smuggling = if connection == "transfer-encoding" {
            format!(
                "POST /up HTTP/1.1\r\nhost: a\r\nconnection: {connection}\r\n\
                 transfer-encoding: chunked\r\n\r\n{:x}\r\n{HIDDEN}\r\n0\r\n\r\n",
                HIDDEN.len()
            )
        } else {
            format!(
                "POST /up HTTP/1.1\r\nhost: a\r\nconnection: {connection}\r\n\
                 content-length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )
        };
        let next = "GET /next HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
        let response = raw_exchange(proxy.addr, format!("{smuggling}{next}").as_bytes()).await;
        assert_eq!(
            response.matches("HTTP/1.1 200 OK").count(),
            2,
            "{connection}: {response}"
        );
        let seen = backend.requests();
        let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/up", "/next"], "{connection}: {seen:?}");
        assert_eq!(seen[0].body, HIDDEN.as_bytes(), "{connection}");
        assert!(
            seen[0].head.contains("host: a\r\n"),
            "{connection}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_line_feeds_and_control_characters_in_chunked_framing_are_refused() {
    for body in [
        // nginx ends the trailers at "0\r\n\n"; fulcrum must not read on past it.
        format!("5\r\nhello\r\n0\r\n\n{HIDDEN}"),
        format!("5\r\nhello\r\n0\r\nx-t: 1\n\r\n{HIDDEN}"),
        format!("5;x\n\r\nhello\r\n0\r\n\r\n{HIDDEN}"),
        "5;ext=\x01\r\nhello\r\n0\r\n\r\n".to_string(),
    ] {
        let backend = Recorder::start().await;
        let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
        let request =
            format!("POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n{body}");
        let response = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{body:?}: {response}"
        );
        backend.wait_closed(1).await;
        let seen = backend.requests();
        assert!(
            seen.iter().all(|r| r.path != "/smuggled"),
            "{body:?}: {seen:?}"
        );
        assert!(seen.len() <= 1, "{body:?}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hosts_targets_and_codings_never_reach_the_backend() {
    let backend = Recorder::start().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    for request in [
        "GET / HTTP/1.1\r\nhost: a/b\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: user@a\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a:99999\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a:x\r\n\r\n",
        "GET /#frag HTTP/1.1\r\nhost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    ] {
        let response = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{request:?}: {response}"
        );
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_lengths_go_upstream_once() {
    let backend = Recorder::start().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let response = raw_exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nContent-Length: 3\r\n\
          connection: close\r\n\r\nabc",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].head.matches("content-length").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(seen[0].body, b"abc");
}

/// A backend whose every answer names its own Content-Length in `Connection`.
async fn connection_naming_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut input = Vec::new();
                while read_request(&mut stream, &mut input).await.is_some() {
                    let answer = "HTTP/1.1 200 OK\r\nconnection: content-length\r\n\
                                  content-length: 5\r\n\r\nhello";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_connection_names_its_length_keeps_it() {
    let backend = connection_naming_backend().await;
    let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", "");
    let response = raw_exchange(
        proxy.addr,
        b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    let lower = response.to_ascii_lowercase();
    assert_eq!(
        lower.matches("content-length: 5\r\n").count(),
        2,
        "{response}"
    );
    let first_end = response.find("\r\n\r\nhello").unwrap() + 9;
    assert!(
        response[first_end..].starts_with("HTTP/1.1 200 OK\r\n"),
        "the second response starts right after the first body: {response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulcrums_own_answer_to_head_has_no_body_and_the_connection_stays_in_sync() {
    let dead = dead_addr().await;
    let proxy = start_proxy("http", "round_robin", &[(dead, 1)], "", "");
    let response = raw_exchange(
        proxy.addr,
        b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    let first_end = response.find("\r\n\r\n").unwrap() + 4;
    assert!(response.starts_with("HTTP/1.1 502 "), "{response}");
    assert!(
        response[first_end..].starts_with("HTTP/1.1 502 "),
        "the HEAD answer carries no body: {response}"
    );
    assert_eq!(
        response.matches("could not connect to a backend").count(),
        1,
        "{response}"
    );
}
