//! The client's request body on its way upstream. Streams frame by frame like the response
//! body, and adds what the request path needs to know about it:
//!
//! - when the body has been read to the end: the response timeout starts then, as in Envoy,
//!   so a large upload is not cut short by a timer meant for a slow backend;
//! - a stall guard: a client that stops sending in the middle of a body for longer than the
//!   listener's idle timeout ends the exchange (408) instead of holding a backend forever.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Shared between the body (in the upstream connection task) and the request path.
#[derive(Debug, Default)]
pub struct BodyProgress {
    finished: Cell<bool>,
    stalled: Cell<bool>,
    notify: Notify,
}

impl BodyProgress {
    /// Resolves once the whole body has been read from the client.
    pub async fn finished(&self) {
        while !self.finished.get() {
            self.notify.notified().await;
        }
    }

    /// True when the client stopped sending mid-body for longer than the idle timeout.
    pub fn stalled(&self) -> bool {
        self.stalled.get()
    }

    fn finish(&self) {
        if !self.finished.replace(true) {
            self.notify.notify_waiters();
        }
    }
}

#[derive(Debug)]
pub struct RequestBody {
    /// `None` for a request rebuilt for a retry (only bodiless requests are retried).
    inner: Option<Incoming>,
    progress: Rc<BodyProgress>,
    stall_timeout: Duration,
    stall_timer: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    /// An empty body, for a bodiless request sent again to another backend.
    pub fn empty() -> Self {
        let progress = Rc::new(BodyProgress::default());
        progress.finish();
        Self {
            inner: None,
            progress,
            stall_timeout: Duration::ZERO,
            stall_timer: None,
        }
    }

    pub fn new(inner: Incoming, stall_timeout: Duration) -> (Self, Rc<BodyProgress>) {
        let progress = Rc::new(BodyProgress::default());
        if inner.is_end_stream() {
            progress.finish();
        }
        let body = Self {
            inner: Some(inner),
            progress: Rc::clone(&progress),
            stall_timeout,
            stall_timer: None,
        };
        (body, progress)
    }
}

#[derive(Debug)]
pub struct ClientStalled;

impl std::fmt::Display for ClientStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client stopped sending the request body")
    }
}

impl std::error::Error for ClientStalled {}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.progress.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if let Some(timer) = this.stall_timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.stall_timeout);
                }
                if this.inner.as_ref().is_none_or(Incoming::is_end_stream) {
                    this.progress.finish();
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.stall_timeout;
                let timer = this
                    .stall_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.progress.stalled.set(true);
                        Poll::Ready(Some(Err(Box::new(ClientStalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
