//! Raw file structs → validated model. Validation never stops at the first problem: it keeps
//! going with placeholder values and returns every error with its path.
//!
//! This file holds the entry point and the shared primitives (addresses, durations,
//! integers); each section of the file has its own module: `pool` (pools, health, outliers,
//! hashing), `discovery` (discovery and the store settings `ha` shares), `listeners`, `ha`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::defaults;
use super::error::{ConfigError, ConfigErrors};
use super::model::*;
use super::raw::*;

mod discovery;
mod ha;
mod listeners;
mod pool;
mod routes;
mod tls;

pub fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut v = Validator::default();
    let admin = raw.admin.map(|a| {
        let bind = match a.bind.as_deref() {
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
            Some(text) => v
                .addr("admin.bind", Some(text))
                .unwrap_or(([127, 0, 0, 1], 9901).into()),
        };
        if !bind.ip().is_loopback() && a.token_file.is_none() {
            v.error(
                "admin.token_file",
                format!("required when admin.bind ({bind}) is not a loopback address"),
            );
        }
        Admin {
            bind,
            token_file: a.token_file.map(std::path::PathBuf::from),
        }
    });
    let runtime = v.runtime(raw.runtime);
    let pools: BTreeMap<String, Pool> = raw
        .pools
        .into_iter()
        .map(|(name, pool)| {
            let validated = v.pool(&name, pool);
            (name, validated)
        })
        .collect();
    let listeners = v.listeners(raw.listeners, &pools);
    let ha = raw.ha.map(|h| v.ha(h));
    if listeners.is_empty() && v.errors.is_empty() {
        v.error("listeners", "at least one listener is required");
    }
    if v.errors.is_empty() {
        Ok(Config {
            admin,
            runtime,
            listeners,
            pools,
            ha,
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
}

impl Validator {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn required<'a>(&mut self, path: &str, value: Option<&'a str>) -> Option<&'a str> {
        if value.is_none() {
            self.error(path, "is required");
        }
        value
    }

    pub(super) fn addr(&mut self, path: &str, value: Option<&str>) -> Option<SocketAddr> {
        let text = self.required(path, value)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!("`{text}` is not an address; expected IP:PORT, e.g. 127.0.0.1:8080"),
                );
                None
            }
        }
    }

    /// A duration such as "250ms" or "30s", at least `min` and at most a year.
    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d < min => {
                self.error(
                    path,
                    format!(
                        "`{text}` is too short: must be at least {}",
                        humantime::format_duration(min)
                    ),
                );
                default
            }
            Ok(d) if d > defaults::MAX_DURATION => {
                self.error(
                    path,
                    format!(
                        "`{text}` is too long: must be at most {}",
                        humantime::format_duration(defaults::MAX_DURATION)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    path,
                    format!("`{text}` is not a duration ({e}); write e.g. \"250ms\" or \"30s\""),
                );
                default
            }
        }
    }

    /// A duration as written, for rules that relate two keys (`timeout` ≤ `interval`): the
    /// written value even when it was refused for its range (a refused neighbour must not hide
    /// this rule), `validated` when the key is not written, and `None` when the text is not a
    /// duration at all (its own error says so, and a rule about the default in its place would
    /// send the reader the wrong way).
    pub(super) fn as_written(text: Option<&str>, validated: Duration) -> Option<Duration> {
        match text {
            None => Some(validated),
            Some(text) => humantime::parse_duration(text).ok(),
        }
    }

    /// How a key's value is shown in a message about its relation to another: as written when
    /// it is written, else the default it took.
    pub(super) fn shown(text: Option<&str>, validated: Duration) -> String {
        match text {
            Some(text) => format!("`{text}`"),
            None => format!("{} by default", humantime::format_duration(validated)),
        }
    }

    pub(super) fn integer(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: i64,
        range: (i64, i64),
    ) -> i64 {
        let Some(n) = value else { return default };
        if n < range.0 || n > range.1 {
            self.error(
                path,
                format!(
                    "`{n}` is out of range: must be between {} and {}",
                    range.0, range.1
                ),
            );
            return default;
        }
        n
    }

    fn runtime(&mut self, raw: RawRuntime) -> Runtime {
        Runtime {
            workers: self.integer("runtime.workers", raw.workers, 0, (0, 1024)) as usize,
            shutdown_grace: self.duration(
                "runtime.shutdown_grace",
                raw.shutdown_grace.as_deref(),
                defaults::SHUTDOWN_GRACE,
                Duration::ZERO,
            ),
            upgrade_socket: match raw.upgrade_socket {
                Some(path) if path.trim().is_empty() => {
                    self.error("runtime.upgrade_socket", "must not be empty".to_string());
                    None
                }
                path => path.map(std::path::PathBuf::from),
            },
        }
    }
}
