//! The hash key of a request, for `ring_hash` and `maglev`: the bytes named by the pool's
//! `hash_key`, hashed with xxh3 so every fulcrum instance maps a key the same way.

use std::net::IpAddr;

use fulcrum_core::balance::stable_hash;
use fulcrum_core::config::HashKey;
use http::{header, HeaderMap, Uri};

/// The key's hash, or `None` when the request does not carry the key.
pub fn request_key(key: &HashKey, headers: &HeaderMap, uri: &Uri, peer: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(ip_key(peer)),
        HashKey::Path => Some(hash(uri.path().as_bytes())),
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash(v.as_bytes())),
        HashKey::Cookie(name) => cookie(headers, name).map(|v| hash(v.as_bytes())),
        HashKey::Query(name) => uri
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix(name.as_str())?.strip_prefix('='))
            .map(|v| hash(v.as_bytes())),
    }
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
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn each_kind_of_key_reads_its_part_of_the_request() {
        let peer: IpAddr = [10, 0, 0, 1].into();
        let uri: Uri = "/cart/items?user=42&x=1".parse().unwrap_or_default();
        let h = headers(&[("cookie", "a=1; sid=abc"), ("x-user", "bob")]);
        let key =
            |k: &str| request_key(&HashKey::parse(k).unwrap_or(HashKey::Path), &h, &uri, peer);
        assert_eq!(key("cookie:sid"), Some(hash(b"abc")));
        assert_eq!(key("cookie:none"), None);
        assert_eq!(key("header:X-User"), Some(hash(b"bob")));
        assert_eq!(key("query:user"), Some(hash(b"42")));
        assert_eq!(key("query:us"), None, "a prefix of a name is not the name");
        assert_eq!(key("path"), Some(hash(b"/cart/items")));
        assert_eq!(key("client_ip"), Some(hash(&[10, 0, 0, 1])));
    }
}
