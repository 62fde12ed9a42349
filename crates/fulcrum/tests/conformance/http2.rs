//! The HTTP/2 rules fulcrum enforces at the edge (RFC 9113), as a table: the frames a client
//! sends on a fresh connection (after the preface and SETTINGS exchange), and either exactly
//! what the HTTP/1.1 backend receives, a stream error that leaves the connection serving, or a
//! connection error with its code. Each row names its RFC section. The table runs through the
//! real proxy (`tests/conformance.rs`), clear-text HTTP/2 with prior knowledge, in front of the
//! same lenient recording backend as the HTTP/1.1 table, from an untrusted peer.
//!
//! Much of this is enforced by the `h2` crate before a request reaches fulcrum's own code; the
//! table does not care who enforces a rule, only that it holds at the edge.

use super::common::h2raw::*;
use super::requests::{body, seen, with, without, Seen};

/// One exchange and what must come of it.
#[derive(Debug)]
pub struct Case {
    pub rfc: &'static str,
    pub rule: &'static str,
    pub send: Vec<u8>,
    pub expect: Expect,
}

#[derive(Debug)]
pub enum Expect {
    /// The backend received this one request, and the client a `200` on stream 1.
    Forwards(Seen),
    /// Stream 1 is malformed (§8.1.1): reset, or answered with an error status, and nothing
    /// reached a backend; the connection goes on, and a request on stream 3 is served.
    Malformed,
    /// The connection ends with GOAWAY carrying this error code (§5.4.1); nothing reached a
    /// backend. A malformed request may end the whole connection too (§5.4.1: "an endpoint
    /// MAY choose to treat a stream error as a connection error"): the `h2` crate does so
    /// for a field block that does not decode into valid fields.
    ConnectionError(u32),
}

use Expect::*;

/// Stream 1's whole request in one HEADERS frame.
fn request(fields: &[(&str, &str)]) -> Vec<u8> {
    frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(fields))
}

/// A GET of `/` with `extra` fields, on stream 1.
fn get(extra: &[(&str, &str)]) -> Vec<u8> {
    request(&get_fields("/", extra))
}

/// A POST of `/` on stream 1 with `extra` fields, then one DATA frame per piece of `data`
/// (the last ending the stream).
fn post(extra: &[(&str, &str)], data: &[&[u8]]) -> Vec<u8> {
    let mut fields = get_fields("/", extra);
    fields[0] = (":method", "POST");
    let mut bytes = frame(HEADERS, END_HEADERS, 1, &block(&fields));
    for (i, piece) in data.iter().enumerate() {
        let flags = if i + 1 == data.len() { END_STREAM } else { 0 };
        bytes.extend(frame(DATA, flags, 1, piece));
    }
    bytes
}

