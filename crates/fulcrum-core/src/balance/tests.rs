//! Properties every balancer must hold, checked over random weights and loads.

use proptest::prelude::*;

use super::*;
use crate::rand::SplitMix64;

const PICKS: usize = 100_000;

/// Picks `PICKS` times with no load and returns each backend's share of the picks.
fn idle_shares(algorithm: Algorithm, weights: &[u32], seed: u64) -> Vec<f64> {
    let balancer = build(algorithm, weights);
    let load = vec![0u64; weights.len()];
    let mut rng = SplitMix64::new(seed);
    let mut counts = vec![0usize; weights.len()];
    for _ in 0..PICKS {
        let i = balancer
            .pick(&load, &mut rng)
            .unwrap_or_else(|| panic!("{algorithm} made no pick for {weights:?}"));
        counts[i] += 1;
    }
    counts.iter().map(|&c| c as f64 / PICKS as f64).collect()
}

fn expected_shares(weights: &[u32]) -> Vec<f64> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    weights
        .iter()
        .map(|&w| f64::from(w) / total as f64)
        .collect()
}

struct Excluding<'a> {
    load: &'a [u64],
    excluded: &'a [bool],
}

impl Candidates for Excluding<'_> {
    fn in_flight(&self, i: usize) -> u64 {
        self.load[i]
    }
    fn is_excluded(&self, i: usize) -> bool {
        self.excluded[i]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shares_match_weights_within_one_percent(
        weights in prop::collection::vec(1u32..=100, 1..12),
        seed in any::<u64>(),
    ) {
        for algorithm in Algorithm::ALL {
            let shares = idle_shares(algorithm, &weights, seed);
            for (i, (got, want)) in shares.iter().zip(expected_shares(&weights)).enumerate() {
                prop_assert!(
                    (got - want).abs() <= 0.01,
                    "{algorithm}: backend {i} of {weights:?} got {got:.4}, expected {want:.4}"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn least_conn_never_picks_a_more_loaded_backend(
        pool in prop::collection::vec((1u32..=50, 0u64..40), 1..20),
        seed in any::<u64>(),
    ) {
        let weights: Vec<u32> = pool.iter().map(|p| p.0).collect();
        let load: Vec<u64> = pool.iter().map(|p| p.1).collect();
        let balancer = build(Algorithm::LeastConn, &weights);
        let mut rng = SplitMix64::new(seed);
        for _ in 0..50 {
            let picked = balancer.pick(&load, &mut rng).unwrap_or(usize::MAX);
            prop_assert!(picked < weights.len());
            for j in 0..weights.len() {
                // picked's load/weight must not exceed j's load/weight.
                prop_assert!(
                    u128::from(load[picked]) * u128::from(weights[j])
                        <= u128::from(load[j]) * u128::from(weights[picked]),
                    "picked {picked} ({}/{}) over {j} ({}/{})",
                    load[picked], weights[picked], load[j], weights[j]
                );
            }
        }
    }

    #[test]
    fn excluded_backends_are_never_picked(
        pool in prop::collection::vec((1u32..=50, 0u64..10, any::<bool>()), 1..12),
        seed in any::<u64>(),
    ) {
        let weights: Vec<u32> = pool.iter().map(|p| p.0).collect();
        let load: Vec<u64> = pool.iter().map(|p| p.1).collect();
        let excluded: Vec<bool> = pool.iter().map(|p| p.2).collect();
        let view = Excluding { load: &load, excluded: &excluded };
        let mut rng = SplitMix64::new(seed);
        for algorithm in Algorithm::ALL {
            let balancer = build(algorithm, &weights);
            for _ in 0..50 {
                match balancer.pick(&view, &mut rng) {
                    Some(i) => prop_assert!(!excluded[i], "{algorithm} picked excluded {i}"),
                    None => prop_assert!(excluded.iter().all(|e| *e), "{algorithm} gave up"),
                }
            }
        }
    }
}

#[test]
fn empty_set_gives_no_pick() {
    let mut rng = SplitMix64::new(1);
    for algorithm in Algorithm::ALL {
        let balancer = build(algorithm, &[]);
        assert_eq!(balancer.pick(&Vec::new(), &mut rng), None, "{algorithm}");
    }
}

#[test]
fn least_conn_ties_rotate_instead_of_always_the_first() {
    let balancer = build(Algorithm::LeastConn, &[1, 1, 1]);
    let mut rng = SplitMix64::new(3);
    let picks: Vec<usize> = (0..6)
        .map(|_| {
            balancer
                .pick(&vec![2u64, 0, 0], &mut rng)
                .unwrap_or(usize::MAX)
        })
        .collect();
    assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
    assert!(!picks.contains(&0), "{picks:?}");
}

#[test]
fn p2c_avoids_the_loaded_backend() {
    let balancer = build(Algorithm::P2c, &[1, 1]);
    let mut rng = SplitMix64::new(9);
    let loaded = (0..10_000)
        .filter(|_| balancer.pick(&vec![10u64, 0], &mut rng) == Some(0))
        .count();
    // The two draws differ (up to a few redraws), so the loaded backend almost never wins:
    // only when every redraw repeats it, (1/2)^6 of the time.
    assert!(loaded < 300, "{loaded}");
}
