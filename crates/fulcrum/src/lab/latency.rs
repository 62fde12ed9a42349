//! `fulcrum lab latency`: a discrete-event simulation of a fleet behind each algorithm.
//! N backends, each serving 4 requests at a time with exponential service times (mean 10 ms),
//! Poisson arrivals at the chosen share of the fleet's capacity, and backend 0 turning
//! `slow_factor` × slower for the middle third of the run. The balancers are fulcrum's own
//! (fulcrum-core), fed the same in-flight counts and peak-EWMA estimates as in the proxy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use fulcrum_core::balance::{build, Candidates};
use fulcrum_core::config::{defaults, Algorithm};
use fulcrum_core::ewma::PeakEwma;
use fulcrum_core::rand::{RandomSource, SplitMix64};

use super::svg::Chart;

const CONCURRENCY: usize = 4;
const MEAN_SERVICE: f64 = 0.010;
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RoundRobin,
    Algorithm::Random,
    Algorithm::LeastConn,
    Algorithm::P2c,
    Algorithm::P2cEwma,
];

#[derive(Debug, Clone)]
pub struct Setup {
    pub utilisation: f64,
    pub slow_factor: f64,
    pub backends: usize,
    pub requests: u64,
    pub seed: u64,
}

#[derive(Debug)]
pub struct Row {
    pub algorithm: Algorithm,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_queue: usize,
    pub slow_share: f64,
}

struct Server {
    busy: usize,
    queue: VecDeque<u64>,
    ewma: PeakEwma,
}

struct Fleet<'a> {
    servers: &'a [Server],
    now: Duration,
}

impl Candidates for Fleet<'_> {
    fn in_flight(&self, i: usize) -> u64 {
        (self.servers[i].busy + self.servers[i].queue.len()) as u64
    }
    fn latency(&self, i: usize) -> f64 {
        self.servers[i].ewma.estimate(self.now)
    }
}

fn exponential(rng: &mut SplitMix64, mean: f64) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -mean * u.ln()
}

fn nanos(seconds: f64) -> u64 {
    (seconds * 1e9) as u64
}

pub fn run(setup: &Setup) -> Vec<Row> {
    ALGORITHMS.iter().map(|&a| simulate(setup, a)).collect()
}

fn simulate(setup: &Setup, algorithm: Algorithm) -> Row {
    let n = setup.backends;
    let balancer = build(algorithm, &vec![1; n]);
    let rate = setup.utilisation * (n * CONCURRENCY) as f64 / MEAN_SERVICE;
    let duration = setup.requests as f64 / rate;
    let (slow_from, slow_until) = (nanos(duration / 3.0), nanos(2.0 * duration / 3.0));
    let mut servers: Vec<Server> = (0..n)
        .map(|_| Server {
            busy: 0,
            queue: VecDeque::new(),
            ewma: PeakEwma::new(defaults::EWMA_DECAY, defaults::EWMA_DEFAULT_RTT),
        })
        .collect();
    // Same arrivals and service draws for every algorithm: the seed decides them.
    let mut arrivals = SplitMix64::new(setup.seed);
    let mut service = SplitMix64::new(setup.seed ^ 0x5e57_1ce5);
    let mut picks = SplitMix64::new(setup.seed ^ 0x9c1c);
    // (time, backend, arrival time) of each completion.
    let mut completions: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
    let mut latencies = Vec::with_capacity(setup.requests as usize);
    let (mut max_queue, mut to_slow) = (0usize, 0u64);
    let mut next_arrival = nanos(exponential(&mut arrivals, 1.0 / rate));
    let mut arrived = 0u64;
    let service_time = |rng: &mut SplitMix64, backend: usize, at: u64| {
        let slow = backend == 0 && (slow_from..slow_until).contains(&at);
        nanos(exponential(rng, MEAN_SERVICE) * if slow { setup.slow_factor } else { 1.0 })
    };
    loop {
        let next_completion = completions.peek().map(|Reverse((t, _, _))| *t);
        let arrival_first =
            arrived < setup.requests && next_completion.is_none_or(|c| next_arrival <= c);
        if arrival_first {
            let now = next_arrival;
            let fleet = Fleet {
                servers: &servers,
                now: Duration::from_nanos(now),
            };
            let b = balancer.pick(&fleet, &mut picks).unwrap_or(0);
            if b == 0 && (slow_from..slow_until).contains(&now) {
                to_slow += 1;
            }
            let server = &mut servers[b];
            if server.busy < CONCURRENCY {
                server.busy += 1;
                completions.push(Reverse((now + service_time(&mut service, b, now), b, now)));
            } else {
                server.queue.push_back(now);
                max_queue = max_queue.max(server.queue.len());
            }
            arrived += 1;
            next_arrival = now + nanos(exponential(&mut arrivals, 1.0 / rate)).max(1);
        } else if let Some(Reverse((now, b, arrival))) = completions.pop() {
            let took = now - arrival;
            latencies.push(took);
            let server = &mut servers[b];
            server
                .ewma
                .observe(Duration::from_nanos(now), Duration::from_nanos(took));
            match server.queue.pop_front() {
                Some(waiting) => {
                    completions.push(Reverse((
                        now + service_time(&mut service, b, now),
                        b,
                        waiting,
                    )));
                }
                None => server.busy -= 1,
            }
        } else {
            break;
        }
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(i).copied().unwrap_or(0) as f64 / 1e6
    };
    let slow_requests = (setup.requests as f64 / 3.0).max(1.0);
    Row {
        algorithm,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_queue,
        slow_share: to_slow as f64 / slow_requests,
    }
}

