//! Limits on what any one client, or all of them, can take, through the running proxy: a
//! listener's `max_connections` (with the admin API still reachable), `max_connections_per_ip`
//! and `rate_limit` holding for one address (127.0.0.2) while another (127.0.0.3) is served,
//! and `min_upload_rate` cutting a trickled body with 408.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::recorder::Recorder;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const A: [u8; 4] = [127, 0, 0, 2];
const B: [u8; 4] = [127, 0, 0, 3];

/// One keep-alive GET on `stream`: the status line and head of the answer, or `None` when
/// the connection closed (or nothing came within `wait`).
async fn get(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    if stream
        .write_all(b"GET /limited HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .is_err()
    {
        return None;
    }
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&input[..end + 4]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while input.len() < end + 4 + length {
                match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => input.extend_from_slice(&buf[..n]),
                    _ => return None,
                }
            }
            return Some(head);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => input.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

const SOON: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_new_ones_wait_and_the_admin_api_still_answers() {
    let backend = Recorder::start().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "max_connections = 3",
        "",
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(get(&mut stream, SOON)
            .await
            .unwrap()
            .starts_with("http/1.1 200"));
        held.push(stream);
    }
    // The fourth connects (the kernel queues it) but is not served while three are open.
    let mut fourth = TcpStream::connect(proxy.addr).await.unwrap();
    let waiting = tokio::spawn(async move {
        let answer = get(&mut fourth, Duration::from_secs(10)).await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the fourth connection was served at the limit"
    );
    let admin = proxy.app().admin_addr().unwrap();
    let (status, _) = Client::connect(admin).await.get("/healthz").await;
    assert_eq!(
        status, 200,
        "the admin API answers while the listener is full"
    );
    assert!(
        listener_counter(
            &proxy,
            "fulcrum_listener_accept_pauses_total",
            "max_connections"
        )
        .await
            > 0,
        "the pauses at max_connections are counted"
    );
    let freed = Instant::now();
    drop(held.pop());
    let (answer, served_at) = waiting.await.unwrap();
    assert!(answer.unwrap().starts_with("http/1.1 200"));
    assert!(
        served_at.duration_since(freed) < Duration::from_secs(2),
        "served {:?} after a connection closed",
        served_at.duration_since(freed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_held_to_its_connections_while_another_is_served() {
    let backend = Recorder::start().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "max_connections_per_ip = 2",
        "",
    );
    let mut from_a = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(A, proxy.addr).await;
        assert!(get(&mut stream, SOON)
            .await
            .unwrap()
            .starts_with("http/1.1 200"));
        from_a.push(stream);
    }
    let mut third = connect_from(A, proxy.addr).await;
    assert_eq!(
        get(&mut third, SOON).await,
        None,
        "a third from A is closed unanswered"
    );
    assert_eq!(
        listener_counter(
            &proxy,
            "fulcrum_listener_refused_total",
            "max_connections_per_ip"
        )
        .await,
        1
    );
    let mut from_b = Vec::new();
    for _ in 0..2 {
        let mut other = connect_from(B, proxy.addr).await;
        assert!(
            get(&mut other, SOON)
                .await
                .unwrap()
                .starts_with("http/1.1 200"),
            "B is served"
        );
        from_b.push(other);
    }
    drop(from_a.pop());
    // The freed place is A's again (the count drops when the connection's task ends).
    let deadline = Instant::now() + SOON;
    loop {
        let mut again = connect_from(A, proxy.addr).await;
        match get(&mut again, SOON).await {
            Some(head) if head.starts_with("http/1.1 200") => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "A not served after one closed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_request_rate_gets_429_while_another_is_served() {
    let backend = Recorder::start().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "rate_limit = { requests_per_second = 2, burst = 5 }",
        "",
    );
    let mut a = connect_from(A, proxy.addr).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let head = get(&mut a, SOON).await.unwrap();
        statuses.push(head[9..12].to_string());
        if head.starts_with("http/1.1 429") {
            assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
        }
    }
    let ok = statuses.iter().filter(|s| *s == "200").count();
    assert!(
        (5..=6).contains(&ok),
        "the burst of 5 (and at most one refilled): {statuses:?}"
    );
    assert_eq!(&statuses[..5], ["200"; 5], "{statuses:?}");
    assert_eq!(statuses[9], "429", "{statuses:?}");
    // The 429s kept the connection; B has its own bucket.
    let mut b = connect_from(B, proxy.addr).await;
    assert!(get(&mut b, SOON).await.unwrap().starts_with("http/1.1 200"));
    // A second later A has two tokens more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(get(&mut a, SOON).await.unwrap().starts_with("http/1.1 200"));
    let before = backend.requests().len();
    assert_eq!(before, ok + 2, "429s never reach the backend");
    assert_eq!(
        listener_counter(&proxy, "fulcrum_listener_refused_total", "rate_limit").await,
        10 - ok as u64,
        "every 429 is counted"
    );

    // With action = "close", an address over its rate is disconnected instead.
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "rate_limit = { requests_per_second = 1, burst = 1, action = \"close\" }",
        "",
    );
    let mut a = connect_from(A, proxy.addr).await;
    assert!(get(&mut a, SOON).await.unwrap().starts_with("http/1.1 200"));
    assert_eq!(
        get(&mut a, SOON).await,
        None,
        "over the rate: closed unanswered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_slower_than_min_upload_rate_is_cut_with_408() {
    let backend = Recorder::start().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "min_upload_rate = { bytes_per_second = 1000, grace = \"1s\" }",
        "",
    );
    // 100 bytes every 200 ms: 500 bytes a second, behind the 1000 required after 1 s.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST /slow HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut read, mut write) = slow.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(&[b'x'; 100]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
    let cut_after = started.elapsed();
    writer.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    // Due after 1 s plus a second per 1000 bytes: about 2 s in at 500 bytes a second.
    assert!(
        cut_after > Duration::from_millis(1500) && cut_after < Duration::from_secs(6),
        "cut after {cut_after:?}"
    );
    assert!(
        backend.requests().iter().all(|r| r.path != "/slow"),
        "no backend acted on it"
    );

    // A body at a good pace passes, however long it is.
    let mut fast = TcpStream::connect(proxy.addr).await.unwrap();
    let body = vec![b'y'; 200_000];
    let head = format!(
        "POST /fast HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    fast.write_all(head.as_bytes()).await.unwrap();
    fast.write_all(&body).await.unwrap();
    let answer = read_to_close(&mut fast).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_over_its_rate_gets_429_with_retry_after_too() {
    let backend = Recorder::start().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "rate_limit = { requests_per_second = 1, burst = 1 }",
        "",
    );
    let curl = installed(&["/usr/bin/curl"], "curl");
    let url = format!("http://{}/h2", proxy.addr);
    let get = || {
        let out = std::process::Command::new(curl)
            .args(["-s", "-i", "--http2-prior-knowledge", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let first = get();
    assert!(first.starts_with("http/2 200"), "{first}");
    // The bucket held one token: the next request is over the rate.
    let refused = get();
    assert!(refused.starts_with("http/2 429"), "{refused}");
    assert!(refused.contains("\r\nretry-after: 1\r\n"), "{refused}");
}
