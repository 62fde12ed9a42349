//! What fulcrum does when a backend misbehaves in the middle of an exchange, through the
//! running proxy against raw backends: answering while still reading the upload, answering
//! early and closing, black-holing connects, closing a pooled connection as a request
//! arrives, and breaking a response body — and how each is counted for passive health.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads a request head (up to its blank line) and returns the Content-Length it names.
async fn read_head(stream: &mut TcpStream, input: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&input[..end]).to_ascii_lowercase();
            input.drain(..end + 4);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            return Some(length);
        }
        let mut buf = [0u8; 8192];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}

/// Starts a raw backend; `serve` gets each accepted connection.
async fn raw_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_streaming_its_answer_while_reading_the_upload_gets_all_of_it() {
    // Echoes every piece of the upload as a chunk as soon as it arrives.
    let backend = raw_backend(|mut stream| async move {
        let mut input = Vec::new();
        let Some(mut left) = read_head(&mut stream, &mut input).await else {
            return;
        };
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 8192];
        while left > 0 {
            let piece = if input.is_empty() {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "upload ended early");
                buf[..n].to_vec()
            } else {
                std::mem::take(&mut input)
            };
            left -= piece.len();
            let chunk = format!("{:x}\r\n", piece.len());
            stream.write_all(chunk.as_bytes()).await.unwrap();
            stream.write_all(&piece).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
    })
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", "");
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nfirst")
        .await
        .unwrap();
    // The second half goes only once the first has come back through the proxy.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the first half echoed while the upload is still open")
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    client.write_all(b"later").await.unwrap();
    while !String::from_utf8_lossy(&seen).ends_with("0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the second half relayed while the response streams")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("first") && text.contains("later"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_reaches_a_client_that_is_still_uploading() {
    let backend = raw_backend(|mut stream| async move {
        let mut input = Vec::new();
        if read_head(&mut stream, &mut input).await.is_some() {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\n\
                      connection: close\r\n\r\ntoo large",
                )
                .await;
        }
    })
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", "");
    for _ in 0..3 {
        // Like curl: the whole upload is written before anything is read.
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let head = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 8388608\r\n\r\n";
        stream.write_all(head).await.unwrap();
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..128 {
            if let Err(e) = stream.write_all(&piece).await {
                panic!("upload cut by a reset ({e}) instead of a lingering close");
            }
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!(
                    "{e} after {:?}: the connection was reset, not closed",
                    String::from_utf8_lossy(&got)
                ),
                Err(_) => panic!("no end of the answer"),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        assert!(text.ends_with("too large"), "{text}");
    }
}

/// An address whose connects hang: a listening socket that never accepts, with its accept
/// queue already full, so the kernel drops further SYNs.
fn black_hole() -> (socket2::Socket, std::net::TcpStream, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    (socket, filler, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_connects_hang_counts_in_flight_and_least_conn_avoids_it() {
    let (_hole, _filler, hole) = black_hole();
    let good = Backend::named("good", Duration::ZERO).await;
    let proxy = start_proxy(
        "http",
        "least_conn",
        &[(hole, 1), (good.addr, 1)],
        "",
        "connect_timeout = \"2s\"\nconnect_attempts = 1\n",
    );
    let mut pending = Vec::new();
    for _ in 0..6 {
        let addr = proxy.addr;
        pending.push(tokio::spawn(async move {
            Client::connect(addr).await.get("/").await.0
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = proxy.status().await;
    let hole_status = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == hole.to_string())
        .unwrap()
        .clone();
    let mut statuses = Vec::new();
    for p in pending {
        statuses.push(p.await.unwrap());
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(
        hole_status["in_flight"], 1,
        "a pending connect is in flight: {hole_status}"
    );
    assert_eq!(
        failed, 1,
        "only the first pick waited on the black hole: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_as_the_request_arrives_is_retried_without_a_failure() {
    // Answers the first request of each connection; on the second it closes without a
    // word, as a backend whose idle timeout fired just as the request came.
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    let backend = raw_backend(move |mut stream| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut input = Vec::new();
            if read_head(&mut stream, &mut input).await.is_some() {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = read_head(&mut stream, &mut input).await;
            }
        }
    })
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend, 1)], "", "");
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..5 {
        let (status, body) = client.get("/").await;
        assert_eq!((status, body.as_str()), (200, "ok"), "request {i}");
    }
    // A POST is not safe to send twice: the backend read it before closing, and fulcrum
    // cannot know it did nothing with it. The client gets 502, but a connection the backend
    // closed is still not the backend's failure.
    let (status, _) = client.call("POST", "/orders", "{\"n\": 1}").await;
    assert_eq!(status, 502);
    let status = proxy.status().await;
    assert_eq!(status["backends"][0]["failures"], 0, "{status}");
    assert!(connections.load(Ordering::SeqCst) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_one_request_with_one_outcome_and_a_broken_body_is_a_failure() {
    // Promises 100 bytes, sends 10, closes.
    let truncating = raw_backend(|mut stream| async move {
        let mut input = Vec::new();
        if read_head(&mut stream, &mut input).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
        }
    })
    .await;
    let proxy = start_proxy("http", "round_robin", &[(truncating, 1)], "", "");
    let response = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let status = proxy.status().await;
    assert_eq!(status["backends"][0]["requests"], 1, "{status}");
    assert_eq!(status["backends"][0]["failures"], 1, "{status}");
    drop(proxy);

    let dead = dead_addr().await;
    let proxy = start_proxy("http", "round_robin", &[(dead, 1)], "", "");
    let (code, _) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(code, 502);
    let status = proxy.status().await;
    let (requests, failures) = (
        status["backends"][0]["requests"].as_u64().unwrap(),
        status["backends"][0]["failures"].as_u64().unwrap(),
    );
    assert!(failures >= 1 && failures <= requests, "{status}");
}
