//! `fulcrum lab hashing`: for ring_hash (100, 160 and 1000 points per backend) and Maglev
//! (65 537 slots), over pools of several sizes: how evenly keys spread, how many move when one
//! backend leaves or joins (next to the ideal), whether any move between backends that stayed,
//! how long a table takes to build and a lookup to answer; and, on a Zipf (s = 1.1) stream of
//! requests, how far the busiest backend runs above the mean with and without bounded load.

use std::fmt::Write as _;
use std::time::Instant;

use fulcrum_core::balance::{
    build_for, stable_hash, Balancer, Candidates, HashParams, Maglev, RingHash, WeightedRandom,
};
use fulcrum_core::config::Algorithm;
use fulcrum_core::rand::{RandomSource, SplitMix64};

use super::svg::Chart;

#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    algorithm: Algorithm,
    params: HashParams,
}

fn variants() -> Vec<Variant> {
    let ring = |points: u32| Variant {
        name: format!("ring_hash ({points} points)"),
        algorithm: Algorithm::RingHash,
        params: HashParams {
            ring_points: points,
            ..HashParams::default()
        },
    };
    vec![
        ring(100),
        ring(160),
        ring(1000),
        Variant {
            name: "maglev (65 537)".into(),
            algorithm: Algorithm::Maglev,
            params: HashParams::default(),
        },
    ]
}

#[derive(Debug)]
pub struct Row {
    pub variant: String,
    pub backends: usize,
    /// The busiest backend's share of the table (ring arcs or Maglev slots) ÷ the mean.
    pub table_max_over_mean: f64,
    /// The same measured on the keys actually hashed (includes sampling noise).
    pub max_over_mean: f64,
    pub stddev_percent: f64,
    pub moved_on_remove: f64,
    pub moved_on_add: f64,
    pub moved_between_survivors: f64,
    pub build_ms: f64,
    pub lookup_ns: f64,
    /// Busiest backend's in-flight ÷ mean on a Zipf stream: without, and with c = 1.25.
    pub zipf_unbounded: f64,
    pub zipf_bounded: f64,
}

struct Key(u64);

