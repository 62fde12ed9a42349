//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and for the stable test
//! that replays their corpora (`tests/fuzz_corpora.rs`): each takes arbitrary bytes, runs one
//! parser the way the proxy does, and panics only when an invariant the proxy relies on is
//! broken — so a fuzzer's crash is a bug, and every corpus file is a regression test.
//!
//! Invariants:
//! - request head: what fulcrum forwards upstream is one complete, CRLF-only HTTP/1.1 head
//!   that fulcrum itself would accept again with the same framing (nothing ambiguous leaves);
//! - response head: what goes to the client is one complete head httparse reads;
//! - chunked: scanning in any split gives what scanning at once gives;
//! - PROXY header: a complete header is no longer than its input, and what it says survives
//!   being written and read again;
//! - config: loading never panics, and a loaded file's every listener names a known pool;
//! - HTTP/2 translation: a translated head is one complete HTTP/1.1 head (no field value can
//!   end it early and start another), which the HTTP/1.1 rules accept or refuse.
//!
//! Nothing here is on the request path: a panic is how a broken invariant reports itself to
//! the fuzzer, so the lint against panics is lifted for this module alone.
#![allow(clippy::panic)]

use std::sync::OnceLock;

use fulcrum_core::config::{Config, Pool as PoolSettings, UnderscoreHeaders};
use fulcrum_core::proxy_protocol::{self, Header, Parsed, Version};

use crate::proxy::h1::framing::{ChunkScanner, Framing};
use crate::proxy::h1::request::{self, RequestRules};
use crate::proxy::h1::response::{self, ClientSide};
use crate::proxy::routing::OnePool;

fn settings() -> &'static PoolSettings {
    static SETTINGS: OnceLock<PoolSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let config = Config::from_toml(
            "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             pool = \"app\"\n[pools.app]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n\
             hash_key = \"header:x-user\"\n",
        );
        match config {
            Ok(config) => config.pools["app"].clone(),
            Err(e) => panic!("the fuzzing configuration is invalid: {e}"),
        }
    })
}

/// The fuzzing pool as a router, one per thread (leaked: it lives as long as the fuzzer).
fn router() -> &'static OnePool {
    thread_local! {
        static ROUTER: &'static OnePool =
            Box::leak(Box::new(OnePool(std::rc::Rc::new(settings().clone()))));
    }
    ROUTER.with(|router| *router)
}

fn rules(trusted_peer: bool) -> RequestRules<'static> {
    RequestRules {
        max_request_line_bytes: 8192,
        router: router(),
        peer: [192, 0, 2, 1].into(),
        peer_text: b"192.0.2.1",
        tls: None,
        trusted_peer,
        underscores: UnderscoreHeaders::Drop,
    }
}

/// The request-head parser and the head it writes upstream.
pub fn request_head(data: &[u8]) {
    let trusted = data.first().is_some_and(|b| b & 1 == 1);
    let mut upstream = Vec::new();
    let Ok(Some(head)) = request::parse(data, &rules(trusted), &mut upstream) else {
        return;
    };
    assert!(head.len <= data.len(), "a head longer than its input");
    assert!(
        !upstream.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "a bare LF upstream: {:?}",
        String::from_utf8_lossy(&upstream)
    );
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(&upstream) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, upstream.len(), "one head upstream"),
        other => panic!(
            "the upstream head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&upstream)
        ),
    }
    if head.host_missing {
        // HTTP/1.0 without Host: the backend's address goes in at connect time.
        return;
    }
    let mut again = Vec::new();
    match request::parse(&upstream, &rules(false), &mut again) {
        // fulcrum adds up to five headers (X-Forwarded-*, a WebSocket id): a request near the
        // 100-header limit goes on with more than fulcrum itself takes (httparse read it
        // above, so it is not ambiguous). Found by this target.
        Err(crate::proxy::error::ProxyError::HeadTooLarge) => {}
        Ok(Some(second)) => assert_eq!(
            second.framing,
            head.framing,
            "the upstream head frames its body differently: {:?}",
            String::from_utf8_lossy(&upstream)
        ),
        other => panic!(
            "fulcrum would refuse what it forwards ({:?}): {:?}",
            other.map(|h| h.map(|h| h.len)),
            String::from_utf8_lossy(&upstream)
        ),
    }
}

