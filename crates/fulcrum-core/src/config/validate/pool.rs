//! Validation of `[pools.NAME]`: algorithm, weights, timeouts, slow start and draining, the
//! hash key and sticky cookie, and the `health` and `outlier` sections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::super::defaults;
use super::super::model::*;
use super::super::raw::*;

use super::tls::is_header_name;
use super::Validator;

impl Validator {
    pub(super) fn pool(&mut self, name: &str, mut raw: RawPool) -> Pool {
        let path = format!("pools.{name}");
        let backend_count = raw.backends.len();
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
        if raw.backends.is_empty() && raw.discovery.is_none() {
            self.error(
                format!("{path}.backends"),
                "a pool needs at least one backend (or a discovery section)",
            );
        }
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut backends = Vec::with_capacity(raw.backends.len());
        for (i, b) in std::mem::take(&mut raw.backends).into_iter().enumerate() {
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
        let hash_key = self.hash_key(&path, algorithm, raw.hash_key.as_deref());
        let hash_fallback = match raw.hash_fallback.as_deref() {
            None | Some("random") => Algorithm::Random,
            Some("round_robin") => Algorithm::RoundRobin,
            Some(other) => {
                self.error(
                    format!("{path}.hash_fallback"),
                    format!("unknown fallback `{other}`; valid: random, round_robin"),
                );
                Algorithm::Random
            }
        };
        let sticky_cookie = self.sticky_cookie(&path, hash_key.as_ref(), raw.sticky_cookie.take());
        let hash_balance_factor = match raw.hash_balance_factor {
            Some(c) if !(1.0..=100.0).contains(&c) => {
                self.error(
                    format!("{path}.hash_balance_factor"),
                    format!("`{c}` is out of range: must be between 1.0 and 100 (1.25 is typical)"),
                );
                None
            }
            other => other,
        };
        let maglev_table_size = self.integer(
            &format!("{path}.maglev_table_size"),
            raw.maglev_table_size,
            i64::from(defaults::MAGLEV_TABLE_SIZE),
            (7, 10_000_019),
        ) as u32;
        if !is_prime(u64::from(maglev_table_size)) {
            self.error(
                format!("{path}.maglev_table_size"),
                format!("{maglev_table_size} is not prime; Maglev needs a prime table size (e.g. 65537, 655373)"),
            );
        } else if algorithm == Algorithm::Maglev
            && (maglev_table_size as usize) < backend_count.max(1) * 100
        {
            self.error(
                format!("{path}.maglev_table_size"),
                format!(
                    "{} is less than 100 × the {} backend{} ({}), too small for an even spread",
                    match raw.maglev_table_size {
                        Some(n) => format!("`{n}`"),
                        None => format!("{maglev_table_size} by default"),
                    },
                    backend_count,
                    if backend_count == 1 { "" } else { "s" },
                    backend_count * 100
                ),
            );
        }
        let tls = raw
            .tls
            .take()
            .map(|t| self.upstream_tls(&format!("{path}.tls"), t));
        let protocol = match raw.protocol.as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some("auto") if tls.is_none() => {
                self.error(
                    format!("{path}.protocol"),
                    "`auto` chooses by ALPN, which needs `tls`; without it say \"http1\" or \"http2\" (h2c)",
                );
                UpstreamProtocol::Http1
            }
            Some("auto") => UpstreamProtocol::Auto,
            Some(other) => {
                self.error(
                    format!("{path}.protocol"),
                    format!("unknown protocol `{other}`; valid: http1, http2, auto"),
                );
                UpstreamProtocol::Http1
            }
        };
        let proxy_protocol = match raw.proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(crate::proxy_protocol::Version::V1),
            Some("v2") => Some(crate::proxy_protocol::Version::V2),
            Some(other) => {
                self.error(
                    format!("{path}.proxy_protocol"),
                    format!("unknown version `{other}`; valid: v1, v2"),
                );
                None
            }
        };
        if proxy_protocol.is_some() && protocol != UpstreamProtocol::Http1 {
            self.error(
                format!("{path}.proxy_protocol"),
                "a PROXY header names one client, and an HTTP/2 connection carries many clients' streams; use it with protocol = \"http1\" (or TCP listeners)",
            );
        }
        let circuit_breakers = raw
            .circuit_breakers
            .take()
            .map(|raw| {
                let path = format!("{path}.circuit_breakers");
                let mut limit = |key: &str, value: Option<i64>| {
                    value.map(|_| {
                        self.integer(&format!("{path}.{key}"), value, 1, (1, 10_000_000)) as u64
                    })
                };
                CircuitBreakers {
                    max_requests: limit("max_requests", raw.max_requests),
                }
            })
            .unwrap_or_default();
        Pool {
            tls,
            protocol,
            proxy_protocol,
            circuit_breakers,
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
            slow_start: self.duration(
                &format!("{path}.slow_start"),
                raw.slow_start.as_deref(),
                defaults::SLOW_START,
                Duration::ZERO,
            ),
            slow_start_min_percent: self.integer(
                &format!("{path}.slow_start_min_percent"),
                raw.slow_start_min_percent,
                i64::from(defaults::SLOW_START_MIN_PERCENT),
                (1, 100),
            ) as u32,
            drain_timeout: match raw.drain_timeout.as_deref() {
                None | Some("auto") => DrainTimeout::Auto,
                Some(text) if humantime::parse_duration(text).is_err() => {
                    self.error(
                        format!("{path}.drain_timeout"),
                        format!(
                            "`{text}` is neither \"auto\" (2 × the observed p99) nor a duration such as \"30s\""
                        ),
                    );
                    DrainTimeout::Auto
                }
                Some(text) => DrainTimeout::Fixed(self.duration(
                    &format!("{path}.drain_timeout"),
                    Some(text),
                    defaults::DRAIN_WITHOUT_DATA,
                    Duration::ZERO,
                )),
            },
            health: raw
                .health
                .map(|h| self.health(&format!("{path}.health"), h)),
            outlier: raw
                .outlier
                .map(|o| self.outlier(&format!("{path}.outlier"), o)),
            discovery: raw
                .discovery
                .take()
                .and_then(|d| self.discovery(&format!("{path}.discovery"), d)),
            hash_key,
            hash_fallback,
            sticky_cookie,
            hash_balance_factor,
            ring_points: self.integer(
                &format!("{path}.ring_points"),
                raw.ring_points,
                i64::from(defaults::RING_POINTS),
                (1, 10_000),
            ) as u32,
            maglev_table_size,
            websocket: self.websocket(&format!("{path}.websocket"), raw.websocket.take()),
            ewma_decay: self.duration(
                &format!("{path}.ewma_decay"),
                raw.ewma_decay.as_deref(),
                defaults::EWMA_DECAY,
                Duration::from_millis(1),
            ),
            ewma_default_rtt: self.duration(
                &format!("{path}.ewma_default_rtt"),
                raw.ewma_default_rtt.as_deref(),
                defaults::EWMA_DEFAULT_RTT,
                Duration::from_micros(1),
            ),
        }
    }

    fn websocket(&mut self, path: &str, raw: Option<RawWebSocket>) -> WebSocket {
        let raw = raw.unwrap_or_default();
        let idle_timeout = self.duration(
            &format!("{path}.idle_timeout"),
            raw.idle_timeout.as_deref(),
            defaults::WEBSOCKET_IDLE_TIMEOUT,
            Duration::from_secs(1),
        );
        let header = raw
            .connection_id_header
            .unwrap_or_else(|| defaults::WEBSOCKET_CONNECTION_ID_HEADER.to_string());
        if !is_header_name(&header) {
            self.error(
                format!("{path}.connection_id_header"),
                format!("`{header}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
            );
        }
        WebSocket {
            idle_timeout,
            connection_id_header: header.to_ascii_lowercase(),
            close_on_drain: raw.close_on_drain.unwrap_or(false),
            registry: raw
                .registry
                .and_then(|r| self.ws_registry(&format!("{path}.registry"), r)),
        }
    }

    fn ws_registry(&mut self, path: &str, raw: RawWsRegistry) -> Option<WsRegistry> {
        let ttl = self.duration(
            &format!("{path}.ttl"),
            raw.ttl.as_deref(),
            defaults::WS_REGISTRY_TTL,
            defaults::WS_REGISTRY_MIN_TTL,
        );
        let key_prefix = raw
            .key_prefix
            .unwrap_or_else(|| defaults::WS_REGISTRY_KEY_PREFIX.to_string());
        if key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(
                format!("{path}.key_prefix"),
                format!("`{key_prefix}` holds a space or a control character"),
            );
        }
        let Some(redis) = raw.redis else {
            self.error(
                format!("{path}.redis"),
                "is required: the Redis URL, e.g. \"redis://127.0.0.1:6379\"",
            );
            return None;
        };
        if let Err(why) = check_redis_url(&redis) {
            self.error(format!("{path}.redis"), format!("`{redis}`: {why}"));
        }
        Some(WsRegistry {
            redis,
            key_prefix,
            ttl,
        })
    }

    fn upstream_tls(&mut self, path: &str, raw: RawUpstreamTls) -> UpstreamTls {
        let server_name = raw.server_name.filter(|name| {
            let valid = name.parse::<std::net::IpAddr>().is_ok()
                || matches!(ServerNamePattern::parse(name), Some(ServerNamePattern::Exact(_)));
            if !valid {
                self.error(
                    format!("{path}.server_name"),
                    format!("`{name}` is not a DNS name or IP address to verify the backends' certificate against"),
                );
            }
            valid
        });
        let ca = match raw.ca {
            Some(ca) if ca.is_empty() => {
                self.error(format!("{path}.ca"), "must be the path of a PEM file");
                None
            }
            ca => ca.map(std::path::PathBuf::from),
        };
        UpstreamTls { server_name, ca }
    }

    pub(super) fn hash_key(
        &mut self,
        path: &str,
        algorithm: Algorithm,
        raw: Option<&str>,
    ) -> Option<HashKey> {
        let key = match raw {
            None => None,
            Some(text) => HashKey::parse(text).or_else(|| {
                self.error(
                    format!("{path}.hash_key"),
                    format!("`{text}` is not a hash key; valid: \"cookie:NAME\", \"header:NAME\", \"client_ip\", \"path\", \"query:NAME\""),
                );
                None
            }),
        };
        if algorithm.is_hashing() && raw.is_none() {
            self.error(
                format!("{path}.hash_key"),
                format!("required with algorithm = \"{algorithm}\""),
            );
        }
        key
    }

    pub(super) fn sticky_cookie(
        &mut self,
        path: &str,
        key: Option<&HashKey>,
        raw: Option<RawStickyCookie>,
    ) -> Option<StickyCookie> {
        let raw = raw?;
        // Checked first: a missing hash_key must not hide a bad ttl.
        let ttl = self.duration(
            &format!("{path}.sticky_cookie.ttl"),
            raw.ttl.as_deref(),
            defaults::STICKY_COOKIE_TTL,
            Duration::from_secs(1),
        );
        let Some(HashKey::Cookie(cookie)) = key else {
            self.error(
                format!("{path}.sticky_cookie"),
                "needs hash_key = \"cookie:NAME\"",
            );
            return None;
        };
        let name = raw.name.unwrap_or_else(|| cookie.clone());
        if &name != cookie {
            self.error(
                format!("{path}.sticky_cookie.name"),
                format!("must be the hashed cookie, `{cookie}`"),
            );
        }
        Some(StickyCookie { name, ttl })
    }

    pub(super) fn health(&mut self, path: &str, raw: RawHealth) -> Health {
        let key = |k: &str| format!("{path}.{k}");
        let interval = self.duration(
            &key("interval"),
            raw.interval.as_deref(),
            defaults::HEALTH_INTERVAL,
            Duration::from_millis(100),
        );
        let timeout = self.duration(
            &key("timeout"),
            raw.timeout.as_deref(),
            defaults::HEALTH_TIMEOUT.min(interval),
            Duration::from_millis(1),
        );
        let written_interval = Self::as_written(raw.interval.as_deref(), interval);
        let written_timeout = Self::as_written(raw.timeout.as_deref(), timeout);
        if let (Some(t), Some(i), Some(_)) = (written_timeout, written_interval, &raw.timeout) {
            if t > i {
                self.error(
                    key("timeout"),
                    format!(
                        "{} is longer than the interval ({}); a probe must end before the next one starts",
                        Self::shown(raw.timeout.as_deref(), timeout),
                        Self::shown(raw.interval.as_deref(), interval)
                    ),
                );
            }
        }
        let liveness = match raw.liveness {
            None => Probe::Tcp,
            Some(p) => self.probe(&key("liveness"), p, true).unwrap_or(Probe::Tcp),
        };
        let readiness = raw
            .readiness
            .and_then(|p| match self.probe(&key("readiness"), p, false) {
                Some(Probe::Http(check)) => Some(check),
                _ => None,
            });
        Health {
            interval,
            timeout,
            rise: self.integer(&key("rise"), raw.rise, i64::from(defaults::RISE), (1, 100)) as u32,
            fall: self.integer(&key("fall"), raw.fall, i64::from(defaults::FALL), (1, 100)) as u32,
            liveness,
            readiness,
            failure_decay: self.duration(
                &key("failure_decay"),
                raw.failure_decay.as_deref(),
                defaults::FAILURE_DECAY,
                Duration::ZERO,
            ),
            max_ejection_percent: self.integer(
                &key("max_ejection_percent"),
                raw.max_ejection_percent,
                i64::from(defaults::MAX_EJECTION_PERCENT),
                (0, 100),
            ) as u32,
            panic_threshold_percent: self.integer(
                &key("panic_threshold_percent"),
                raw.panic_threshold_percent,
                i64::from(defaults::PANIC_THRESHOLD_PERCENT),
                (0, 100),
            ) as u32,
        }
    }

    /// `{ tcp = true }` (liveness only) or `{ path = "/x", expect = "200-399", host = "..." }`.
    pub(super) fn probe(&mut self, path: &str, raw: RawProbe, tcp_allowed: bool) -> Option<Probe> {
        match (raw.tcp, raw.path) {
            (Some(true), None) if tcp_allowed => {
                if raw.expect.is_some() || raw.host.is_some() {
                    self.error(
                        path,
                        "`expect` and `host` apply only to HTTP probes (`path`)",
                    );
                }
                Some(Probe::Tcp)
            }
            (Some(true), None) => {
                self.error(
                    path,
                    "readiness needs an HTTP probe: { path = \"/health\" }",
                );
                None
            }
            (None | Some(false), Some(p)) => {
                // Every key is checked: a bad path does not hide a bad `expect`.
                let path_ok = p.starts_with('/');
                if !path_ok {
                    self.error(format!("{path}.path"), format!("`{p}` must start with /"));
                }
                let expect = match raw.expect.as_deref() {
                    None => Some(StatusRange {
                        low: 200,
                        high: 399,
                    }),
                    Some(text) => StatusRange::parse(text).or_else(|| {
                        self.error(
                            format!("{path}.expect"),
                            format!(
                                "`{text}` is not a status range; write e.g. \"200-399\" or \"204\""
                            ),
                        );
                        None
                    }),
                };
                let expect = expect.filter(|_| path_ok)?;
                Some(Probe::Http(HttpCheck {
                    path: p,
                    expect,
                    host: raw.host,
                }))
            }
            (Some(true), Some(_)) => {
                self.error(path, "choose one: `tcp = true` or `path`");
                None
            }
            _ => {
                let choices = if tcp_allowed {
                    "{ tcp = true } or { path = \"/live\" }"
                } else {
                    "{ path = \"/health\" }"
                };
                self.error(path, format!("needs a probe: {choices}"));
                None
            }
        }
    }

    pub(super) fn outlier(&mut self, path: &str, raw: RawOutlier) -> Outlier {
        let key = |k: &str| format!("{path}.{k}");
        let base_ejection = self.duration(
            &key("base_ejection"),
            raw.base_ejection.as_deref(),
            defaults::OUTLIER_BASE_EJECTION,
            Duration::from_millis(1),
        );
        let max_ejection = self.duration(
            &key("max_ejection"),
            raw.max_ejection.as_deref(),
            defaults::OUTLIER_MAX_EJECTION.max(base_ejection),
            Duration::from_millis(1),
        );
        let written_base = Self::as_written(raw.base_ejection.as_deref(), base_ejection);
        let written_max = Self::as_written(raw.max_ejection.as_deref(), max_ejection);
        if let (Some(max), Some(base)) = (written_max, written_base) {
            if max < base {
                self.error(
                    key("max_ejection"),
                    format!(
                        "{} is shorter than base_ejection ({})",
                        Self::shown(raw.max_ejection.as_deref(), max_ejection),
                        Self::shown(raw.base_ejection.as_deref(), base_ejection)
                    ),
                );
            }
        }
        let failure_statuses = match raw.failure_statuses.as_deref() {
            None => StatusRange {
                low: 500,
                high: 599,
            },
            Some(text) => StatusRange::parse(text).unwrap_or_else(|| {
                self.error(
                    key("failure_statuses"),
                    format!("`{text}` is not a status range; write e.g. \"500-599\""),
                );
                StatusRange {
                    low: 500,
                    high: 599,
                }
            }),
        };
        Outlier {
            consecutive_failures: self.integer(
                &key("consecutive_failures"),
                raw.consecutive_failures,
                i64::from(defaults::OUTLIER_CONSECUTIVE_FAILURES),
                (1, 1000),
            ) as u32,
            base_ejection,
            max_ejection,
            failure_statuses,
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The Redis URLs the registry connects to: plain TCP (`redis://`, `valkey://`) or a Unix
/// socket (`redis+unix://`, `unix://`). TLS (`rediss://`) is refused here rather than at the
/// first connection attempt.
fn check_redis_url(url: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL; expected redis://HOST[:PORT][/DB] or redis+unix:///PATH");
    };
    match scheme {
        "redis" | "valkey" => {
            let authority = rest.split('/').next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            if host.is_empty() || host.starts_with(':') {
                return Err("names no host; expected redis://HOST[:PORT][/DB]");
            }
            Ok(())
        }
        "redis+unix" | "valkey+unix" | "unix" if rest.starts_with('/') => Ok(()),
        "redis+unix" | "valkey+unix" | "unix" => {
            Err("a Unix socket URL needs an absolute path: redis+unix:///PATH")
        }
        "rediss" | "valkeys" => Err("TLS to Redis is not supported; use redis:// on a trusted network or through a local TLS tunnel"),
        _ => Err("unknown scheme; expected redis:// or redis+unix://"),
    }
}
