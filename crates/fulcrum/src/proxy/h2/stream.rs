//! One HTTP/2 stream as a client of the request pipeline: its head translated and checked by
//! the HTTP/1.1 request rules, its DATA frames as the request body, and the backend's
//! response sent back as HEADERS and DATA frames, within the stream's flow-control window
//! (so a slow reader holds at most a window of the response in fulcrum).
//!
//! A stream whose exchange breaks after its response started is reset (dropping an unfinished
//! `SendStream` sends RST_STREAM CANCEL), as a broken HTTP/1.1 response closes its connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::proxy::error::ProxyError;
use crate::proxy::h1::buffer::ReadBuf;
use crate::proxy::h1::downstream::{Downstream, ResponseSink};
use crate::proxy::h1::exchange::{self, HttpContext};
use crate::proxy::h1::framing::Framing;
use crate::proxy::h1::relay::RelayError;
use crate::proxy::h1::request::{self as h1_request, RequestHead, RequestRules};
use crate::proxy::h1::response::{self, BadResponse, ClientSide, HeadOut, ResponseHead};
use crate::proxy::marks::Marks;
use crate::proxy::routing::HttpService;
use crate::tls::TlsFacts;

/// What every stream of one connection shares.
#[derive(Debug)]
pub struct ConnFacts {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The peer's address as written into X-Forwarded-For.
    pub peer_text: Vec<u8>,
    /// The peer is one of the listener's `trusted_proxies`.
    pub trusted_peer: bool,
    pub tls: Option<TlsFacts>,
}

/// Serves one stream: checks and translates its head, then forwards it.
pub async fn serve(
    service: Rc<HttpService>,
    conn: Rc<ConnFacts>,
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let (parts, body) = request.into_parts();
    let is_head = parts.method == http::Method::HEAD;
    let mut sink = H2Response {
        respond: Some(respond),
        send: None,
        informational: None,
        written: 0,
    };
    // The listener's own context until the request is routed.
    let ctx: &HttpContext = &service.default;
    let mut upstream_head = ctx.buffers.take_write();
    let head = {
        let rules = RequestRules {
            max_request_line_bytes: ctx.limits.max_request_line_bytes,
            router: &*service,
            peer: conn.peer.ip(),
            peer_text: &conn.peer_text,
            tls: conn.tls.as_ref(),
            trusted_peer: conn.trusted_peer,
            underscores: ctx.limits.headers_with_underscores,
        };
        let mut text = ctx.buffers.take_write();
        let head =
            super::request::to_http1(&parts, !body.is_end_stream(), &mut text).and_then(|()| {
                match h1_request::parse(&text, &rules, &mut upstream_head) {
                    Ok(Some(head)) => Ok(head),
                    Ok(None) => Err(ProxyError::BadRequest("malformed request head\n")),
                    Err(error) => Err(error),
                }
            });
        ctx.buffers.give_write(text);
        head
    };
    drop(parts);
    match head {
        Ok(request) => {
            let chunked = request.framing == Framing::Chunked;
            let mut body = RequestBody::new(body, chunked);
            if body.broken_already() {
                // The client broke the protocol in the frames that came with the head (a
                // body longer or shorter than its Content-Length): the `h2` crate has reset
                // the stream, and nothing goes to a backend.
                tracing::debug!(peer = %conn.peer, "HTTP/2 request body malformed; stream reset");
                ctx.buffers.give_write(upstream_head);
                return;
            }
            let mut client = H2Client {
                request,
                upstream_head,
                body,
                input: ReadBuf::new(Rc::clone(&ctx.buffers)),
                sink,
                peer: conn.peer,
                local: conn.local,
            };
            exchange::proxy(service.context(client.request.route), &mut client).await;
            ctx.buffers.give_write(client.upstream_head);
        }
        Err(error) => {
            tracing::debug!(peer = %conn.peer, %error, "bad HTTP/2 request");
            ctx.refused(conn.peer, "HTTP/2.0", error);
            sink.send_error(error, is_head);
            ctx.buffers.give_write(upstream_head);
        }
    }
}

/// One stream during its exchange.
struct H2Client {
    request: RequestHead,
    upstream_head: Vec<u8>,
    body: RequestBody,
    /// Always empty: a stream's body arrives in DATA frames, never ahead of its head.
    input: ReadBuf,
    sink: H2Response,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
}

impl Downstream for H2Client {
    type Body<'a> = &'a mut RequestBody;
    type Sink<'a> = &'a mut H2Response;

    fn request(&self) -> &RequestHead {
        &self.request
    }

    fn upstream_head(&self) -> &[u8] {
        &self.upstream_head
    }

    fn split(&mut self) -> (Self::Body<'_>, &mut ReadBuf, Self::Sink<'_>, &Marks) {
        (
            &mut self.body,
            &mut self.input,
            &mut self.sink,
            &self.request.marks,
        )
    }

