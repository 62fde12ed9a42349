//! The client side of one exchange with an HTTP/1.1 backend, as that exchange uses it: the
//! request (already parsed and rewritten into the head for the backend), its body, and a sink
//! that turns the backend's response into the client's. An HTTP/1.1 client connection is one
//! (this file); an HTTP/2 stream is another (`proxy::h2::stream`). Static dispatch: the
//! HTTP/1.1 path compiles to what it was before there was a second one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use tokio::io::{AsyncRead, AsyncWrite};

use super::buffer::ReadBuf;
use super::exchange::HttpContext;
use super::framing::Framing;
use super::relay::{self, RelayError};
use super::request::RequestHead;
use super::response::{self, BadResponse, ClientSide, HeadOut, ResponseHead};
use crate::proxy::client_io::ClientIo;
use crate::proxy::error::ProxyError;
use crate::proxy::headers;
use crate::proxy::marks::Marks;

/// A client, as an exchange with an HTTP/1.1 backend sees it.
#[allow(
    async_fn_in_trait,
    reason = "exchanges run on one worker thread's LocalSet: their futures are !Send by design"
)]
pub trait Downstream {
    /// Where the request body comes from.
    type Body<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    /// Where the response goes.
    type Sink<'a>: ResponseSink
    where
        Self: 'a;

    fn request(&self) -> &RequestHead;

    /// The head to send upstream.
    fn upstream_head(&self) -> &[u8];

    /// The body's source, the bytes of it already read, the response sink and the request's
    /// marks, apart: the upload goes on while the response streams.
    fn split(&mut self) -> (Self::Body<'_>, &mut ReadBuf, Self::Sink<'_>, &Marks);

    /// Answers with fulcrum's own response for `error`; returns whether the client
    /// connection stays open (only when `keep_alive` allows it).
    async fn send_error(&mut self, ctx: &HttpContext, error: ProxyError, keep_alive: bool) -> bool;

    /// The client's address.
    fn peer(&self) -> std::net::SocketAddr;

    /// The address the client connected to (a PROXY header's destination when it sent one).
    fn local(&self) -> std::net::SocketAddr;

    /// The client's protocol, as the access log names it.
    fn protocol(&self) -> &'static str;

    /// Bytes read from the client for this request and written to it for the response, as
    /// the access log counts them (HTTP/1.1: head and body as on the wire; HTTP/2: the
    /// bodies, the heads being HPACK-compressed frames).
    fn bytes(&self) -> (u64, u64);

    /// The framing the body's source yields it in for an HTTP/2 backend, which needs no
    /// framing of its own: the request's (an HTTP/1.1 client's chunks are decoded), or
    /// `UntilClose` when the source can give the bare bytes and an end (an HTTP/2 stream).
    fn body_for_http2(&mut self) -> Framing {
        self.request().framing
    }
}

