//! The response body fulcrum sends to clients: either the backend's body, streamed frame by
//! frame (never buffered whole), or a short message fulcrum wrote itself.
//!
//! The body also carries what must happen when the response is over: the backend's
//! in-flight count drops, the client connection becomes idle, and the upstream connection
//! goes back to the worker's pool if its response was read to the end.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::client_io::Serving;
use super::upstream::{Sender, UpstreamPool};
use crate::pool::InFlight;

/// Where an upstream connection returns once its response has been fully read.
#[derive(Debug)]
pub struct Release {
    pub pool: Rc<UpstreamPool>,
    pub addr: std::net::SocketAddr,
    pub sender: Sender,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

#[derive(Debug)]
pub struct UpstreamBody {
    pub body: Incoming,
    pub in_flight: InFlight,
    pub release: Option<Release>,
    pub ended: bool,
    /// When the request was sent: its duration feeds the backend's latency histogram.
    pub started: Instant,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let stats = self.in_flight.stats();
        stats.latency.record(self.started.elapsed());
        if self.ended || self.body.is_end_stream() {
            if let Some(r) = self.release.take() {
                r.pool
                    .checkin(r.addr, r.sender, stats, r.idle_timeout, r.max_idle);
            }
        }
    }
}

#[derive(Debug)]
enum Content {
    Upstream(UpstreamBody),
    Message(Option<Bytes>),
}

#[derive(Debug)]
pub struct ProxyBody {
    content: Content,
    _serving: Option<Serving>,
}

impl ProxyBody {
    pub fn upstream(body: UpstreamBody) -> Self {
        Self {
            content: Content::Upstream(body),
            _serving: None,
        }
    }

    pub fn message(text: &'static str) -> Self {
        Self {
            content: Content::Message(Some(Bytes::from_static(text.as_bytes()))),
            _serving: None,
        }
    }

    /// Ties the client connection's "serving" state to this body's lifetime.
    pub fn serving(mut self, serving: Serving) -> Self {
        self._serving = Some(serving);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.content {
            Content::Upstream(up) => {
                let polled = Pin::new(&mut up.body).poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    up.ended = true;
                }
                polled
            }
            Content::Message(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Upstream(up) => up.body.is_end_stream(),
            Content::Message(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Upstream(up) => up.body.size_hint(),
            Content::Message(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