    fn body_for_http2(&mut self) -> Framing {
        match self.request.framing {
            Framing::Chunked => {
                self.body.chunked = false;
                Framing::UntilClose
            }
            framing => framing,
        }
    }

    async fn send_error(&mut self, _: &HttpContext, error: ProxyError, _: bool) -> bool {
        self.sink.send_error(error, self.request.is_head);
        // The connection carries other streams whatever this one's answer was.
        false
    }

    fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    fn local(&self) -> std::net::SocketAddr {
        self.local
    }

    fn protocol(&self) -> &'static str {
        "HTTP/2.0"
    }

    fn bytes(&self) -> (u64, u64) {
        (self.input.consumed(), self.sink.written)
    }
}

/// A stream's DATA frames as the bytes of an HTTP/1.1 body: as they are when the request
/// has a Content-Length (or goes to an HTTP/2 backend), in chunked coding when it has none.
/// Each frame's bytes are handed back to the flow-control window once they are taken, so the
/// client can send more only as fast as the backend takes them. Frames are kept bare until
/// they are read, so the coding can still be chosen after the first one arrived.
#[derive(Debug)]
pub struct RequestBody {
    recv: RecvStream,
    chunked: bool,
    /// A frame taken from the stream and not yet framed for reading.
    pending: Option<Bytes>,
    /// Bytes being read (a chunk's size line, data, CRLF).
    staged: [Bytes; 3],
    /// The stream ended; `terminated`: the last chunk has been staged too.
    ended: bool,
    terminated: bool,
    /// A stream error met after bytes were taken: reported by the next read.
    failed: Option<h2::Error>,
}

impl RequestBody {
    fn new(recv: RecvStream, chunked: bool) -> Self {
        Self {
            recv,
            chunked,
            pending: None,
            staged: Default::default(),
            ended: false,
            terminated: false,
            failed: None,
        }
    }

    /// Takes what has already arrived of the body, without waiting; true when the stream is
    /// already known broken.
    fn broken_already(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.recv.poll_data(&mut cx) {
            Poll::Ready(polled) => self.take(polled).is_err(),
            Poll::Pending => false,
        }
    }

    /// Keeps one `poll_data` result.
    fn take(&mut self, polled: Option<Result<Bytes, h2::Error>>) -> Result<(), h2::Error> {
        match polled {
            Some(Ok(data)) => {
                let _ = self.recv.flow_control().release_capacity(data.len());
                // An empty DATA frame is no chunk: "0" would end the body.
                if !data.is_empty() {
                    self.pending = Some(data);
                }
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => {
                self.ended = true;
                Ok(())
            }
        }
    }

    /// Frames what was taken for reading; false when there is nothing to frame.
    fn frame_pending(&mut self) -> bool {
        if let Some(data) = self.pending.take() {
            self.staged = if self.chunked {
                [
                    Bytes::from(format!("{:x}\r\n", data.len())),
                    data,
                    Bytes::from_static(b"\r\n"),
                ]
            } else {
                [data, Bytes::new(), Bytes::new()]
            };
            return true;
        }
        if self.ended && self.chunked && !self.terminated {
            self.terminated = true;
            self.staged[0] = Bytes::from_static(b"0\r\n\r\n");
            return true;
        }
        false
    }
}

impl AsyncRead for RequestBody {
    /// Fills `buf` with as much as has arrived (several frames, when they are there), so
    /// that one read makes one write upstream.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if let Some(e) = me.failed.take() {
            return Poll::Ready(Err(io::Error::other(e)));
        }
        let start = buf.filled().len();
        loop {
            for piece in me.staged.iter_mut().filter(|piece| !piece.is_empty()) {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece.split_to(n));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if me.frame_pending() {
                continue;
            }
            let taken = buf.filled().len() > start;
            if me.ended {
                return Poll::Ready(Ok(()));
            }
            let polled = match me.recv.poll_data(cx) {
                Poll::Ready(polled) => polled,
                // What has been taken goes now; the waker is registered for the rest.
                Poll::Pending if taken => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            };
            if let Err(e) = me.take(polled) {
                if !taken {
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                me.failed = Some(e);
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// A stream's response: HEADERS once the backend's head is in, then DATA frames within the
/// window the client grants.
#[derive(Debug)]
pub struct H2Response {
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    /// A 1xx head from the backend, until [`ResponseSink::informational`] relays it.
    informational: Option<http::Response<()>>,
    /// Body bytes sent (the access log's bytes out).
    written: u64,
}

impl H2Response {
    /// fulcrum's own answer (a one-line text body, none for HEAD).
    fn send_error(&mut self, error: ProxyError, is_head: bool) {
        let Some(mut respond) = self.respond.take() else {
            return;
        };
        let body = error.message();
        let mut response = http::Response::new(());
        *response.status_mut() =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        // `upgrade` is HTTP/1.1's own (RFC 9113 §8.2.2): never in an HTTP/2 response.
        for (name, value) in error.extra_headers() {
            if let (Ok(name), true) = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                *name != "upgrade",
            ) {
                headers.insert(name, HeaderValue::from_static(value));
            }
        }
        if let Ok(mut send) = respond.send_response(response, is_head) {
            if !is_head
                && send
                    .send_data(Bytes::from_static(body.as_bytes()), true)
                    .is_ok()
            {
                self.written += body.len() as u64;
            }
        }
    }
}

/// A response head on its way to an HTTP/2 client.
#[derive(Default)]
struct H2Head {
    status: u16,
    headers: HeaderMap,
}

impl HeadOut for H2Head {
    const FRAMED: bool = true;

    fn status_line(&mut self, status: u16, _reason: &str) {
        self.status = status;
    }

    fn header(&mut self, name: &str, value: &[u8]) -> bool {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
                true
            }
            _ => false,
        }
    }

    fn end(&mut self, _close: bool, _http10_keep_alive: bool) {}
}

impl ResponseSink for &mut H2Response {
    fn start_response(
        &mut self,
        buffer: &[u8],
        side: &ClientSide<'_>,
        _out: &mut Vec<u8>,
    ) -> Result<Option<ResponseHead>, BadResponse> {
        let mut head = H2Head::default();
        let Some(parsed) = response::parse(buffer, side, &mut head)? else {
            return Ok(None);
        };
        let status =
            StatusCode::from_u16(head.status).map_err(|_| BadResponse("invalid status code"))?;
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = head.headers;
        if parsed.informational {
            self.informational = Some(response);
            return Ok(Some(parsed));
        }
        let end = parsed.framing == Framing::Empty;
        // A client that reset the stream meanwhile: nothing to send to; the body's writes
        // fail as a client gone away (not the backend's fault).
        if let Some(mut respond) = self.respond.take() {
            if let Ok(send) = respond.send_response(response, end) {
                self.send = (!end).then_some(send);
            }
        }
        Ok(Some(parsed))
    }

