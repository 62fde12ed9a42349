//! Validation of `[[listeners]]`: names and binds unique, the pool each one serves, and the
//! protocol's limits.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use super::super::defaults;
use super::super::model::*;
use super::super::raw::*;

use super::Validator;
use crate::routing::RouteTable;

impl Validator {
    pub(super) fn listeners(
        &mut self,
        raw: Vec<RawListener>,
        pools: &BTreeMap<String, Pool>,
    ) -> Vec<Listener> {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
        let mut listeners = Vec::with_capacity(raw.len());
        for (i, mut l) in raw.into_iter().enumerate() {
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
            let raw_routes = l.routes.take();
            let protocol = self.protocol(&path, &mut l, raw_routes.as_deref(), pools);
            let routes = match &protocol {
                ListenerProtocol::Http(_) => {
                    self.http_routes(&path, raw_routes.as_deref().unwrap_or_default(), pools)
                }
                _ => RouteTable::default(),
            };
            // A passthrough listener may go without a default pool (unknown names are closed).
            let pool = match (&protocol, l.pool.as_deref()) {
                (ListenerProtocol::TlsPassthrough(_), None) => None,
                (_, pool) => self
                    .required(&format!("{path}.pool"), pool)
                    .map(str::to_owned),
            };
            if let Some(pool) = &pool {
                self.known_pool(&format!("{path}.pool"), pool, pools);
            }
            if protocol.is_l4() {
                let mut l4_pools: Vec<(String, &str)> = Vec::new();
                if let Some(pool) = &pool {
                    l4_pools.push((format!("{path}.pool"), pool));
                }
                if let ListenerProtocol::TlsPassthrough(routes) = &protocol {
                    for (j, route) in routes.iter().enumerate() {
                        l4_pools.push((format!("{path}.routes[{j}].pool"), &route.pool));
                    }
                }
                let passthrough = matches!(protocol, ListenerProtocol::TlsPassthrough(_));
                for (key_path, pool_name) in l4_pools {
                    if passthrough && pools.get(pool_name).is_some_and(|p| p.tls.is_some()) {
                        self.error(
                            key_path.clone(),
                            format!("pool `{pool_name}` speaks TLS to its backends; a tls_passthrough listener relays the client's own TLS, so its pools must not"),
                        );
                    }
                    let key = pools.get(pool_name).and_then(|p| p.hash_key.as_ref());
                    if key.is_some_and(|k| *k != HashKey::ClientIp) {
                        self.error(
                            key_path,
                            format!("pool `{pool_name}` hashes on a request detail; a {} listener can only hash on \"client_ip\"", protocol.name()),
                        );
                    }
                }
            }
            let idle_default = match protocol {
                ListenerProtocol::Http(_) => defaults::HTTP_IDLE_TIMEOUT,
                ListenerProtocol::Tcp | ListenerProtocol::TlsPassthrough(_) => {
                    defaults::TCP_IDLE_TIMEOUT
                }
            };
            let idle_timeout = self.duration(
                &format!("{path}.idle_timeout"),
                l.idle_timeout.as_deref(),
                idle_default,
                Duration::from_millis(1),
            );
            let tls = match (l.tls, &protocol) {
                (Some(_), ListenerProtocol::TlsPassthrough(_)) => {
                    self.error(
                        format!("{path}.tls"),
                        "a tls_passthrough listener does not terminate TLS; its backends do",
                    );
                    None
                }
                (tls, _) => {
                    tls.and_then(|tls| self.listener_tls(&format!("{path}.tls"), tls, &protocol))
                }
            };
            let proxy_protocol = l
                .proxy_protocol
                .take()
                .map(|raw| self.proxy_protocol_in(&format!("{path}.proxy_protocol"), raw));
            let max_connections = self.integer(
                &format!("{path}.max_connections"),
                l.max_connections,
                defaults::MAX_CONNECTIONS as i64,
                (1, 10_000_000),
            ) as u64;
            let max_connections_per_ip = self.integer(
                &format!("{path}.max_connections_per_ip"),
                l.max_connections_per_ip,
                0,
                (0, 10_000_000),
            ) as u32;
            let access_log = l
                .access_log
                .and_then(|raw| self.access_log(&format!("{path}.access_log"), raw, &protocol));
            if let (Some(name), Some(bind)) = (name, bind) {
                listeners.push(Listener {
                    name,
                    bind,
                    pool,
                    idle_timeout,
                    protocol,
                    tls,
                    metrics: l.metrics.unwrap_or(true),
                    access_log,
                    proxy_protocol,
                    max_connections,
                    max_connections_per_ip,
                    routes,
                });
            }
        }
        listeners
    }

