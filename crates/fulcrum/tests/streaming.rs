//! Bodies stream through the HTTP proxy with bounded memory: 256 MiB each way arrives intact
//! while the process's peak memory grows far less than the body. This test has its own
//! binary so no other test's allocations blur the memory figure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use xxhash_rust::xxh3::Xxh3;

const CHUNK: usize = 64 * 1024;
const BODY: u64 = 256 * 1024 * 1024;

/// A deterministic body of `len` bytes produced chunk by chunk (never held whole).
struct Generated {
    remaining: u64,
    chunk: Bytes,
    counter: u8,
}

impl Generated {
    fn new(len: u64) -> Self {
        Self {
            remaining: len,
            chunk: Bytes::from(vec![0u8; CHUNK]),
            counter: 0,
        }
    }

    fn expected_hash(len: u64) -> u64 {
        let mut g = Generated::new(len);
        let mut h = Xxh3::new();
        while let Some(c) = g.next_chunk() {
            h.update(&c);
        }
        h.digest()
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = (self.remaining as usize).min(CHUNK);
        self.remaining -= n as u64;
        self.counter = self.counter.wrapping_add(1);
        // Vary content per chunk so reordering or loss would change the hash.
        let mut data = self.chunk.slice(..n).to_vec();
        data[0] = self.counter;
        data[n - 1] = self.counter.wrapping_mul(31);
        Some(Bytes::from(data))
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.next_chunk().map(|c| Ok(Frame::data(c))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Reads a body to the end frame by frame, never holding it whole.
async fn length_and_hash(mut body: hyper::body::Incoming) -> (u64, u64) {
    let mut hash = Xxh3::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            hash.update(&data);
        }
    }
    (len, hash.digest())
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_body_streams_intact_each_way_with_bounded_memory() {
    // The backend hashes what it receives as it arrives, then streams 256 MiB back.
    let backend = Backend::with_handler(Arc::new(|req: Request<hyper::body::Incoming>| {
        Box::pin(async move {
            let (len, hash) = length_and_hash(req.into_body()).await;
            Response::new(http_body_util::Full::new(Bytes::from(format!(
                "{len} {hash}"
            ))))
        })
    }))
    .await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let before = peak_rss_kib();

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Generated>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let upload = Request::post("/upload")
        .header("host", "a")
        .body(Generated::new(BODY))
        .unwrap();
    let response = sender.send_request(upload).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(text, format!("{BODY} {}", Generated::expected_hash(BODY)));

    // Download: a backend streaming 256 MiB, hashed by the client as it arrives.
    let big = spawn_streaming_backend().await;
    let proxy2 = start_proxy("http", "round_robin", &[(big, 1)], "", "");
    let mut client = {
        let stream = TcpStream::connect(proxy2.addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(
                stream,
            ))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    };
    let response = client
        .send_request(
            Request::get("/download")
                .header("host", "a")
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (len, hash) = length_and_hash(response.into_body()).await;
    assert_eq!(len, BODY);
    assert_eq!(hash, Generated::expected_hash(BODY));

    let growth_mib = (peak_rss_kib() - before) / 1024;
    eprintln!("peak memory growth: {growth_mib} MiB");
    assert!(
        growth_mib < 64,
        "peak memory grew by {growth_mib} MiB while streaming 2 × 256 MiB"
    );
}

/// A backend answering with a 256 MiB generated body.
async fn spawn_streaming_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Generated::new(BODY)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
