//! Header rules at the proxy boundary (RFC 9110 §7.6.1): hop-by-hop headers — the fixed ones
//! and every header the `Connection` header names — are dropped in both directions, and the
//! X-Forwarded-* headers are written by fulcrum after that, so a client cannot use
//! `Connection` to strip the ones fulcrum sets (Traefik's CVE-2021-32813). Forwarding headers
//! are believed only from a trusted proxy; from anyone else they are replaced.

/// What a header means to the proxy, decided from its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Forwarded as it is.
    EndToEnd,
    /// Keep-Alive, Proxy-Connection, TE, Upgrade: never forwarded.
    HopByHop,
    /// Connection: never forwarded, and names more headers that are not.
    Connection,
    /// Transfer-Encoding: hop-by-hop, but it decides the framing.
    TransferEncoding,
    ContentLength,
    Host,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    /// RFC 7239's `Forwarded`.
    Forwarded,
}

/// Classifies a header name (any case); most names are rejected by their length alone.
pub fn classify(name: &str) -> Class {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 if is("te") => Class::HopByHop,
        4 if is("host") => Class::Host,
        7 if is("upgrade") => Class::HopByHop,
        9 if is("forwarded") => Class::Forwarded,
        10 if is("connection") => Class::Connection,
        10 if is("keep-alive") => Class::HopByHop,
        14 if is("content-length") => Class::ContentLength,
        15 if is("x-forwarded-for") => Class::XForwardedFor,
        16 if is("proxy-connection") => Class::HopByHop,
        16 if is("x-forwarded-host") => Class::XForwardedHost,
        17 if is("transfer-encoding") => Class::TransferEncoding,
        17 if is("x-forwarded-proto") => Class::XForwardedProto,
        _ => Class::EndToEnd,
    }
}

/// Most headers a request or response head may have (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// What one pass over a head's headers found.
#[derive(Debug)]
pub struct Scan<'a> {
    /// Each header's class, by position.
    pub classes: [Class; MAX_HEADERS],
    pub hosts: usize,
    pub host: Option<&'a [u8]>,
    pub content_length: Result<Option<u64>, InvalidLength>,
    pub transfer_encoding: bool,
    /// A header name has an underscore (see `headers_with_underscores`).
    pub underscores: bool,
    /// `TE: trailers`: the client takes trailers (gRPC says so, and an HTTP/2 backend is
    /// told again, since TE is hop-by-hop).
    pub te_trailers: bool,
    /// An `Upgrade` header lists `websocket` (a handshake only when `Connection` also says
    /// `upgrade`).
    pub upgrade_websocket: bool,
    pub connection: ConnectionTokens<'a>,
}

/// Classifies every header once and gathers what framing and forwarding need.
pub fn scan<'a>(headers: &[httparse::Header<'a>]) -> Scan<'a> {
    let mut scan = Scan {
        classes: [Class::EndToEnd; MAX_HEADERS],
        hosts: 0,
        host: None,
        content_length: Ok(None),
        transfer_encoding: false,
        underscores: false,
        te_trailers: false,
        upgrade_websocket: false,
        connection: ConnectionTokens::default(),
    };
    let mut connection = false;
    for (slot, h) in scan.classes.iter_mut().zip(headers) {
        let class = classify(h.name);
        *slot = class;
        match class {
            Class::Host => {
                scan.hosts += 1;
                scan.host = Some(h.value);
            }
            Class::ContentLength => {
                scan.content_length = match (scan.content_length, parse_length(h.value)) {
                    (Ok(None), Ok(n)) => Ok(Some(n)),
                    (Ok(Some(a)), Ok(b)) if a == b => Ok(Some(a)),
                    _ => Err(InvalidLength),
                };
            }
            Class::TransferEncoding => scan.transfer_encoding = true,
            Class::EndToEnd => scan.underscores |= h.name.as_bytes().contains(&b'_'),
            Class::HopByHop if h.name.len() == 2 => {
                scan.te_trailers |= h.value.eq_ignore_ascii_case(b"trailers");
            }
            Class::HopByHop if h.name.len() == 7 => {
                scan.upgrade_websocket |= lists_token(h.value, b"websocket");
            }
            Class::Connection => connection = true,
            _ => {}
        }
    }
    if connection {
        scan.connection = ConnectionTokens::of(headers);
    }
    scan
}

/// What the `Connection` headers of a message say.
#[derive(Debug, Default)]
pub struct ConnectionTokens<'a> {
    pub close: bool,
    pub keep_alive: bool,
    /// `upgrade`: the message asks to switch protocols (or, from a backend, switches).
    pub upgrade: bool,
    /// Other tokens: names of headers that are hop-by-hop for this message.
    named: Vec<&'a str>,
}