/// The response-head parser, for each kind of client, and the head it writes for it.
pub fn response_head(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let client = ClientSide {
        request_is_head: flags & 1 == 1,
        http10: flags & 2 == 2,
        keep_alive: flags & 4 == 4,
        set_cookie: None,
        upgrade: flags & 8 == 8,
    };
    let mut out = Vec::new();
    let Ok(Some(head)) = response::parse(data, &client, &mut out) else {
        return;
    };
    assert!(head.len <= data.len());
    if head.framing == Framing::Empty && client.request_is_head {
        assert!(!head.decode_chunks);
    }
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "one head to the client"),
        other => panic!(
            "the client's head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// The chunked scanner, at once and in two pieces split where the first byte says.
pub fn chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = scan(&[body]);
    let at = usize::from(split) % (body.len() + 1);
    let (a, b) = body.split_at(at);
    assert_eq!(scan(&[a, b]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(scan(&bytes), whole, "byte by byte");
}

/// (consumed, done) or an error, scanning `pieces` in order.
fn scan(pieces: &[&[u8]]) -> Result<(usize, bool), ()> {
    let mut scanner = ChunkScanner::default();
    let mut consumed = 0;
    for piece in pieces {
        let mut bytes = piece.to_vec();
        let scanned = scanner.scan(&mut bytes, false).map_err(|_| ())?;
        assert!(scanned.consumed <= bytes.len());
        consumed += scanned.consumed;
        if scanned.done {
            return Ok((consumed, true));
        }
    }
    Ok((consumed, false))
}

/// The PROXY protocol parser, and its writer on what it parsed.
pub fn proxy_header(data: &[u8]) {
    let Ok(Parsed::Complete { header, len }) = proxy_protocol::parse(data) else {
        return;
    };
    assert!(len <= data.len());
    if let Header::Proxied {
        source,
        destination,
    } = header
    {
        for version in [Version::V1, Version::V2] {
            let mut out = Vec::new();
            proxy_protocol::write(&mut out, version, source, destination);
            let Ok(Parsed::Complete {
                header:
                    Header::Proxied {
                        source: s,
                        destination: d,
                    },
                len,
            }) = proxy_protocol::parse(&out)
            else {
                panic!("{version:?} header does not parse back: {out:?}");
            };
            assert_eq!(len, out.len());
            assert_eq!(
                (s.ip().to_canonical(), s.port(), d.port()),
                (
                    source.ip().to_canonical(),
                    source.port(),
                    destination.port()
                )
            );
        }
    }
}

/// The configuration loader on any text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        for listener in &config.listeners {
            if let Some(pool) = &listener.pool {
                assert!(
                    config.pools.contains_key(pool),
                    "listener {} names unknown pool {pool}",
                    listener.name
                );
            }
        }
    }
}

/// An HTTP/2 request head (fields taken from the input: `name\0value\0…`, the first four
/// being method, scheme, authority and path) translated to HTTP/1.1 and parsed by its rules.
pub fn h2_translation(data: &[u8]) {
    let mut fields = data.split(|&b| b == 0);
    let mut next = || fields.next().unwrap_or_default();
    let (method, scheme, authority, path) = (next(), next(), next(), next());
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build();
    let (Ok(method), Ok(uri)) = (http::Method::from_bytes(method), uri) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    loop {
        let (name, value) = (next(), next());
        if name.is_empty() {
            break;
        }
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let mut text = Vec::new();
    if crate::proxy::h2::request::to_http1(&parts, data.len() % 2 == 1, &mut text).is_err() {
        return;
    }
    let mut upstream = Vec::new();
    match request::parse(&text, &rules(false), &mut upstream) {
        // Refused by the HTTP/1.1 rules: the client gets their error.
        Err(_) => {}
        Ok(Some(head)) => assert_eq!(
            head.len,
            text.len(),
            "a field injected a second head: {:?}",
            String::from_utf8_lossy(&text)
        ),
        Ok(None) => panic!(
            "the translated head is incomplete: {:?}",
            String::from_utf8_lossy(&text)
        ),
    }
}
