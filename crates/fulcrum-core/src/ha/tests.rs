//! The election rules on virtual time: each test is one situation from the failure matrix.

use std::time::Duration;

use super::*;

const TTL: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timing() -> Timing {
    Timing {
        ttl: TTL,
        heartbeat: HEARTBEAT,
    }
}

fn report(node: &str, role: Role, epoch: u64, store_ok_ago: Option<u64>) -> Report {
    Report {
        node: node.into(),
        role,
        epoch,
        store_ok_ago: store_ok_ago.map(ms),
        // Peers hear lb1, the active of epoch 7, just now, unless a test says otherwise.
        hears_active: 7,
        heard_active_ago: Some(ms(0)),
    }
}

/// lb1 active with epoch 7 at t = 0, confirmed at t = 0.
fn active() -> Node {
    let mut node = Node::new("lb1", timing(), ms(0));
    node.won(7, ms(0), ms(0));
    assert_eq!(
        node.tick(ms(0)),
        Some(Change::Promoted {
            epoch: 7,
            failover: None
        })
    );
    node
}

#[test]
fn a_lone_winner_becomes_active_at_once() {
    let node = active();
    assert!(node.serving());
    assert_eq!(node.report(ms(0)).epoch, 7);
}

#[test]
fn renewals_keep_the_active_serving_indefinitely() {
    let mut node = active();
    for t in (0..60_000).step_by(10) {
        if t % 330 == 0 {
            node.renewed(ms(t));
        }
        assert_eq!(node.tick(ms(t)), None, "at {t} ms");
    }
    assert!(node.serving());
}

#[test]
fn an_isolated_active_fences_before_the_store_can_expire_its_lease() {
    let mut node = active();
    // Last confirmed renewal started at 0; the store expires the lease at ≥ 1000 ms.
    for t in (10..800).step_by(10) {
        assert_eq!(node.tick(ms(t)), None, "at {t} ms");
    }
    let change = node.tick(ms(800));
    assert!(
        matches!(&change, Some(Change::Demoted { epoch: 7, reason }) if reason.starts_with("isolated")),
        "{change:?}"
    );
    assert!(!node.serving());
}

#[test]
fn an_active_cut_off_from_the_store_fences_when_a_peer_still_reaches_it() {
    let mut node = active();
    for t in (10..1000).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(40)), ms(t));
        let change = node.tick(ms(t));
        if t < 800 {
            assert_eq!(change, None, "at {t} ms");
        } else {
            assert!(
                matches!(&change, Some(Change::Demoted { reason, .. }) if reason.contains("peer lb2 reaches it")),
                "at {t} ms: {change:?}"
            );
            return;
        }
    }
    unreachable!("never fenced");
}

#[test]
fn a_store_down_for_everybody_keeps_the_active_and_failover_waits() {
    let mut node = active();
    // The store dies at 0 for both; lb2's last success was then.
    for t in (10..30_000).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(t)), ms(t));
        assert_eq!(node.tick(ms(t)), None, "at {t} ms");
    }
    assert!(node.serving());
    assert!(node.hold().is_some(), "the hold is visible");
    // The store returns; lb2 reaches it first, we renew 300 ms later.
    for t in (30_000..30_300).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(5)), ms(t));
        assert_eq!(node.tick(ms(t)), None, "at {t} ms");
    }
    node.renewed(ms(30_290));
    assert_eq!(node.tick(ms(30_300)), None);
    assert_eq!(node.hold(), None, "confirmed again: the hold ends");
    assert!(node.serving());
}

#[test]
fn a_held_active_steps_down_if_it_cannot_rejoin_the_store_that_peers_reach() {
    let mut node = active();
    for t in (10..2000).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(t)), ms(t));
        assert_eq!(node.tick(ms(t)), None);
    }
    let mut fenced_at = None;
    for t in (2000..4000).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(5)), ms(t));
        if node.tick(ms(t)).is_some() {
            fenced_at = Some(t);
            break;
        }
    }
    assert_eq!(fenced_at, Some(3000), "rejoin grace is one TTL");
}

