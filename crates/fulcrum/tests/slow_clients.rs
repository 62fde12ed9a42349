//! Slow clients, played by slowhttptest (Debian's package) in its slowloris (slow headers),
//! slow body (R-U-Dead-Yet) and slow read modes against the running proxy, each for a few
//! seconds with hundreds of connections: meanwhile an ordinary client keeps being served, each
//! of its requests answered within a second. Bounded: 6 s per mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Response;

/// A backend whose answer is 256 KiB: enough for slow readers to hold it up.
async fn big_backend() -> Backend {
    Backend::with_handler(Arc::new(|_req| {
        Box::pin(async move { Response::new(Full::new(Bytes::from(vec![b'x'; 256 * 1024]))) })
    }))
    .await
}

/// Runs slowhttptest with `mode` against `url` for `seconds` on a thread; its output.
fn slowhttptest(mode: &[&str], url: String, seconds: u32) -> std::thread::JoinHandle<String> {
    let tool = installed(&["/usr/bin/slowhttptest"], "slowhttptest");
    let mut command = std::process::Command::new(tool);
    command
        .args(mode)
        .args(["-c", "300", "-r", "150", "-i", "1", "-p", "2"])
        .args(["-l", &seconds.to_string(), "-u", &url]);
    std::thread::spawn(move || {
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_slow_bodies_and_slow_readers_leave_other_clients_served() {
    let backend = big_backend().await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "header_timeout = \"2s\"\nidle_timeout = \"3s\"\n\
         min_upload_rate = { bytes_per_second = 1000, grace = \"1s\" }",
        "",
    );
    let url = format!("http://{}/", proxy.addr);
    for (name, mode) in [
        ("slowloris", vec!["-H"]),
        ("slow body", vec!["-B", "-s", "100000"]),
        (
            "slow read",
            vec![
                "-X", "-k", "3", "-w", "512", "-y", "1024", "-n", "1", "-z", "32",
            ],
        ),
    ] {
        let attack = slowhttptest(&mode, url.clone(), 6);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut served = 0;
        let mut slowest = Duration::ZERO;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let started = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(2), async {
                let mut client = Client::connect(proxy.addr).await;
                client.get("/probe").await
            })
            .await;
            let took = started.elapsed();
            let (status, body) =
                answer.unwrap_or_else(|_| panic!("{name}: a probe got no answer in 2 s"));
            assert_eq!((status, body.len()), (200, 256 * 1024), "{name}");
            slowest = slowest.max(took);
            served += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let report = tokio::task::spawn_blocking(move || attack.join().unwrap())
            .await
            .unwrap();
        assert!(
            report.contains("connected"),
            "{name}: slowhttptest did not run: {report}"
        );
        assert!(served >= 10, "{name}: only {served} probes in 4 s");
        assert!(
            slowest < Duration::from_secs(1),
            "{name}: a probe took {slowest:?} while the attack ran"
        );
    }
}