impl Candidates for Key {
    fn in_flight(&self, _i: usize) -> u64 {
        0
    }
    fn hash(&self) -> Option<u64> {
        Some(self.0)
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", i / 65_536, (i / 256) % 256, i % 256))
        .collect()
}

fn build(variant: &Variant, names: &[String], params: &HashParams) -> Box<dyn Balancer> {
    let id_bytes: Vec<&[u8]> = names.iter().map(|s| s.as_bytes()).collect();
    build_for(variant.algorithm, &id_bytes, &vec![1; names.len()], params)
}

fn key(i: u64) -> u64 {
    stable_hash(&i.to_le_bytes(), 0x6b65_7973)
}

/// Nanoseconds per lookup: picks only, nothing else in the loop.
fn time_lookups(balancer: &dyn Balancer, keys: u64) -> f64 {
    let mut rng = SplitMix64::new(1);
    let started = Instant::now();
    let mut sink = 0usize;
    for i in 0..keys {
        sink = sink.wrapping_add(balancer.pick(&Key(key(i)), &mut rng).unwrap_or(0));
    }
    std::hint::black_box(sink);
    started.elapsed().as_secs_f64() * 1e9 / keys as f64
}

/// Each backend's share of the hash space: ring arcs, or Maglev table slots.
fn table_share(variant: &Variant, names: &[String]) -> Vec<f64> {
    let id_bytes: Vec<&[u8]> = names.iter().map(|s| s.as_bytes()).collect();
    let weights = vec![1; names.len()];
    let fallback = || -> Box<dyn Balancer> { Box::new(WeightedRandom::new(&weights)) };
    match variant.algorithm {
        Algorithm::Maglev => {
            let table = Maglev::new(
                &id_bytes,
                &weights,
                variant.params.maglev_table_size,
                None,
                fallback(),
            );
            let mut share = vec![0.0; names.len()];
            for &b in table.table() {
                share[b as usize] += 1.0 / table.table().len() as f64;
            }
            share
        }
        _ => RingHash::new(
            &id_bytes,
            &weights,
            variant.params.ring_points,
            None,
            fallback(),
        )
        .ownership(),
    }
}

/// The backend name each key lands on.
fn assign(balancer: &dyn Balancer, names: &[String], keys: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(1);
    let index: std::collections::HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    (0..keys)
        .map(|i| {
            let picked = balancer.pick(&Key(key(i)), &mut rng).unwrap_or(0);
            index
                .get(names[picked].as_str())
                .copied()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

pub fn run(pool_sizes: &[usize], keys: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in pool_sizes {
        let names = ids(n + 1);
        let base_names = &names[..n];
        for variant in variants() {
            let started = Instant::now();
            let base = build(&variant, base_names, &variant.params);
            let build_ms = started.elapsed().as_secs_f64() * 1e3;

            let lookup_ns = time_lookups(&*base, keys);
            let home = assign(&*base, base_names, keys);
            let share = table_share(&variant, base_names);
            let mean_share = 1.0 / n as f64;
            let table_max_over_mean = share.iter().copied().fold(0.0, f64::max) / mean_share;

            let mut counts = vec![0u64; n];
            for &b in &home {
                counts[b as usize] += 1;
            }
            let mean = keys as f64 / n as f64;
            let max = counts.iter().copied().max().unwrap_or(0) as f64;
            let variance = counts
                .iter()
                .map(|&c| (c as f64 - mean).powi(2))
                .sum::<f64>()
                / n as f64;

            // One backend leaves (the middle one) ...
            let gone = (n / 2) as u32;
            let survivors: Vec<String> = base_names
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u32 != gone)
                .map(|(_, s)| s.clone())
                .collect();
            let survivor_index: Vec<u32> = (0..n as u32).filter(|i| *i != gone).collect();
            let after_remove = assign(
                &*build(&variant, &survivors, &variant.params),
                &survivors,
                keys,
            );
            let (mut moved, mut between) = (0u64, 0u64);
            for (h, a) in home.iter().zip(&after_remove) {
                let now = survivor_index[*a as usize];
                if now != *h {
                    moved += 1;
                    if *h != gone {
                        between += 1;
                    }
                }
            }
            // ... and one joins.
            let after_add = assign(&*build(&variant, &names, &variant.params), &names, keys);
            let moved_add = home.iter().zip(&after_add).filter(|(h, a)| h != a).count();

            rows.push(Row {
                variant: variant.name.clone(),
                backends: n,
                table_max_over_mean,
                max_over_mean: max / mean,
                stddev_percent: variance.sqrt() / mean * 100.0,
                moved_on_remove: moved as f64 / keys as f64,
                moved_on_add: moved_add as f64 / keys as f64,
                moved_between_survivors: between as f64 / keys as f64,
                build_ms,
                lookup_ns,
                zipf_unbounded: zipf_peak(&variant, base_names, None),
                zipf_bounded: zipf_peak(&variant, base_names, Some(1.25)),
            });
        }
    }
    rows
}

/// Busiest backend's in-flight ÷ mean over a Zipf(1.1) stream of 200 000 requests over
/// 100 000 keys, with 10 × N requests in flight.
fn zipf_peak(variant: &Variant, names: &[String], factor: Option<f64>) -> f64 {
    struct Load<'a> {
        load: &'a [u64],
        key: u64,
    }
    impl Candidates for Load<'_> {
        fn in_flight(&self, i: usize) -> u64 {
            self.load[i]
        }
        fn hash(&self) -> Option<u64> {
            Some(self.key)
        }
    }
    let n = names.len();
    let params = HashParams {
        balance_factor: factor,
        ..variant.params.clone()
    };
    let balancer = build(variant, names, &params);
    let zipf = Zipf::new(100_000, 1.1);
    let mut rng = SplitMix64::new(42);
    let mut load = vec![0u64; n];
    let mut window = std::collections::VecDeque::new();
    let in_flight = 10 * n;
    let mut worst = 0.0f64;
    for _ in 0..200_000 {
        let k = key(zipf.sample(&mut rng));
        let i = balancer
            .pick(
                &Load {
                    load: &load,
                    key: k,
                },
                &mut rng,
            )
            .unwrap_or(0);
        load[i] += 1;
        window.push_back(i);
        if window.len() >= in_flight {
            let mean = window.len() as f64 / n as f64;
            worst = worst.max(load[i] as f64 / mean);
            if let Some(done) = window.pop_front() {
                load[done] -= 1;
            }
        }
    }
    worst
}

struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut sum = 0.0;
        Self {
            cumulative: (1..=n)
                .map(|k| {
                    sum += 1.0 / (k as f64).powf(s);
                    sum
                })
                .collect(),
        }
    }

    fn sample(&self, rng: &mut SplitMix64) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.cumulative.partition_point(|&c| c < u) as u64
    }
}

