//! The lifecycle as a spec, on exact time: no sleeps, every curve checked point by point.

use std::time::Duration;

use super::pool::OutlierRules;
use super::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn rules() -> HealthRules {
    HealthRules {
        outlier: Some(OutlierRules {
            consecutive_failures: 5,
            base_ejection: s(30),
            max_ejection: s(300),
        }),
        ..HealthRules::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn state(pool: &PoolHealth, i: BackendId) -> BackendState {
    pool.view(i, Duration::ZERO)
        .map(|v| v.state)
        .unwrap_or(BackendState::Drained)
}

fn fail_readiness(pool: &mut PoolHealth, i: BackendId, now: Duration) {
    for _ in 0..pool.rules().fall {
        pool.readiness(i, now, ProbeOutcome::Fail);
    }
}

fn fail_liveness(pool: &mut PoolHealth, i: BackendId, now: Duration) {
    for _ in 0..pool.rules().fall {
        pool.liveness(i, now, false);
    }
}

#[test]
fn slow_start_ramps_linearly_from_ten_percent_to_full_over_thirty_seconds() {
    let mut pool = PoolHealth::new(rules(), 1, s(0));
    let i = pool.add(s(100), Cause::Admin);
    for (at, want) in [(0, 0.10), (15, 0.55), (30, 1.0)] {
        pool.tick(s(100 + at));
        assert!(
            close(pool.fraction(i, s(100 + at)), want),
            "at {at}s: {}",
            pool.fraction(i, s(100 + at))
        );
    }
    assert_eq!(state(&pool, i), BackendState::Active);
}

#[test]
fn backends_present_at_start_begin_active_and_slow_start_zero_skips_warming() {
    let pool = PoolHealth::new(rules(), 2, s(0));
    assert!(close(pool.fraction(BackendId(0), s(0)), 1.0));
    let mut off = PoolHealth::new(
        HealthRules {
            slow_start: Duration::ZERO,
            ..rules()
        },
        1,
        s(0),
    );
    let i = off.add(s(5), Cause::Discovery);
    assert_eq!(state(&off, i), BackendState::Active);
}

#[test]
fn readiness_failures_decay_the_weight_to_zero_then_eject() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    fail_readiness(&mut pool, BackendId(3), s(10));
    assert_eq!(state(&pool, BackendId(3)), BackendState::Failing);
    for (at, want) in [(10, 1.0), (16, 0.8), (25, 0.5), (37, 0.1)] {
        pool.tick(s(at));
        assert!(
            close(pool.fraction(BackendId(3), s(at)), want),
            "at {at}s: {}",
            pool.fraction(BackendId(3), s(at))
        );
    }
    pool.tick(s(40));
    assert_eq!(state(&pool, BackendId(3)), BackendState::Ejected);
    assert!(close(pool.fraction(BackendId(3), s(40)), 0.0));
}

#[test]
fn a_false_positive_recovers_during_the_decay_without_removal() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    fail_readiness(&mut pool, BackendId(0), s(0));
    pool.tick(s(15)); // halfway: 50 %
    pool.readiness(BackendId(0), s(15), ProbeOutcome::Pass);
    pool.readiness(BackendId(0), s(15), ProbeOutcome::Pass);
    assert_eq!(state(&pool, BackendId(0)), BackendState::Warming);
    // Slow start from its current weight, not from 10 %.
    assert!(close(pool.fraction(BackendId(0), s(15)), 0.5));
    assert!(close(pool.fraction(BackendId(0), s(30)), 0.75));
    pool.tick(s(45));
    assert_eq!(state(&pool, BackendId(0)), BackendState::Active);
    assert_eq!(pool.view(BackendId(0), s(45)).map(|v| v.ejections), Some(0));
}