    fn access_log(
        &mut self,
        path: &str,
        raw: RawAccessLog,
        protocol: &ListenerProtocol,
    ) -> Option<AccessLog> {
        let key = |k: &str| format!("{path}.{k}");
        let format = match raw.format.as_deref() {
            None | Some("json") => Some(AccessLogFormat::Json),
            Some("combined") if protocol.is_l4() => {
                self.error(
                    key("format"),
                    format!("\"combined\" is an HTTP request format; a {} listener logs connections, in \"json\"", protocol.name()),
                );
                None
            }
            Some("combined") => Some(AccessLogFormat::Combined),
            Some(other) => {
                self.error(
                    key("format"),
                    format!("`{other}` is not an access-log format; valid: \"json\", \"combined\""),
                );
                None
            }
        };
        let destination = match raw.path.as_deref() {
            None | Some("-") => Some(LogDestination::Stdout),
            Some("") => {
                self.error(
                    key("path"),
                    "must not be empty: a file, or \"-\" for standard output",
                );
                None
            }
            Some(file) => Some(LogDestination::File(file.into())),
        };
        let queue = self.integer(
            &key("queue"),
            raw.queue,
            defaults::ACCESS_LOG_QUEUE,
            (1, 1 << 24),
        ) as usize;
        Some(AccessLog {
            format: format?,
            destination: destination?,
            queue,
        })
    }

