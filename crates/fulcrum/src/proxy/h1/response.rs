//! A backend's response head: parsed in place, its body framing decided (RFC 9112 §6.3), and
//! written out again for the client — hop-by-hop headers dropped, framing and connection
//! headers that match what fulcrum does on the client side.

use super::framing::Framing;
use super::websocket;
use crate::proxy::headers::{self, Class, Scan, MAX_HEADERS};

/// What the client side of the exchange looks like when the response head is written.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    pub request_is_head: bool,
    pub http10: bool,
    /// The connection may stay open after this response (the client wants it, fulcrum is
    /// not shutting down, the request was read whole).
    pub keep_alive: bool,
    pub set_cookie: Option<&'a str>,
    /// The request is a WebSocket handshake from an HTTP/1.1 client: a `101` switching to
    /// WebSocket is relayed, and the connection becomes a tunnel.
    pub upgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head in the upstream buffer.
    pub len: usize,
    pub status: u16,
    /// A 1xx response: relayed, and another head follows.
    pub informational: bool,
    pub framing: Framing,
    /// Chunk framing is taken out of the body (an HTTP/1.0 client cannot read it).
    pub decode_chunks: bool,
    /// The upstream connection can carry another request once the body has been read.
    pub upstream_reusable: bool,
    /// The client connection must be closed after this response.
    pub client_close: bool,
    /// A `101` to WebSocket: the connections become a tunnel after this head.
    pub switched: bool,
}

/// The backend sent something that is not a valid response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// Where the head for the client goes: HTTP/1.1 bytes for an HTTP/1.1 client (a `Vec<u8>`),
/// a status and header map for an HTTP/2 one.
pub trait HeadOut {
    /// The client is an HTTP/2 one: it has its own framing, so chunk framing is always taken
    /// out of the body, and neither framing nor connection headers are written.
    const FRAMED: bool;

    fn status_line(&mut self, status: u16, reason: &str);

    /// One header for the client; `false` when the client's protocol cannot carry it.
    fn header(&mut self, name: &str, value: &[u8]) -> bool;

    /// The end of the head; `close` and `http10_keep_alive` say what an HTTP/1.1 client's
    /// connection header must say.
    fn end(&mut self, close: bool, http10_keep_alive: bool);
}

impl HeadOut for Vec<u8> {
    const FRAMED: bool = false;

    fn status_line(&mut self, status: u16, reason: &str) {
        self.extend_from_slice(b"HTTP/1.1 ");
        self.extend_from_slice(status_digits(status).as_slice());
        self.push(b' ');
        self.extend_from_slice(reason.as_bytes());
        self.extend_from_slice(b"\r\n");
    }

    fn header(&mut self, name: &str, value: &[u8]) -> bool {
        headers::put(self, name.as_bytes(), value);
        true
    }

    fn end(&mut self, close: bool, http10_keep_alive: bool) {
        if close {
            self.extend_from_slice(b"connection: close\r\n");
        } else if http10_keep_alive {
            self.extend_from_slice(b"connection: keep-alive\r\n");
        }
        self.extend_from_slice(b"\r\n");
    }
}

/// Parses the response head at the start of `buffer`; `Ok(None)` while incomplete. On
/// success, the head for the client has been written to `out`.
pub fn parse<O: HeadOut>(
    buffer: &[u8],
    client: &ClientSide<'_>,
    out: &mut O,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse("malformed response head")),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse("malformed response head"));
    };
    let reason = response.reason.unwrap_or("");
    let headers: &[httparse::Header<'_>] = response.headers;
    // RFC 9110 §15: status codes are 100 to 599; a client cannot know the class of others.
    if !(100..=599).contains(&status) {
        return Err(BadResponse("status code outside 100-599"));
    }
    let scan = headers::scan(headers);
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if version == 0 && scan.transfer_encoding {
        return Err(BadResponse("Transfer-Encoding in an HTTP/1.0 response"));
    }
    let switched = status == 101;
    if switched {
        if !client.upgrade || O::FRAMED {
            return Err(BadResponse("protocol switch on a request without Upgrade"));
        }
        if !websocket::switches(&scan) {
            return Err(BadResponse(
                "101 to a protocol other than the WebSocket asked for",
            ));
        }
    }
    let informational = (100..200).contains(&status) && !switched;
    let connection = &scan.connection;
    let framing = framing(headers, &scan, status, client.request_is_head)?;
    let decode_chunks = framing == Framing::Chunked && (client.http10 || O::FRAMED);
    // Both Transfer-Encoding and Content-Length (RFC 9112 §6.3, rule 3): relayed by the
    // coding, but "ought to be handled as an error" — the connection is not trusted again.
    let ambiguous = scan.transfer_encoding && !matches!(scan.content_length, Ok(None));
    let upstream_reusable = !switched
        && !ambiguous
        && framing != Framing::UntilClose
        && if version == 0 {
            connection.keep_alive && !connection.close
        } else {
            !connection.close
        };
    let client_close = switched
        || (!O::FRAMED && (!client.keep_alive || framing == Framing::UntilClose || decode_chunks));

    out.status_line(status, reason);
    let mut length_sent = false;
    for (h, class) in headers.iter().zip(&scan.classes) {
        let keep = match class {
            // Never dropped because `Connection` names it: a kept-alive client would read
            // the body as the next response. Equal copies go out once.
            Class::ContentLength => {
                framing != Framing::Chunked && !std::mem::replace(&mut length_sent, true)
            }
            Class::HopByHop | Class::Connection | Class::TransferEncoding => false,
            _ => !connection.names(h.name),
        };
        if keep && !out.header(h.name, h.value) {
            return Err(BadResponse("a header the client's protocol cannot carry"));
        }
    }
    if informational {
        out.end(false, false);
    } else if switched {
        // The backend's own Upgrade and Connection were hop-by-hop; the client gets these.
        out.header("connection", b"upgrade");
        out.header("upgrade", b"websocket");
        out.end(false, false);
    } else {
        // Kept only for an HTTP/1.1 client that reads chunks as they come.
        if framing == Framing::Chunked && !decode_chunks {
            out.header("transfer-encoding", b"chunked");
        }
        if let Some(cookie) = client.set_cookie {
            out.header("set-cookie", cookie.as_bytes());
        }
        out.end(client_close, client.http10);
    }
    Ok(Some(ResponseHead {
        len,
        status,
        informational,
        framing,
        decode_chunks,
        upstream_reusable,
        client_close,
        switched,
    }))
}