/// Where a backend's response goes.
#[allow(
    async_fn_in_trait,
    reason = "exchanges run on one worker thread's LocalSet: their futures are !Send by design"
)]
pub trait ResponseSink: AsyncWrite + Unpin {
    /// Parses the backend's response head at the start of `buffer` and starts the client's
    /// response. For an HTTP/1.1 client the rewritten head is appended to `out`, to go out
    /// with the first bytes of the body; an HTTP/2 client gets its HEADERS frame now.
    fn start_response(
        &mut self,
        buffer: &[u8],
        side: &ClientSide<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ResponseHead>, BadResponse>;

    /// Relays the informational (1xx) head in `out`, or drops it when the client's protocol
    /// has no use for it.
    async fn informational(&mut self, out: &[u8], ctx: &HttpContext) -> Result<(), RelayError>;

    /// Prepares an HTTP/2 backend's informational (1xx) head for
    /// [`ResponseSink::informational`]: an HTTP/1.1 client's goes into `out`.
    fn start_informational(&mut self, head: http::response::Parts, out: &mut Vec<u8>);

    /// The body has been relayed whole: ends the client's response.
    fn end_response(&mut self) -> io::Result<()>;

    /// Starts the client's response from an HTTP/2 backend's head (which has no hop-by-hop
    /// fields). `end`: no body follows. For an HTTP/1.1 client the head goes into `out`, to
    /// go out with the first bytes of the body, framed by its Content-Length or chunked.
    /// Returns whether the client connection must close after it. The headers may be taken
    /// out of `parts`.
    fn start_parts(
        &mut self,
        parts: &mut http::response::Parts,
        end: bool,
        side: &ClientSide<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, BadResponse>;

    /// Relays one piece of an HTTP/2 backend's response body (after what `out` holds).
    async fn send_body(
        &mut self,
        data: Bytes,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RelayError>;

    /// Ends a response started by [`ResponseSink::start_parts`], with the backend's trailers
    /// when it sent some (HTTP/1.1 clients get them in the last chunk).
    async fn end_body(
        &mut self,
        trailers: Option<HeaderMap>,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RelayError>;
}

/// An HTTP/1.1 client connection during one exchange.
#[derive(Debug)]
pub struct Client<'a, S> {
    pub stream: &'a mut S,
    /// Bytes read from the client and not yet used: the request body may start here.
    pub input: &'a mut ReadBuf,
    pub request: &'a RequestHead,
    /// The head to send upstream.
    pub upstream_head: &'a [u8],
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    /// `input.consumed()` before the request's head.
    pub consumed_before: u64,
}

impl<S: ClientIo> Downstream for Client<'_, S> {
    type Body<'a>
        = S::ReadHalf<'a>
    where
        Self: 'a;
    type Sink<'a>
        = H1Sink<Counted<'a, S::WriteHalf<'a>>>
    where
        Self: 'a;

    fn request(&self) -> &RequestHead {
        self.request
    }

    fn upstream_head(&self) -> &[u8] {
        self.upstream_head
    }

    fn split(&mut self) -> (Self::Body<'_>, &mut ReadBuf, Self::Sink<'_>, &Marks) {
        let (read, write) = self.stream.halves();
        (
            read,
            self.input,
            H1Sink {
                write: Counted {
                    inner: write,
                    written: &self.request.marks,
                },
                chunked: false,
            },
            &self.request.marks,
        )
    }

    async fn send_error(&mut self, ctx: &HttpContext, error: ProxyError, keep_alive: bool) -> bool {
        let sent =
            super::exchange::send_error(ctx, self.stream, error, keep_alive, self.request.is_head)
                .await;
        self.request.marks.wrote(sent.written);
        sent.kept
    }

    fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    fn local(&self) -> std::net::SocketAddr {
        self.local
    }

    fn protocol(&self) -> &'static str {
        if self.request.http10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    fn bytes(&self) -> (u64, u64) {
        (
            self.input.consumed() - self.consumed_before + self.request.marks.read_through_tunnel(),
            self.request.marks.written(),
        )
    }
}

/// A writer that adds what it writes to the request's marks (the access log's bytes out).
#[derive(Debug)]
pub struct Counted<'m, W> {
    inner: W,
    written: &'m Marks,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.wrote(n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The write half of an HTTP/1.1 client connection, as a response sink.
#[derive(Debug)]
pub struct H1Sink<W> {
    write: W,
    /// A response from an HTTP/2 backend is sent chunked (it has no length).
    chunked: bool,
}

impl<W: AsyncWrite + Unpin> ResponseSink for H1Sink<W> {
    fn start_response(
        &mut self,
        buffer: &[u8],
        side: &ClientSide<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ResponseHead>, BadResponse> {
        response::parse(buffer, side, out)
    }

    async fn informational(&mut self, out: &[u8], ctx: &HttpContext) -> Result<(), RelayError> {
        relay::write_slice(&mut self.write, out, ctx.idle_timeout).await
    }

    fn start_informational(&mut self, head: http::response::Parts, out: &mut Vec<u8>) {
        write_head_start(out, &head);
        out.end(false, false);
    }

    fn end_response(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn start_parts(
        &mut self,
        parts: &mut http::response::Parts,
        end: bool,
        side: &ClientSide<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, BadResponse> {
        let length = parts.headers.get(http::header::CONTENT_LENGTH).is_some();
        let status = parts.status;
        // Bodiless by its status or by the request (HEAD): no framing needed.
        let bodiless =
            end || side.request_is_head || status.as_u16() == 204 || status.as_u16() == 304;
        self.chunked = !bodiless && !length && !side.http10;
        // An HTTP/1.0 client reads a body without length to the close.
        let close = !side.keep_alive || (!bodiless && !length && !self.chunked);
        write_head_start(out, parts);
        if self.chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if let Some(cookie) = side.set_cookie {
            headers::put(out, b"set-cookie", cookie.as_bytes());
        }
        out.end(close, side.http10);
        Ok(close)
    }

    async fn send_body(
        &mut self,
        data: Bytes,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RelayError> {
        if self.chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        let written = relay::write_slice(&mut self.write, out, timeout).await;
        out.clear();
        written
    }

    async fn end_body(
        &mut self,
        trailers: Option<HeaderMap>,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RelayError> {
        if self.chunked {
            out.extend_from_slice(b"0\r\n");
            for (name, value) in trailers.iter().flatten() {
                headers::put(out, name.as_str().as_bytes(), value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        let written = relay::write_slice(&mut self.write, out, timeout).await;
        out.clear();
        written
    }
}

/// The status line and headers of an HTTP/2 backend's head, for an HTTP/1.1 client.
fn write_head_start(out: &mut Vec<u8>, parts: &http::response::Parts) {
    out.status_line(
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or(""),
    );
    for (name, value) in &parts.headers {
        headers::put(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for H1Sink<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }
}