pub fn table(setup: &Setup, rows: &[Row]) -> String {
    let mut out = format!(
        "fulcrum lab latency: {} backends × {CONCURRENCY} concurrent, exponential service (mean {} ms), \
         Poisson arrivals at {:.0} % of capacity, backend 0 {}× slower for the middle third; \
         {} requests per algorithm, seed {}\n\n\
         | algorithm | p50 | p99 | p99.9 | max queue | share sent to the slow backend while slow |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
        setup.backends,
        MEAN_SERVICE * 1e3,
        setup.utilisation * 100.0,
        setup.slow_factor,
        setup.requests,
        setup.seed
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.2} % |",
            r.algorithm,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_queue,
            r.slow_share * 100.0
        );
    }
    let p99 = |a: Algorithm| {
        rows.iter()
            .find(|r| r.algorithm == a)
            .map_or(f64::NAN, |r| r.p99_ms)
    };
    let ewma = p99(Algorithm::P2cEwma);
    let _ = writeln!(
        out,
        "\np2c_ewma p99 ÷ least_conn p99 = {:.2}; ÷ round_robin p99 = {:.2}",
        ewma / p99(Algorithm::LeastConn),
        ewma / p99(Algorithm::RoundRobin)
    );
    out
}

pub fn chart(rows: &[Row]) -> Chart {
    Chart {
        title: "Latency while one backend is slow".into(),
        unit: "milliseconds (log scale)".into(),
        series: vec!["p50".into(), "p99".into(), "p99.9".into()],
        log: true,
        groups: rows
            .iter()
            .map(|r| {
                (
                    r.algorithm.name().to_string(),
                    vec![r.p50_ms, r.p99_ms, r.p999_ms],
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulation_separates_blind_from_load_aware_algorithms() {
        let setup = Setup {
            utilisation: 0.7,
            slow_factor: 20.0,
            backends: 10,
            requests: 30_000,
            seed: 3,
        };
        let rows = run(&setup);
        let row = |a: Algorithm| {
            rows.iter()
                .find(|r| r.algorithm == a)
                .unwrap_or_else(|| panic!("{a}"))
        };
        // Blind algorithms keep sending a tenth of the traffic into the slow backend's queue.
        assert!(row(Algorithm::RoundRobin).slow_share > 0.08);
        assert!(row(Algorithm::RoundRobin).p99_ms > 10.0 * row(Algorithm::LeastConn).p99_ms);
        // Latency-aware balancing sends the slow backend the least of all.
        assert!(row(Algorithm::P2cEwma).slow_share < row(Algorithm::LeastConn).slow_share);
        // Same seed, same result.
        assert_eq!(run(&setup)[4].p99_ms, row(Algorithm::P2cEwma).p99_ms);
    }
}