pub fn table(rows: &[Row], keys: u64) -> String {
    let mut out = format!(
        "fulcrum lab hashing: {keys} keys per measurement (xxh3 of the key index), seeded\n\n\
         | algorithm | N | max/mean table share | max/mean keys | std dev (keys) | moved, remove 1 (ideal 1/N) | moved, add 1 (ideal 1/(N+1)) | moved between survivors | build | lookup | Zipf 1.1 peak/mean in-flight | … with bounded load c = 1.25 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.1} % | {:.2} % ({:.2} %) | {:.2} % ({:.2} %) | {:.3} % | {:.2} ms | {:.0} ns | {:.2} | {:.2} |",
            r.variant,
            r.backends,
            r.table_max_over_mean,
            r.max_over_mean,
            r.stddev_percent,
            r.moved_on_remove * 100.0,
            100.0 / r.backends as f64,
            r.moved_on_add * 100.0,
            100.0 / (r.backends + 1) as f64,
            r.moved_between_survivors * 100.0,
            r.build_ms,
            r.lookup_ns,
            r.zipf_unbounded,
            r.zipf_bounded,
        );
    }
    out
}

pub fn chart(rows: &[Row]) -> Chart {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.backends).collect();
    sizes.dedup();
    let series: Vec<String> = variants().into_iter().map(|v| v.name).collect();
    Chart {
        title: "Keys moved when one backend joins, ÷ ideal 1/(N+1)".into(),
        unit: "× ideal".into(),
        log: false,
        groups: sizes
            .iter()
            .map(|&n| {
                let values = series
                    .iter()
                    .map(|s| {
                        rows.iter()
                            .find(|r| r.backends == n && &r.variant == s)
                            .map_or(f64::NAN, |r| r.moved_on_add * (n + 1) as f64)
                    })
                    .collect();
                (format!("N = {n}"), values)
            })
            .collect(),
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_reports_what_consistent_hashing_promises() {
        let rows = run(&[10], 20_000);
        assert_eq!(rows.len(), variants().len());
        for r in &rows {
            assert!(r.moved_on_add > 0.04 && r.moved_on_add < 0.15, "{r:?}");
            assert!(r.zipf_bounded <= 1.3 + 1e-9, "{r:?}");
            assert!(r.zipf_unbounded > r.zipf_bounded, "{r:?}");
            if r.variant.starts_with("ring_hash") {
                assert_eq!(r.moved_between_survivors, 0.0, "{r:?}");
            } else {
                assert!(r.table_max_over_mean <= 1.01, "{r:?}");
            }
        }
        let svg = super::super::svg::render(&chart(&rows)).unwrap_or_default();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("ring_hash (160 points)"), "legend missing");
    }
}
