//! An HTTP listener's route table: which pool a request goes to, by host, path, method,
//! header and query parameter, checked in order (the first route that matches wins), and
//! the rewrites the chosen route applies to the request.
//!
//! The table is compiled once per configuration (regexes built, names lower-cased, hosts
//! parsed); matching a request reads its fields in place and allocates nothing. Which routes
//! an earlier one makes unreachable is decided here too (`shadow.rs`), so `fulcrum check`
//! can refuse such a table.

mod shadow;
#[cfg(test)]
mod tests;

pub use shadow::covers;

use crate::config::ServerNamePattern;

/// The fields of a request a route can look at, as the proxy parsed them.
pub trait RequestView {
    /// The method, as sent (methods are case-sensitive).
    fn method(&self) -> &[u8];
    /// The host the request names (the `Host` header, or the authority of an absolute-form
    /// target or HTTP/2's `:authority`), port included or not.
    fn host(&self) -> Option<&[u8]>;
    /// The target's path, without the query.
    fn path(&self) -> &[u8];
    /// The target's query, without the `?` (empty when there is none).
    fn query(&self) -> &[u8];
    /// The first value of the header `name` (lower case).
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// A request given field by field rather than parsed off a socket (`fulcrum route`, tests).
#[derive(Debug, Clone, Default)]
pub struct DescribedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
    pub host: Option<&'a str>,
    /// Names in lower case.
    pub headers: Vec<(String, &'a str)>,
}

impl RequestView for DescribedRequest<'_> {
    fn method(&self) -> &[u8] {
        self.method.as_bytes()
    }

    fn host(&self) -> Option<&[u8]> {
        self.host.map(str::as_bytes)
    }

    fn path(&self) -> &[u8] {
        self.path.as_bytes()
    }

    fn query(&self) -> &[u8] {
        self.query.as_bytes()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes())
    }
}

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its name, for logs, metrics and `fulcrum route` (unique in its table).
    pub name: String,
    pub matches: RouteMatch,
    /// The pool the requests it matches go to.
    pub pool: String,
    /// The path prefix (or, with an exact `path`, the whole path) it puts in place of the
    /// matched one.
    pub rewrite_prefix: Option<String>,
    /// The `Host` it sends instead of the client's.
    pub rewrite_host: Option<String>,
}

/// What a request must have for a route to take it: every condition given (an empty one
/// matches anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    pub host: Option<ServerNamePattern>,
    pub path: Option<PathMatch>,
    /// Any of these methods; empty: any method.
    pub methods: Vec<String>,
    /// All of these headers (names lower case).
    pub headers: Vec<FieldMatch>,
    /// All of these query parameters (names as sent).
    pub query: Vec<FieldMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path is exactly this.
    Exact(String),
    /// The path starts with this (bytes: `/api` also matches `/apix`; write `/api/`).
    Prefix(String),
}

/// A header or query parameter a route asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// Present, with any value (an empty one too).
    Present,
    /// Exactly this value (case-sensitive).
    Equals(String),
    /// The whole value matches this regular expression.
    Regex(Regex),
}

/// A regular expression that must match a whole value, and the pattern it was written as.
#[derive(Debug, Clone)]
pub struct Regex {
    pub pattern: String,
    compiled: regex::bytes::Regex,
}

/// Two regexes are the same when they were written the same (a reload compares configs).
impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Regex {}

impl Regex {
    /// `pattern` compiled to match whole values only; the reason when it does not compile.
    pub fn new(pattern: &str) -> Result<Self, String> {
        regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})$"))
            // Bounded compile size: a config is trusted, but a typo should not cost memory.
            .size_limit(1 << 20)
            .build()
            .map(|compiled| Regex {
                pattern: pattern.to_string(),
                compiled,
            })
            .map_err(|e| e.to_string())
    }

    pub fn is_match(&self, value: &[u8]) -> bool {
        self.compiled.is_match(value)
    }
}

impl ValueMatch {
    fn accepts(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Equals(want) => value == want.as_bytes(),
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

impl PathMatch {
    fn accepts(&self, path: &[u8]) -> bool {
        match self {
            PathMatch::Exact(want) => path == want.as_bytes(),
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_bytes()),
        }
    }
}

impl RouteMatch {
    pub fn accepts(&self, request: &impl RequestView) -> bool {
        if let Some(pattern) = &self.host {
            let Some(host) = request.host().map(host_without_port) else {
                return false;
            };
            if !std::str::from_utf8(host).is_ok_and(|host| pattern.matches(host)) {
                return false;
            }
        }
        if let Some(path) = &self.path {
            if !path.accepts(request.path()) {
                return false;
            }
        }
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.as_bytes() == request.method())
        {
            return false;
        }
        let headers = self.headers.iter().all(|field| {
            request
                .header(&field.name)
                .is_some_and(|value| field.value.accepts(value))
        });
        headers
            && self.query.iter().all(|field| {
                query_value(request.query(), &field.name).is_some_and(|v| field.value.accepts(v))
            })
    }
}

/// A route table, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// The first route that takes `request`; `None`: none does (the listener's own pool
    /// serves it, when it has one).
    pub fn route(&self, request: &impl RequestView) -> Option<&Route> {
        self.find(request).map(|(_, route)| route)
    }

    /// The first route that takes `request`, with its index in the table.
    pub fn find(&self, request: &impl RequestView) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches.accepts(request))
    }

    /// For each route that an earlier one always wins over: (its index, the earlier one's).
    pub fn unreachable(&self) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for (later, route) in self.routes.iter().enumerate() {
            if let Some(earlier) = self.routes[..later]
                .iter()
                .position(|e| covers(&e.matches, &route.matches))
            {
                found.push((later, earlier));
            }
        }
        found
    }
}

impl Route {
    /// Appends the request target the backend gets for `path` and `query` (the query as
    /// received, `None` when the target had no `?`).
    pub fn write_target(&self, path: &[u8], query: Option<&[u8]>, out: &mut Vec<u8>) {
        match (&self.rewrite_prefix, &self.matches.path) {
            (Some(rewrite), Some(PathMatch::Prefix(prefix))) => {
                // At the join a slash is neither doubled nor lost: with prefix "/v2" or
                // "/v2/" and rewrite "/", "/v2/x" becomes "/x"; with prefix "/api/" and
                // rewrite "/backend", "/api/x" becomes "/backend/x".
                out.extend_from_slice(rewrite.as_bytes());
                let mut rest = path.get(prefix.len()..).unwrap_or_default();
                if rewrite.ends_with('/') {
                    rest = rest.strip_prefix(b"/").unwrap_or(rest);
                } else if prefix.ends_with('/') {
                    out.push(b'/');
                }
                out.extend_from_slice(rest);
            }
            (Some(rewrite), Some(PathMatch::Exact(_))) => out.extend_from_slice(rewrite.as_bytes()),
            _ => out.extend_from_slice(path),
        }
        if let Some(query) = query {
            out.push(b'?');
            out.extend_from_slice(query);
        }
    }
}

/// A `Host` value without its port: `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// The value of the first parameter `name` in `query` (`a=1&b&c=`): `Some(b"")` for a
/// parameter without `=`. Names and values are compared as sent, percent-encoding and all.
pub fn query_value<'q>(query: &'q [u8], name: &str) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (key == name.as_bytes()).then_some(value)
    })
}