impl<'a> ConnectionTokens<'a> {
    pub fn of(headers: &[httparse::Header<'a>]) -> Self {
        let mut tokens = Self::default();
        for h in headers {
            if !h.name.eq_ignore_ascii_case("connection") {
                continue;
            }
            let Ok(value) = std::str::from_utf8(h.value) else {
                continue;
            };
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    tokens.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    tokens.keep_alive = true;
                } else if !token.is_empty() {
                    tokens.upgrade |= token.eq_ignore_ascii_case("upgrade");
                    tokens.named.push(token);
                }
            }
        }
        tokens
    }

    /// True when `Connection` names this header, which makes it hop-by-hop.
    pub fn names(&self, name: &str) -> bool {
        !self.named.is_empty() && self.named.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Whether a comma-separated header value lists `token` (any case; a protocol's version,
/// `websocket/13`, is not the bare token).
pub fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends `name: value\r\n`.
pub fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn parse_length(value: &[u8]) -> Result<u64, InvalidLength> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(InvalidLength);
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A Content-Length that is not a number, or copies that disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidLength;

/// What a message's Transfer-Encoding values say about its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codings {
    /// The last coding is `chunked`: the body is framed by chunks.
    pub chunked_last: bool,
    /// A coding other than `chunked` is named.
    pub other: bool,
    /// `chunked` is named more than once, which RFC 9112 §6.1 forbids: no two readers agree
    /// on how many layers to take off.
    pub chunked_twice: bool,
}

/// Reads the Transfer-Encoding values (all of them, in order).
pub fn transfer_codings<'h>(values: impl Iterator<Item = &'h [u8]>) -> Codings {
    let mut codings = Codings {
        chunked_last: false,
        other: false,
        chunked_twice: false,
    };
    let mut chunked = 0;
    for value in values {
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
                codings.chunked_last = true;
            } else {
                codings.other = true;
                codings.chunked_last = false;
            }
        }
    }
    codings.chunked_twice = chunked > 1;
    codings
}

/// Whether `value` is a valid Host (RFC 9110 §7.2): `uri-host [ ":" port ]`, where uri-host
/// is a bracketed IP literal or a reg-name (IPv4 addresses are reg-names too) and port is
/// decimal and at most 65535. An empty value is valid (a target without authority). Slashes,
/// userinfo, spaces and anything else a backend could read as a second meaning are not.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        let valid_literal = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !valid_literal {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    valid_reg_name(host) && port.is_none_or(valid_port)
}

/// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2).
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let escaped = name.get(i + 1..i + 3);
                if !escaped.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
            | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// A port after a colon: one to five digits, at most 65535.
fn valid_port(port: &[u8]) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_classified_in_any_case() {
        for (name, class) in [
            ("Connection", Class::Connection),
            ("keep-alive", Class::HopByHop),
            ("Proxy-Connection", Class::HopByHop),
            ("TE", Class::HopByHop),
            ("Upgrade", Class::HopByHop),
            ("Transfer-Encoding", Class::TransferEncoding),
            ("content-length", Class::ContentLength),
            ("HOST", Class::Host),
            ("X-Forwarded-For", Class::XForwardedFor),
            ("x-forwarded-proto", Class::XForwardedProto),
            ("X-Forwarded-Host", Class::XForwardedHost),
            ("Forwarded", Class::Forwarded),
            ("x-kept", Class::EndToEnd),
            ("hosts", Class::EndToEnd),
        ] {
            assert_eq!(classify(name), class, "{name}");
        }
    }

    #[test]
    fn connection_tokens_say_close_keep_alive_and_what_else_is_hop_by_hop() {
        let headers = [
            httparse::Header {
                name: "Connection",
                value: b"close, X-Foo",
            },
            httparse::Header {
                name: "connection",
                value: b"Keep-Alive",
            },
        ];
        let tokens = ConnectionTokens::of(&headers);
        assert!(tokens.close && tokens.keep_alive);
        assert!(tokens.names("x-foo"));
        assert!(!tokens.names("x-bar"));
    }

    #[test]
    fn content_lengths_must_be_digits_and_agree() {
        let cl = |values: &[&'static [u8]]| {
            let headers: Vec<_> = values
                .iter()
                .map(|value| httparse::Header {
                    name: "Content-Length",
                    value,
                })
                .collect();
            scan(&headers).content_length
        };
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&[b"12"]), Ok(Some(12)));
        assert_eq!(cl(&[b"12", b" 12 "]), Ok(Some(12)));
        assert_eq!(cl(&[b"12", b"13"]), Err(InvalidLength));
        for bad in [
            &b"-1"[..],
            b"+5",
            b"1 2",
            b"0x10",
            b"",
            b"99999999999999999999",
        ] {
            assert_eq!(cl(&[bad]), Err(InvalidLength), "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings_must_end_in_chunked_and_name_it_once() {
        let tc = |values: &[&[u8]]| {
            let c = transfer_codings(values.iter().copied());
            (c.chunked_last, c.other, c.chunked_twice)
        };
        assert_eq!(tc(&[b"chunked"]), (true, false, false));
        assert_eq!(tc(&[b"gzip", b"Chunked"]), (true, true, false));
        assert_eq!(tc(&[b"chunked, gzip"]), (false, true, false));
        assert_eq!(tc(&[b"chunked, chunked"]), (true, false, true));
        assert_eq!(tc(&[b"chunked", b"chunked"]), (true, false, true));
    }

    #[test]
    fn hosts_are_a_name_or_address_with_an_optional_decimal_port() {
        for good in [
            &b"example.com"[..],
            b"example.com:8080",
            b"127.0.0.1",
            b"127.0.0.1:65535",
            b"[::1]",
            b"[2001:db8::1]:443",
            b"xn--bcher-kva.example",
            b"a%2Db",
            b"",
        ] {
            assert!(valid_host(good), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"example.com/path"[..],
            b"user@example.com",
            b"example.com:http",
            b"example.com:65536",
            b"example.com:123456",
            b"example.com:",
            b"exa mple.com",
            b"example.com:80:80",
            b"[::1",
            b"[::1]x",
            b"[]",
            b"a%2",
            b"a\\b",
            b"a?b",
            b"a#b",
        ] {
            assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
