//! The WebSocket opening handshake as a proxy sees it (RFC 6455 §4, RFC 9110 §7.8): which
//! requests ask to switch to WebSocket, whether they ask correctly, and whether a backend's
//! `101 Switching Protocols` answers one. Only a valid handshake gets its `Upgrade` and
//! `Connection: upgrade` forwarded (they are hop-by-hop otherwise); only a `101` that switches
//! to WebSocket turns the connection into a tunnel. Anything else stays HTTP: the bytes that
//! follow are parsed as requests, never tunnelled.

use super::framing::Framing;
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{self, Scan};

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asks {
    /// No protocol switch (or one to a protocol other than WebSocket, which is ignored as
    /// RFC 9110 §7.8 allows: the request is served as plain HTTP).
    Http,
    /// A valid WebSocket handshake.
    WebSocket,
}

/// The one WebSocket version there is (RFC 6455 §4.1).
pub const VERSION: &[u8] = b"13";

/// Checks a request that may ask to switch to WebSocket. A request that asks (an `Upgrade`
/// listing `websocket` and a `Connection` listing `upgrade`) but breaks the handshake's
/// rules is refused: 400, or 426 naming version 13 for another version (RFC 6455 §4.2.2).
pub fn check(
    method: &str,
    http10: bool,
    framing: Framing,
    scan: &Scan<'_>,
    headers: &[httparse::Header<'_>],
) -> Result<Asks, ProxyError> {
    if !(scan.upgrade_websocket && scan.connection.upgrade) {
        return Ok(Asks::Http);
    }
    if method != "GET" {
        return Err(ProxyError::BadRequest(
            "a WebSocket handshake is a GET request\n",
        ));
    }
    if http10 {
        return Err(ProxyError::BadRequest(
            "a WebSocket handshake needs HTTP/1.1\n",
        ));
    }
    if framing != Framing::Empty {
        return Err(ProxyError::BadRequest(
            "a WebSocket handshake has no body\n",
        ));
    }
    let mut keys = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"));
    match (keys.next(), keys.next()) {
        (Some(key), None) if valid_key(key.value) => {}
        _ => {
            return Err(ProxyError::BadRequest(
                "a WebSocket handshake needs one Sec-WebSocket-Key of 16 bytes in base64\n",
            ))
        }
    }
    let mut versions = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-version"));
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.value.trim_ascii() == VERSION => Ok(Asks::WebSocket),
        (None, _) => Err(ProxyError::BadRequest(
            "a WebSocket handshake needs Sec-WebSocket-Version\n",
        )),
        _ => Err(ProxyError::WebSocketVersion),
    }
}

/// A backend's `101` switches to WebSocket: `Upgrade: websocket` and `Connection: upgrade`
/// (RFC 6455 §4.2.2; the accept key is the client's to check).
pub fn switches(scan: &Scan<'_>) -> bool {
    scan.upgrade_websocket && scan.connection.upgrade
}

