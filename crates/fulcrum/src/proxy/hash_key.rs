//! The hash key of a request, for `ring_hash` and `maglev`: the bytes named by the pool's
//! `hash_key`, hashed with xxh3 so every fulcrum instance maps a key the same way.

use std::net::IpAddr;

use fulcrum_core::balance::stable_hash;
use fulcrum_core::config::HashKey;

/// The key's hash, or `None` when the request does not carry the key. `target` is the
/// origin-form request target (path and query).
pub fn request_key(
    key: &HashKey,
    headers: &[httparse::Header<'_>],
    target: &str,
    peer: IpAddr,
) -> Option<u64> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    match key {
        HashKey::ClientIp => Some(ip_key(peer)),
        HashKey::Path => Some(hash(path.as_bytes())),
        HashKey::Header(name) => header(headers, name).map(hash),
        HashKey::Cookie(name) => cookie(headers, name).map(|v| hash(v.as_bytes())),
        HashKey::Query(name) => query?
            .split('&')
            .find_map(|pair| pair.strip_prefix(name.as_str())?.strip_prefix('='))
            .map(|v| hash(v.as_bytes())),
    }
}

fn header<'a>(headers: &'a [httparse::Header<'_>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

pub fn ip_key(peer: IpAddr) -> u64 {
    match peer {
        IpAddr::V4(ip) => hash(&ip.octets()),
        IpAddr::V6(ip) => hash(&ip.octets()),
    }
}

/// The key for a cookie value fulcrum is about to set (sticky cookie).
pub fn cookie_value_key(value: &str) -> u64 {
    hash(value.as_bytes())
}

fn hash(bytes: &[u8]) -> u64 {
    stable_hash(bytes, 0)
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: &'a [httparse::Header<'_>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_key_reads_its_part_of_the_request() {
        let peer: IpAddr = [10, 0, 0, 1].into();
        let h = [
            httparse::Header {
                name: "Cookie",
                value: b"a=1; sid=abc",
            },
            httparse::Header {
                name: "X-User",
                value: b"bob",
            },
        ];
        let key = |k: &str| {
            request_key(
                &HashKey::parse(k).unwrap_or(HashKey::Path),
                &h,
                "/cart/items?user=42&x=1",
                peer,
            )
        };
        assert_eq!(key("cookie:sid"), Some(hash(b"abc")));
        assert_eq!(key("cookie:none"), None);
        assert_eq!(key("header:X-User"), Some(hash(b"bob")));
        assert_eq!(key("query:user"), Some(hash(b"42")));
        assert_eq!(key("query:us"), None, "a prefix of a name is not the name");
        assert_eq!(key("path"), Some(hash(b"/cart/items")));
        assert_eq!(key("client_ip"), Some(hash(&[10, 0, 0, 1])));
    }
}
