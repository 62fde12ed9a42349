//! A binary upgrade of the active instance of an HA pair (see `ha_pair/`): the new process
//! takes the role and the claim over from the old one, so the standby never promotes, the
//! VIP never moves, and no client request fails — through two upgrades in a row, with etcd
//! and with ZooKeeper.
//!
//! Needs root (namespaces); `scripts/test` runs as root and installs the stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ha_pair;
mod netns;

use std::process::Stdio;
use std::time::{Duration, Instant};

use ha_pair::*;
use netns::*;

/// Kills the processes `fulcrum upgrade` started (they are not the lab's children).
struct Successors(Vec<u32>);

impl Drop for Successors {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Whether `pid` has exited (gone, or a zombie its parent has not reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// `fulcrum upgrade -c lbN.toml` in lbN's host; the new process's pid.
fn upgrade(lab: &Lab, n: usize, round: usize) -> u32 {
    let config = lab.dir.join(format!("lb{n}.toml"));
    let log_name = format!("lb{n}-upgrade-{round}.log");
    let log = std::fs::File::create(lab.dir.join(&log_name)).unwrap();
    // The new process inherits stderr: a file, never a pipe this test would wait on.
    let out = lab
        .command(&format!("lb{n}"), env!("CARGO_BIN_EXE_fulcrum"))
        .args(["upgrade", "-c", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fulcrum upgrade failed: {stdout}\n{}",
        lab.log(&log_name)
    );
    stdout
        .split_whitespace()
        .nth(2)
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"))
}

fn upgrade_of_the_active(tag: &str, store: Store) {
    let pair = Pair::start(tag, store);
    let mut successors = Successors(Vec::new());
    let before = ha_status(&pair.lab, 1).unwrap();
    assert_eq!(before["role"], "active", "{before}");
    let first_epoch = before["epoch"].as_u64().unwrap();
    // The hooks' record before the upgrades: on a loaded machine lb1 may have needed more
    // than one try to become active at start, which is not the upgrade's doing.
    let hooks = |lab: &Lab| {
        ["promoted-lb1", "promoted-lb2", "demoted-lb1", "demoted-lb2"].map(|f| lab.log(f))
    };
    let hooks_before = hooks(&pair.lab);
    let sampler = VipSampler::start(&pair.lab, &["lb1", "lb2"]);
    let client = ClientLoad::start(&pair.lab, Duration::from_secs(1), Duration::from_secs(5));
    client.wait_for_more(20, Duration::from_secs(5));
    let mut old = pair.pids[0];
    let mut epoch = first_epoch;
    for round in 1..=2 {
        let new = upgrade(&pair.lab, 1, round);
        successors.0.push(new);
        let took = wait_until(Duration::from_secs(30), "the old process exits", || {
            exited(old)
        });
        // The new process holds the claim alone now (the old one's store session is gone):
        // it keeps renewing it for several leases, and keeps the role.
        std::thread::sleep(store.ttl() * 3);
        client.wait_for_more(20, Duration::from_secs(5));
        let reload = api(&pair.lab, 1, "/api/reload").unwrap();
        assert_eq!(reload["pid"], new, "the new process answers: {reload}");
        assert_eq!(reload["upgrade_generation"], round, "{reload}");
        let now = ha_status(&pair.lab, 1).unwrap();
        assert_eq!(now["role"], "active", "{now}");
        assert!(
            now["last_renewal_ms_ago"].as_u64().unwrap() < store.ttl().as_millis() as u64,
            "the new process renews the claim: {now}"
        );
        let now_epoch = now["epoch"].as_u64().unwrap();
        match store {
            // The same lease, the same key: the same epoch.
            Store::Etcd => assert_eq!(now_epoch, epoch, "{now}"),
            // The znode moved to the new process's session: a later sequence.
            Store::ZooKeeper => assert!(now_epoch > epoch, "{now}"),
        }
        epoch = now_epoch;
        let standby = ha_status(&pair.lab, 2).unwrap();
        assert_eq!(standby["role"], "standby", "{standby}");
        assert_eq!(standby["promotions"], 0, "{standby}");
        eprintln!(
            "upgrade {round} ({store:?}): old process exited {} ms after `fulcrum upgrade` returned; epoch {epoch}",
            took.as_millis()
        );
        old = new;
    }
    let report = client.finish();
    let samples = sampler.finish();
    assert!(
        report.errors.is_empty(),
        "no attempt failed, none was retried: {:?}",
        report.errors
    );
    assert!(
        samples.iter().all(|s| s.owners == [true, false]),
        "lb1 kept the VIP throughout and lb2 never took it ({} samples)",
        samples.len()
    );
    // No role change anywhere: no hook ran during the upgrades, and lb2 was never promoted.
    assert_eq!(
        hooks(&pair.lab),
        hooks_before,
        "hooks ran during the upgrades"
    );
    assert_eq!(hooks_before[0].trim(), first_epoch.to_string());
    assert_eq!(hooks_before[1], "");
    assert!(pair
        .lab
        .log("lb1.log")
        .contains("HA: handed the role over to the new process"));
    assert!(pair
        .lab
        .log("lb1-upgrade-1.log")
        .contains("HA: took the role over from the previous process"));
    eprintln!(
        "HA upgrade ({store:?}): 2 upgrades, {} requests ok, 0 failed attempts, {} VIP samples all on lb1",
        report.ok,
        samples.len()
    );
    // The standby is upgraded the same way and stands by, hearing lb1 from the same address.
    let standby = upgrade(&pair.lab, 2, 1);
    successors.0.push(standby);
    wait_until(Duration::from_secs(30), "the old standby exits", || {
        exited(pair.pids[1])
    });
    pair.wait_standby(2, 1);
    assert!(pair.lab.owns("lb1", VIP) && !pair.lab.owns("lb2", VIP));
    // The last successor really holds the claim: its resignation hands the role to the
    // upgraded standby at once, as a SIGTERM of any active does.
    let started = Instant::now();
    signal(old, "TERM");
    wait_until(Duration::from_secs(3), "lb2 owns the VIP", || {
        pair.lab.owns("lb2", VIP)
    });
    eprintln!(
        "SIGTERM of the upgraded active: lb2 took the VIP after {} ms",
        started.elapsed().as_millis()
    );
    assert!(pair.lab.log("lb1-upgrade-2.log").contains("HA: resigned"));
}

#[test]
fn etcd_upgrading_the_active_causes_no_failover_and_never_two_actives() {
    upgrade_of_the_active("u", Store::Etcd);
}

#[test]
fn zookeeper_upgrading_the_active_causes_no_failover_and_never_two_actives() {
    upgrade_of_the_active("zu", Store::ZooKeeper);
}