#[test]
fn liveness_failure_removes_at_once_and_rise_brings_it_back_warming() {
    let mut pool = PoolHealth::new(rules(), 5, s(0));
    pool.liveness(BackendId(2), s(1), false);
    pool.liveness(BackendId(2), s(2), false);
    assert_eq!(
        state(&pool, BackendId(2)),
        BackendState::Active,
        "fall is 3"
    );
    pool.liveness(BackendId(2), s(3), false);
    assert_eq!(state(&pool, BackendId(2)), BackendState::Dead);
    assert!(close(pool.fraction(BackendId(2), s(3)), 0.0));
    pool.liveness(BackendId(2), s(4), true);
    pool.liveness(BackendId(2), s(5), true);
    assert_eq!(state(&pool, BackendId(2)), BackendState::Warming);
    assert!(close(pool.fraction(BackendId(2), s(5)), 0.10));
}

#[test]
fn the_cap_for_pools_of_every_size() {
    for (n, cap) in [(1, 0), (2, 1), (3, 1), (5, 1), (10, 2), (100, 20)] {
        assert_eq!(PoolHealth::new(rules(), n, s(0)).cap(), cap, "N = {n}");
    }
}

#[test]
fn three_of_ten_dead_means_two_out_and_one_suppressed() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    for i in (0..3).map(BackendId) {
        fail_liveness(&mut pool, i, s(1));
    }
    pool.tick(s(2));
    let states: Vec<_> = (0..3).map(|i| state(&pool, BackendId(i))).collect();
    assert_eq!(
        states,
        vec![BackendState::Dead, BackendState::Dead, BackendState::Active]
    );
    assert_eq!(pool.suppressed_ejections(), 1);
    assert!(pool.view(BackendId(2), s(2)).is_some_and(|v| v.suppressed));
    assert!(
        close(pool.fraction(BackendId(2), s(2)), 1.0),
        "stays in rotation at its weight"
    );
    assert!(!pool.panic(), "30 % failing is below the panic threshold");
    let events = pool.take_transitions();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Transition::Suppressed {
                backend: BackendId(2),
                ..
            }
        )),
        "{events:?}"
    );
    // When one of the dead recovers, the suppressed ejection goes through.
    pool.liveness(BackendId(0), s(3), true);
    pool.liveness(BackendId(0), s(3), true);
    pool.tick(s(3));
    assert_eq!(state(&pool, BackendId(2)), BackendState::Dead);
    assert_eq!(pool.suppressed_ejections(), 1, "one episode, counted once");
}

#[test]
fn a_single_backend_is_never_ejected() {
    let mut pool = PoolHealth::new(rules(), 1, s(0));
    fail_liveness(&mut pool, BackendId(0), s(1));
    assert_eq!(state(&pool, BackendId(0)), BackendState::Active);
    assert!(close(pool.fraction(BackendId(0), s(1)), 1.0));
}

#[test]
fn panic_when_half_the_pool_fails_and_back_when_it_recovers() {
    let mut pool = PoolHealth::new(rules(), 5, s(0));
    for i in (0..3).map(BackendId) {
        fail_readiness(&mut pool, i, s(1));
    }
    pool.tick(s(1));
    assert!(pool.panic());
    // In panic every backend gets traffic at full weight, whatever its checks say.
    pool.tick(s(60));
    for i in (0..5).map(BackendId) {
        assert!(close(pool.fraction(i, s(60)), 1.0), "backend {i}");
    }
    assert!(pool.take_transitions().iter().any(|e| matches!(
        e,
        Transition::Panic {
            entered: true,
            failing: 3,
            of: 5
        }
    )));
    for i in (0..2).map(BackendId) {
        pool.readiness(i, s(61), ProbeOutcome::Pass);
        pool.readiness(i, s(62), ProbeOutcome::Pass);
    }
    pool.tick(s(62));
    assert!(!pool.panic(), "1 of 5 failing");
    assert!(pool
        .take_transitions()
        .iter()
        .any(|e| matches!(e, Transition::Panic { entered: false, .. })));
}

