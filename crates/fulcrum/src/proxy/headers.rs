//! Header rules at the proxy boundary (RFC 9110 §7.6.1): hop-by-hop headers — the fixed ones
//! and every header the `Connection` header names — are dropped in both directions, and the
//! X-Forwarded-* headers are written by fulcrum after that, so a client cannot use
//! `Connection` to strip the ones fulcrum sets (Traefik's CVE-2021-32813).

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
    /// X-Forwarded-Proto and X-Forwarded-Host: replaced by fulcrum's own.
    XForwardedOther,
}

/// Classifies a header name (any case); most names are rejected by their length alone.
pub fn classify(name: &str) -> Class {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 if is("te") => Class::HopByHop,
        4 if is("host") => Class::Host,
        7 if is("upgrade") => Class::HopByHop,
        10 if is("connection") => Class::Connection,
        10 if is("keep-alive") => Class::HopByHop,
        14 if is("content-length") => Class::ContentLength,
        15 if is("x-forwarded-for") => Class::XForwardedFor,
        16 if is("proxy-connection") => Class::HopByHop,
        16 if is("x-forwarded-host") => Class::XForwardedOther,
        17 if is("transfer-encoding") => Class::TransferEncoding,
        17 if is("x-forwarded-proto") => Class::XForwardedOther,
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
    pub forwarded_for: bool,
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
        forwarded_for: false,
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
            Class::XForwardedFor => scan.forwarded_for = true,
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

/// Whether the Transfer-Encoding values end in `chunked` (the only coding fulcrum frames by),
/// and whether they name anything else.
pub fn transfer_codings<'h>(values: impl Iterator<Item = &'h [u8]>) -> (bool, bool) {
    let mut last_chunked = false;
    let mut other = false;
    for value in values {
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                last_chunked = true;
            } else {
                other = true;
                last_chunked = false;
            }
        }
    }
    (last_chunked, other)
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
            ("x-forwarded-proto", Class::XForwardedOther),
            ("X-Forwarded-Host", Class::XForwardedOther),
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
    fn transfer_codings_must_end_in_chunked() {
        let tc = |values: &[&[u8]]| transfer_codings(values.iter().copied());
        assert_eq!(tc(&[b"chunked"]), (true, false));
        assert_eq!(tc(&[b"gzip", b"Chunked"]), (true, true));
        assert_eq!(tc(&[b"chunked, gzip"]), (false, true));
    }
}