/// A SETTINGS frame with one parameter.
fn setting(id: u16, value: u32) -> Vec<u8> {
    let mut payload = id.to_be_bytes().to_vec();
    payload.extend_from_slice(&value.to_be_bytes());
    frame(SETTINGS, 0, 0, &payload)
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    let pseudo = |method: &'static str, path: &'static str| {
        vec![(":method", method), (":scheme", "http"), (":authority", "h2.test"), (":path", path)]
    };
    // Stream 3, open with its head and waiting for a body that never comes: a request no
    // backend can have read whole.
    let open_stream_3 = frame(HEADERS, END_HEADERS, 3, &block(&{
        let mut fields = pseudo("POST", "/pending");
        fields.push(("content-length", "10"));
        fields
    }));
    vec![
        // --- §8.3: request pseudo-header fields become the request line and Host ----------
        Case { rfc: "RFC 9113 §8.3.1", rule: "the pseudo-headers become the request line, :authority the Host",
            send: get(&[]), expect: Forwards(with("GET / HTTP/1.1", &["host: h2.test"])) },
        Case { rfc: "RFC 9113 §8.3.1", rule: "the query is part of :path and forwarded as sent",
            send: request(&pseudo("GET", "/a/b?c=1&d")), expect: Forwards(seen("GET /a/b?c=1&d HTTP/1.1")) },
        Case { rfc: "RFC 9113 §8.3.1", rule: "an extension method is forwarded",
            send: request(&pseudo("PURGE", "/cache")), expect: Forwards(seen("PURGE /cache HTTP/1.1")) },
        Case { rfc: "RFC 9113 §8.3.1", rule: "without :authority, the Host field names the host",
            send: request(&[(":method", "GET"), (":scheme", "http"), (":path", "/h"), ("host", "named.test")]),
            expect: Forwards(with("GET /h HTTP/1.1", &["host: named.test"])) },
        Case { rfc: "RFC 9113 §8.3.1", rule: "a Host equal to :authority is kept once",
            send: get(&[("host", "h2.test")]), expect: Forwards(with("GET / HTTP/1.1", &["host: h2.test"])) },
        Case { rfc: "RFC 9113 §8.3.1", rule: "a Host that contradicts :authority is malformed",
            send: get(&[("host", "elsewhere.test")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: "neither :authority nor Host: no host to route by",
            send: request(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: "two Host fields without :authority",
            send: request(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "a.test"), ("host", "b.test")]),
            expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":authority must not carry userinfo",
            send: request(&[(":method", "GET"), (":scheme", "http"), (":authority", "user@h2.test"), (":path", "/")]),
            expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":method is required",
            send: request(&[(":scheme", "http"), (":authority", "h2.test"), (":path", "/")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":scheme is required",
            send: request(&[(":method", "GET"), (":authority", "h2.test"), (":path", "/")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":path is required",
            send: request(&[(":method", "GET"), (":scheme", "http"), (":authority", "h2.test")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":path must not be empty",
            send: request(&pseudo("GET", "")), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":path is origin form (starts with /) or *",
            send: request(&pseudo("GET", "no-slash")), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1, RFC 9112 §3.2", rule: ":path holds only URI characters",
            send: request(&pseudo("GET", "/a\"b")), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3.1", rule: ":method is a token",
            send: request(&pseudo("G T", "/")), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.5", rule: "CONNECT is not supported (fulcrum is not a forward proxy)",
            send: request(&[(":method", "CONNECT"), (":authority", "h2.test:443")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.3", rule: "a pseudo-header after a regular field is malformed",
            send: request(&[(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":authority", "h2.test"), (":path", "/")]),
            expect: Malformed },
        Case { rfc: "RFC 9113 §8.3", rule: "a repeated pseudo-header is malformed",
            send: request(&[(":method", "GET"), (":scheme", "http"), (":authority", "h2.test"), (":path", "/"), (":path", "/x")]),
            expect: Malformed },
        Case { rfc: "RFC 9113 §8.3", rule: "an unknown pseudo-header is malformed",
            send: get(&[(":protocol-x", "1")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.3", rule: "a response pseudo-header in a request is malformed",
            send: get(&[(":status", "200")]), expect: Malformed },
        // --- §8.2: field names and values ---------------------------------------------------
        Case { rfc: "RFC 9113 §8.2", rule: "an uppercase field name is malformed",
            send: get(&[("X-Upper", "1")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field name with a space is malformed",
            send: get(&[("x a", "1")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a colon inside a regular field name is malformed",
            send: get(&[("x:y", "1")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "an empty field name is malformed",
            send: get(&[("", "1")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field value with NUL is malformed",
            send: get(&[("x-a", "1\u{0}2")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field value with CR LF cannot inject a field",
            send: get(&[("x-a", "1\r\nx-injected: yes")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field value with a bare LF is malformed",
            send: get(&[("x-a", "1\nx-injected: yes")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field value with another control character is malformed",
            send: get(&[("x-a", "1\u{1}2")]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field value must not start with whitespace",
            send: get(&[("x-a", " padded")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.1", rule: "a field value must not end with whitespace",
            send: get(&[("x-a", "padded\t")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.1, RFC 9110 §5.5", rule: "obs-text in a value is passed on",
            send: get(&[("x-name", "café")]), expect: Forwards(with("GET / HTTP/1.1", &["x-name: café"])) },
        Case { rfc: "RFC 9113 §8.2.3", rule: "cookie fields split by the client are joined with \"; \"",
            send: get(&[("cookie", "a=1"), ("x-b", "2"), ("cookie", "c=3")]),
            expect: Forwards(with("GET / HTTP/1.1", &["cookie: a=1; c=3", "x-b: 2"])) },
        Case { rfc: "Envoy's rule; CGI", rule: "a field name with an underscore is dropped (headers_with_underscores)",
            send: get(&[("x_forwarded_for", "6.6.6.6")]), expect: Forwards(without("GET / HTTP/1.1", &["x_forwarded_for:"])) },
        Case { rfc: "RFC 7239, trusted_proxies", rule: "a client's X-Forwarded-For is replaced with its address",
            send: get(&[("x-forwarded-for", "6.6.6.6")]), expect: Forwards(without("GET / HTTP/1.1", &["x-forwarded-for: 6.6.6.6"])) },
        // --- §8.2.2: connection-specific fields -----------------------------------------------
        Case { rfc: "RFC 9113 §8.2.2", rule: "Connection is malformed in HTTP/2",
            send: get(&[("connection", "keep-alive")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.2", rule: "Keep-Alive is malformed in HTTP/2",
            send: get(&[("keep-alive", "timeout=5")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.2", rule: "Proxy-Connection is malformed in HTTP/2",
            send: get(&[("proxy-connection", "keep-alive")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.2", rule: "Transfer-Encoding is malformed in HTTP/2",
            send: get(&[("transfer-encoding", "chunked")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.2", rule: "Upgrade is malformed in HTTP/2",
            send: get(&[("upgrade", "websocket")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.2", rule: "TE other than \"trailers\" is malformed",
            send: get(&[("te", "gzip")]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.2.2", rule: "TE: trailers is allowed (and hop-by-hop: not forwarded)",
            send: get(&[("te", "trailers")]), expect: Forwards(without("GET / HTTP/1.1", &["te:"])) },
        // --- §8.1: message framing and bodies -----------------------------------------------
        Case { rfc: "RFC 9113 §8.1", rule: "a body with Content-Length is forwarded with it",
            send: post(&[("content-length", "5")], &[b"hello"]),
            expect: Forwards(Seen { has: &["content-length: 5"], ..body("POST / HTTP/1.1", b"hello") }) },
        Case { rfc: "RFC 9113 §8.1", rule: "a body without Content-Length is forwarded chunked, frames joined",
            send: post(&[], &[b"hel", b"lo"]),
            expect: Forwards(Seen { has: &["transfer-encoding: chunked"], ..body("POST / HTTP/1.1", b"hello") }) },
        Case { rfc: "RFC 9113 §8.1", rule: "an empty DATA frame is not the body's end",
            send: post(&[], &[b"", b"hello"]),
            expect: Forwards(body("POST / HTTP/1.1", b"hello")) },
        Case { rfc: "RFC 9113 §8.1.1", rule: "DATA longer than Content-Length is malformed",
            send: post(&[("content-length", "3")], &[b"too long"]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.1.1", rule: "DATA shorter than Content-Length is malformed",
            send: post(&[("content-length", "30")], &[b"short"]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.1.1", rule: "a Content-Length that is not a number is malformed",
            send: post(&[("content-length", "5x")], &[b"hello"]), expect: Malformed },
        Case { rfc: "RFC 9113 §8.1.1", rule: "two different Content-Lengths are malformed",
            send: post(&[("content-length", "5"), ("content-length", "6")], &[b"hello"]), expect: Malformed },
        // Request trailers are not forwarded to an HTTP/1.1 backend (nor a pseudo-header among
        // them, which RFC 9113 calls malformed: the h2 crate hands over trailers without their
        // pseudo-headers, so fulcrum cannot tell; what matters, nothing of them goes on).
        Case { rfc: "RFC 9113 §8.1", rule: "request trailers are dropped; the body goes on",
            send: concat(&[
                frame(HEADERS, END_HEADERS, 1, &block(&pseudo("POST", "/"))),
                frame(DATA, 0, 1, b"hello"),
                frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(&[("x-checksum", "1")]))]),
            expect: Forwards(Seen { lacks: &["x-checksum:"], ..body("POST / HTTP/1.1", b"hello") }) },
        Case { rfc: "RFC 9113 §8.1", rule: "a pseudo-header in trailers never reaches the backend",
            send: concat(&[
                frame(HEADERS, END_HEADERS, 1, &block(&pseudo("POST", "/"))),
                frame(DATA, 0, 1, b"hello"),
                frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(&[(":path", "/sneaky")]))]),
            expect: Forwards(Seen { lacks: &[":path:", "get /sneaky"], ..body("POST / HTTP/1.1", b"hello") }) },
        // Without Content-Length the body goes on chunked: the backend has a complete request
        // only once the stream ended well.
        Case { rfc: "RFC 9113 §8.1", rule: "a second HEADERS that does not end the stream is malformed",
            send: concat(&[
                frame(HEADERS, END_HEADERS, 1, &block(&pseudo("POST", "/"))),
                frame(HEADERS, END_HEADERS, 1, &block(&[("x-more", "1")])),
                frame(DATA, END_STREAM, 1, b"hello")]),
            expect: Malformed },
        // --- §4, §5, §6: frames and streams (connection errors) -----------------------------
        Case { rfc: "RFC 9113 §4.2", rule: "a frame over SETTINGS_MAX_FRAME_SIZE (16384)",
            send: frame(HEADERS, END_STREAM | END_HEADERS, 1, &vec![0; 16_385]), expect: ConnectionError(FRAME_SIZE_ERROR) },
        Case { rfc: "RFC 9113 §4.3", rule: "a header block that does not decode (HPACK index out of range; RFC: COMPRESSION_ERROR, the h2 crate says PROTOCOL_ERROR)",
            send: frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0xfe]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §5.1.1", rule: "a client stream id is odd",
            send: frame(HEADERS, END_STREAM | END_HEADERS, 2, &block(&get_fields("/", &[]))), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §5.1.1", rule: "stream ids only grow",
            send: concat(&[open_stream_3, get(&[])]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.1", rule: "DATA on stream 0",
            send: frame(DATA, END_STREAM, 0, b"x"), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.1, §5.1", rule: "DATA on an idle stream",
            send: frame(DATA, END_STREAM, 1, b"x"), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.2", rule: "HEADERS on stream 0",
            send: frame(HEADERS, END_STREAM | END_HEADERS, 0, &block(&get_fields("/", &[]))), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.2", rule: "a pad length beyond the frame",
            send: frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, &[200, 0x82]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.2, §6.10", rule: "another frame inside a header block (no END_HEADERS yet)",
            send: concat(&[
                frame(HEADERS, 0, 1, &block(&get_fields("/", &[]))), frame(DATA, END_STREAM, 1, b"x")]),
            expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.10", rule: "CONTINUATION without a HEADERS before it",
            send: frame(CONTINUATION, END_HEADERS, 1, &block(&get_fields("/", &[]))), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.4", rule: "RST_STREAM on stream 0",
            send: frame(RST_STREAM, 0, 0, &8u32.to_be_bytes()), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.4", rule: "RST_STREAM on an idle stream",
            send: frame(RST_STREAM, 0, 5, &8u32.to_be_bytes()), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.5", rule: "SETTINGS whose length is not a multiple of 6 (RFC: FRAME_SIZE_ERROR, the h2 crate says PROTOCOL_ERROR)",
            send: frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.5", rule: "SETTINGS on a stream",
            send: frame(SETTINGS, 0, 1, &[]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.5", rule: "a SETTINGS acknowledgement with a payload (RFC: FRAME_SIZE_ERROR, the h2 crate says PROTOCOL_ERROR)",
            send: frame(SETTINGS, ACK, 0, &[0, 3, 0, 0, 0, 1]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.5.2", rule: "SETTINGS_ENABLE_PUSH other than 0 or 1",
            send: setting(0x2, 2), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.5.2", rule: "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 (RFC: FLOW_CONTROL_ERROR, the h2 crate says PROTOCOL_ERROR)",
            send: setting(0x4, 0x8000_0000), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.5.2", rule: "SETTINGS_MAX_FRAME_SIZE below 16384",
            send: setting(0x5, 100), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.6, §8.4", rule: "a client must not send PUSH_PROMISE",
            send: frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.7", rule: "PING whose length is not 8 (RFC: FRAME_SIZE_ERROR, the h2 crate says PROTOCOL_ERROR)",
            send: frame(PING, 0, 0, &[0; 7]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.7", rule: "PING on a stream",
            send: frame(PING, 0, 1, &[0; 8]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.8", rule: "GOAWAY on a stream",
            send: frame(GOAWAY, 0, 1, &[0; 8]), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.9", rule: "a connection WINDOW_UPDATE of 0",
            send: window_update(0, 0), expect: ConnectionError(PROTOCOL_ERROR) },
        Case { rfc: "RFC 9113 §6.9.1", rule: "a connection window grown past 2^31-1",
            send: concat(&[window_update(0, 0x7fff_ffff), window_update(0, 0x7fff_ffff)]),
            expect: ConnectionError(FLOW_CONTROL_ERROR) },
        Case { rfc: "RFC 9113 §5.5", rule: "a frame of an unknown type is ignored",
            send: concat(&[frame(0xfa, 0, 0, b"ext"), get(&[])]), expect: Forwards(seen("GET / HTTP/1.1")) },
        Case { rfc: "RFC 9113 §5.3.2", rule: "PRIORITY is accepted and ignored",
            send: concat(&[frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]), get(&[])]), expect: Forwards(seen("GET / HTTP/1.1")) },
    ]
}