#[test]
fn a_peer_with_a_newer_epoch_demotes_the_active_immediately() {
    let mut node = active();
    node.renewed(ms(100));
    node.heard(report("lb2", Role::Elected, 9, Some(0)), ms(150));
    let change = node.tick(ms(150));
    assert!(
        matches!(&change, Some(Change::Demoted { reason, .. }) if reason.contains("newer epoch 9")),
        "{change:?}"
    );
}

#[test]
fn an_elected_standby_waits_until_the_old_active_is_silent_or_stepped_down() {
    let mut node = Node::new("lb2", timing(), ms(0));
    node.heard(report("lb1", Role::Active, 7, Some(0)), ms(0));
    node.won(9, ms(10), ms(20));
    assert_eq!(node.role(), Role::Elected);
    assert_eq!(node.tick(ms(20)), None, "lb1 still claims active");
    assert!(!node.serving());
    // lb1 heard at 0 is stale after 300 ms (three heartbeats).
    assert_eq!(node.tick(ms(300)), None);
    node.renewed(ms(290));
    assert_eq!(
        node.tick(ms(301)),
        Some(Change::Promoted {
            epoch: 9,
            failover: Some(ms(301))
        })
    );

    let mut node = Node::new("lb2", timing(), ms(0));
    node.heard(report("lb1", Role::Active, 7, Some(0)), ms(0));
    node.won(9, ms(10), ms(20));
    node.heard(report("lb1", Role::Standby, 0, Some(0)), ms(50));
    assert!(matches!(
        node.tick(ms(50)),
        Some(Change::Promoted { epoch: 9, .. })
    ));
}

#[test]
fn losing_the_claim_in_the_store_demotes_at_once() {
    let mut node = active();
    let change = node.lost(ms(200), "lease expired");
    assert!(matches!(change, Some(Change::Demoted { epoch: 7, .. })));
    assert_eq!(node.role(), Role::Standby);
    assert_eq!(
        node.lost(ms(210), "again"),
        None,
        "a standby has nothing to lose"
    );
}

#[test]
fn resigning_gives_up_the_role_and_never_campaigns_again() {
    let mut node = active();
    assert!(matches!(node.resign(ms(50)), Some(Change::Demoted { .. })));
    assert_eq!(node.role(), Role::Resigning);
    node.won(8, ms(60), ms(60));
    assert_eq!(node.role(), Role::Resigning);
    assert_eq!(node.tick(ms(70)), None);
}

#[test]
fn our_own_heartbeats_are_not_a_peer() {
    let mut node = active();
    node.heard(report("lb1", Role::Active, 7, Some(0)), ms(10));
    assert!(node.peers().is_empty());
}

#[test]
fn history_records_each_transition_with_its_reason() {
    let mut node = active();
    let _ = node.tick(ms(800));
    let roles: Vec<_> = node.history().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        roles,
        [
            (Role::Standby, Role::Elected),
            (Role::Elected, Role::Active),
            (Role::Active, Role::Standby)
        ]
    );
    assert_eq!((node.promotions(), node.demotions()), (1, 1));
}

#[test]
fn a_standby_does_not_campaign_while_it_hears_an_active() {
    let mut node = Node::new("lb2", timing(), ms(0));
    assert!(node.may_campaign(ms(0)));
    node.heard(report("lb1", Role::Active, 7, Some(0)), ms(10));
    assert!(!node.may_campaign(ms(10)));
    assert!(!node.may_campaign(ms(510)));
    assert!(
        node.may_campaign(ms(511)),
        "silent for three heartbeats plus two: gone, and it has heard that we do not hear it"
    );
    node.heard(report("lb1", Role::Active, 7, Some(0)), ms(600));
    node.heard(report("lb1", Role::Resigning, 0, Some(0)), ms(650));
    assert!(
        node.may_campaign(ms(650)),
        "an active that resigned releases us at once"
    );
}

#[test]
fn an_active_that_reclaims_a_lapsed_key_keeps_its_role_under_the_new_epoch() {
    let mut node = active();
    node.won(12, ms(500), ms(510));
    assert_eq!((node.role(), node.epoch()), (Role::Active, 12));
    assert_eq!(
        node.tick(ms(1200)),
        None,
        "confirmed by the re-claim at 500 ms"
    );
}

