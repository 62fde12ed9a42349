//! The response rules fulcrum enforces on what backends send, as a table: what a backend
//! answers (raw bytes, possibly malformed, possibly hiding a second response), what the client
//! must get, and whether the upstream connection may carry the next request. The client
//! pipelines a second request (`GET /next`) behind each row's; its answer must be the
//! backend's real answer to it (`next`), never bytes left over from the row's response.

#[derive(Debug)]
pub struct Case {
    pub rfc: &'static str,
    pub rule: &'static str,
    /// The row's request method (GET unless the rule is about HEAD).
    pub method: &'static str,
    /// What the backend writes, at once, in answer to the row's request.
    pub answer: &'static [u8],
    /// Written 200 ms after `answer`, once the client has its first part.
    pub later: &'static [u8],
    /// The backend closes the connection after writing `answer` (and `later`).
    pub close_after: bool,
    pub expect: Expect,
}

#[derive(Debug)]
pub enum Expect {
    /// The client gets the response with this status, these head lines (lower case) and not
    /// those (starts of lines), and exactly this body; the next request goes on the same
    /// upstream connection only when `reused`.
    Relayed {
        status: u16,
        has: &'static [&'static str],
        lacks: &'static [&'static str],
        body: &'static [u8],
        reused: bool,
    },
    /// fulcrum answers `502`; the upstream connection is not used again.
    BadGateway,
    /// The head was relayed, then the body broke its framing: the client's connection is
    /// closed (the response cannot be finished) and the upstream one is not used again.
    Truncated { status: u16 },
}

use Expect::*;

const fn relayed(status: u16, body: &'static [u8], reused: bool) -> Expect {
    Relayed {
        status,
        has: &[],
        lacks: &[],
        body,
        reused,
    }
}