fn framing(
    headers: &[httparse::Header<'_>],
    scan: &Scan<'_>,
    status: u16,
    request_is_head: bool,
) -> Result<Framing, BadResponse> {
    if request_is_head || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    if scan.transfer_encoding {
        // Transfer-Encoding overrides Content-Length; a body not ending in chunked coding
        // runs until the backend closes.
        let codings = headers
            .iter()
            .zip(&scan.classes)
            .filter(|(_, class)| **class == Class::TransferEncoding)
            .map(|(h, _)| h.value);
        let codings = headers::transfer_codings(codings);
        if codings.chunked_twice {
            return Err(BadResponse("chunked coding applied twice"));
        }
        return Ok(if codings.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    match scan.content_length {
        Ok(Some(0)) => Ok(Framing::Empty),
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Ok(None) => Ok(Framing::UntilClose),
        Err(_) => Err(BadResponse("invalid Content-Length")),
    }
}

fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: ClientSide<'static> = ClientSide {
        request_is_head: false,
        http10: false,
        keep_alive: true,
        set_cookie: None,
        upgrade: false,
    };

    #[test]
    fn a_101_is_relayed_only_as_the_answer_to_a_websocket_handshake() {
        let handshake = ClientSide {
            upgrade: true,
            ..KEEP
        };
        let switch =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nKeep-Alive: 5\r\n\r\n";
        let (out, head) = relay(switch, handshake);
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             connection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        assert!(
            head.switched && !head.informational && !head.upstream_reusable && head.client_close
        );
        let mut out = Vec::new();
        assert!(
            parse(switch.as_bytes(), &KEEP, &mut out).is_err(),
            "a 101 to a request that did not ask for it"
        );
        let elsewhere =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
        assert!(
            parse(elsewhere.as_bytes(), &handshake, &mut out).is_err(),
            "a 101 to another protocol than the one asked for"
        );
        // Any other answer stays HTTP: the handshake is refused and the connection goes on.
        let (_, refused) = relay(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
            handshake,
        );
        assert!(!refused.switched && !refused.client_close);
    }

    fn relay(response: &str, client: ClientSide<'_>) -> (String, ResponseHead) {
        let mut out = Vec::new();
        let head = parse(response.as_bytes(), &client, &mut out)
            .unwrap_or_else(|e| panic!("{response:?}: {e:?}"))
            .unwrap_or_else(|| panic!("incomplete: {response:?}"));
        (String::from_utf8_lossy(&out).into_owned(), head)
    }

    #[test]
    fn responses_reach_the_client_with_matching_framing_and_connection_headers() {
        let http10 = ClientSide {
            http10: true,
            ..KEEP
        };
        let closing = ClientSide {
            keep_alive: false,
            ..KEEP
        };
        let sticky = ClientSide {
            set_cookie: Some("sid=1; Path=/"),
            ..KEEP
        };
        let table: &[(&str, ClientSide<'_>, &str, Framing)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: 5\r\n\r\n",
                KEEP,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                Framing::Length(2),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-length: 9\r\n\r\n",
                KEEP,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                http10,
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                http10,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n",
                Framing::Length(2),
            ),
            (
                "HTTP/1.0 200 OK\r\nx-a: 1\r\n\r\n",
                KEEP,
                "HTTP/1.1 200 OK\r\nx-a: 1\r\nconnection: close\r\n\r\n",
                Framing::UntilClose,
            ),
            (
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close, x-b\r\nx-b: 2\r\n\r\n",
                closing,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                Framing::Empty,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                sticky,
                "HTTP/1.1 204 No Content\r\nset-cookie: sid=1; Path=/\r\n\r\n",
                Framing::Empty,
            ),
            (
                // Connection naming Content-Length does not remove it.
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: content-length\r\n\
                 Content-Length: 2\r\n\r\n",
                KEEP,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                Framing::Length(2),
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                KEEP,
                "HTTP/1.1 100 Continue\r\n\r\n",
                Framing::Empty,
            ),
        ];
        for (response, client, sent, framing) in table {
            let (out, head) = relay(response, *client);
            assert_eq!(&out, sent, "for {response:?}");
            assert_eq!(head.framing, *framing, "for {response:?}");
            assert_eq!(head.len, response.len());
        }
    }

    #[test]
    fn a_head_response_has_no_body_whatever_its_length_says() {
        let head_request = ClientSide {
            request_is_head: true,
            ..KEEP
        };
        let (out, head) = relay(
            "HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
            head_request,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.upstream_reusable && !head.client_close);
    }

    #[test]
    fn the_upstream_connection_is_reused_only_when_its_framing_and_headers_allow() {
        for (response, reusable) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                false,
            ),
            ("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n",
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false),
        ] {
            assert_eq!(
                relay(response, KEEP).1.upstream_reusable,
                reusable,
                "{response:?}"
            );
        }
    }

    #[test]
    fn invalid_responses_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 000 Zero\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n",
        ] {
            assert!(
                parse(bad.as_bytes(), &KEEP, &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }
}
