//! One client connection: requests read one after another (pipelined ones too), each
//! proxied whole before the next head is read, with the two client timers a proxy needs:
//!
//! - a **header deadline**: from the first byte of a request head (from accept, for the first
//!   request; for a pipelined one, from when reading it first has to wait) the whole head must
//!   arrive within `header_timeout`, however slowly it trickles; when it does not, the client
//!   gets `408 Request Timeout` and the connection is closed;
//! - an **idle timeout** between requests on a keep-alive connection: when it passes, the
//!   connection is closed quietly.
//!
//! While it waits for a request the connection holds no buffer (see `buffer`).

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::buffer::ReadBuf;
use super::downstream::Client;
use super::exchange::{self, HttpContext, Next};
use super::head_end::HeadEnd;
use super::idle::Woke;
use super::relay;
use super::request::{self, RequestHead, RequestRules};
use crate::proxy::client_io::ClientIo;
use crate::proxy::counters::ListenerStats;
use crate::proxy::error::ProxyError;
use crate::proxy::h2::PREFACE;
use crate::proxy::prefixed::Prefixed;
use crate::proxy::routing::HttpService;
use crate::proxy::Addrs;
use crate::tls::TlsFacts;

/// Serves `stream` until the client closes, a timer ends it, an error makes it unusable, or
/// fulcrum shuts down (a request in progress is finished first).
pub async fn serve<S: ClientIo>(
    service: Rc<HttpService>,
    mut stream: S,
    addrs: Addrs,
    tls: Option<TlsFacts>,
) {
    // The listener's own context, for all that comes before a request is routed.
    let ctx: &HttpContext = &service.default;
    let peer = addrs.peer;
    let peer_text = exchange::peer_text(peer);
    let trusted_peer = ctx.limits.trusted_proxies.contains(peer.ip());
    let mut input = ReadBuf::new(Rc::clone(&ctx.buffers));
    // The first head is due within the header timeout from accept; later ones (pipelined
    // or not) from the moment a read of them first has to wait, set then by `read_head`.
    let accepted_deadline = crate::proxy::deadline(Instant::now(), ctx.limits.header_timeout);
    let mut first = true;
    loop {
        if input.is_empty() && S::HOLDS_INPUT {
            // TLS may hold a decrypted request the socket no longer signals.
            match input.try_read_from(&mut stream) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if input.is_empty() {
            input.release_if_empty();
            let limit = if first {
                ctx.limits.header_timeout
            } else {
                ctx.idle_timeout
            };
            match ctx.idle.wait(stream.socket(), limit).await {
                Woke::Close if first && !ctx.idle.is_stopped() => {
                    // Nothing at all within the header timeout of accept.
                    ctx.refused(peer, "HTTP/1.1", ProxyError::HeaderTimeout);
                    let answer = exchange::send_error(
                        ctx,
                        &mut stream,
                        ProxyError::HeaderTimeout,
                        false,
                        false,
                    );
                    Box::pin(answer).await;
                    return;
                }
                Woke::Close => return,
                Woke::Readable => match input.try_read_from(&mut stream) {
                    Ok(0) => return,
                    Ok(_) => {}
                    // Readiness left over from an earlier read: wait again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                },
            }
        }
        if first && is_h2_preface(input.filled()) {
            // HTTP/2 with prior knowledge. Boxed: an HTTP/1.1 connection's task does not
            // carry the HTTP/2 connection's state.
            let replay = Prefixed::new(input.filled().to_vec(), stream);
            drop(input);
            Box::pin(crate::proxy::h2::server::serve(
                Rc::clone(&service),
                replay,
                addrs,
                tls,
            ))
            .await;
            return;
        }
        if first {
            ListenerStats::count(&ctx.stats.http1);
        }
        let head_deadline = first.then_some(accepted_deadline);
        first = false;
        // Boxed: a request's state is large and lives only as long as the request, while this
        // task lives as long as the (mostly idle) connection.
        let request = serve_request(
            &service,
            &mut stream,
            &mut input,
            Peer {
                addrs,
                text: &peer_text,
                trusted: trusted_peer,
            },
            tls.as_ref(),
            head_deadline,
        );
        match Box::pin(request).await {
            Next::KeepAlive if !ctx.idle.is_stopped() => {}
            Next::KeepAlive | Next::Close => return,
            Next::Linger => {
                Box::pin(linger(&mut stream)).await;
                return;
            }
        }
    }
}

/// Whether a connection's first bytes are HTTP/2's preface (as far as they go: at least
/// "PRI ", a method no HTTP/1.1 request uses, RFC 9113 §3.4).
fn is_h2_preface(first_bytes: &[u8]) -> bool {
    let n = first_bytes.len().min(PREFACE.len());
    n >= 4 && first_bytes[..n] == PREFACE[..n]
}

/// The longest a lingering close reads and discards what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// A lingering close (nginx's and Apache's): stop writing, so the client sees the end of the
/// answer, then read and discard until the client closes too or [`LINGER`] passes. Closing
/// at once with unread bytes would send a reset, which can destroy the answer (an early
/// `413`, a `400`) in the client's receive buffer before it is read.
async fn linger<S: ClientIo>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = crate::proxy::deadline(Instant::now(), LINGER);
    let mut discard = vec![0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut discard)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// The client connection's peer, as the request rules need it.
struct Peer<'a> {
    addrs: Addrs,
    /// As written into X-Forwarded-For.
    text: &'a [u8],
    /// In the listener's `trusted_proxies`.
    trusted: bool,
}

/// One request, from its head to the end of its response; returns what to do with the
/// connection next.
async fn serve_request<S: ClientIo>(
    service: &HttpService,
    stream: &mut S,
    input: &mut ReadBuf,
    peer: Peer<'_>,
    tls: Option<&TlsFacts>,
    head_deadline: Option<Instant>,
) -> Next {
    let ctx: &HttpContext = &service.default;
    let rules = RequestRules {
        max_request_line_bytes: ctx.limits.max_request_line_bytes,
        router: service,
        peer: peer.addrs.peer.ip(),
        peer_text: peer.text,
        tls,
        trusted_peer: peer.trusted,
        underscores: ctx.limits.headers_with_underscores,
    };
    let local = peer.addrs.local;
    let peer = peer.addrs.peer;
    let mut upstream_head = ctx.buffers.take_write();
    let head = read_head(
        ctx,
        &rules,
        stream,
        input,
        head_deadline,
        &mut upstream_head,
    )
    .await;
    let next = match head {
        Ok(Some(request)) => {
            let consumed_before = input.consumed();
            input.consume(request.len);
            let mut client = Client {
                stream,
                input,
                request: &request,
                upstream_head: &upstream_head,
                peer,
                local,
                consumed_before,
            };
            // Routed: the chosen pool's context from here on.
            exchange::proxy(service.context(request.route), &mut client).await
        }
        Ok(None) => Next::Close,
        Err(error) => {
            tracing::debug!(%peer, %error, "bad request");
            ctx.refused(peer, "HTTP/1.1", error);
            // The head did not parse, so whether it was HEAD is unknown; the answer closes
            // the connection, so a body cannot be mistaken for a next response.
            exchange::send_error(ctx, stream, error, false, false).await;
            if error == ProxyError::HeaderTimeout {
                Next::Close
            } else {
                // The client may be sending the rest of what was refused.
                Next::Linger
            }
        }
    };
    ctx.buffers.give_write(upstream_head);
    next
}

/// Reads until a whole request head is buffered (`input` holds its first bytes). `Ok(None)`:
/// the client closed before the head was complete.
async fn read_head<S: ClientIo>(
    ctx: &HttpContext,
    rules: &RequestRules<'_>,
    stream: &mut S,
    input: &mut ReadBuf,
    mut deadline: Option<Instant>,
    upstream_head: &mut Vec<u8>,
) -> Result<Option<RequestHead>, ProxyError> {
    let limit = ctx.limits.max_header_bytes;
    let mut end = HeadEnd::default();
    loop {
        if end.worth_parsing(input.filled()) {
            if let Some(head) = request::parse(input.filled(), rules, upstream_head)? {
                return Ok(Some(head));
            }
        } else if !end.line_ended() && input.len() > rules.max_request_line_bytes {
            return Err(ProxyError::RequestLineTooLong);
        }
        if input.len() >= limit {
            return Err(ProxyError::HeadTooLarge);
        }
        let mut read = std::pin::pin!(input.read_from(stream, limit));
        let read = match relay::poll_once(read.as_mut()).await {
            Poll::Ready(read) => read,
            Poll::Pending => {
                let due = *deadline.get_or_insert_with(|| {
                    crate::proxy::deadline(Instant::now(), ctx.limits.header_timeout)
                });
                tokio::time::timeout_at(due, read)
                    .await
                    .map_err(|_| ProxyError::HeaderTimeout)?
            }
        };
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}