const SMUGGLED: &str = "smuggled";

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    let huge_head = leak(format!("HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n", format!("x-big: {}\r\n", "v".repeat(8000)).repeat(9)).into());
    let many_fields = leak(format!("HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n", "x-n: 1\r\n".repeat(101)).into());
    let get = |rfc, rule, answer, expect| Case { rfc, rule, method: "GET", answer, later: b"", close_after: false, expect };
    vec![
        get("RFC 9112 §4", "a reason phrase is optional",
            b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\nok", relayed(200, b"ok", true)),
        get("RFC 9112 §2.2", "a bare LF in a response head; the client gets CRLF",
            b"HTTP/1.1 200 OK\ncontent-length: 2\nx-a: 1\n\nok",
            Relayed { status: 200, has: &["x-a: 1"], lacks: &[], body: b"ok", reused: true }),
        get("RFC 9112 §4", "a status code is three digits",
            b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n", BadGateway),
        get("RFC 9110 §15", "a status code below 100",
            b"HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n", BadGateway),
        get("RFC 9110 §15", "a status code above 599",
            b"HTTP/1.1 600 Odd\r\ncontent-length: 0\r\n\r\n", BadGateway),
        get("RFC 9112 §2.3", "the version is HTTP/1.x",
            b"HTTX/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", BadGateway),
        get("RFC 9112 §5.1", "whitespace between a field name and the colon",
            b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok", BadGateway),
        get("RFC 9112 §5.2", "obs-fold in a response: 502 (the proxy's choice)",
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 2\r\n\r\nok", BadGateway),
        get("RFC 9110 §5.5", "NUL in a field value",
            b"HTTP/1.1 200 OK\r\nx-a: 1\x002\r\ncontent-length: 2\r\n\r\nok", BadGateway),
        get("RFC 9110 §8.6", "an invalid Content-Length",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nok", BadGateway),
        get("RFC 9112 §6.3", "two different Content-Lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 10\r\n\r\nok", BadGateway),
        get("RFC 9112 §6.1", "chunked applied twice",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n", BadGateway),
        get("RFC 9112 §6.1", "Transfer-Encoding in an HTTP/1.0 response is faulty framing",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", BadGateway),
        get("RFC 9110 §15.2.2", "a 101 to a request that asked for no upgrade",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", BadGateway),
        get("RFC 9112 §6.3", "more than 100 fields",
            many_fields, BadGateway),
        get("RFC 9112 §6.3", "a head larger than 64 KiB",
            huge_head, BadGateway),
        get("RFC 9112 §6.3", "Transfer-Encoding wins over Content-Length, which is removed; the connection is not reused",
            b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            Relayed { status: 200, has: &["transfer-encoding: chunked"], lacks: &["content-length:"], body: b"ok", reused: false }),
        Case { rfc: "RFC 9112 §6.3", rule: "a response without a length runs until the backend closes",
            method: "GET", answer: b"HTTP/1.1 200 OK\r\n\r\nuntil close", later: b"", close_after: true,
            expect: relayed(200, b"until close", false) },
        Case { rfc: "RFC 9112 §6.3", rule: "a coding that does not end in chunked runs until close",
            method: "GET", answer: b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw", later: b"", close_after: true,
            expect: relayed(200, b"raw", false) },
        get("RFC 9112 §6.3", "the bytes after a Content-Length body are not a response",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
            relayed(200, b"ok", false)),
        get("RFC 9112 §6.3", "the bytes after a chunked body are not a response",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
            relayed(200, b"ok", false)),
        get("RFC 9112 §6.3", "a 204 has no body: what follows it is not a response",
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
            relayed(204, b"", false)),
        get("RFC 9112 §6.3", "a 304 has no body whatever its length says",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 8\r\n\r\n",
            Relayed { status: 304, has: &["content-length: 8"], lacks: &[], body: b"", reused: true }),
        Case { rfc: "RFC 9112 §6.3", rule: "a response to HEAD has no body whatever its length says",
            method: "HEAD", answer: b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n", later: b"", close_after: false,
            expect: Relayed { status: 200, has: &["content-length: 8"], lacks: &[], body: b"", reused: true } },
        Case { rfc: "RFC 9112 §6.3", rule: "a body sent to HEAD anyway is not a response",
            method: "HEAD", answer: b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled", later: b"", close_after: false,
            expect: relayed(200, b"", false) },
        get("RFC 9112 §7.1", "a chunk size that is not hex, in the bytes that came with the head: 502",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nsmuggled\r\n0\r\n\r\n",
            BadGateway),
        get("RFC 9112 §7.1", "a bare LF in chunk framing, in the bytes that came with the head: 502",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\nsmuggled\r\n0\r\n\r\n",
            BadGateway),
        Case { rfc: "RFC 9112 §7.1", rule: "a bad chunk after part of the body went out: the client connection is closed",
            method: "GET", answer: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n",
            later: b"zz\r\nsmuggled\r\n0\r\n\r\n", close_after: false, expect: Truncated { status: 200 } },
        Case { rfc: "RFC 9112 §6.3", rule: "a body shorter than its Content-Length (the backend closes): the client connection is closed",
            method: "GET", answer: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok",
            later: b"", close_after: true, expect: Truncated { status: 200 } },
        get("RFC 9110 §7.6.1", "Connection and the fields it names are hop-by-hop",
            b"HTTP/1.1 200 OK\r\nconnection: x-h\r\nx-h: 1\r\nkeep-alive: timeout=5\r\nupgrade: h2c\r\nx-kept: 1\r\ncontent-length: 2\r\n\r\nok",
            Relayed { status: 200, has: &["x-kept: 1"], lacks: &["x-h:", "keep-alive:", "upgrade:", "connection:"], body: b"ok", reused: true }),
        get("RFC 9110 §7.6.1", "Connection cannot remove a response's Content-Length",
            b"HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 2\r\n\r\nok",
            Relayed { status: 200, has: &["content-length: 2"], lacks: &[], body: b"ok", reused: true }),
        get("RFC 9112 §9.6", "Connection: close from the backend ends the upstream connection",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            relayed(200, b"ok", false)),
        get("RFC 9112 §9.3", "an HTTP/1.0 response without keep-alive ends the upstream connection",
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", relayed(200, b"ok", false)),
        get("RFC 9110 §8.6", "two equal Content-Lengths go out as one",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok", relayed(200, b"ok", true)),
        get("RFC 9110 §15.5", "an error status with a body is relayed as it is",
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy", relayed(503, b"busy", true)),
    ]
}

/// What a client must never receive.
pub fn never_relayed() -> &'static str {
    SMUGGLED
}
