//! Membership changes through the running proxy: what a deployment does to the backends
//! that stay — their keep-alive connections keep working, and their share of traffic holds
//! while a newcomer warms up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_backend_keeps_its_neighbours_connections_pooled() {
    let backends = [
        Backend::named("a", Duration::ZERO).await,
        Backend::named("b", Duration::ZERO).await,
        Backend::named("c", Duration::ZERO).await,
    ];
    let list: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy("http", "round_robin", &list, "", "");
    let gone = backends[0].addr;
    let admin = proxy.app().admin_addr().unwrap();
    let (status, body) = Client::connect(admin)
        .await
        .call("DELETE", &format!("/api/pools/app/backends/{gone}"), "")
        .await;
    assert!(status < 300, "{status} {body}");
    proxy
        .wait_for(Duration::from_secs(5), "the backend removed", |s| {
            backend_state(s, gone) == "missing"
        })
        .await;
    let before: usize = backends[1..].iter().map(Backend::connections).sum();
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..20 {
        let (status, body) = client.get("/").await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_ne!(body, "a", "request {i} went to the removed backend");
    }
    let opened = backends[1..]
        .iter()
        .map(Backend::connections)
        .sum::<usize>()
        - before;
    // One connection per remaining backend (per worker that served a request) is enough;
    // a backend wrongly marked as leaving would need one per request.
    assert!(
        opened <= 4,
        "20 requests opened {opened} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_newcomer_warms_up_every_old_backend_keeps_its_share() {
    const NAMES: [&str; 10] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"];
    let mut old = Vec::new();
    for name in NAMES {
        old.push(Backend::named(name, Duration::ZERO).await);
    }
    let newcomer = Backend::named("new", Duration::ZERO).await;
    let list: Vec<_> = old.iter().map(|b| (b.addr, 1)).collect();
    let proxy = start_proxy("http", "round_robin", &list, "", "");
    let admin = proxy.app().admin_addr().unwrap();
    let (status, body) = Client::connect(admin)
        .await
        .call(
            "POST",
            "/api/pools/app/backends",
            &format!("{{\"addr\": \"{}\", \"weight\": 1}}", newcomer.addr),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    // About 100 requests a second for 3 s, while the newcomer ramps from 10 % (30 s slow
    // start): the balancer is rebuilt every few requests.
    let mut client = Client::connect(proxy.addr).await;
    let mut tally = std::collections::HashMap::<String, usize>::new();
    for _ in 0..300 {
        let (status, body) = client.get("/").await;
        assert_eq!(status, 200, "{body}");
        *tally.entry(body).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each old backend's fair share is about 300 / 10.1 ≈ 30.
    for name in NAMES {
        let got = tally.get(name).copied().unwrap_or(0);
        assert!((18..=45).contains(&got), "{name} got {got}: {tally:?}");
    }
}