/// 16 bytes in base64: 22 characters of the alphabet, then `==` (RFC 6455 §4.1, item 7).
fn valid_key(value: &[u8]) -> bool {
    let key = value.trim_ascii();
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The headers that make an upgrade request or a `101` a WebSocket one, as fulcrum writes
/// them (the client's own are hop-by-hop and were dropped).
pub fn put_upgrade(out: &mut Vec<u8>) {
    headers::put(out, b"connection", b"upgrade");
    headers::put(out, b"upgrade", b"websocket");
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// What is checked, the method, HTTP/1.0 or not, the body's framing, the headers, and
    /// what the check says.
    type Case = (
        &'static str,
        &'static str,
        bool,
        Framing,
        Vec<(&'static str, &'static str)>,
        Result<Asks, ProxyError>,
    );

    fn asks(
        method: &str,
        http10: bool,
        framing: Framing,
        head: &[(&str, &str)],
    ) -> Result<Asks, ProxyError> {
        let headers: Vec<httparse::Header<'_>> = head
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect();
        let scan = headers::scan(&headers);
        check(method, http10, framing, &scan, &headers)
    }

    /// A handshake with `changes` applied: `(name, None)` removes a header.
    fn handshake(
        changes: &[(&'static str, Option<&'static str>)],
    ) -> Vec<(&'static str, &'static str)> {
        let mut head = vec![
            ("host", "chat.example"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
        ];
        for (name, value) in changes {
            head.retain(|(n, _)| n != name);
            if let Some(value) = value {
                head.push((name, value));
            }
        }
        head
    }

    #[test]
    fn the_handshake_rules_of_rfc_6455_section_4() {
        use Framing::{Empty, Length};
        let bad = |why: &'static str| Err(ProxyError::BadRequest(why));
        let no_key =
            bad("a WebSocket handshake needs one Sec-WebSocket-Key of 16 bytes in base64\n");
        let cases: Vec<Case> = vec![
            (
                "valid (§4.1)",
                "GET",
                false,
                Empty,
                handshake(&[]),
                Ok(Asks::WebSocket),
            ),
            (
                "tokens in any case, among others (§4.1 items 5, 6)",
                "GET",
                false,
                Empty,
                handshake(&[
                    ("upgrade", Some("WebSocket")),
                    ("connection", Some("keep-alive, Upgrade")),
                ]),
                Ok(Asks::WebSocket),
            ),
            (
                "no upgrade asked",
                "GET",
                false,
                Empty,
                vec![("host", "a")],
                Ok(Asks::Http),
            ),
            (
                "Upgrade without Connection: upgrade is no upgrade (RFC 9110 §7.8)",
                "GET",
                false,
                Empty,
                handshake(&[("connection", None)]),
                Ok(Asks::Http),
            ),
            (
                "another protocol is ignored (RFC 9110 §7.8)",
                "GET",
                false,
                Empty,
                handshake(&[("upgrade", Some("h2c"))]),
                Ok(Asks::Http),
            ),
            (
                "not GET (§4.1 item 2)",
                "POST",
                false,
                Empty,
                handshake(&[]),
                bad("a WebSocket handshake is a GET request\n"),
            ),
            (
                "HTTP/1.0 (§4.1 item 2)",
                "GET",
                true,
                Empty,
                handshake(&[]),
                bad("a WebSocket handshake needs HTTP/1.1\n"),
            ),
            (
                "a body",
                "GET",
                false,
                Length(5),
                handshake(&[]),
                bad("a WebSocket handshake has no body\n"),
            ),
            (
                "no key (§4.1 item 7)",
                "GET",
                false,
                Empty,
                handshake(&[("sec-websocket-key", None)]),
                no_key,
            ),
            (
                "a key of 15 bytes",
                "GET",
                false,
                Empty,
                handshake(&[("sec-websocket-key", Some("dGhlIHNhbXBsZSBub25jZQ="))]),
                no_key,
            ),
            (
                "a key not in base64",
                "GET",
                false,
                Empty,
                handshake(&[("sec-websocket-key", Some("dGhlIHNhbXBsZSBub25j*Q=="))]),
                no_key,
            ),
            (
                "two keys",
                "GET",
                false,
                Empty,
                {
                    let mut h = handshake(&[]);
                    h.push(("sec-websocket-key", KEY));
                    h
                },
                no_key,
            ),
            (
                "no version (§4.1 item 9)",
                "GET",
                false,
                Empty,
                handshake(&[("sec-websocket-version", None)]),
                bad("a WebSocket handshake needs Sec-WebSocket-Version\n"),
            ),
            (
                "another version: 426 (§4.2.2)",
                "GET",
                false,
                Empty,
                handshake(&[("sec-websocket-version", Some("8"))]),
                Err(ProxyError::WebSocketVersion),
            ),
        ];
        for (what, method, http10, framing, head, expected) in cases {
            assert_eq!(asks(method, http10, framing, &head), expected, "{what}");
        }
    }

    #[test]
    fn a_426_names_the_version_and_the_protocol() {
        let mut out = Vec::new();
        ProxyError::WebSocketVersion.write_response(&mut out, false, false);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nsec-websocket-version: 13\r\n"), "{text}");
        assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
    }
}
