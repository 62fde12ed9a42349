//! The client side of an HTTP/1 connection, with the two client timers a proxy needs and
//! hyper does not offer in this form:
//!
//! - a **header deadline**: from the first byte of a request head (from accept, for the first
//!   request) the whole head must arrive within `header_timeout`, however slowly it trickles;
//!   when it does not, the client gets `408 Request Timeout` and the connection is closed;
//! - an **idle timeout** between requests on a keep-alive connection: when it passes, the
//!   connection is closed quietly.
//!
//! No timer runs while a request is being served (the response timeout covers that). The
//! request path tells this wrapper where a connection stands through [`ConnPhase`].

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

const REQUEST_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 39\r\nconnection: close\r\n\r\nthe request head did not arrive in time\n";

/// Where one client connection stands, shared by the connection's IO and its request path.
/// Everything runs on one worker thread, so plain cells suffice.
#[derive(Debug)]
pub struct ConnPhase {
    /// Requests whose response has not finished (normally 0 or 1).
    serving: Cell<u32>,
    /// When the current request head began to arrive, if one is arriving.
    head_started: Cell<Option<Instant>>,
    /// When the connection last became idle.
    idle_since: Cell<Instant>,
}

impl ConnPhase {
    /// A fresh connection: its first request head is due within the header timeout.
    pub fn new() -> Rc<Self> {
        let now = Instant::now();
        Rc::new(Self {
            serving: Cell::new(0),
            head_started: Cell::new(Some(now)),
            idle_since: Cell::new(now),
        })
    }

    /// A complete head arrived and the request is being served.
    pub fn request_started(self: &Rc<Self>) -> Serving {
        self.head_started.set(None);
        self.serving.set(self.serving.get() + 1);
        Serving(Rc::clone(self))
    }
}

/// Held by a response until hyper is done with it; then the connection is idle again.
#[derive(Debug)]
pub struct Serving(Rc<ConnPhase>);

impl Drop for Serving {
    fn drop(&mut self) {
        let phase = &self.0;
        phase.serving.set(phase.serving.get().saturating_sub(1));
        if phase.serving.get() == 0 {
            phase.idle_since.set(Instant::now());
        }
    }
}

/// The client's TCP stream as hyper sees it, enforcing the header deadline and idle timeout.
#[derive(Debug)]
pub struct ClientIo {
    inner: TcpStream,
    phase: Rc<ConnPhase>,
    header_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// hyper has bytes it could not write yet; injecting a 408 then would corrupt the stream.
    write_blocked: bool,
}

impl ClientIo {
    pub fn new(
        stream: TcpStream,
        phase: Rc<ConnPhase>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner: stream,
            phase,
            header_timeout,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            write_blocked: false,
        }
    }

    /// The deadline that applies now and whether it is the header deadline.
    fn deadline(&self) -> Option<(Instant, bool)> {
        if self.phase.serving.get() > 0 {
            return None;
        }
        Some(match self.phase.head_started.get() {
            Some(started) => (started + self.header_timeout, true),
            None => (self.phase.idle_since.get() + self.idle_timeout, false),
        })
    }

    /// Polls the current deadline; `Some(is_header)` once it has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        let (deadline, is_header) = self.deadline()?;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Some(is_header),
            Poll::Pending => None,
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let arrived = buf.filled().len() > before;
                if arrived
                    && this.phase.serving.get() == 0
                    && this.phase.head_started.get().is_none()
                {
                    this.phase.head_started.set(Some(Instant::now()));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_expired(cx) {
                None => Poll::Pending,
                Some(false) => Poll::Ready(Ok(())), // idle: end of stream, close quietly
                Some(true) => {
                    if !this.write_blocked {
                        // Best effort: a 408 fits in any socket buffer that is not full.
                        let _ = this.inner.try_write(REQUEST_TIMEOUT_RESPONSE);
                    }
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received within the header timeout",
                    )))
                }
            },
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_blocked = result.is_pending();
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_blocked = result.is_pending();
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
