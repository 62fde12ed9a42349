//! Validation of `[[listeners]]`: names and binds unique, the pool each one serves, and the
//! protocol's limits.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use super::super::defaults;
use super::super::model::*;
use super::super::raw::*;

use super::Validator;

impl Validator {
    pub(super) fn listeners(
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
            if let (ListenerProtocol::Tcp, Some(pool_name)) = (&protocol, &pool) {
                let key = pools.get(pool_name).and_then(|p| p.hash_key.as_ref());
                if key.is_some_and(|k| *k != HashKey::ClientIp) {
                    self.error(
                        format!("{path}.pool"),
                        format!("pool `{pool_name}` hashes on a request detail; a TCP listener can only hash on \"client_ip\""),
                    );
                }
            }
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
            let tls = l
                .tls
                .map(|tls| self.listener_tls(&format!("{path}.tls"), tls, &protocol));
            if let (Some(name), Some(bind), Some(pool)) = (name, bind, pool) {
                listeners.push(Listener {
                    name,
                    bind,
                    pool,
                    idle_timeout,
                    protocol,
                    tls: tls.flatten(),
                });
            }
        }
        listeners
    }

    pub(super) fn protocol(&mut self, path: &str, l: &RawListener) -> ListenerProtocol {
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