#[test]
fn outlier_ejections_back_off_and_return_through_slow_start() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    let mut t = 0;
    for (round, want) in [(1, 30), (2, 60), (3, 90)] {
        for _ in 0..5 {
            pool.live_outcome(BackendId(4), s(t), false);
        }
        assert_eq!(
            state(&pool, BackendId(4)),
            BackendState::Ejected,
            "round {round}"
        );
        pool.tick(s(t + want - 1));
        assert_eq!(
            state(&pool, BackendId(4)),
            BackendState::Ejected,
            "round {round}: too early"
        );
        pool.tick(s(t + want));
        assert_eq!(
            state(&pool, BackendId(4)),
            BackendState::Warming,
            "round {round}"
        );
        t += want;
    }
    // Capped at max_ejection.
    let mut long = PoolHealth::new(rules(), 10, s(0));
    for round in 0..12u64 {
        for _ in 0..5 {
            long.live_outcome(BackendId(0), s(round * 1000), false);
        }
        long.tick(s(round * 1000 + 300));
    }
    assert_eq!(state(&long, BackendId(0)), BackendState::Warming);
}

#[test]
fn successes_reset_the_outlier_count() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    for _ in 0..4 {
        pool.live_outcome(BackendId(1), s(1), false);
    }
    pool.live_outcome(BackendId(1), s(1), true);
    for _ in 0..4 {
        pool.live_outcome(BackendId(1), s(1), false);
    }
    assert_eq!(state(&pool, BackendId(1)), BackendState::Active);
}

#[test]
fn a_readiness_timeout_while_live_traffic_succeeds_is_a_slow_check() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    pool.live_outcome(BackendId(0), s(10), true);
    for _ in 0..5 {
        pool.readiness(BackendId(0), s(11), ProbeOutcome::Timeout);
    }
    assert_eq!(state(&pool, BackendId(0)), BackendState::Active);
    assert_eq!(
        pool.view(BackendId(0), s(11)).map(|v| v.slow_checks),
        Some(5)
    );
    // Without recent live success, timeouts are failures.
    fail_readiness(&mut pool, BackendId(1), s(11));
    for _ in 0..3 {
        pool.readiness(BackendId(2), s(30), ProbeOutcome::Timeout);
    }
    assert_eq!(state(&pool, BackendId(2)), BackendState::Failing);
}

