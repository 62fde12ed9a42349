//! A client's request head: parsed in place (httparse), checked, and written out again as the
//! head fulcrum sends upstream — origin-form target, HTTP/1.1, hop-by-hop headers dropped,
//! X-Forwarded-* added — in one pass, without building a header map.

use std::net::IpAddr;

use fulcrum_core::config::{Pool as PoolSettings, UnderscoreHeaders, UpstreamProtocol};
use fulcrum_core::routing::Route;

use super::framing::Framing;
use super::websocket::{self, Asks};
use crate::pool::random_u64;
use crate::proxy::error::ProxyError;
use crate::proxy::hash_key;
use crate::proxy::headers::{self, Class, Scan, MAX_HEADERS};
use crate::proxy::marks::Marks;
use crate::proxy::routing::{HeadView, Router};
use crate::tls::TlsFacts;

/// The limits and facts a request head is checked and rewritten with.
#[derive(Debug)]
pub struct RequestRules<'a> {
    pub max_request_line_bytes: usize,
    /// Chooses the pool, whose settings then apply (hash key, WebSockets, its protocol).
    pub router: &'a dyn Router,
    pub peer: IpAddr,
    /// The peer's address as text, formatted once per connection.
    pub peer_text: &'a [u8],
    /// The connection's TLS, when the listener terminates it.
    pub tls: Option<&'a TlsFacts>,
    /// The peer is one of the listener's `trusted_proxies`: its X-Forwarded-* and Forwarded
    /// headers are kept and appended to instead of replaced.
    pub trusted_peer: bool,
    pub underscores: UnderscoreHeaders,
}

/// What the rest of the request path needs to know about a parsed request.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head in the client's buffer.
    pub len: usize,
    pub framing: Framing,
    pub http10: bool,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub is_head: bool,
    /// An HTTP/1.0 request without Host: the backend's address is sent as Host.
    pub host_missing: bool,
    /// A bodiless GET, HEAD or OPTIONS: safe to send again to another backend.
    pub replayable: bool,
    pub key: Option<u64>,
    /// The route that chose the pool (`None`: the listener's own pool).
    pub route: Option<usize>,
    /// The value of a Set-Cookie header pinning a new client to its backend.
    pub set_cookie: Option<String>,
    /// The client sent `TE: trailers`.
    pub te_trailers: bool,
    /// A valid WebSocket handshake, forwarded as one (to HTTP/1.1 backends only: over
    /// HTTP/2 it would need RFC 8441, so other pools get it as a plain GET).
    pub upgrade: bool,
    /// fulcrum's id of the WebSocket a handshake asks for (sent to the backend in the
    /// pool's `websocket.connection_id_header`); 0 for other requests.
    pub connection_id: u64,
    /// When it reached each phase (metrics).
    pub marks: Marks,
}

