//! The TCP (L4) proxy end to end: echo, half-close in each direction, bulk data with a
//! checksum, failover on connect, and the idle timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

fn proxy_over(backends: &[SocketAddr], listener_extra: &str) -> Proxy {
    let weighted: Vec<_> = backends.iter().map(|a| (*a, 1)).collect();
    start_proxy("tcp", "round_robin", &weighted, listener_extra, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_echo_through_the_proxy() {
    let proxy = proxy_over(&[echo_backend().await], "");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"hello, fulcrum").await.unwrap();
    let mut buf = [0u8; 14];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello, fulcrum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_reaches_the_backend_and_its_answer_still_comes_back() {
    // Reads to end of stream, then answers with the byte count.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            s.write_all(format!("got {} bytes", all.len()).as_bytes())
                .await
                .unwrap();
        }
    });
    let proxy = proxy_over(&[addr], "");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[7u8; 1000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "got 1000 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_half_close_reaches_the_client_and_the_client_can_still_send() {
    // Sends a banner and half-closes at once, then reports what the client sent later.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                s.write_all(b"banner").await.unwrap();
                s.shutdown().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                tx.send(rest).unwrap();
            });
        }
    });
    let proxy = proxy_over(&[addr], "");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut banner = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(banner, b"banner");
    s.write_all(b"after the backend closed its side")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, b"after the backend closed its side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mib_each_way_arrive_intact() {
    const TOTAL: usize = 100 * 1024 * 1024;
    let proxy = proxy_over(&[echo_backend().await], "");
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut hash = Xxh3::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let mut counter = 0u8;
        while sent < TOTAL {
            counter = counter.wrapping_add(1);
            chunk
                .iter_mut()
                .step_by(997)
                .for_each(|b| *b = b.wrapping_add(counter));
            hash.update(&chunk);
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w.shutdown().await.unwrap();
        hash.digest()
    });
    let mut hash = Xxh3::new();
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n;
    }
    assert_eq!(received, TOTAL);
    assert_eq!(hash.digest(), writer.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_backend_is_skipped() {
    let dead = dead_addr().await;
    let proxy = proxy_over(&[dead, echo_backend().await], "");
    for i in 0..6u8 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&[i]).await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
    }
    let status = proxy.app().pools().get("app").unwrap().status();
    assert!(status.backends[0].failures >= 3, "{status:?}");
    assert_eq!(status.backends[1].requests, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_backend_closes_the_client() {
    let proxy = proxy_over(&[dead_addr().await], "");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    let proxy = proxy_over(&[echo_backend().await], "idle_timeout = \"300ms\"");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let status = proxy.app().pools().get("app").unwrap().status();
    assert_eq!(status.backends[0].in_flight, 0);
}