#[test]
fn drain_disable_and_enable() {
    let mut pool = PoolHealth::new(rules(), 3, s(0));
    pool.drain(BackendId(0), s(1), Cause::Admin);
    assert_eq!(state(&pool, BackendId(0)), BackendState::Draining);
    assert!(close(pool.fraction(BackendId(0), s(1)), 0.0));
    pool.drained(BackendId(0), s(2));
    assert_eq!(state(&pool, BackendId(0)), BackendState::Drained);
    pool.disable(BackendId(1), s(3));
    assert_eq!(state(&pool, BackendId(1)), BackendState::Disabled);
    // Administrative states are not counted by the cap or panic: 1 eligible backend left.
    assert_eq!(pool.cap(), 0);
    pool.enable(BackendId(0), s(4));
    assert_eq!(state(&pool, BackendId(0)), BackendState::Warming);
    assert!(close(pool.fraction(BackendId(0), s(4)), 0.10));
    let causes: Vec<_> = pool
        .take_transitions()
        .into_iter()
        .filter_map(|e| match e {
            Transition::State {
                backend: BackendId(0),
                to,
                cause,
                ..
            } => Some((to, cause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        causes,
        vec![
            (BackendState::Draining, Cause::Admin),
            (BackendState::Drained, Cause::Admin),
            (BackendState::Warming, Cause::Admin)
        ]
    );
}

#[test]
fn the_ejection_multiplier_is_forgiven_while_the_backend_stays_in_rotation() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    let eject = |pool: &mut PoolHealth, at: u64| {
        for _ in 0..5 {
            pool.live_outcome(BackendId(4), s(at), false);
        }
        assert_eq!(state(pool, BackendId(4)), BackendState::Ejected, "at {at}s");
    };
    eject(&mut pool, 0); // 30 s
    pool.tick(s(30));
    eject(&mut pool, 31); // 60 s: a repeat offender
    pool.tick(s(91));
    assert_eq!(state(&pool, BackendId(4)), BackendState::Warming);
    // Two base ejections (30 s each) back in rotation forgive both ejections.
    for t in (92..=151).step_by(1) {
        pool.tick(s(t));
    }
    eject(&mut pool, 152);
    pool.tick(s(181));
    assert_eq!(state(&pool, BackendId(4)), BackendState::Ejected);
    pool.tick(s(182));
    assert_eq!(
        state(&pool, BackendId(4)),
        BackendState::Warming,
        "ejected for the base 30 s again, not 90 s"
    );
    assert_eq!(
        pool.view(BackendId(4), s(182)).map(|v| v.ejections),
        Some(3)
    );
}

#[test]
fn passing_probes_and_recovery_clear_failures_from_while_the_backend_was_down() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    for _ in 0..4 {
        pool.live_outcome(BackendId(1), s(1), false);
    }
    pool.readiness(BackendId(1), s(2), ProbeOutcome::Pass);
    pool.live_outcome(BackendId(1), s(3), false);
    assert_eq!(
        state(&pool, BackendId(1)),
        BackendState::Active,
        "a passing probe reset the streak: 1 failure, not 5"
    );
    // Dead, failing live traffic meanwhile, then back: the old failures do not count.
    fail_liveness(&mut pool, BackendId(2), s(10));
    for _ in 0..4 {
        pool.live_outcome(BackendId(2), s(11), false);
    }
    pool.liveness(BackendId(2), s(12), true);
    pool.liveness(BackendId(2), s(13), true);
    assert_eq!(state(&pool, BackendId(2)), BackendState::Warming);
    pool.live_outcome(BackendId(2), s(14), false);
    assert_eq!(state(&pool, BackendId(2)), BackendState::Warming);
}

#[test]
fn removing_a_backend_leaves_every_other_id_and_its_transitions_alone() {
    let mut pool = PoolHealth::new(rules(), 3, s(0));
    pool.drain(BackendId(0), s(1), Cause::Admin);
    pool.drained(BackendId(0), s(1));
    pool.disable(BackendId(1), s(1));
    pool.take_transitions();
    pool.remove(BackendId(0));
    assert!(pool.view(BackendId(0), s(2)).is_none());
    assert_eq!(state(&pool, BackendId(1)), BackendState::Disabled);
    assert_eq!(state(&pool, BackendId(2)), BackendState::Active);
    let added = pool.add(s(2), Cause::Admin);
    assert_eq!(added, BackendId(3), "ids are never reused");
    pool.enable(BackendId(1), s(3));
    let changed: Vec<BackendId> = pool
        .take_transitions()
        .into_iter()
        .filter_map(|t| match t {
            Transition::State { backend, .. } => Some(backend),
            _ => None,
        })
        .collect();
    assert_eq!(changed, vec![BackendId(1)]);
    assert_eq!(
        pool.ids().collect::<Vec<_>>(),
        [BackendId(1), BackendId(2), BackendId(3)]
    );
}

#[test]
fn new_rules_keep_every_backends_state_and_ejection_history_and_apply_from_the_next_input() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    for _ in 0..5 {
        pool.live_outcome(BackendId(4), s(0), false);
    }
    assert_eq!(state(&pool, BackendId(4)), BackendState::Ejected);
    let warming = pool.add(s(0), Cause::Reload);

    // Three failures now eject; ramps take 60 s.
    pool.set_rules(HealthRules {
        slow_start: s(60),
        outlier: Some(OutlierRules {
            consecutive_failures: 3,
            base_ejection: s(30),
            max_ejection: s(300),
        }),
        ..HealthRules::default()
    });
    assert_eq!(
        state(&pool, BackendId(4)),
        BackendState::Ejected,
        "the running ejection is kept"
    );
    pool.tick(s(29));
    assert_eq!(state(&pool, BackendId(4)), BackendState::Ejected);
    pool.tick(s(30));
    assert_eq!(
        state(&pool, BackendId(4)),
        BackendState::Warming,
        "it ends when it was given to"
    );
    assert!(
        close(pool.fraction(warming, s(30)), 0.1 + 0.9 * 0.5),
        "a ramp in progress follows the new slow start: {}",
        pool.fraction(warming, s(30))
    );
    // The history survived: the second ejection lasts twice the base.
    for _ in 0..3 {
        pool.live_outcome(BackendId(4), s(31), false);
    }
    assert_eq!(state(&pool, BackendId(4)), BackendState::Ejected);
    pool.tick(s(31 + 59));
    assert_eq!(state(&pool, BackendId(4)), BackendState::Ejected);
    pool.tick(s(31 + 60));
    assert_eq!(state(&pool, BackendId(4)), BackendState::Warming);
}