/// Parses the head at the start of `buffer`. `Ok(None)`: not complete yet. On success, the
/// head to send upstream has been appended to `upstream_head`.
pub fn parse(
    buffer: &[u8],
    rules: &RequestRules<'_>,
    upstream_head: &mut Vec<u8>,
) -> Result<Option<RequestHead>, ProxyError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            let line_done = buffer.contains(&b'\n');
            if !line_done && buffer.len() > rules.max_request_line_bytes {
                return Err(ProxyError::RequestLineTooLong);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeadTooLarge),
        Err(httparse::Error::Version) if names_another_version(buffer) => {
            return Err(ProxyError::VersionNotSupported)
        }
        Err(_) => return Err(ProxyError::BadRequest("malformed request head\n")),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(ProxyError::BadRequest("malformed request head\n"));
    };
    if method.len() + target.len() + 10 > rules.max_request_line_bytes {
        return Err(ProxyError::RequestLineTooLong);
    }
    let headers: &[httparse::Header<'_>] = request.headers;
    let http10 = version == 0;
    let target = Target::parse(method, target)?;

    let scan = headers::scan(headers);
    // RFC 9112 §3.2: one Host, valid, and required in HTTP/1.1 even when the target is in
    // absolute form (whose authority then replaces it). An http URI's host is never empty.
    if scan.hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host header\n"));
    }
    if scan.hosts == 0 && !http10 {
        return Err(ProxyError::BadRequest("missing Host header\n"));
    }
    if scan
        .host
        .is_some_and(|host| host.is_empty() || !headers::valid_host(host))
    {
        return Err(ProxyError::BadRequest("invalid Host header\n"));
    }
    if scan.underscores && rules.underscores == UnderscoreHeaders::Reject {
        return Err(ProxyError::BadRequest("a header name has an underscore\n"));
    }
    let host = target.authority.map(str::as_bytes).or(scan.host);
    let framing = framing(headers, &scan, http10)?;
    let asks = websocket::check(method, http10, framing, &scan, headers)?;
    // The route phase: from here on, the chosen pool's settings.
    let (path, query) = target.path_and_query();
    let routed = rules.router.route(&HeadView {
        method,
        host,
        path,
        query: query.unwrap_or_default(),
        headers,
    });
    let settings: &PoolSettings = &routed.settings;
    let upgrade = asks == Asks::WebSocket && settings.protocol == UpstreamProtocol::Http1;
    // Never 0 (the mark of no WebSocket): one in 2^64 draws would be, and is redrawn.
    let connection_id = if upgrade {
        std::iter::repeat_with(random_u64)
            .find(|id| *id != 0)
            .unwrap_or(1)
    } else {
        0
    };
    let connection = &scan.connection;
    let keep_alive = if http10 {
        connection.keep_alive && !connection.close
    } else {
        !connection.close
    };
    let is_head = method == "HEAD";
    let replayable =
        framing == Framing::Empty && (method == "GET" || is_head || method == "OPTIONS");
    let (key, set_cookie) = hash_key(rules, settings, headers, target.origin);

    write_upstream_head(
        upstream_head,
        method,
        &target,
        Upstream {
            headers,
            scan: &scan,
            host,
            framing,
            upgrade: upgrade.then_some((
                settings.websocket.connection_id_header.as_str(),
                connection_id,
            )),
            route: routed.route,
        },
        rules,
    );
    Ok(Some(RequestHead {
        len,
        framing,
        http10,
        keep_alive,
        is_head,
        host_missing: host.is_none(),
        replayable,
        key,
        route: routed.index,
        set_cookie,
        te_trailers: scan.te_trailers,
        upgrade,
        connection_id,
        marks: Marks::new(tokio::time::Instant::now()),
    }))
}

/// The request target in the form it is forwarded in.
struct Target<'a> {
    /// Path and query (origin form), or `*`.
    origin: &'a str,
    /// The authority of an absolute-form target: it replaces the Host header.
    authority: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The path routes see (`/` when an absolute-form target has none) and the query.
    fn path_and_query(&self) -> (&'a str, Option<&'a str>) {
        let (path, query) = match self.origin.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.origin, None),
        };
        (if path.is_empty() { "/" } else { path }, query)
    }

    fn parse(method: &str, target: &'a str) -> Result<Self, ProxyError> {
        // A fragment is the client's own business (RFC 9110 §4.2.4); sent on, backends that
        // strip it and ones that route on it would see different paths.
        if !valid_target(target.as_bytes()) {
            return Err(ProxyError::BadRequest("invalid request target\n"));
        }
        if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
            return Ok(Self {
                origin: target,
                authority: None,
            });
        }
        if method == "CONNECT" {
            return Err(ProxyError::BadRequest("CONNECT is not supported\n"));
        }
        let invalid = ProxyError::BadRequest("invalid request target\n");
        let (scheme, rest) = target.split_once("://").ok_or(invalid)?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(invalid);
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, origin) = rest.split_at(end);
        if authority.is_empty() || !headers::valid_host(authority.as_bytes()) {
            return Err(invalid);
        }
        Ok(Self {
            origin,
            authority: Some(authority),
        })
    }
}

