//! Consistent hashing held to its promises: balance, minimal movement, stable choices,
//! bounded load on a skewed key stream, and per-key effective shares.

use super::*;
use crate::rand::SplitMix64;

struct Keyed<'a> {
    load: &'a [u64],
    excluded: &'a [bool],
    fraction: &'a [f64],
    key: u64,
}

impl Candidates for Keyed<'_> {
    fn in_flight(&self, i: usize) -> u64 {
        self.load.get(i).copied().unwrap_or(0)
    }
    fn is_excluded(&self, i: usize) -> bool {
        self.excluded.get(i).copied().unwrap_or(false)
    }
    fn hash(&self) -> Option<u64> {
        Some(self.key)
    }
    fn fraction(&self, i: usize) -> f64 {
        self.fraction.get(i).copied().unwrap_or(1.0)
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
        .collect()
}

fn balancer(algorithm: Algorithm, ids: &[String], params: &HashParams) -> Box<dyn Balancer> {
    let ids: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
    build_for(algorithm, &ids, &vec![1; ids.len()], params)
}

/// Where each of `keys` goes (as backend names), nothing excluded.
fn assign(b: &dyn Balancer, ids: &[String], keys: u64) -> Vec<String> {
    let mut rng = SplitMix64::new(1);
    (0..keys)
        .map(|k| {
            let view = Keyed {
                load: &[],
                excluded: &[],
                fraction: &[],
                key: stable_hash(&k.to_le_bytes(), 7),
            };
            ids[b.pick(&view, &mut rng).unwrap_or(usize::MAX)].clone()
        })
        .collect()
}

fn moved(before: &[String], after: &[String]) -> f64 {
    before.iter().zip(after).filter(|(a, b)| a != b).count() as f64 / before.len() as f64
}

#[test]
fn maglev_spreads_slots_within_one_percent_of_the_mean() {
    for n in [10usize, 100, 600] {
        let ids = names(n);
        let id_bytes: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
        let table = Maglev::new(
            &id_bytes,
            &vec![1; n],
            65_537,
            None,
            Box::new(WeightedRandom::new(&vec![1; n])),
        );
        let mut counts = vec![0usize; n];
        for &b in table.table() {
            counts[b as usize] += 1;
        }
        let mean = 65_537.0 / n as f64;
        let max = counts.iter().copied().max().unwrap_or(0) as f64;
        assert!(max / mean <= 1.01, "N = {n}: max/mean = {:.4}", max / mean);
    }
}

#[test]
fn maglev_and_ring_honour_weights() {
    let ids = names(2);
    let id_bytes: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
    let table = Maglev::new(
        &id_bytes,
        &[1, 3],
        65_537,
        None,
        Box::new(WeightedRandom::new(&[1, 3])),
    );
    let heavy = table.table().iter().filter(|&&b| b == 1).count() as f64 / 65_537.0;
    assert!((heavy - 0.75).abs() < 0.01, "{heavy}");
    let ring = RingHash::new(
        &id_bytes,
        &[1, 3],
        160,
        None,
        Box::new(WeightedRandom::new(&[1, 3])),
    );
    assert_eq!(ring.points(), 160 * 4);
}

#[test]
fn adding_one_backend_to_ten_moves_about_a_tenth_of_the_keys() {
    let keys = 100_000;
    let params = HashParams::default();
    for (algorithm, limit) in [(Algorithm::RingHash, 1.1), (Algorithm::Maglev, 1.5)] {
        let ten = names(10);
        let eleven = names(11);
        let before = assign(&*balancer(algorithm, &ten, &params), &ten, keys);
        let after = assign(&*balancer(algorithm, &eleven, &params), &eleven, keys);
        let share = moved(&before, &after);
        assert!(
            share <= limit / 11.0,
            "{algorithm}: {share:.4} moved, limit {:.4}",
            limit / 11.0
        );
        // Only to the new backend.
        let elsewhere = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b && **b != eleven[10])
            .count();
        if algorithm == Algorithm::RingHash {
            assert_eq!(elsewhere, 0, "ring: keys moved between old backends");
        }
    }
}

#[test]
fn removing_a_backend_from_the_ring_moves_only_its_keys() {
    let ids = names(10);
    let params = HashParams::default();
    let before = assign(&*balancer(Algorithm::RingHash, &ids, &params), &ids, 50_000);
    let mut survivors = ids.clone();
    survivors.remove(3);
    let after = assign(
        &*balancer(Algorithm::RingHash, &survivors, &params),
        &survivors,
        50_000,
    );
    for (a, b) in before.iter().zip(&after) {
        if a != &ids[3] {
            assert_eq!(a, b, "a key of a surviving backend moved");
        }
    }
}

