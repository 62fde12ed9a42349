//! Header rules at the proxy boundary (RFC 9110 §7.6.1): hop-by-hop headers — the fixed ones
//! and every header the `Connection` header names — are dropped in both directions, and the
//! X-Forwarded-* headers are written by fulcrum after that, so a client cannot use
//! `Connection` to strip the ones fulcrum sets (Traefik's CVE-2021-32813).

/// What a header means to the proxy, decided from its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Forwarded as it is.
    EndToEnd,
    /// Connection, Keep-Alive, Proxy-Connection, TE, Upgrade: never forwarded.
    HopByHop,
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
        10 if is("connection") || is("keep-alive") => Class::HopByHop,
        14 if is("content-length") => Class::ContentLength,
        15 if is("x-forwarded-for") => Class::XForwardedFor,
        16 if is("proxy-connection") => Class::HopByHop,
        16 if is("x-forwarded-host") => Class::XForwardedOther,
        17 if is("transfer-encoding") => Class::TransferEncoding,
        17 if is("x-forwarded-proto") => Class::XForwardedOther,
        _ => Class::EndToEnd,
    }
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

/// The value of a Content-Length header set: digits only, every copy equal.
pub fn content_length<'h>(
    mut values: impl Iterator<Item = &'h [u8]>,
) -> Result<Option<u64>, InvalidLength> {
    let mut found = None;
    for value in &mut values {
        let text = std::str::from_utf8(value)
            .map_err(|_| InvalidLength)?
            .trim();
        if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidLength);
        }
        let n: u64 = text.parse().map_err(|_| InvalidLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(InvalidLength);
        }
        found = Some(n);
    }
    Ok(found)
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
            ("Connection", Class::HopByHop),
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
        let cl = |values: &[&[u8]]| content_length(values.iter().copied());
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