    pub(super) fn known_pool(&mut self, path: &str, pool: &str, pools: &BTreeMap<String, Pool>) {
        if !pools.contains_key(pool) {
            let known: Vec<&str> = pools.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "no pools are defined".to_string()
            } else {
                format!("defined pools: {}", known.join(", "))
            };
            self.error(path, format!("unknown pool `{pool}`; {known}"));
        }
    }

    /// A list of networks: `10.0.0.0/8`, `2001:db8::/32`, or single addresses. A network with
    /// bits set past its prefix (`10.1.2.3/8`) is refused: it is usually a typo in a list
    /// that decides whom to trust.
    pub(super) fn networks(&mut self, path: &str, raw: &[String]) -> Networks {
        let mut networks = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            let text = text.trim();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) if net.trunc() != net => self.error(
                    format!("{path}[{i}]"),
                    format!("`{text}` has bits set past its /{} prefix; did you mean `{}`?", net.prefix_len(), net.trunc()),
                ),
                Ok(net) => networks.push(net),
                Err(_) => self.error(
                    format!("{path}[{i}]"),
                    format!("`{text}` is not an address or network (such as `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7`)"),
                ),
            }
        }
        Networks(networks)
    }

    fn proxy_protocol_in(&mut self, path: &str, raw: RawProxyProtocolIn) -> ProxyProtocolIn {
        let allow = match raw.allow.as_deref() {
            None | Some([]) => {
                self.error(
                    format!("{path}.allow"),
                    "is required: the networks of the proxies that may send the header (a header from anyone else would let them choose their own address)",
                );
                Networks::default()
            }
            Some(list) => self.networks(&format!("{path}.allow"), list),
        };
        ProxyProtocolIn {
            allow,
            timeout: self.duration(
                &format!("{path}.timeout"),
                raw.timeout.as_deref(),
                defaults::PROXY_PROTOCOL_TIMEOUT,
                Duration::from_millis(1),
            ),
        }
    }

    fn rate_limit(&mut self, path: &str, raw: RawRateLimit) -> RateLimit {
        let requests_per_second = match raw.requests_per_second {
            None => {
                self.error(format!("{path}.requests_per_second"), "is required");
                1
            }
            value => self.integer(
                &format!("{path}.requests_per_second"),
                value,
                1,
                (1, 1 << 30),
            ),
        } as u32;
        let burst = self.integer(
            &format!("{path}.burst"),
            raw.burst,
            i64::from(requests_per_second),
            (1, 1 << 30),
        ) as u32;
        let action = match raw.action.as_deref() {
            None | Some("429") => RateLimitAction::Status429,
            Some("close") => RateLimitAction::Close,
            Some(other) => {
                self.error(
                    format!("{path}.action"),
                    format!("unknown action `{other}`; valid: \"429\", \"close\""),
                );
                RateLimitAction::Status429
            }
        };
        RateLimit {
            requests_per_second,
            burst,
            action,
        }
    }

    fn min_upload_rate(&mut self, path: &str, raw: RawMinUploadRate) -> MinUploadRate {
        let bytes_per_second = match raw.bytes_per_second {
            None => {
                self.error(format!("{path}.bytes_per_second"), "is required");
                1
            }
            value => self.integer(&format!("{path}.bytes_per_second"), value, 1, (1, 1 << 40)),
        } as u64;
        MinUploadRate {
            bytes_per_second,
            grace: self.duration(
                &format!("{path}.grace"),
                raw.grace.as_deref(),
                defaults::MIN_UPLOAD_GRACE,
                Duration::ZERO,
            ),
        }
    }

    fn underscore_headers(&mut self, path: &str, raw: Option<&str>) -> UnderscoreHeaders {
        match raw {
            None | Some("drop") => UnderscoreHeaders::Drop,
            Some("reject") => UnderscoreHeaders::Reject,
            Some("allow") => UnderscoreHeaders::Allow,
            Some(other) => {
                self.error(
                    path.to_string(),
                    format!("unknown action `{other}`; valid: drop, reject, allow"),
                );
                UnderscoreHeaders::Drop
            }
        }
    }

    fn http2(&mut self, path: &str, raw: RawHttp2) -> Http2Limits {
        let mut integer = |key: &str, value: Option<i64>, default: u32, range: (i64, i64)| {
            self.integer(&format!("{path}.{key}"), value, i64::from(default), range) as u32
        };
        // RFC 9113 §6.5.2: a window above 2^31-1 is a protocol error.
        const MAX_WINDOW: i64 = (1 << 31) - 1;
        Http2Limits {
            max_concurrent_streams: integer(
                "max_concurrent_streams",
                raw.max_concurrent_streams,
                defaults::H2_MAX_CONCURRENT_STREAMS,
                (1, 10_000),
            ),
            initial_stream_window: integer(
                "initial_stream_window_bytes",
                raw.initial_stream_window_bytes,
                defaults::H2_INITIAL_STREAM_WINDOW,
                (1024, MAX_WINDOW),
            ),
            // The connection window starts at 65 535 whatever SETTINGS say; it can only grow.
            initial_connection_window: integer(
                "initial_connection_window_bytes",
                raw.initial_connection_window_bytes,
                defaults::H2_INITIAL_CONNECTION_WINDOW,
                (65_535, MAX_WINDOW),
            ),
            max_header_list_bytes: integer(
                "max_header_list_bytes",
                raw.max_header_list_bytes,
                defaults::MAX_HEADER_BYTES as u32,
                (8192, 1 << 24),
            ),
        }
    }

    pub(super) fn protocol(
        &mut self,
        path: &str,
        l: &mut RawListener,
        routes: Option<&[RawRoute]>,
        pools: &BTreeMap<String, Pool>,
    ) -> ListenerProtocol {
        let http_only = [
            ("header_timeout", l.header_timeout.is_some()),
            ("max_header_bytes", l.max_header_bytes.is_some()),
            ("max_request_line_bytes", l.max_request_line_bytes.is_some()),
            ("http2", l.http2.is_some()),
            ("trusted_proxies", l.trusted_proxies.is_some()),
            (
                "headers_with_underscores",
                l.headers_with_underscores.is_some(),
            ),
            ("rate_limit", l.rate_limit.is_some()),
            ("min_upload_rate", l.min_upload_rate.is_some()),
        ];
        let protocol = match l.protocol.as_deref() {
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
                http2: self.http2(&format!("{path}.http2"), l.http2.take().unwrap_or_default()),
                trusted_proxies: self.networks(
                    &format!("{path}.trusted_proxies"),
                    l.trusted_proxies.as_deref().unwrap_or_default(),
                ),
                headers_with_underscores: self.underscore_headers(
                    &format!("{path}.headers_with_underscores"),
                    l.headers_with_underscores.as_deref(),
                ),
                rate_limit: l
                    .rate_limit
                    .take()
                    .map(|raw| self.rate_limit(&format!("{path}.rate_limit"), raw)),
                min_upload_rate: l
                    .min_upload_rate
                    .take()
                    .map(|raw| self.min_upload_rate(&format!("{path}.min_upload_rate"), raw)),
            }),
            Some("tcp") => ListenerProtocol::Tcp,
            Some("tls_passthrough") => ListenerProtocol::TlsPassthrough(self.sni_routes(
                path,
                routes.unwrap_or_default(),
                l.pool.is_some(),
                pools,
            )),
            Some(other) => {
                self.error(
                    format!("{path}.protocol"),
                    format!("unknown protocol `{other}`; valid: http, tcp, tls_passthrough"),
                );
                ListenerProtocol::Tcp
            }
            None => {
                self.error(
                    format!("{path}.protocol"),
                    "is required (\"http\", \"tcp\" or \"tls_passthrough\")",
                );
                ListenerProtocol::Tcp
            }
        };
        if protocol.is_l4() {
            for (key, present) in http_only {
                if present {
                    self.error(
                        format!("{path}.{key}"),
                        "applies only to protocol = \"http\"",
                    );
                }
            }
        }
        if routes.is_some() && matches!(protocol, ListenerProtocol::Tcp) {
            self.error(
                format!("{path}.routes"),
                "applies to protocol = \"http\" (routes by request) and \"tls_passthrough\" (by server name), not \"tcp\"",
            );
        }
        protocol
    }
}
