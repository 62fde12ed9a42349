//! The control plane's own rules, on a pool without sockets.

use fulcrum_core::health::{BackendState, Cause, ProbeOutcome};

use super::*;

fn settings(addrs: &[u16]) -> config::Pool {
    let text = format!(
        "[[listeners]]\nname='l'\nbind='127.0.0.1:1'\nprotocol='tcp'\npool='p'\n[pools.p]\nbackends=[{}]\n",
        addrs
            .iter()
            .map(|p| format!("{{addr='127.0.0.1:{p}'}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let config = config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    config.pools["p"].clone()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn counters_survive_a_new_snapshot() {
    let pool = Pool::new("p", settings(&[1, 2]), Clock::new());
    let stats = Arc::clone(&pool.snapshot().backends[1].stats);
    let _held = super::super::InFlight::start(&stats);
    stats.record_request();
    pool.add_backend(addr(3), 1, Cause::Admin)
        .unwrap_or_else(|e| panic!("{e}"));
    let snapshot = pool.snapshot();
    assert_eq!(snapshot.backends.len(), 3);
    let same = snapshot.backends.iter().find(|b| b.addr.port() == 2);
    assert_eq!(
        same.map(|b| (b.stats.in_flight(), b.stats.requests())),
        Some((1, 1))
    );
}

#[test]
fn drain_takes_the_backend_out_of_the_snapshot_before_returning() {
    let pool = Pool::new("p", settings(&[1, 2]), Clock::new());
    pool.drain(addr(1), Cause::Admin)
        .unwrap_or_else(|e| panic!("{e}"));
    let ports: Vec<u16> = pool
        .snapshot()
        .backends
        .iter()
        .map(|b| b.addr.port())
        .collect();
    assert_eq!(ports, vec![2]);
    assert_eq!(
        pool.drain(addr(9), Cause::Admin),
        Err(AdminError::NotFound(
            "no backend 127.0.0.1:9 in pool p".into()
        ))
    );
    // Nothing in flight: the next tick finishes the drain.
    pool.tick();
    assert_eq!(pool.status().backends[0].state, BackendState::Drained);
}

#[test]
fn a_new_backend_starts_at_the_slow_start_minimum() {
    let pool = Pool::new("p", settings(&[1]), Clock::new());
    pool.add_backend(addr(2), 2, Cause::Admin)
        .unwrap_or_else(|e| panic!("{e}"));
    let snapshot = pool.snapshot();
    let weights: Vec<(u16, u32)> = snapshot
        .backends
        .iter()
        .map(|b| (b.addr.port(), b.weight))
        .collect();
    assert_eq!(weights[0], (1, 1000));
    assert_eq!(weights[1].0, 2);
    assert!((200..=210).contains(&weights[1].1), "{weights:?}");
}

#[test]
fn the_auto_drain_timeout_is_twice_the_observed_p99() {
    let pool = Pool::new("p", settings(&[1, 2]), Clock::new());
    assert_eq!(
        pool.drain_timeout(&BackendStats::default()),
        Duration::from_secs(30)
    );
    let stats = BackendStats::default();
    for _ in 0..100 {
        stats.latency.record(Duration::from_millis(700));
    }
    let timeout = pool.drain_timeout(&stats);
    assert!(
        timeout >= Duration::from_millis(1400) && timeout <= Duration::from_millis(1800),
        "{timeout:?}"
    );
    let fast = BackendStats::default();
    fast.latency.record(Duration::from_millis(5));
    assert_eq!(
        pool.drain_timeout(&fast),
        Duration::from_secs(1),
        "clamped to at least 1 s"
    );
}

#[test]
fn removing_a_backend_that_is_not_last_leaves_its_neighbours_state_alone() {
    let pool = Pool::new("p", settings(&[1, 2, 3]), Clock::new());
    pool.remove_backend(addr(1), Cause::Admin)
        .unwrap_or_else(|e| panic!("{e}"));
    // Nothing in flight: the tick finishes the drain and removes it, in the same step as
    // the drained transition is applied.
    pool.tick();
    pool.tick();
    let status = pool.status();
    let left: Vec<(u16, BackendState)> = status
        .backends
        .iter()
        .map(|b| (b.addr.port(), b.state))
        .collect();
    assert_eq!(left, [(2, BackendState::Active), (3, BackendState::Active)]);
    for b in &pool.snapshot().backends {
        assert!(
            b.stats.pools_connections(),
            "{} must keep its idle connections",
            b.addr
        );
    }
}

#[test]
fn replacing_the_set_publishes_once() {
    let pool = Pool::new("p", settings(&[1]), Clock::new());
    let generations = || pool.lock().published.generations;
    let before = generations();
    let many: Vec<config::Backend> = (2..12)
        .map(|p| config::Backend {
            addr: addr(p),
            weight: 1,
        })
        .collect();
    pool.set_backends(&many, Cause::Admin);
    assert_eq!(
        generations(),
        before + 1,
        "one snapshot for the whole change"
    );
    // Backend 1 is draining (out of rotation); the ten new ones arrived together.
    assert_eq!(pool.snapshot().backends.len(), 10);
}

#[test]
fn backends_added_by_discovery_say_so() {
    let pool = Pool::new("p", settings(&[1]), Clock::new());
    let found = [config::Backend {
        addr: addr(2),
        weight: 1,
    }];
    pool.discovery_synced(&found, 7);
    let status = pool.status();
    let added = status.backends.iter().find(|b| b.addr == addr(2));
    assert_eq!(added.map(|b| b.cause), Some(Cause::Discovery));
}

#[test]
fn the_last_probe_shown_is_the_one_that_explains_the_state() {
    let pool = Pool::new("p", settings(&[1]), Clock::new());
    let shown = |pool: &Pool| {
        let probe = pool.status().backends[0].last_probe.clone();
        probe.map(|p| (p.check, p.passed, p.result))
    };
    let probe =
        |check: &'static str, passed: bool, result: &str| Some((check, passed, result.to_string()));
    // Live but not ready: the passing liveness probe, though later, does not hide the 503.
    pool.report_readiness(addr(1), ProbeOutcome::Fail, "status 503");
    pool.report_liveness(addr(1), true, "connected");
    assert_eq!(shown(&pool), probe("readiness", false, "status 503"));
    // Both pass: readiness, whichever came last.
    pool.report_readiness(addr(1), ProbeOutcome::Pass, "status 200");
    pool.report_liveness(addr(1), true, "connected");
    assert_eq!(shown(&pool), probe("readiness", true, "status 200"));
    // Both fail: the later one.
    pool.report_readiness(addr(1), ProbeOutcome::Fail, "connect refused");
    pool.report_liveness(addr(1), false, "connect refused");
    assert_eq!(shown(&pool), probe("liveness", false, "connect refused"));
}

fn algorithm_on_another_thread(pool: &Arc<Pool>) -> config::Algorithm {
    let pool = Arc::clone(pool);
    std::thread::spawn(move || pool.settings().algorithm)
        .join()
        .unwrap_or_else(|_| panic!("reader thread"))
}

#[test]
fn new_settings_reach_every_thread_at_its_next_read_and_keep_the_backends() {
    let pool = Arc::new(Pool::new("p", settings(&[1, 2]), Clock::new()));
    let stats = Arc::clone(&pool.snapshot().backends[0].stats);
    stats.record_request();
    let before = pool.settings();
    assert_eq!(before.algorithm, config::Algorithm::RoundRobin);
    assert_eq!(
        algorithm_on_another_thread(&pool),
        config::Algorithm::RoundRobin
    );

    let mut next = settings(&[1, 2]);
    next.algorithm = config::Algorithm::LeastConn;
    next.connect_attempts = 1;
    pool.set_settings(next);
    // This thread's copy and another thread's both follow; a copy taken before stays as it
    // was (a request in progress finishes with the settings it started with).
    assert_eq!(pool.settings().algorithm, config::Algorithm::LeastConn);
    assert_eq!(pool.settings().connect_attempts, 1);
    assert_eq!(before.algorithm, config::Algorithm::RoundRobin);
    assert_eq!(
        algorithm_on_another_thread(&pool),
        config::Algorithm::LeastConn
    );
    // A new snapshot for the new algorithm, over the same backends and counters.
    let snapshot = pool.snapshot();
    assert_eq!(snapshot.backends.len(), 2);
    assert_eq!(snapshot.backends[0].stats.requests(), 1);
    assert!(Arc::ptr_eq(&snapshot.backends[0].stats, &stats));
}
