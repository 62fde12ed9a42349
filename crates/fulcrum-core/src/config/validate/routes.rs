//! Validation of a listener's `routes`: by server name for `tls_passthrough`, by request
//! content for `http`. Every entry must name a known pool and be reachable (no earlier entry
//! matches everything it does), and every condition must be one the proxy can test.

use std::collections::{BTreeMap, HashMap};

use super::super::model::*;
use super::super::raw::*;
use crate::routing::{self, FieldMatch, PathMatch, Route, RouteMatch, RouteTable, ValueMatch};

use super::Validator;

impl RawRoute {
    /// The HTTP-only keys this entry sets, by name.
    fn http_keys(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("host", self.host.is_some()),
            ("path", self.path.is_some()),
            ("path_prefix", self.path_prefix.is_some()),
            ("method", self.method.is_some()),
            ("methods", self.methods.is_some()),
            ("header", self.header.is_some()),
            ("headers", self.headers.is_some()),
            ("query_param", self.query_param.is_some()),
            ("query_params", self.query_params.is_some()),
            ("rewrite_prefix", self.rewrite_prefix.is_some()),
            ("rewrite_host", self.rewrite_host.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

impl Validator {
    /// A passthrough route table: every entry reachable, every pool known.
    pub(super) fn sni_routes(
        &mut self,
        path: &str,
        raw: &[RawRoute],
        has_default: bool,
        pools: &BTreeMap<String, Pool>,
    ) -> Vec<SniRoute> {
        if raw.is_empty() && !has_default {
            self.error(
                format!("{path}.routes"),
                "a tls_passthrough listener needs routes, e.g. [{ server_name = \"db.example.com\", pool = \"db\" }], or a default `pool`",
            );
        }
        let mut routes: Vec<SniRoute> = Vec::with_capacity(raw.len());
        let mut written: Vec<(usize, ServerNamePattern)> = Vec::with_capacity(raw.len());
        for (j, r) in raw.iter().enumerate() {
            let route_path = format!("{path}.routes[{j}]");
            for key in r.http_keys() {
                self.error(
                    format!("{route_path}.{key}"),
                    "applies only to routes of protocol = \"http\" listeners; a tls_passthrough route matches `server_name`",
                );
            }
            let pattern = match r.server_name.as_deref() {
                None => {
                    self.error(
                        format!("{route_path}.server_name"),
                        "is required: a name such as \"db.example.com\" or \"*.apps.example.com\"",
                    );
                    None
                }
                Some(text) => ServerNamePattern::parse(text).or_else(|| {
                    self.error(
                        format!("{route_path}.server_name"),
                        format!(
                            "`{text}` is not a server name (DNS labels, optionally after `*.`)"
                        ),
                    );
                    None
                }),
            };
            let pool = self.route_pool(&route_path, r, pools);
            let (Some(server_name), Some(pool)) = (pattern, pool) else {
                continue;
            };
            // Named by their index in the file, which the reader sees.
            if let Some((k, earlier)) = written
                .iter()
                .find(|(_, earlier)| earlier.covers(&server_name))
            {
                self.error(
                    format!("{route_path}.server_name"),
                    format!(
                        "`{server_name}` is never reached: routes[{k}] (`{earlier}`) matches every name it does"
                    ),
                );
            }
            written.push((j, server_name.clone()));
            routes.push(SniRoute { server_name, pool });
        }
        routes
    }

    /// An HTTP route table: conditions well-formed, names unique, pools known, every entry
    /// reachable.
    pub(super) fn http_routes(
        &mut self,
        path: &str,
        raw: &[RawRoute],
        pools: &BTreeMap<String, Pool>,
    ) -> RouteTable {
        let mut table = RouteTable::default();
        // Each kept route's index in the file, for messages.
        let mut positions = Vec::with_capacity(raw.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for (j, r) in raw.iter().enumerate() {
            let route_path = format!("{path}.routes[{j}]");
            if r.server_name.is_some() {
                self.error(
                    format!("{route_path}.server_name"),
                    "applies only to tls_passthrough routes; an HTTP route matches `host` (and more)",
                );
            }
            let errors_before = self.errors.len();
            let name = r.name.clone().unwrap_or_else(|| format!("routes[{j}]"));
            if name.is_empty() {
                self.error(format!("{route_path}.name"), "must not be empty");
            } else if let Some(first) = names.insert(name.clone(), j) {
                self.error(
                    format!("{route_path}.name"),
                    format!("`{name}` is already the name of routes[{first}]"),
                );
            }
            let matches = self.route_match(&route_path, r);
            let pool = self.route_pool(&route_path, r, pools);
            let rewrite_prefix = r.rewrite_prefix.as_deref().and_then(|rewrite| {
                let key = format!("{route_path}.rewrite_prefix");
                if matches.path.is_none() {
                    self.error(
                        key,
                        "needs `path_prefix` (or `path`): it replaces the part of the path that matched",
                    );
                    None
                } else if !valid_path(rewrite) {
                    self.error(
                        key,
                        format!("`{rewrite}` is not a path: it starts with `/` and holds only URI characters, without `?` or `#`"),
                    );
                    None
                } else {
                    Some(rewrite.to_string())
                }
            });
            let rewrite_host = r.rewrite_host.as_deref().and_then(|host| {
                if valid_host(host) {
                    Some(host.to_string())
                } else {
                    self.error(
                        format!("{route_path}.rewrite_host"),
                        format!("`{host}` is not a host (a DNS name or IP address, optionally with `:PORT`)"),
                    );
                    None
                }
            });
            let Some(pool) = pool else { continue };
            if self.errors.len() > errors_before {
                continue;
            }
            if let Some(k) = table
                .routes
                .iter()
                .position(|earlier| routing::covers(&earlier.matches, &matches))
            {
                self.error(
                    route_path,
                    format!(
                        "is never reached: routes[{}] (`{}`) matches every request it does; put the more specific route first",
                        positions[k], table.routes[k].name
                    ),
                );
                continue;
            }
            positions.push(j);
            table.routes.push(Route {
                name,
                matches,
                pool,
                rewrite_prefix,
                rewrite_host,
            });
        }
        table
    }

    fn route_pool(
        &mut self,
        route_path: &str,
        r: &RawRoute,
        pools: &BTreeMap<String, Pool>,
    ) -> Option<String> {
        let pool = self
            .required(&format!("{route_path}.pool"), r.pool.as_deref())
            .map(str::to_owned)?;
        self.known_pool(&format!("{route_path}.pool"), &pool, pools);
        Some(pool)
    }

    /// The conditions of one HTTP route.
    fn route_match(&mut self, route_path: &str, r: &RawRoute) -> RouteMatch {
        let host = r.host.as_deref().and_then(|text| {
            ServerNamePattern::parse(text).or_else(|| {
                self.error(
                    format!("{route_path}.host"),
                    format!(
                        "`{text}` is not a host name (DNS labels, optionally after `*.`; no port)"
                    ),
                );
                None
            })
        });
        let path = match (r.path.as_deref(), r.path_prefix.as_deref()) {
            (Some(_), Some(_)) => {
                self.error(
                    format!("{route_path}.path"),
                    "give `path` (exact) or `path_prefix`, not both",
                );
                None
            }
            (Some(text), None) => {
                self.route_path(&format!("{route_path}.path"), text, PathMatch::Exact)
            }
            (None, Some(text)) => self.route_path(
                &format!("{route_path}.path_prefix"),
                text,
                PathMatch::Prefix,
            ),
            (None, None) => None,
        };
        let methods = match (r.method.as_ref(), r.methods.as_ref()) {
            (Some(_), Some(_)) => {
                self.error(
                    format!("{route_path}.method"),
                    "give `method` (one) or `methods` (any of several), not both",
                );
                Vec::new()
            }
            (Some(one), None) => {
                self.methods(&format!("{route_path}.method"), std::slice::from_ref(one))
            }
            (None, Some(several)) => {
                if several.is_empty() {
                    self.error(
                        format!("{route_path}.methods"),
                        "must not be empty (leave it out to match any method)",
                    );
                }
                self.methods(&format!("{route_path}.methods"), several)
            }
            (None, None) => Vec::new(),
        };
        let headers = self.field_matches(
            route_path,
            "header",
            r.header.as_ref(),
            r.headers.as_deref(),
            true,
        );
        let query = self.field_matches(
            route_path,
            "query_param",
            r.query_param.as_ref(),
            r.query_params.as_deref(),
            false,
        );
        RouteMatch {
            host,
            path,
            methods,
            headers,
            query,
        }
    }

    fn route_path(
        &mut self,
        key: &str,
        text: &str,
        kind: fn(String) -> PathMatch,
    ) -> Option<PathMatch> {
        if valid_path(text) {
            Some(kind(text.to_string()))
        } else {
            self.error(
                key,
                format!("`{text}` is not a path: it starts with `/` and holds only URI characters, without `?` or `#`"),
            );
            None
        }
    }

    fn methods(&mut self, key: &str, methods: &[String]) -> Vec<String> {
        for (k, method) in methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(is_token_char) {
                let at = if methods.len() > 1 || key.ends_with('s') {
                    format!("{key}[{k}]")
                } else {
                    key.to_string()
                };
                self.error(
                    at,
                    format!("`{method}` is not a method (a token, such as GET)"),
                );
            }
        }
        methods.to_vec()
    }

    /// `one` (key `singular`) and `several` (key `singular` + "s") together.
    fn field_matches(
        &mut self,
        route_path: &str,
        singular: &str,
        one: Option<&RawFieldMatch>,
        several: Option<&[RawFieldMatch]>,
        header: bool,
    ) -> Vec<FieldMatch> {
        let mut entries: Vec<(String, &RawFieldMatch)> = Vec::new();
        if let Some(one) = one {
            entries.push((format!("{route_path}.{singular}"), one));
        }
        for (k, entry) in several.unwrap_or_default().iter().enumerate() {
            entries.push((format!("{route_path}.{singular}s[{k}]"), entry));
        }
        let mut fields = Vec::with_capacity(entries.len());
        for (key, raw) in entries {
            let Some(name) = self.required(&format!("{key}.name"), raw.name.as_deref()) else {
                continue;
            };
            let valid = if header {
                !name.is_empty() && name.bytes().all(is_token_char)
            } else {
                !name.is_empty()
            };
            if !valid {
                self.error(
                    format!("{key}.name"),
                    if header {
                        format!("`{name}` is not a header name (a token)")
                    } else {
                        format!("`{name}` is not a parameter name")
                    },
                );
                continue;
            }
            // Header names are case-insensitive; parameter names are compared as sent.
            let name = if header {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            };
            let value = match (raw.value.as_deref(), raw.regex.as_deref()) {
                (Some(_), Some(_)) => {
                    self.error(
                        format!("{key}.value"),
                        "give `value` (exact) or `regex`, not both (neither: present with any value)",
                    );
                    continue;
                }
                (Some(value), None) => ValueMatch::Equals(value.to_string()),
                (None, Some(pattern)) => match routing::Regex::new(pattern) {
                    Ok(re) => ValueMatch::Regex(re),
                    Err(why) => {
                        self.error(
                            format!("{key}.regex"),
                            format!(
                                "`{pattern}` is not a regular expression: {}",
                                first_line(&why)
                            ),
                        );
                        continue;
                    }
                },
                (None, None) => ValueMatch::Present,
            };
            fields.push(FieldMatch { name, value });
        }
        fields
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An origin-form path: `/`, then RFC 3986 path characters (percent-encoding as written).
fn valid_path(text: &str) -> bool {
    text.starts_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

/// A `Host` value: a DNS name, an IPv4 address, or a bracketed IPv6 address, with an
/// optional port.
fn valid_host(text: &str) -> bool {
    let host = routing::host_without_port(text.as_bytes());
    let port = &text.as_bytes()[host.len()..];
    let port_ok = port.is_empty()
        || port
            .strip_prefix(b":")
            .and_then(|p| std::str::from_utf8(p).ok())
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    let host = std::str::from_utf8(host).unwrap_or_default();
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        matches!(
            ServerNamePattern::parse(host),
            Some(ServerNamePattern::Exact(_))
        )
    };
    port_ok && host_ok
}

/// The first line of a multi-line message (the regex crate draws a caret diagram below).
fn first_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map_or_else(|| text.lines().next().unwrap_or(text), str::trim)
}
