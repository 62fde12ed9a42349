//! Circuit breakers through the running proxy: a pool at its `max_requests` answers 503 at
//! once, naming the limit, to HTTP/1.1 and HTTP/2 clients alike, and takes requests again as
//! the ones in flight finish.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_requests_the_pool_answers_503_at_once_and_frees_as_requests_finish() {
    let backend = Backend::named("slow", Duration::from_millis(800)).await;
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        "",
        "circuit_breakers = { max_requests = 2 }",
    );
    let addr = proxy.addr;
    // Two requests take the pool's two places…
    let admitted: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { raw_exchange(addr, GET).await }))
        .collect();
    for _ in 0..100 {
        if backend.requests() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backend.requests(), 2, "the first two reached the backend");
    // …so the next ones are refused while those are still in flight, never reaching it.
    for _ in 0..4 {
        let answer = raw_exchange(addr, GET).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(
            answer.contains("\r\nx-fulcrum-circuit-breaker: max_requests\r\n"),
            "{answer}"
        );
    }
    let curl = installed(&["/usr/bin/curl"], "curl");
    let h2 = std::process::Command::new(curl)
        .args([
            "-s",
            "-i",
            "--http2-prior-knowledge",
            &format!("http://{addr}/"),
        ])
        .output()
        .unwrap();
    let h2 = String::from_utf8_lossy(&h2.stdout).to_ascii_lowercase();
    assert!(h2.starts_with("http/2 503"), "{h2}");
    assert!(
        h2.contains("x-fulcrum-circuit-breaker: max_requests"),
        "{h2}"
    );
    assert_eq!(
        backend.requests(),
        2,
        "no refused request reached the backend"
    );
    for request in admitted {
        let answer = request.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
    // The places are free again.
    let answer = raw_exchange(addr, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let admin = proxy.app().admin_addr().unwrap();
    let (_, metrics) = Client::connect(admin).await.get("/metrics").await;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("fulcrum_pool_circuit_breaker_refusals_total{"))
        .unwrap_or_else(|| panic!("no refusals counter in\n{metrics}"));
    assert!(refused.contains("breaker=\"max_requests\""), "{refused}");
    assert!(
        refused.ends_with(" 5"),
        "4 HTTP/1.1 and 1 HTTP/2 refusal: {refused}"
    );
}
