//! Logging through `tracing`: human-readable text (coloured only on a terminal, never with
//! `NO_COLOR`) or one JSON object per line, filtered by
//! `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Colour only for a person at a terminal: not into a pipe or a file (journald, a log
/// collector), and never when `NO_COLOR` is set to anything non-empty (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM, for the commands that do not reload (`demo`,
/// `register`). SIGHUP, which would otherwise end the process silently, is logged and
/// otherwise ignored.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let Ok(mut signals) = Signals::new() else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            match signals.next().await {
                Signal::Stop => return,
                Signal::Reload => {
                    tracing::warn!("SIGHUP received: this command does not reload; still running");
                }
                Signal::ReopenLogs => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What a signal asks of a running fulcrum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop gracefully.
    Stop,
    /// SIGHUP: read the configuration file again.
    Reload,
    /// SIGUSR1: reopen the access logs (logrotate moved them).
    ReopenLogs,
}

/// The signals `fulcrum run` answers, installed once (a signal arriving between two waits is
/// kept, not lost).
#[cfg(unix)]
#[derive(Debug)]
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Needs a Tokio runtime with I/O enabled.
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
            _ = self.user1.recv() => Signal::ReopenLogs,
        }
    }
}
