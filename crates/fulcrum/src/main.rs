//! The `fulcrum` command line: run, check, demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulcrum::telemetry::{self, LogFormat};
use fulcrum::{demo, lab, register, systemd, RunningApp};
use fulcrum_core::config::Config;

/// The version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FULCRUM_COMMIT"), ")");

#[derive(Parser, Debug)]
#[command(
    name = "fulcrum",
    version = VERSION,
    about = "A load balancer for HTTP and TCP services"
)]
struct Cli {
    /// Log output format (filter with RUST_LOG, e.g. RUST_LOG=fulcrum=debug).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the load balancer with a configuration file.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file: every error with its path; non-zero exit on any.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Balance traffic over three built-in demo backends of different speeds.
    Demo(demo::DemoArgs),
    /// Keep one backend registered in etcd or ZooKeeper while it is healthy (sidecar).
    Register(register::RegisterArgs),
    /// Print the version and the commit it was built from.
    Version,
    /// Deterministic experiments on the balancing algorithms (no network).
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Version => {
            println!("fulcrum {VERSION}");
            ExitCode::SUCCESS
        }
        Command::Register(args) => match register::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Lab(command) => match lab::run(&command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => match demo::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        ExitCode::FAILURE
    })?;
    // Paths inside the file are relative to the file, not to the working directory.
    let dir = path.parent().unwrap_or(Path::new("."));
    Config::from_toml(&text)
        .map(|config| config.relative_to(dir))
        .map_err(|errors| {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{}: {} error(s); nothing was started",
                path.display(),
                errors.0.len()
            );
            ExitCode::FAILURE
        })
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            // What `run` reads before starting is read here too.
            if let Err(errors) = fulcrum::secrets::read(&config) {
                for e in &errors {
                    eprintln!("error: {e}");
                }
                eprintln!("{}: {} error(s)", path.display(), errors.len());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} listener(s), {} pool(s))",
                path.display(),
                config.listeners.len(),
                config.pools.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    tracing::info!(
        version = VERSION,
        config = %path.display(),
        "fulcrum starting"
    );
    let app = match RunningApp::start(&config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the signal handler: {e}");
            app.shutdown();
            return ExitCode::FAILURE;
        }
    };
    systemd::ready(config.listeners.len());
    signals.block_on(telemetry::shutdown_signal());
    tracing::info!(
        grace = ?config.runtime.shutdown_grace,
        "shutting down: no new connections; finishing in-flight requests"
    );
    systemd::stopping();
    app.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