#[test]
fn an_excluded_backend_loses_only_its_own_keys() {
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev] {
        let ids = names(8);
        let b = balancer(algorithm, &ids, &HashParams::default());
        let mut excluded = vec![false; 8];
        excluded[5] = true;
        let mut rng = SplitMix64::new(3);
        for k in 0..20_000u64 {
            let key = stable_hash(&k.to_le_bytes(), 1);
            let all = Keyed {
                load: &[],
                excluded: &[],
                fraction: &[],
                key,
            };
            let without = Keyed {
                load: &[],
                excluded: &excluded,
                fraction: &[],
                key,
            };
            let home = b.pick(&all, &mut rng);
            let now = b.pick(&without, &mut rng);
            assert_ne!(now, Some(5));
            if home != Some(5) {
                assert_eq!(home, now, "{algorithm}: key {k} moved needlessly");
            }
        }
    }
}

#[test]
fn a_partial_share_keeps_the_same_keys_as_it_grows() {
    let ids = names(4);
    let b = balancer(Algorithm::Maglev, &ids, &HashParams::default());
    let mut rng = SplitMix64::new(3);
    let land = |fraction: f64, key: u64, rng: &mut SplitMix64| {
        let fractions = [fraction, 1.0, 1.0, 1.0];
        b.pick(
            &Keyed {
                load: &[],
                excluded: &[],
                fraction: &fractions,
                key,
            },
            rng,
        )
    };
    let (mut home, mut at_half, mut kept) = (0, 0, 0);
    for k in 0..40_000u64 {
        let key = stable_hash(&k.to_le_bytes(), 2);
        if land(1.0, key, &mut rng) != Some(0) {
            continue;
        }
        home += 1;
        if land(0.5, key, &mut rng) == Some(0) {
            at_half += 1;
            if land(0.8, key, &mut rng) == Some(0) {
                kept += 1;
            }
        }
    }
    let share = at_half as f64 / home as f64;
    assert!((share - 0.5).abs() < 0.03, "{share}");
    assert_eq!(kept, at_half, "growing the share must not move keys away");
}

#[test]
fn bounded_load_keeps_every_backend_under_the_cap_on_a_zipf_stream() {
    let n = 10;
    let ids = names(n);
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev] {
        let params = HashParams {
            balance_factor: Some(1.25),
            ..HashParams::default()
        };
        let b = balancer(algorithm, &ids, &params);
        let zipf = Zipf::new(1000, 1.1);
        let mut rng = SplitMix64::new(11);
        let mut load = vec![0u64; n];
        let mut window = std::collections::VecDeque::new();
        for _ in 0..50_000 {
            let key = stable_hash(&zipf.sample(&mut rng).to_le_bytes(), 5);
            let view = Keyed {
                load: &load,
                excluded: &[],
                fraction: &[],
                key,
            };
            let i = b.pick(&view, &mut rng).unwrap_or(usize::MAX);
            load[i] += 1;
            window.push_back(i);
            let total: u64 = load.iter().sum();
            let cap = (1.25 * total as f64 / n as f64).ceil() as u64;
            assert!(
                load[i] <= cap,
                "{algorithm}: backend {i} at {} > cap {cap}",
                load[i]
            );
            if window.len() > 200 {
                if let Some(done) = window.pop_front() {
                    load[done] -= 1;
                }
            }
        }
    }
}

#[test]
fn without_a_key_hashing_falls_back() {
    let ids = names(3);
    let params = HashParams {
        fallback: Algorithm::RoundRobin,
        ..HashParams::default()
    };
    let b = balancer(Algorithm::RingHash, &ids, &params);
    let mut rng = SplitMix64::new(1);
    let picks: Vec<_> = (0..6).map(|_| b.pick(&vec![0u64; 3], &mut rng)).collect();
    assert_eq!(
        picks,
        vec![Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]
    );
}

#[test]
fn p2c_ewma_prefers_the_faster_backend() {
    struct Slow;
    impl Candidates for Slow {
        fn in_flight(&self, _i: usize) -> u64 {
            0
        }
        fn latency(&self, i: usize) -> f64 {
            if i == 0 {
                0.6
            } else {
                0.03
            }
        }
    }
    let b = build(Algorithm::P2cEwma, &[1, 1, 1, 1]);
    let mut rng = SplitMix64::new(4);
    let slow = (0..10_000)
        .filter(|_| b.pick(&Slow, &mut rng) == Some(0))
        .count();
    // Two different backends are compared, so the slow one (almost) never wins.
    assert!(slow < 20, "{slow}");
}

/// Zipf-distributed ranks 0..n (s > 1), by inverse transform on the cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut sum = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                sum += 1.0 / (k as f64).powf(s);
                sum
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix64) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.cumulative.partition_point(|&c| c < u) as u64
    }
}