    /// A 1xx head (`100 Continue`, `103 Early Hints`) goes out as a HEADERS frame of its
    /// own before the final response (RFC 9113 §8.1).
    async fn informational(&mut self, _out: &[u8], _: &HttpContext) -> Result<(), RelayError> {
        if let (Some(head), Some(respond)) = (self.informational.take(), self.respond.as_mut()) {
            respond
                .send_informational(head)
                .map_err(|e| RelayError::Sink(io::Error::other(e)))?;
        }
        Ok(())
    }

    fn start_informational(&mut self, head: http::response::Parts, _out: &mut Vec<u8>) {
        self.informational = Some(http::Response::from_parts(head, ()));
    }

    fn end_response(&mut self) -> io::Result<()> {
        match self.send.take() {
            Some(mut send) => send.send_data(Bytes::new(), true).map_err(io::Error::other),
            None => Ok(()),
        }
    }

    fn start_parts(
        &mut self,
        parts: &mut http::response::Parts,
        end: bool,
        side: &ClientSide<'_>,
        _out: &mut Vec<u8>,
    ) -> Result<bool, BadResponse> {
        let mut response = http::Response::new(());
        *response.status_mut() = parts.status;
        *response.headers_mut() = std::mem::take(&mut parts.headers);
        if let Some(cookie) = side.set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
            response
                .headers_mut()
                .append(http::header::SET_COOKIE, cookie);
        }
        let end = end || side.request_is_head;
        if let Some(mut respond) = self.respond.take() {
            if let Ok(send) = respond.send_response(response, end) {
                self.send = (!end).then_some(send);
            }
        }
        Ok(false)
    }

    /// The backend's DATA go on as they are, split only where the window says.
    async fn send_body(
        &mut self,
        data: Bytes,
        _out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RelayError> {
        let len = data.len() as u64;
        let sent = match self.send.as_mut() {
            Some(send) => super::flow::send_all(send, data, timeout).await,
            None => Err(RelayError::Sink(io::ErrorKind::BrokenPipe.into())),
        };
        if sent.is_ok() {
            self.written += len;
        }
        sent
    }

    async fn end_body(
        &mut self,
        trailers: Option<HeaderMap>,
        _out: &mut Vec<u8>,
        _timeout: Duration,
    ) -> Result<(), RelayError> {
        let Some(mut send) = self.send.take() else {
            return Ok(());
        };
        let ended = match trailers {
            Some(trailers) => send.send_trailers(trailers),
            None => send.send_data(Bytes::new(), true),
        };
        ended.map_err(|e| RelayError::Sink(io::Error::other(e)))
    }
}

impl AsyncWrite for H2Response {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match this.send.as_mut() {
            Some(send) => super::flow::poll_send(send, cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        };
        if let Poll::Ready(Ok(n)) = polled {
            this.written += n as u64;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