/// The request body's framing (RFC 9112 §6.3); anything ambiguous is refused, since a proxy
/// and its backend reading a body differently is how requests are smuggled.
fn framing(
    headers: &[httparse::Header<'_>],
    scan: &Scan<'_>,
    http10: bool,
) -> Result<Framing, ProxyError> {
    let length = scan
        .content_length
        .map_err(|_| ProxyError::BadRequest("invalid Content-Length\n"))?;
    if scan.transfer_encoding {
        if http10 || length.is_some() {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding with Content-Length or HTTP/1.0\n",
            ));
        }
        let codings = headers
            .iter()
            .zip(&scan.classes)
            .filter(|(_, class)| **class == Class::TransferEncoding)
            .map(|(h, _)| h.value);
        let codings = headers::transfer_codings(codings);
        return match codings {
            _ if codings.chunked_twice || !codings.chunked_last => {
                Err(ProxyError::BadRequest("invalid Transfer-Encoding\n"))
            }
            // gzip, chunked: framed, but in a coding fulcrum does not implement (§6.1).
            _ if codings.other => Err(ProxyError::CodingNotImplemented),
            _ => Ok(Framing::Chunked),
        };
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

/// The request's hash key for hashing pools and, when the key is a missing cookie that
/// fulcrum should set (`sticky_cookie`), the Set-Cookie value that makes the next request
/// land on the same backend.
fn hash_key(
    rules: &RequestRules<'_>,
    settings: &PoolSettings,
    headers: &[httparse::Header<'_>],
    origin: &str,
) -> (Option<u64>, Option<String>) {
    let Some(key) = &settings.hash_key else {
        return (None, None);
    };
    let found = hash_key::request_key(key, headers, origin, rules.peer);
    match (found, &settings.sticky_cookie) {
        (None, Some(sticky)) => {
            let value = format!("{:016x}", random_u64());
            let cookie = format!(
                "{}={value}; Path=/; Max-Age={}; HttpOnly",
                sticky.name,
                sticky.ttl.as_secs()
            );
            (Some(hash_key::cookie_value_key(&value)), Some(cookie))
        }
        (found, _) => (found, None),
    }
}

/// What the head sent upstream is written from, besides the request line's parts.
struct Upstream<'h> {
    headers: &'h [httparse::Header<'h>],
    scan: &'h Scan<'h>,
    /// The host the client named (Host, or the absolute-form authority).
    host: Option<&'h [u8]>,
    framing: Framing,
    /// The pool's WebSocket id header and the id, for a handshake forwarded as one.
    upgrade: Option<(&'h str, u64)>,
    /// The route that took the request, with its rewrites.
    route: Option<&'h Route>,
}

fn write_upstream_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &Target<'_>,
    upstream: Upstream<'_>,
    rules: &RequestRules<'_>,
) {
    let Upstream {
        headers,
        scan,
        host,
        framing,
        upgrade,
        route,
    } = upstream;
    let (peer, tls, trusted) = (rules.peer_text, rules.tls, rules.trusted_peer);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    match route.filter(|r| r.rewrite_prefix.is_some() && target.origin != "*") {
        Some(route) => {
            let (path, query) = target.path_and_query();
            route.write_target(path.as_bytes(), query.map(str::as_bytes), out);
        }
        None => {
            // "http://host" and "http://host?q" have an empty path: origin form starts "/".
            if !target.origin.starts_with('/') && target.origin != "*" {
                out.push(b'/');
            }
            out.extend_from_slice(target.origin.as_bytes());
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let rewrite_host = route.and_then(|r| r.rewrite_host.as_deref());
    let connection = &scan.connection;
    let drop_underscores = scan.underscores && rules.underscores == UnderscoreHeaders::Drop;
    // Forwarding headers of each kind a trusted peer sent (and `Connection` left alone).
    let (mut forwarded_for, mut proto_kept, mut host_kept, mut forwarded_kept) =
        (false, false, false, false);
    let mut length_sent = false;
    let subject_header = tls.and_then(|t| t.subject_header());
    for (h, class) in headers.iter().zip(&scan.classes) {
        let trusted_kept = || trusted && !connection.names(h.name);
        let keep = match class {
            Class::EndToEnd => {
                let underscored = drop_underscores && h.name.contains('_');
                !(underscored || connection.names(h.name))
            }
            // Framing and Host are never dropped because `Connection` names them: a body
            // forwarded without its length is a second request hidden in the first. Copies
            // (all equal, or the head was refused) go upstream once.
            Class::ContentLength => !std::mem::replace(&mut length_sent, true),
            Class::Host => target.authority.is_none() && rewrite_host.is_none(),
            // The chain is written below, after the trusted peer's entries.
            Class::XForwardedFor => {
                forwarded_for |= trusted_kept();
                false
            }
            Class::XForwardedProto => flag(&mut proto_kept, trusted_kept()),
            Class::XForwardedHost => flag(&mut host_kept, trusted_kept()),
            Class::Forwarded => flag(&mut forwarded_kept, trusted_kept()),
            Class::HopByHop | Class::Connection | Class::TransferEncoding => false,
        };
        // A client must not name its own certificate's subject, nor its WebSocket's id.
        let spoofed = subject_header.is_some_and(|name| h.name.eq_ignore_ascii_case(name))
            || upgrade.is_some_and(|(name, _)| h.name.eq_ignore_ascii_case(name));
        if keep && !spoofed {
            headers::put(out, h.name.as_bytes(), h.value);
        }
    }
    // The client's host stays in X-Forwarded-Host and Forwarded below.
    match (rewrite_host, target.authority) {
        (Some(rewritten), _) => headers::put(out, b"host", rewritten.as_bytes()),
        (None, Some(authority)) => headers::put(out, b"host", authority.as_bytes()),
        (None, None) => {}
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for {
        let chain = headers
            .iter()
            .zip(&scan.classes)
            .filter(|(_, class)| **class == Class::XForwardedFor);
        for (h, _) in chain {
            out.extend_from_slice(h.value.trim_ascii());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer);
    out.extend_from_slice(b"\r\n");
    let proto: &[u8] = if tls.is_some() { b"https" } else { b"http" };
    if !proto_kept {
        headers::put(out, b"x-forwarded-proto", proto);
    }
    if let Some((name, subject)) = tls.and_then(|t| t.client_subject()) {
        headers::put(out, name.as_bytes(), subject.as_bytes());
    }
    if let (Some(host), false) = (host, host_kept) {
        headers::put(out, b"x-forwarded-host", host);
    }
    if forwarded_kept {
        put_forwarded(out, peer, proto, host);
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some((name, id)) = upgrade {
        websocket::put_upgrade(out);
        headers::put(
            out,
            name.as_bytes(),
            crate::proxy::websockets::id_text(id).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// Sets `seen` when `kept`; returns `kept`.
fn flag(seen: &mut bool, kept: bool) -> bool {
    *seen |= kept;
    kept
}

/// Appends fulcrum's element to a trusted peer's `Forwarded` chain (RFC 7239 §4), as a field
/// line of its own (lines of one field are one list, RFC 9110 §5.3). An IPv6 address is
/// bracketed and quoted (§6); the host always quoted, since a port's colon is no token.
fn put_forwarded(out: &mut Vec<u8>, peer: &[u8], proto: &[u8], host: Option<&[u8]>) {
    out.extend_from_slice(b"forwarded: for=");
    if peer.contains(&b':') {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(peer);
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(peer);
    }
    if let Some(host) = host {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto);
    out.extend_from_slice(b"\r\n");
}

/// Whether a request line that httparse refused for its version names a well-formed one
/// (`HTTP/` digit `.` digit) that is not 1.0 or 1.1: that is a 505, not a malformed request.
fn names_another_version(buffer: &[u8]) -> bool {
    let line = buffer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(version) = line.rsplit(|&b| b == b' ').next() else {
        return false;
    };
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
        && line.iter().filter(|&&b| b == b' ').count() == 2
}

/// Bytes a request target may hold (RFC 3986 §2: unreserved, gen-delims but `#`,
/// sub-delims, and `%` which must start two hex digits). Anything else — raw non-ASCII, `"`,
/// `<`, `\\`, `{`, `|`, a fragment — is refused, as HAProxy does by default: backends repair
/// such targets differently, and a proxy that routes on the path must see the one they see.
const TARGET_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let allowed =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?[]@!$&'()*+,;=%";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

fn valid_target(target: &[u8]) -> bool {
    let mut i = 0;
    while i < target.len() {
        let b = target[i];
        if !TARGET_BYTES[b as usize] {
            return false;
        }
        if b == b'%' {
            let escaped = target.get(i + 1..i + 3);
            if !escaped.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::routing::OnePool;
    use fulcrum_core::config::Config;

    fn settings() -> OnePool {
        let config = Config::from_toml(
            "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             pool = \"app\"\n[pools.app]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        OnePool(std::rc::Rc::new(config.pools["app"].clone()))
    }

    /// The rules of a client at 127.0.0.1.
    fn local_rules(router: &OnePool, max_request_line_bytes: usize) -> RequestRules<'_> {
        RequestRules {
            max_request_line_bytes,
            router,
            peer: [127, 0, 0, 1].into(),
            peer_text: b"127.0.0.1",
            tls: None,
            trusted_peer: false,
            underscores: UnderscoreHeaders::Drop,
        }
    }

    /// Parses `request` and returns the head sent upstream, or the error.
    fn forward(request: &str) -> Result<(String, RequestHead), ProxyError> {
        let settings = settings();
        let rules = local_rules(&settings, 8192);
        let mut out = Vec::new();
        let head = parse(request.as_bytes(), &rules, &mut out)?
            .unwrap_or_else(|| panic!("incomplete: {request:?}"));
        Ok((String::from_utf8_lossy(&out).into_owned(), head))
    }

    #[test]
    fn requests_are_forwarded_in_origin_form_with_forwarded_headers() {
        let table: &[(&str, &str)] = &[
            (
                "GET /x?y=1 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\r\n",
                "GET /x?y=1 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\
                 x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: shop\r\n\r\n",
            ),
            (
                "GET http://shop:8080?q HTTP/1.1\r\nHost: other\r\n\r\n",
                "GET /?q HTTP/1.1\r\nhost: shop:8080\r\nx-forwarded-for: 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: shop:8080\r\n\r\n",
            ),
            (
                // Connection names X-Forwarded-For: the client's chain is dropped, ours kept.
                "GET / HTTP/1.1\r\nhost: a\r\nconnection: close, X-Foo, x-forwarded-for\r\n\
                 x-foo: 1\r\nkeep-alive: 5\r\nte: trailers\r\nupgrade: websocket\r\n\
                 proxy-connection: keep-alive\r\nx-forwarded-for: 203.0.113.9\r\n\
                 x-forwarded-proto: https\r\nx-kept: yes\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: a\r\nx-kept: yes\r\nx-forwarded-for: 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: a\r\n\r\n",
            ),
            (
                // From a peer that is not a trusted proxy, the forwarding headers are replaced.
                "POST /up HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 10.1.1.1\r\n\
                 X-Forwarded-For: 10.2.2.2\r\nforwarded: for=10.1.1.1\r\n\
                 x-forwarded-host: evil\r\ntransfer-encoding: chunked\r\n\r\n",
                "POST /up HTTP/1.1\r\nhost: a\r\n\
                 x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: a\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            (
                "GET / HTTP/1.0\r\n\r\n",
                "GET / HTTP/1.1\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n",
            ),
            (
                // Connection naming the framing headers or Host removes none of them.
                "POST / HTTP/1.1\r\nhost: a\r\nconnection: Content-Length, host, \
                 transfer-encoding\r\ncontent-length: 5\r\n\r\n",
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\
                 x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: a\r\n\r\n",
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\nconnection: transfer-encoding\r\n\
                 transfer-encoding: chunked\r\n\r\n",
                "POST / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: a\r\n\
                 transfer-encoding: chunked\r\n\r\n",
            ),
            (
                // Identical copies of Content-Length go upstream as one.
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\n",
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\
                 x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: a\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nhost: [::1]:8080\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: [::1]:8080\r\nx-forwarded-for: 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: [::1]:8080\r\n\r\n",
            ),
        ];
        for (request, upstream) in table {
            let (sent, _) = forward(request).unwrap_or_else(|e| panic!("{request:?}: {e}"));
            assert_eq!(&sent, upstream, "for {request:?}");
        }
    }

    /// Parses `request` from a peer with these forwarding rules; the head sent upstream.
    fn forward_from(
        request: &str,
        trusted_peer: bool,
        underscores: UnderscoreHeaders,
        peer: &[u8],
    ) -> Result<String, ProxyError> {
        let settings = settings();
        let rules = RequestRules {
            trusted_peer,
            underscores,
            peer_text: peer,
            ..local_rules(&settings, 8192)
        };
        let mut out = Vec::new();
        parse(request.as_bytes(), &rules, &mut out)?
            .unwrap_or_else(|| panic!("incomplete: {request:?}"));
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn a_trusted_proxys_forwarding_headers_are_kept_and_appended_to() {
        let request = "GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 203.0.113.9\r\n\
                       X-Forwarded-For: 10.1.1.1\r\nx-forwarded-proto: https\r\n\
                       x-forwarded-host: shop.example\r\nforwarded: for=203.0.113.9;proto=https\r\n\r\n";
        let sent = forward_from(request, true, UnderscoreHeaders::Drop, b"10.0.0.2").unwrap();
        assert_eq!(
            sent,
            "GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: shop.example\r\nforwarded: for=203.0.113.9;proto=https\r\n\
             x-forwarded-for: 203.0.113.9, 10.1.1.1, 10.0.0.2\r\n\
             forwarded: for=10.0.0.2;host=\"a\";proto=http\r\n\r\n"
        );
        // Without forwarding headers of its own, a trusted peer gets fulcrum's, and no
        // Forwarded is invented; an IPv6 peer is bracketed and quoted in Forwarded.
        let sent = forward_from(
            "GET / HTTP/1.1\r\nhost: a:8080\r\n\r\n",
            true,
            UnderscoreHeaders::Drop,
            b"2001:db8::1",
        )
        .unwrap();
        assert_eq!(
            sent,
            "GET / HTTP/1.1\r\nhost: a:8080\r\nx-forwarded-for: 2001:db8::1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a:8080\r\n\r\n"
        );
        let sent = forward_from(
            "GET / HTTP/1.1\r\nhost: a:8080\r\nforwarded: for=x\r\n\r\n",
            true,
            UnderscoreHeaders::Drop,
            b"2001:db8::1",
        )
        .unwrap();
        assert!(sent.ends_with("forwarded: for=x\r\nx-forwarded-for: 2001:db8::1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: a:8080\r\nforwarded: for=\"[2001:db8::1]\";host=\"a:8080\";proto=http\r\n\r\n"), "{sent}");
        // Connection may still name them hop-by-hop, even from a trusted peer.
        let sent = forward_from("GET / HTTP/1.1\r\nhost: a\r\nconnection: x-forwarded-proto\r\nx-forwarded-proto: https\r\n\r\n", true, UnderscoreHeaders::Drop, b"10.0.0.2").unwrap();
        assert!(
            sent.contains("x-forwarded-proto: http\r\n") && !sent.contains("https"),
            "{sent}"
        );
    }

    #[test]
    fn headers_with_underscores_are_dropped_refused_or_allowed_as_configured() {
        let request = "GET / HTTP/1.1\r\nhost: a\r\nx_real_ip: 1.2.3.4\r\nx-ok: 1\r\n\r\n";
        let dropped = forward_from(request, false, UnderscoreHeaders::Drop, b"127.0.0.1").unwrap();
        assert!(
            !dropped.contains("x_real_ip") && dropped.contains("x-ok: 1\r\n"),
            "{dropped}"
        );
        let allowed = forward_from(request, false, UnderscoreHeaders::Allow, b"127.0.0.1").unwrap();
        assert!(allowed.contains("x_real_ip: 1.2.3.4\r\n"), "{allowed}");
        let refused = forward_from(request, false, UnderscoreHeaders::Reject, b"127.0.0.1");
        assert!(
            matches!(refused, Err(ProxyError::BadRequest(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn request_targets_hold_only_uri_characters() {
        for good in [
            "/",
            "/a/b?c=d&e",
            "/%2F%20",
            "*",
            "/s;p=1",
            "/@:!$&'()*+,;=-._~[]",
        ] {
            assert!(valid_target(good.as_bytes()), "{good}");
        }
        for bad in [
            "/a b",
            "/\"",
            "/<",
            "/{",
            "/|",
            "/\\",
            "/^",
            "/`",
            "/%",
            "/%2",
            "/%zz",
            "/#f",
            "/caf\u{e9}",
            "/\x7f",
        ] {
            assert!(!valid_target(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn framing_keep_alive_and_replay_follow_the_head() {
        let table: &[(&str, Framing, bool, bool)] = &[
            (
                "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
                Framing::Empty,
                true,
                true,
            ),
            (
                "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
                Framing::Empty,
                false,
                true,
            ),
            ("GET / HTTP/1.0\r\n\r\n", Framing::Empty, false, true),
            (
                "GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
                Framing::Empty,
                true,
                true,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
                Framing::Empty,
                true,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n",
                Framing::Length(2),
                true,
                false,
            ),
            (
                "PUT / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
                false,
            ),
        ];
        for (request, framing, keep_alive, replayable) in table {
            let (_, head) = forward(request).unwrap_or_else(|e| panic!("{request:?}: {e}"));
            assert_eq!(head.framing, *framing, "{request:?}");
            assert_eq!(head.keep_alive, *keep_alive, "{request:?}");
            assert_eq!(head.replayable, *replayable, "{request:?}");
            assert_eq!(head.len, request.len());
        }
    }

    #[test]
    fn bad_requests_get_the_status_that_says_why() {
        let long = format!("GET /{} HTTP/1.1\r\nhost: a\r\n\r\n", "x".repeat(9000));
        let many = format!(
            "GET / HTTP/1.1\r\nhost: a\r\n{}\r\n",
            "x: 1\r\n".repeat(100)
        );
        let table: Vec<(&str, u16)> = vec![
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a\r\ncontent-length: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501),
            ("GET / HTTP/2.0\r\nhost: a\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\nhost: a\r\n\r\n", 505),
            ("GET / HTTP/1.10\r\nhost: a\r\n\r\n", 400),
            ("GET http://a/ HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost:\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400),
            ("CONNECT a:443 HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("GET ftp://a/ HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a/b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: user@a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a:http\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a:70000\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a b\r\n\r\n", 400),
            ("GET http://a:99999/ HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("GET /page#section HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n", 400),
            (&long, 414),
            (&many, 431),
        ];
        for (request, status) in table {
            match forward(request) {
                Err(e) => assert_eq!(e.status(), status, "{request:?}"),
                Ok((sent, _)) => panic!("{request:?} was forwarded as {sent:?}"),
            }
        }
    }

    #[test]
    fn an_incomplete_head_waits_unless_its_line_is_already_too_long() {
        let settings = settings();
        let rules = local_rules(&settings, 100);
        let mut out = Vec::new();
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nhost: a\r\n", &rules, &mut out),
            Ok(None)
        ));
        let long = format!("GET /{}", "x".repeat(200));
        assert!(matches!(
            parse(long.as_bytes(), &rules, &mut out),
            Err(ProxyError::RequestLineTooLong)
        ));
    }
}
