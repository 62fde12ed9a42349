//! A stream's request head written as the HTTP/1.1 head fulcrum's request rules read
//! (RFC 9113 §8.3): the pseudo-headers become the request line and Host, the cookie fields
//! HTTP/2 allows to be split are joined again (§8.2.3), and a body of unknown length is
//! framed as chunked. The rules themselves (what is checked, which headers are dropped or
//! added, the hash key) are then exactly those of an HTTP/1.1 request: one set of rules, read
//! once, for both protocols.
//!
//! What the `h2` crate has already refused never gets here: connection-specific fields,
//! uppercase names, a `TE` other than `trailers`, pseudo-headers missing, repeated or after a
//! regular field, a Content-Length the DATA frames do not match. One rule of §8.2.1 it leaves
//! to us: no field value starts or ends with whitespace (HTTP/1.1 would silently trim it, so
//! the backend would read another value than the client sent).

use http::header::{CONTENT_LENGTH, COOKIE, HOST};
use http::Method;

use crate::proxy::error::ProxyError;
use crate::proxy::headers;

/// Appends the HTTP/1.1 form of `parts` to `out`. `has_body`: the HEADERS frame did not end
/// the stream.
pub fn to_http1(
    parts: &http::request::Parts,
    has_body: bool,
    out: &mut Vec<u8>,
) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported\n"));
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority().map(|a| a.as_str());
    if parts.headers.values().any(|v| padded(v.as_bytes())) {
        return Err(ProxyError::BadRequest(
            "a field value starts or ends with whitespace\n",
        ));
    }
    if let Some(authority) = authority {
        // §8.3.1: a Host that differs from :authority makes the request malformed.
        let hosts = parts.headers.get_all(HOST);
        if hosts
            .iter()
            .any(|host| host.as_bytes() != authority.as_bytes())
        {
            return Err(ProxyError::BadRequest("Host differs from :authority\n"));
        }
        headers::put(out, b"host", authority.as_bytes());
    }
    let mut cookies = parts.headers.get_all(COOKIE).iter();
    if let Some(first) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for more in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(more.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if name == COOKIE || (name == HOST && authority.is_some()) {
            continue;
        }
        headers::put(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if has_body && !parts.headers.contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Whether a field value starts or ends with SP or HTAB (RFC 9113 §8.2.1).
fn padded(value: &[u8]) -> bool {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    value.first().is_some_and(blank) || value.last().is_some_and(blank)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(request: http::Request<()>, has_body: bool) -> Result<String, ProxyError> {
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        to_http1(&parts, has_body, &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pseudo_headers_become_the_request_line_and_host() {
        let table: Vec<(http::Request<()>, bool, &str)> = vec![
            (
                request("GET", "https://example.com/a?b=1", &[("accept", "*/*")]),
                false,
                "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\n\r\n",
            ),
            (
                request("POST", "http://example.com:8080/upload", &[]),
                true,
                "POST /upload HTTP/1.1\r\nhost: example.com:8080\r\n\
                 transfer-encoding: chunked\r\n\r\n",
            ),
            (
                request("PUT", "http://e.com/x", &[("content-length", "3")]),
                true,
                "PUT /x HTTP/1.1\r\nhost: e.com\r\ncontent-length: 3\r\n\r\n",
            ),
            // No :authority: the Host header stands (and request rules demand one).
            (
                request("GET", "/only-path", &[("host", "h.example")]),
                false,
                "GET /only-path HTTP/1.1\r\nhost: h.example\r\n\r\n",
            ),
            (
                request("GET", "http://e.com/", &[("host", "e.com")]),
                false,
                "GET / HTTP/1.1\r\nhost: e.com\r\n\r\n",
            ),
            (
                request(
                    "GET",
                    "http://e.com/",
                    &[("cookie", "a=1"), ("x-y", "z"), ("cookie", "b=2")],
                ),
                false,
                "GET / HTTP/1.1\r\nhost: e.com\r\ncookie: a=1; b=2\r\nx-y: z\r\n\r\n",
            ),
        ];
        for (request, has_body, expected) in table {
            let got = translate(request, has_body);
            assert_eq!(got.as_deref(), Ok(expected));
        }
    }

    #[test]
    fn a_host_that_contradicts_the_authority_and_connect_are_refused() {
        let host = request("GET", "http://e.com/", &[("host", "other.com")]);
        assert_eq!(
            translate(host, false),
            Err(ProxyError::BadRequest("Host differs from :authority\n"))
        );
        for value in [" x", "x ", "\tx", "x\t", " "] {
            let padded = request("GET", "http://e.com/", &[("x-a", value)]);
            assert_eq!(
                translate(padded, false),
                Err(ProxyError::BadRequest(
                    "a field value starts or ends with whitespace\n"
                )),
                "{value:?}"
            );
        }
        let connect = request("CONNECT", "e.com:443", &[]);
        assert_eq!(
            translate(connect, false),
            Err(ProxyError::BadRequest("CONNECT is not supported\n"))
        );
    }
}
