//! The `fulcrum` command line: run, check, reload, demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulcrum::reload::{Outcome, ReloadRequest, Trigger};
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
    /// Ask the fulcrum running with this file to read it again and apply the difference in
    /// place (through its admin API); prints what changed, or every error (nothing changed).
    Reload {
        /// The configuration file the running fulcrum was started with.
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
        Command::Reload { config } => match fulcrum::reload::command::run(&config) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
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

/// The configuration file, parsed and validated; every error with its path.
fn read_config(path: &Path) -> Result<Config, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    // Paths inside the file are relative to the file, not to the working directory.
    let dir = path.parent().unwrap_or(Path::new("."));
    Config::from_toml(&text)
        .map(|config| config.relative_to(dir))
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    read_config(path).map_err(|errors| {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "{}: {} error(s); nothing was started",
            path.display(),
            errors.len()
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
    let mut app = match RunningApp::start(&config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            let signals = rt.block_on(async { telemetry::Signals::new() })?;
            Ok((rt, signals))
        });
    let (rt, mut signals) = match signals {
        Ok(both) => both,
        Err(e) => {
            eprintln!("error: cannot start the signal handler: {e}");
            app.shutdown();
            return ExitCode::FAILURE;
        }
    };
    systemd::ready(config.listeners.len());
    let mut api_reloads = app.take_reload_requests();
    loop {
        let asked = rt.block_on(async {
            tokio::select! {
                signal = signals.next() => match signal {
                    telemetry::Signal::Stop => None,
                    telemetry::Signal::Reload => Some((Trigger::Signal, None)),
                },
                Some(request) = next_request(&mut api_reloads) => {
                    Some((Trigger::Api, Some(request)))
                }
            }
        });
        let Some((trigger, request)) = asked else {
            break;
        };
        let outcome = reload(&mut app, path, trigger);
        if let Some(request) = request {
            let _ = request.reply.send(outcome);
        }
    }
    tracing::info!(
        grace = ?app.config().runtime.shutdown_grace,
        "shutting down: no new connections; finishing in-flight requests"
    );
    systemd::stopping();
    app.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The next `POST /api/reload`, or never when there is no admin API.
async fn next_request(
    requests: &mut Option<tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>>,
) -> Option<ReloadRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGHUP or `POST /api/reload`: the file read, checked and applied again; any error leaves
/// everything running as it was, and is logged with its path. Counted either way.
fn reload(app: &mut RunningApp, path: &Path, trigger: Trigger) -> Outcome {
    systemd::reloading();
    let result = read_config(path)
        .map_err(fulcrum::reload::ReloadError::Invalid)
        .and_then(|config| app.reload(config));
    let outcome = Outcome::of(&result);
    app.reload_record().record(trigger, &outcome);
    match result {
        Ok(changes) if changes.is_empty() => {
            tracing::info!(config = %path.display(), "reloaded: nothing changed");
        }
        Ok(changes) => {
            for change in &changes {
                tracing::info!(%change, "reload");
            }
            tracing::info!(config = %path.display(), changes = changes.len(), "reloaded");
        }
        Err(error) => {
            tracing::error!(config = %path.display(), %error, "reload refused; nothing changed");
        }
    }
    systemd::ready(app.config().listeners.len());
    outcome
}