#[test]
fn counters_tell_ejections_by_reason_false_positives_and_slow_starts_apart() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    // Backend 0: readiness fails, decays, is ejected.
    fail_readiness(&mut pool, BackendId(0), s(0));
    pool.tick(s(31));
    // Backend 1: readiness fails, then recovers during the decay: a false positive.
    fail_readiness(&mut pool, BackendId(1), s(40));
    pool.readiness(BackendId(1), s(45), ProbeOutcome::Pass);
    pool.readiness(BackendId(1), s(45), ProbeOutcome::Pass);
    let c = pool.counters().clone();
    assert_eq!(c.ejected_readiness, 1);
    assert_eq!(c.false_positives, 1);
    assert_eq!(c.slow_starts, 1, "the false positive warms up again");
    assert_eq!((c.ejected_liveness, c.ejected_outlier, c.flaps), (0, 0, 0));
    // Backend 2: liveness fails; a slow readiness check while live traffic succeeds.
    fail_liveness(&mut pool, BackendId(2), s(50));
    pool.live_outcome(BackendId(3), s(50), true);
    pool.readiness(BackendId(3), s(51), ProbeOutcome::Timeout);
    let c = pool.counters();
    assert_eq!(c.ejected_liveness, 1);
    assert_eq!(c.slow_checks, 1);
    assert_eq!(c.drains, 0);
    assert_eq!(c.panics, 0);
}

#[test]
fn a_backend_ejected_again_soon_after_it_came_back_is_a_flap() {
    let mut pool = PoolHealth::new(rules(), 10, s(0));
    let back_after_liveness = |pool: &mut PoolHealth, at: u64| {
        fail_liveness(pool, BackendId(4), s(at));
        pool.liveness(BackendId(4), s(at + 1), true);
        pool.liveness(BackendId(4), s(at + 2), true);
    };
    back_after_liveness(&mut pool, 0);
    assert_eq!(state(&pool, BackendId(4)), BackendState::Warming);
    assert_eq!(pool.counters().flaps, 0, "the first ejection is not a flap");
    // Out again 100 s after coming back: within the window.
    back_after_liveness(&mut pool, 102);
    assert_eq!(pool.counters().flaps, 1);
    // Out again more than FLAP_WINDOW after coming back (at 104 s): not a flap.
    fail_liveness(&mut pool, BackendId(4), s(104) + FLAP_WINDOW);
    assert_eq!(pool.counters().flaps, 1);
    assert_eq!(pool.counters().ejected_liveness, 3);
}

#[test]
fn drains_and_panics_are_counted_once_each() {
    let mut pool = PoolHealth::new(rules(), 4, s(0));
    pool.drain(BackendId(0), s(1), Cause::Admin);
    pool.drain(BackendId(0), s(2), Cause::Admin);
    assert_eq!(pool.counters().drains, 1, "draining twice is one drain");
    for i in (1..4).map(BackendId) {
        fail_readiness(&mut pool, i, s(3));
    }
    pool.tick(s(3));
    pool.tick(s(4));
    assert!(pool.panic(), "{:?}", pool.take_transitions());
    assert_eq!(pool.counters().panics, 1);
    // The decay ends: the cap (1 of 4) lets one ejection through and holds two back.
    pool.tick(s(40));
    assert_eq!(pool.counters().ejected_readiness, 1);
    assert_eq!(pool.counters().suppressed, 2);
    assert_eq!(pool.counters().panics, 1, "still the same panic");
}
