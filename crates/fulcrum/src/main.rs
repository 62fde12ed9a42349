//! The `fulcrum` command line: run, check, reload, upgrade, demo.

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
        /// Take the listening sockets over from the fulcrum running now (binary upgrade);
        /// it stops once this one is ready.
        #[arg(long)]
        upgrade: bool,
    },
    /// Replace the running fulcrum by a new binary without refusing a connection: starts
    /// `BINARY run --upgrade -c FILE` and waits until it is ready.
    Upgrade(fulcrum::upgrade::command::UpgradeArgs),
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
    /// Which route and pool a request would take through an HTTP listener, and what its
    /// backend would be sent (no network).
    Route(fulcrum::route_cli::RouteArgs),
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
        Command::Run { config, upgrade } => run(&config, upgrade),
        Command::Upgrade(args) => match fulcrum::upgrade::command::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => check(&config),
        Command::Route(args) => match load(&args.config) {
            Ok(config) => match fulcrum::route_cli::explain(&config, &args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
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

/// What the main thread of `fulcrum run` is asked to do next.
enum Event {
    Stop,
    Reload(Trigger, Option<ReloadRequest>),
    /// A new process took the sockets over and is ready (its pid).
    HandedOver(u32),
    /// SIGUSR1.
    ReopenLogs,
}

fn run(path: &Path, upgrade: bool) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    tracing::info!(
        version = VERSION,
        config = %path.display(),
        upgrade,
        "fulcrum starting"
    );
    let upgrade_socket = fulcrum::upgrade::socket_path(&config);
    // An upgrade takes the sockets over first; on any failure before `ready` the running
    // fulcrum sees this process go and keeps serving.
    let predecessor = if upgrade {
        match take_over(&upgrade_socket) {
            Ok(taken) => Some(taken),
            Err(e) => {
                eprintln!("error: {e}; the running fulcrum keeps serving");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (stream, received) = match predecessor {
        Some((stream, received)) => (Some(stream), Some(received)),
        None => (None, None),
    };
    // The handlers come first: from the moment the listeners accept, a SIGHUP (a reload)
    // or SIGTERM must be handled, not end the process by its default action.
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
            return ExitCode::FAILURE;
        }
    };
    let mut app = match RunningApp::start_with(&config, received) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            if stream.is_some() {
                eprintln!("the running fulcrum keeps serving");
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(stream) = &stream {
        if let Err(e) = fulcrum::upgrade::handover::say_ready(stream) {
            eprintln!("error: cannot tell the running fulcrum this one is ready: {e}");
            app.shutdown();
            return ExitCode::FAILURE;
        }
        tracing::info!("upgrade: serving; the previous process stops accepting");
        app.take_ha_role(stream);
        // For `fulcrum upgrade`, which waits for this line on the pipe it gave as stdout.
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready {}", std::process::id()).and_then(|()| out.flush());
    }
    // The previous process's upgrade socket is replaced only now: until this one was ready,
    // a failed upgrade had to leave it working.
    let mut handed_over = match app.serve_upgrades(&upgrade_socket) {
        Ok(receiver) => Some(receiver),
        Err(e) => {
            tracing::warn!(socket = %upgrade_socket.display(), error = %e, "binary upgrade unavailable: cannot listen on the upgrade socket");
            None
        }
    };
    systemd::ready(config.listeners.len());
    let mut api_reloads = app.take_reload_requests();
    let successor = loop {
        let event = rt.block_on(async {
            tokio::select! {
                signal = signals.next() => match signal {
                    telemetry::Signal::Stop => Event::Stop,
                    telemetry::Signal::Reload => Event::Reload(Trigger::Signal, None),
                    telemetry::Signal::ReopenLogs => Event::ReopenLogs,
                },
                Some(request) = next(&mut api_reloads) => Event::Reload(Trigger::Api, Some(request)),
                Some(pid) = next(&mut handed_over) => Event::HandedOver(pid),
            }
        });
        match event {
            Event::Stop => break None,
            Event::HandedOver(pid) => break Some(pid),
            Event::ReopenLogs => {
                tracing::info!("SIGUSR1: reopening the access logs");
                app.reopen_access_logs();
            }
            Event::Reload(trigger, request) => {
                let outcome = reload(&mut app, path, trigger);
                if let Some(request) = request {
                    let _ = request.reply.send(outcome);
                }
            }
        }
    };
    match successor {
        // The unit goes on: the new process is its main one now (it said READY=1 with its
        // MAINPID), so this one says nothing more to systemd.
        Some(pid) => {
            tracing::info!(
                new_pid = pid,
                grace = ?app.config().runtime.shutdown_grace,
                "upgraded: the new process serves; finishing this one's connections"
            );
            app.shutdown_after_handover();
        }
        None => {
            tracing::info!(
                grace = ?app.config().runtime.shutdown_grace,
                "shutting down: no new connections; finishing in-flight requests"
            );
            systemd::stopping();
            app.shutdown();
        }
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Connects to the running fulcrum's upgrade socket and takes its listening sockets.
fn take_over(
    socket: &Path,
) -> Result<
    (
        std::os::unix::net::UnixStream,
        fulcrum::upgrade::handover::Received,
    ),
    String,
> {
    let stream = fulcrum::upgrade::handover::connect(socket).map_err(|e| {
        format!(
            "--upgrade: cannot reach a running fulcrum on {}: {e}",
            socket.display()
        )
    })?;
    let received = fulcrum::upgrade::handover::receive(&stream)
        .map_err(|e| format!("--upgrade: taking the sockets over failed: {e}"))?;
    tracing::info!(
        old_pid = received.header.pid,
        listeners = received.header.listeners.len(),
        "upgrade: took the listening sockets over"
    );
    Ok((stream, received))
}

/// The next message on an optional channel; never, without one.
async fn next<T>(channel: &mut Option<tokio::sync::mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match channel {
        Some(channel) => channel.recv().await,
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
