//! `fulcrum lab`: deterministic, seeded experiments on the balancing algorithms themselves,
//! no network involved. `hashing` measures balance, key movement and speed of the consistent
//! hashing algorithms; `latency` simulates a fleet with one backend turning slow and compares
//! the tail latency each algorithm delivers. Both print Markdown tables and can draw an SVG
//! chart (plotters).

mod hashing;
mod latency;
mod svg;

use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// Balance, key movement and speed of ring_hash and maglev (with and without bounded load).
    Hashing {
        /// Pool sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        backends: Vec<usize>,
        /// Keys hashed per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Also draw the key movement as an SVG chart.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Tail latency of each algorithm while one backend turns slow (discrete-event simulation).
    Latency {
        /// Offered load as a share of the fleet's capacity.
        #[arg(long, default_value_t = 0.7)]
        utilisation: f64,
        /// How much slower the slow backend becomes.
        #[arg(long, default_value_t = 20.0)]
        slow_factor: f64,
        /// Backends in the simulated pool (one of them turns slow).
        #[arg(long, default_value_t = 10)]
        backends: usize,
        /// Requests simulated per algorithm.
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        /// Seed of the simulation's random choices (the same seed gives the same numbers).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also draw the percentiles as an SVG chart.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
}

pub fn run(command: &LabCommand) -> Result<(), String> {
    match command {
        LabCommand::Hashing {
            backends,
            keys,
            svg,
        } => {
            let rows = hashing::run(backends, *keys);
            print!("{}", hashing::table(&rows, *keys));
            if let Some(path) = svg {
                svg::write(path, &hashing::chart(&rows))?;
            }
        }
        LabCommand::Latency {
            utilisation,
            slow_factor,
            backends,
            requests,
            seed,
            svg,
        } => {
            if !(0.05..=0.95).contains(utilisation) || *slow_factor < 1.0 || *backends < 2 {
                return Err(
                    "need 0.05 ≤ --utilisation ≤ 0.95, --slow-factor ≥ 1 and --backends ≥ 2".into(),
                );
            }
            let setup = latency::Setup {
                utilisation: *utilisation,
                slow_factor: *slow_factor,
                backends: *backends,
                requests: *requests,
                seed: *seed,
            };
            let rows = latency::run(&setup);
            print!("{}", latency::table(&setup, &rows));
            if let Some(path) = svg {
                svg::write(path, &latency::chart(&rows))?;
            }
        }
    }
    Ok(())
}