#[test]
fn a_store_outage_is_held_only_while_every_known_peer_is_heard() {
    let mut node = active();
    // Three instances: lb2 and lb3 both heard, neither reaches the store after 0.
    for t in (10..800).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(t)), ms(t));
        if t < 400 {
            node.heard(report("lb3", Role::Standby, 0, Some(t)), ms(t));
        }
        let change = node.tick(ms(t));
        assert_eq!(change, None, "at {t} ms");
    }
    // lb3 went silent at 390 ms: it may be the one reaching the store, so no hold.
    let change = node.tick(ms(800));
    assert!(
        matches!(&change, Some(Change::Demoted { reason, .. }) if reason.contains("peer lb3 is silent")),
        "{change:?}"
    );
}

#[test]
fn a_store_outage_is_held_only_while_every_peer_hears_the_active() {
    let mut node = active();
    for t in (10..2000).step_by(10) {
        let mut r = report("lb2", Role::Standby, 0, Some(t));
        // From 700 ms on lb2 no longer hears us (a one-way heartbeat loss).
        if t >= 700 {
            r.heard_active_ago = Some(ms(t - 700));
        }
        node.heard(r, ms(t));
        if let Some(change) = node.tick(ms(t)) {
            assert_eq!(
                t, 1010,
                "fenced once lb2 has not heard us for the peer timeout"
            );
            assert!(
                matches!(&change, Change::Demoted { reason, .. } if reason.contains("does not hear us"))
            );
            return;
        }
    }
    unreachable!("never fenced");
}

#[test]
fn a_held_active_that_reclaims_when_the_store_returns_is_still_heard_under_its_old_epoch() {
    // Found by the ZooKeeper store-down test: the session expired during a 30 s outage, the
    // active won the key again with a new epoch in a slow round trip (ZooKeeper starting up),
    // and its peer's heartbeat still named the old epoch. That is still this instance.
    let mut node = active();
    for t in (10..30_000).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(t)), ms(t));
        assert_eq!(node.tick(ms(t)), None, "at {t} ms");
    }
    assert!(node.hold().is_some());
    // The store is back: lb2 reached it; our re-claim started 900 ms ago and wins epoch 9.
    node.heard(report("lb2", Role::Standby, 0, Some(5)), ms(30_000));
    node.won(9, ms(29_100), ms(30_000));
    assert_eq!((node.role(), node.epoch()), (Role::Active, 9));
    for t in (30_000..30_300).step_by(10) {
        node.heard(report("lb2", Role::Standby, 0, Some(5)), ms(t));
        assert_eq!(node.tick(ms(t)), None, "at {t} ms: lb2 hears epoch 7, ours");
    }
    node.renewed(ms(30_290));
    assert_eq!(node.tick(ms(30_300)), None);
    assert_eq!(node.hold(), None);
}

#[test]
fn a_peer_hearing_an_epoch_from_before_this_tenure_does_not_hear_us() {
    let mut node = Node::new("lb1", timing(), ms(0));
    node.won(7, ms(0), ms(0));
    node.tick(ms(0));
    for t in (10..2000).step_by(10) {
        // lb2 still hears epoch 6: an older active, not us.
        let mut r = report("lb2", Role::Standby, 0, Some(t));
        r.hears_active = 6;
        node.heard(r, ms(t));
        if let Some(change) = node.tick(ms(t)) {
            assert!(
                matches!(&change, Change::Demoted { reason, .. } if reason.contains("does not hear us")),
                "{change:?}"
            );
            return;
        }
    }
    unreachable!("never fenced");
}

#[test]
fn the_peer_map_is_bounded_and_forgets_peers_long_silent() {
    let mut node = active();
    for i in 0..1000 {
        node.heard(
            report(&format!("made-up-{i}"), Role::Standby, 0, None),
            ms(10),
        );
    }
    assert_eq!(node.peers().len(), MAX_PEERS);
    // A real peer heard later, once the made-up ones have been silent for ten timeouts.
    node.heard(
        report("lb2", Role::Standby, 0, Some(0)),
        ms(10) + HEARTBEAT * 31,
    );
    assert_eq!(
        node.peers().keys().collect::<Vec<_>>(),
        ["lb2"],
        "long-silent peers are forgotten"
    );
}

