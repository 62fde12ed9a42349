//! Raw file structs → validated model. Validation never stops at the first problem: it keeps
//! going with placeholder values and returns every error with its path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use super::defaults;
use super::error::{ConfigError, ConfigErrors};
use super::model::*;
use super::raw::*;

pub fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut v = Validator::default();
    let admin = raw.admin.map(|a| Admin {
        bind: v
            .addr("admin.bind", a.bind.as_deref())
            .unwrap_or(([127, 0, 0, 1], 9901).into()),
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
    if listeners.is_empty() && v.errors.is_empty() {
        v.error("listeners", "at least one listener is required");
    }
    if v.errors.is_empty() {
        Ok(Config {
            admin,
            runtime,
            listeners,
            pools,
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
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn required<'a>(&mut self, path: &str, value: Option<&'a str>) -> Option<&'a str> {
        if value.is_none() {
            self.error(path, "is required");
        }
        value
    }

    fn addr(&mut self, path: &str, value: Option<&str>) -> Option<SocketAddr> {
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

    /// A duration such as "250ms" or "30s", at least `min`.
    fn duration(
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
                    format!("must be at least {}", humantime::format_duration(min)),
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

    fn integer(&mut self, path: &str, value: Option<i64>, default: i64, range: (i64, i64)) -> i64 {
        let Some(n) = value else { return default };
        if n < range.0 || n > range.1 {
            self.error(path, format!("must be between {} and {}", range.0, range.1));
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
        }
    }

    fn pool(&mut self, name: &str, raw: RawPool) -> Pool {
        let path = format!("pools.{name}");
        if name.is_empty() {
            self.error(&path, "pool names must not be empty");
        }
        let algorithm = match raw.algorithm.as_deref() {
            None => Algorithm::RoundRobin,
            Some(text) => Algorithm::from_name(text).unwrap_or_else(|| {
                let valid: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                self.error(
                    format!("{path}.algorithm"),
                    format!("unknown algorithm `{text}`; valid: {}", valid.join(", ")),
                );
                Algorithm::RoundRobin
            }),
        };
        if raw.backends.is_empty() {
            self.error(
                format!("{path}.backends"),
                "a pool needs at least one backend",
            );
        }
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut backends = Vec::with_capacity(raw.backends.len());
        for (i, b) in raw.backends.into_iter().enumerate() {
            let bpath = format!("{path}.backends[{i}]");
            let weight = self.integer(
                &format!("{bpath}.weight"),
                b.weight,
                i64::from(defaults::WEIGHT),
                (1, i64::from(defaults::MAX_WEIGHT)),
            ) as u32;
            let Some(addr) = self.addr(&format!("{bpath}.addr"), b.addr.as_deref()) else {
                continue;
            };
            if let Some(first) = seen.insert(addr, i) {
                self.error(
                    format!("{bpath}.addr"),
                    format!("{addr} is already listed as {path}.backends[{first}]"),
                );
                continue;
            }
            backends.push(Backend { addr, weight });
        }
        let ms = Duration::from_millis;
        Pool {
            algorithm,
            backends,
            connect_timeout: self.duration(
                &format!("{path}.connect_timeout"),
                raw.connect_timeout.as_deref(),
                defaults::CONNECT_TIMEOUT,
                ms(1),
            ),
            connect_attempts: self.integer(
                &format!("{path}.connect_attempts"),
                raw.connect_attempts,
                i64::from(defaults::CONNECT_ATTEMPTS),
                (1, 10),
            ) as u32,
            response_timeout: self.duration(
                &format!("{path}.response_timeout"),
                raw.response_timeout.as_deref(),
                defaults::RESPONSE_TIMEOUT,
                ms(1),
            ),
            upstream_idle_timeout: self.duration(
                &format!("{path}.upstream_idle_timeout"),
                raw.upstream_idle_timeout.as_deref(),
                defaults::UPSTREAM_IDLE_TIMEOUT,
                ms(1),
            ),
            max_idle_per_backend: self.integer(
                &format!("{path}.max_idle_per_backend"),
                raw.max_idle_per_backend,
                defaults::MAX_IDLE_PER_BACKEND as i64,
                (0, 100_000),
            ) as usize,
        }
    }

    fn listeners(
        &mut self,
        raw: Vec<RawListener>,
        pools: &BTreeMap<String, Pool>,
    ) -> Vec<Listener> {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
        let mut listeners = Vec::with_capacity(raw.len());
        for (i, l) in raw.into_iter().enumerate() {
            let path = format!("listeners[{i}]");
            let name = self
                .required(&format!("{path}.name"), l.name.as_deref())
                .map(str::to_owned);
            if let Some(name) = &name {
                if name.is_empty() {
                    self.error(format!("{path}.name"), "must not be empty");
                } else if let Some(first) = names.insert(name.clone(), i) {
                    self.error(
                        format!("{path}.name"),
                        format!("`{name}` is already the name of listeners[{first}]"),
                    );
                }
            }
            let bind = self.addr(&format!("{path}.bind"), l.bind.as_deref());
            if let Some(bind) = bind {
                // Port 0 asks the OS for a free port: two of those never collide.
                if bind.port() != 0 {
                    if let Some(first) = binds.insert(bind, i) {
                        self.error(
                            format!("{path}.bind"),
                            format!("{bind} is already the address of listeners[{first}]"),
                        );
                    }
                }
            }
            let pool = self
                .required(&format!("{path}.pool"), l.pool.as_deref())
                .map(str::to_owned);
            if let Some(pool) = &pool {
                if !pools.contains_key(pool) {
                    let known: Vec<&str> = pools.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "no pools are defined".to_string()
                    } else {
                        format!("defined pools: {}", known.join(", "))
                    };
                    self.error(
                        format!("{path}.pool"),
                        format!("unknown pool `{pool}`; {known}"),
                    );
                }
            }
            let protocol = self.protocol(&path, &l);
            let idle_default = match protocol {
                ListenerProtocol::Http(_) => defaults::HTTP_IDLE_TIMEOUT,
                ListenerProtocol::Tcp => defaults::TCP_IDLE_TIMEOUT,
            };
            let idle_timeout = self.duration(
                &format!("{path}.idle_timeout"),
                l.idle_timeout.as_deref(),
                idle_default,
                Duration::from_millis(1),
            );
            if let (Some(name), Some(bind), Some(pool)) = (name, bind, pool) {
                listeners.push(Listener {
                    name,
                    bind,
                    pool,
                    idle_timeout,
                    protocol,
                });
            }
        }
        listeners
    }

    fn protocol(&mut self, path: &str, l: &RawListener) -> ListenerProtocol {
        let http_only = [
            ("header_timeout", l.header_timeout.is_some()),
            ("max_header_bytes", l.max_header_bytes.is_some()),
            ("max_request_line_bytes", l.max_request_line_bytes.is_some()),
        ];
        match l.protocol.as_deref() {
            Some("http") => ListenerProtocol::Http(HttpLimits {
                header_timeout: self.duration(
                    &format!("{path}.header_timeout"),
                    l.header_timeout.as_deref(),
                    defaults::HEADER_TIMEOUT,
                    Duration::from_millis(1),
                ),
                // hyper cannot parse a head in less than 8 KiB of buffer.
                max_header_bytes: self.integer(
                    &format!("{path}.max_header_bytes"),
                    l.max_header_bytes,
                    defaults::MAX_HEADER_BYTES as i64,
                    (8192, 1 << 20),
                ) as usize,
                max_request_line_bytes: self.integer(
                    &format!("{path}.max_request_line_bytes"),
                    l.max_request_line_bytes,
                    defaults::MAX_REQUEST_LINE_BYTES as i64,
                    (64, 1 << 20),
                ) as usize,
            }),
            Some("tcp") => {
                for (key, present) in http_only {
                    if present {
                        self.error(
                            format!("{path}.{key}"),
                            "applies only to protocol = \"http\"",
                        );
                    }
                }
                ListenerProtocol::Tcp
            }
            Some(other) => {
                self.error(
                    format!("{path}.protocol"),
                    format!("unknown protocol `{other}`; valid: http, tcp"),
                );
                ListenerProtocol::Tcp
            }
            None => {
                self.error(
                    format!("{path}.protocol"),
                    "is required (\"http\" or \"tcp\")",
                );
                ListenerProtocol::Tcp
            }
        }
    }
}
