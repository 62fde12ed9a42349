//! One HTTP/2 client connection: the handshake (within the listener's header timeout), the
//! listener's limits sent as SETTINGS and enforced by the `h2` crate, each stream served in a
//! task of its own, and the connection's end — GOAWAY when fulcrum shuts down or when no
//! stream has been open for the idle timeout, open streams finishing first.
//!
//! A request head must arrive whole within the header timeout (`header_block`). The other
//! abuse defences are the `h2` crate's, set here: streams over `max_concurrent_streams`
//! are refused (REFUSED_STREAM) without touching the others; a header list over
//! `max_header_list_bytes` is refused, and CONTINUATION frames past it end the connection;
//! a client resetting streams faster than they can be served (rapid reset, CVE-2023-44487)
//! or making fulcrum reset too many of its streams is sent GOAWAY (ENHANCE_YOUR_CALM).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::header_block::Watched;
use super::stream::{self, ConnFacts};
use crate::proxy::counters::ListenerStats;
use crate::proxy::h1::exchange::{self, HttpContext};
use crate::proxy::h1::idle::IdleRegistry;
use crate::proxy::routing::HttpService;
use crate::proxy::Addrs;
use crate::tls::TlsFacts;

/// Streams a client may reset before fulcrum has accepted them, at once (the `h2` crate's
/// default, the rapid-reset bound).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams fulcrum may reset because the client broke the protocol on them, per connection,
/// before the client is sent away.
const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Response bytes buffered per stream ahead of the socket.
const MAX_SEND_BUFFER: usize = 256 * 1024;
/// After GOAWAY, with no stream left open, how long the client has to acknowledge it (the
/// `h2` crate's closing PING) before the connection is dropped anyway: a client that never
/// answers must not hold it open.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one HTTP/2 connection until it ends.
pub async fn serve<S>(service: Rc<HttpService>, io: S, addrs: Addrs, tls: Option<TlsFacts>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The listener's own context: the connection's limits and timers.
    let ctx: &HttpContext = &service.default;
    let peer = addrs.peer;
    let limits = &ctx.limits.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_window_size(limits.initial_stream_window)
        .initial_connection_window_size(limits.initial_connection_window)
        .max_header_list_size(limits.max_header_list_bytes)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let io = Watched::new(io, ctx.limits.header_timeout);
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut connection = match tokio::time::timeout(ctx.limits.header_timeout, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    ListenerStats::count(&ctx.stats.http2);
    let facts = Rc::new(ConnFacts {
        peer,
        local: addrs.local,
        peer_text: exchange::peer_text(peer),
        trusted_peer: ctx.limits.trusted_proxies.contains(peer.ip()),
        tls,
    });
    let activity = Rc::new(Activity {
        open: Cell::new(0),
        last: Cell::new(ctx.idle.now()),
        idle: Rc::clone(&ctx.idle),
    });
    let mut closing = false;
    // Both timers live as long as the connection and are re-armed only when they fire:
    // accepting a stream costs no timer work and no clock read.
    let idle = ctx.idle.sleep(ctx.idle_timeout);
    tokio::pin!(idle);
    let close_grace = tokio::time::sleep(CLOSE_GRACE);
    tokio::pin!(close_grace);
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let open = activity.open();
                    let (service, facts) = (Rc::clone(&service), Rc::clone(&facts));
                    tokio::task::spawn_local(async move {
                        stream::serve(service, facts, request, respond).await;
                        drop(open);
                    });
                }
                Some(Err(error)) => {
                    tracing::debug!(%peer, %error, "HTTP/2 connection ended by an error");
                    break;
                }
                None => break,
            },
            stopped = &mut idle, if !closing => {
                let left = activity.idle_left(ctx.idle_timeout);
                if stopped || left.is_zero() {
                    // GOAWAY; the streams open go on to their end, then `accept` ends.
                    connection.graceful_shutdown();
                    closing = true;
                    close_grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
                } else {
                    idle.set(ctx.idle.sleep(left));
                }
            }
            () = &mut close_grace, if closing => {
                if activity.open.get() == 0 {
                    tracing::debug!(%peer, "HTTP/2 client did not close after GOAWAY; dropping it");
                    break;
                }
                close_grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
        }
    }
}

/// Streams open on one connection, and when the last one ended.
struct Activity {
    open: Cell<usize>,
    last: Cell<Instant>,
    /// The worker's idle clock (advanced every tick): a stream's end reads no clock.
    idle: Rc<IdleRegistry>,
}

/// One open stream; when dropped, the stream has ended.
struct Open(Rc<Activity>);

impl Activity {
    fn open(self: &Rc<Self>) -> Open {
        self.open.set(self.open.get() + 1);
        Open(Rc::clone(self))
    }

    /// How long until the connection has been idle for `timeout` (the whole of it while a
    /// stream is open).
    fn idle_left(&self, timeout: Duration) -> Duration {
        if self.open.get() > 0 {
            return timeout;
        }
        timeout.saturating_sub(self.idle.now().saturating_duration_since(self.last.get()))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.last.set(self.0.idle.now());
    }
}