/// lb1 active since t = 0 (epoch 7, confirmed at 0) hands over at t = 300; the successor's
/// clock reads 5 s then, and the succession took 10 ms to arrive.
fn successor() -> Node {
    let old = active();
    let handed = old.succession(ms(300));
    assert_eq!(handed.confirmed_ago, Some(ms(300)));
    Node::succeed("lb1", timing(), ms(5_000), &handed, ms(10))
}

#[test]
fn a_successor_of_the_active_serves_at_once_under_the_same_epoch() {
    let mut node = successor();
    assert!(node.serving());
    assert_eq!(node.role(), Role::Active);
    assert_eq!(node.report(ms(5_000)).epoch, 7);
    // No role change: nothing to act on, and no promotion to count.
    assert_eq!(node.tick(ms(5_000)), None);
    assert_eq!(node.promotions(), 0);
    assert_eq!(
        node.history().last().map(|t| t.reason.as_str()),
        Some("taken over from the previous process (binary upgrade)")
    );
}

#[test]
fn a_successor_fences_on_its_predecessors_deadline_when_it_cannot_renew() {
    // Confirmed 310 ms before 5 s on the successor's clock: the claim is trusted until
    // 4.690 s + fence after, exactly as the predecessor would have trusted it (plus transit).
    let mut node = successor();
    let deadline = ms(4_690) + timing().fence_after();
    assert_eq!(node.tick(deadline - ms(1)), None);
    assert!(matches!(
        node.tick(deadline),
        Some(Change::Demoted { epoch: 7, .. })
    ));
}

#[test]
fn a_successor_renewing_its_inherited_claim_stays_active() {
    let mut node = successor();
    for t in (5_000..20_000).step_by(10) {
        if t % 330 == 0 {
            node.renewed(ms(t));
        }
        assert_eq!(node.tick(ms(t)), None, "at {t} ms");
    }
    assert!(node.serving());
}

#[test]
fn a_successor_that_moves_its_claim_to_a_new_epoch_is_still_heard_under_the_old_one() {
    // ZooKeeper: the claim moves to the successor's own session as a new znode (epoch 9);
    // peers that heard epoch 7 a moment ago still hear the same tenure.
    let mut node = successor();
    node.won(9, ms(5_010), ms(5_020));
    assert_eq!((node.role(), node.epoch()), (Role::Active, 9));
    node.heard(report("lb2", Role::Standby, 0, Some(0)), ms(5_030));
    // The store is unreachable from here on: lb2 still hears epoch 7 of our tenure, so the
    // rules see a peer that hears us (a hold), not one that would take over.
    let late = ms(5_010) + timing().fence_after();
    node.heard(report("lb2", Role::Standby, 0, None), late);
    assert_eq!(node.tick(late), None);
    assert!(node.hold().is_some(), "held, not fenced");
}

#[test]
fn a_successor_of_a_standby_has_no_claim() {
    let mut old = Node::new("lb2", timing(), ms(0));
    old.store_ok(ms(100));
    old.heard(report("lb1", Role::Active, 7, Some(0)), ms(150));
    let handed = old.succession(ms(200));
    assert_eq!(
        (handed.role, handed.epoch, handed.confirmed_ago),
        (Role::Standby, 0, None)
    );
    let node = Node::succeed("lb2", timing(), ms(3_000), &handed, ms(0));
    assert_eq!(node.role(), Role::Standby);
    assert_eq!(node.report(ms(3_000)).epoch, 0);
    assert_eq!(node.store_ok_at(), Some(ms(2_900)));
}

#[test]
fn a_moment_older_than_the_successors_clock_is_never_trusted() {
    // The successor's clock started 100 ms ago, the confirmation was 300 ms ago: it cannot
    // be placed, so the claim counts as unconfirmed (the daemon starts the successor's clock
    // early enough that this does not happen).
    let handed = active().succession(ms(300));
    assert_eq!(handed.oldest(), ms(300));
    let mut node = Node::succeed("lb1", timing(), ms(100), &handed, ms(0));
    assert_eq!(node.confirmed_at(), None);
    assert!(matches!(node.tick(ms(100)), Some(Change::Demoted { .. })));
}
