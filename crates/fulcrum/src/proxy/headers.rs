//! Header rules at the proxy boundary (RFC 9110 §7.6.1): hop-by-hop headers are removed in
//! both directions **before** fulcrum adds its own, so a client cannot use `Connection` to
//! strip the X-Forwarded-* headers fulcrum sets (Traefik's CVE-2021-32813).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes `Connection`, every header it names, and the fixed hop-by-hop headers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) header names finds out whether there is anything to do; most
    // messages carry no hop-by-hop header at all, so this avoids six hashed look-ups each.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Adds X-Forwarded-For (the peer appended to any existing chain), X-Forwarded-Proto and
/// X-Forwarded-Host (the Host the client asked for). Host itself is kept as it is.
pub fn add_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue, proto: &'static str) {
    let chain = match headers.get_all(&X_FORWARDED_FOR).iter().count() {
        0 => peer_ip.clone(),
        _ => {
            let mut joined: Vec<u8> = Vec::with_capacity(64);
            for v in headers.get_all(&X_FORWARDED_FOR) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(peer_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer_ip.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR, chain);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn connection_named_headers_go_before_forwarded_headers_are_added() {
        let mut h = map(&[
            ("connection", "close, X-Foo, x-forwarded-for"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-forwarded-for", "203.0.113.9"),
            ("host", "example.com"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        for gone in [
            "connection",
            "x-foo",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-connection",
        ] {
            assert!(!names.contains(&gone), "{gone} survived: {names:?}");
        }
        // The client named X-Forwarded-For in Connection: its value is dropped, ours stays.
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["host"], "example.com");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn existing_chains_get_the_peer_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 10.2.2.2, 127.0.0.1");
        assert!(h.get("x-forwarded-host").is_none());
    }
}
