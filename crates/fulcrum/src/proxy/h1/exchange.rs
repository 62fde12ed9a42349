//! One request's way through the proxy, in the order it lives through it:
//! **pick** (a backend from the pool's snapshot) → **connect** (a pooled connection or a new
//! one; a failed connect moves on to another backend) → **send** (the rewritten head, then the
//! body while the response is awaited) → **respond** (the response head rewritten, its body
//! streamed) → **release** (the upstream connection back to the pool when it ended cleanly).
//!
//! Bodiless GET, HEAD and OPTIONS requests are sent again to another backend when one breaks
//! the exchange before answering, as nginx does; nothing else is ever replayed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::{Algorithm, HttpLimits, StatusRange};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::buffer::{BufferPool, ReadBuf};
use super::framing::Framing;
use super::head_end::HeadEnd;
use super::idle::IdleRegistry;
use super::relay::{self, RelayError, Timeouts};
use super::request::RequestHead;
use super::response::{self, ClientSide, ResponseHead};
use crate::pool::{InFlight, LiveBackend, Pool, Tried};
use crate::proxy::error::ProxyError;
use crate::proxy::upstream::{connect_tcp, UpstreamPool};

/// Largest response head fulcrum accepts from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Everything a worker needs to proxy HTTP for one listener.
#[derive(Debug)]
pub struct HttpRoute {
    pub listener: String,
    pub pool: Arc<Pool>,
    pub upstreams: Rc<UpstreamPool>,
    pub buffers: Rc<BufferPool>,
    /// This worker's waiting client connections (idle timeout, shutdown).
    pub idle: Rc<IdleRegistry>,
    pub limits: HttpLimits,
    /// Between requests, and the longest a client may stall while sending a body or taking
    /// a response.
    pub idle_timeout: Duration,
    /// Response statuses that count as backend failures (outlier detection, counters).
    pub failure_statuses: StatusRange,
}

/// The client side of one exchange.
#[derive(Debug)]
pub struct Client<'a> {
    pub stream: &'a mut TcpStream,
    /// Bytes read from the client and not yet used: the request body may start here.
    pub input: &'a mut ReadBuf,
    pub request: &'a RequestHead,
    /// The head to send upstream.
    pub upstream_head: &'a [u8],
}

/// How one attempt on one backend ended.
enum Attempt {
    /// The response went to the client; keep the client connection open or not.
    Answered { keep_alive: bool },
    /// Nothing reached the backend; another backend may be tried.
    NotSent(String),
    /// The exchange failed before any response reached the client.
    Failed(ProxyError),
    /// The client went away, or the exchange broke after the response had started.
    Closed,
}

/// Proxies one request; returns whether the client connection may carry another.
pub async fn proxy(route: &HttpRoute, client: &mut Client<'_>) -> bool {
    let pool = &route.pool;
    let snapshot = pool.snapshot_full();
    let mut tried = Tried::default();
    let replay = client.request.replayable
        && pool.settings.connect_attempts > 1
        && snapshot.backends.len() > 1;
    let mut broke = false;
    let mut now = Instant::now();
    for attempt_number in 0..pool.settings.connect_attempts {
        if attempt_number > 0 {
            now = Instant::now();
        }
        let Some(index) = snapshot.pick(&tried, client.request.key) else {
            break;
        };
        tried.push(index);
        let backend = &snapshot.backends[index];
        let attempt = match route.upstreams.checkout(backend.addr, now) {
            Some(stream) => attempt(route, backend, stream, false, client, now).await,
            None => match connect_tcp(backend.addr, pool.settings.connect_timeout).await {
                Ok(stream) => attempt(route, backend, stream, true, client, Instant::now()).await,
                Err(e) => Attempt::NotSent(e.to_string()),
            },
        };
        match attempt {
            Attempt::Answered { keep_alive } => return keep_alive,
            Attempt::Closed => return false,
            Attempt::NotSent(error) => {
                backend.stats.record_failure();
                tracing::warn!(pool = %pool.name, backend = %backend.addr, %error, "connect failed; trying another backend");
            }
            // The client's fault (a stalled or malformed body), not the backend's.
            Attempt::Failed(
                error @ (ProxyError::ClientBodyTimeout | ProxyError::BadRequest(_)),
            ) => {
                tracing::debug!(pool = %pool.name, %error, "request body not received whole");
                return respond_error(route, client, error).await;
            }
            Attempt::Failed(ProxyError::UpstreamFailed) if replay => {
                backend.stats.record_failure();
                tracing::warn!(pool = %pool.name, backend = %backend.addr, "upstream broke the exchange; retrying the idempotent request on another backend");
                broke = true;
            }
            Attempt::Failed(error) => {
                backend.stats.record_failure();
                tracing::warn!(pool = %pool.name, backend = %backend.addr, %error, "upstream failed");
                return respond_error(route, client, error).await;
            }
        }
    }
    let error = if broke {
        ProxyError::UpstreamFailed
    } else if tried.is_empty() {
        ProxyError::NoBackend
    } else {
        ProxyError::ConnectFailed
    };
    respond_error(route, client, error).await
}

/// Sends fulcrum's own response for `error`; the connection stays open only when the
/// request had no body (an unread body would be taken for the next request).
async fn respond_error(route: &HttpRoute, client: &mut Client<'_>, error: ProxyError) -> bool {
    tracing::debug!(listener = %route.listener, %error, "request failed");
    let request = client.request;
    let keep_alive =
        request.keep_alive && request.framing == Framing::Empty && !route.idle.is_stopped();
    send_error(route, client.stream, error, keep_alive, request.is_head).await
}

/// Writes fulcrum's own answer for `error` (without a body when it answers a HEAD request);
/// returns whether the connection stays open (only when `keep_alive` and the error does not
/// end the connection anyway).
pub async fn send_error(
    route: &HttpRoute,
    stream: &mut TcpStream,
    error: ProxyError,
    keep_alive: bool,
    head_request: bool,
) -> bool {
    let keep_alive = keep_alive && !error.closes_connection();
    let mut out = route.buffers.take_write();
    error.write_response(&mut out, !keep_alive, head_request);
    let written = relay::write_slice(stream, &out, route.idle_timeout).await;
    route.buffers.give_write(out);
    keep_alive && written.is_ok()
}

/// One exchange with one backend over `upstream`, guarded by the backend's drain abort.
async fn attempt(
    route: &HttpRoute,
    backend: &LiveBackend,
    upstream: TcpStream,
    fresh: bool,
    client: &mut Client<'_>,
    started: Instant,
) -> Attempt {
    let in_flight = InFlight::start(&backend.stats);
    let responded = Cell::new(false);
    let aborted = backend.stats.aborted();
    let outcome = tokio::select! {
        outcome = exchange(route, backend, upstream, fresh, client, &responded, started) => outcome,
        () = aborted => {
            tracing::debug!(backend = %backend.addr, "upstream connection closed: drain timed out");
            if responded.get() { Attempt::Closed } else { Attempt::Failed(ProxyError::UpstreamFailed) }
        }
    };
    in_flight.stats().latency.record(started.elapsed());
    outcome
}

async fn exchange(
    route: &HttpRoute,
    backend: &LiveBackend,
    mut upstream: TcpStream,
    fresh: bool,
    client: &mut Client<'_>,
    responded: &Cell<bool>,
    started: Instant,
) -> Attempt {
    let settings = &route.pool.settings;
    let with_host;
    let head = if client.request.host_missing {
        with_host = head_with_host(client.upstream_head, backend.addr);
        &with_host[..]
    } else {
        client.upstream_head
    };
    // Send the head; a pooled connection the backend closed meanwhile is replaced once.
    if let Err(error) = relay::write_slice(&mut upstream, head, settings.response_timeout).await {
        if fresh {
            return Attempt::NotSent(format!("{error:?}"));
        }
        upstream = match connect_tcp(backend.addr, settings.connect_timeout).await {
            Ok(stream) => stream,
            Err(e) => return Attempt::NotSent(e.to_string()),
        };
        if let Err(error) = relay::write_slice(&mut upstream, head, settings.response_timeout).await
        {
            return Attempt::NotSent(format!("{error:?}"));
        }
    }
    let mut response_buffer = ReadBuf::new(Rc::clone(&route.buffers));
    let mut out = route.buffers.take_write();
    let result = send_and_respond(
        route,
        backend,
        &mut upstream,
        client,
        &mut response_buffer,
        &mut out,
        responded,
        started,
    )
    .await;
    route.buffers.give_write(out);
    match result {
        Ok((reusable, keep_alive)) => {
            if reusable && response_buffer.is_empty() {
                route.upstreams.checkin(
                    backend.addr,
                    upstream,
                    &backend.stats,
                    settings.upstream_idle_timeout,
                    settings.max_idle_per_backend,
                );
            }
            Attempt::Answered { keep_alive }
        }
        Err(attempt) => attempt,
    }
}

/// An HTTP/1.0 request without Host goes upstream as HTTP/1.1, which requires one: like
/// nginx, fulcrum names the backend it goes to.
fn head_with_host(head: &[u8], backend: SocketAddr) -> Vec<u8> {
    let end = head.len().saturating_sub(2);
    let mut with_host = Vec::with_capacity(head.len() + 32);
    with_host.extend_from_slice(&head[..end]);
    with_host.extend_from_slice(format!("host: {backend}\r\n\r\n").as_bytes());
    with_host
}

/// Uploads the request body while waiting for the response head, then streams the response.
/// Returns (upstream reusable, client keep-alive).
#[allow(clippy::too_many_arguments)]
async fn send_and_respond(
    route: &HttpRoute,
    backend: &LiveBackend,
    upstream: &mut TcpStream,
    client: &mut Client<'_>,
    response_buffer: &mut ReadBuf,
    out: &mut Vec<u8>,
    responded: &Cell<bool>,
    started: Instant,
) -> Result<(bool, bool), Attempt> {
    let settings = &route.pool.settings;
    let request = client.request;
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let (mut client_read, mut client_write) = client.stream.split();
    let client_timeouts = Timeouts {
        read: route.idle_timeout,
        write: route.idle_timeout,
    };
    let mut uploaded = request.framing == Framing::Empty;
    // The backend stopped taking the body: it may still answer (413, say), but the rest of
    // the body stays unread, so the client connection cannot carry another request.
    let mut upload_broken = false;
    let mut no_prefix = Vec::new();
    let upload = relay::body(
        &mut client_read,
        client.input,
        &mut upstream_write,
        request.framing,
        false,
        Timeouts {
            read: route.idle_timeout,
            write: settings.response_timeout,
        },
        &mut no_prefix,
    );
    tokio::pin!(upload);
    // The response timeout runs from the moment the whole request has been sent (for a
    // bodiless request, the head went out just now).
    let mut deadline = started + settings.response_timeout;
    let head: ResponseHead = loop {
        let side = ClientSide {
            request_is_head: request.is_head,
            http10: request.http10,
            // A response that comes before the whole request was read ends the connection.
            keep_alive: request.keep_alive && uploaded && !upload_broken,
            set_cookie: request.set_cookie.as_deref(),
        };
        let read_head =
            read_response_head(&mut upstream_read, response_buffer, &side, &route.idle, out);
        tokio::select! {
            // In this order: the deadline is polled (and its timer armed) only when neither
            // the response nor the upload can make progress.
            biased;
            head = read_head => match head {
                Ok(head) if head.informational => {
                    response_buffer.consume(head.len);
                    // HTTP/1.0 clients do not know 1xx responses.
                    if !request.http10
                        && relay::write_slice(&mut client_write, out, route.idle_timeout).await.is_err()
                    {
                        return Err(Attempt::Closed);
                    }
                    out.clear();
                }
                Ok(head) => break head,
                Err(why) => {
                    tracing::debug!(backend = %backend.addr, error = why, "upstream exchange failed");
                    return Err(Attempt::Failed(ProxyError::UpstreamFailed));
                }
            },
            sent = &mut upload, if !uploaded => match sent {
                Ok(()) => {
                    uploaded = true;
                    deadline = Instant::now() + settings.response_timeout;
                }
                Err(RelayError::Stalled) => return Err(Attempt::Failed(ProxyError::ClientBodyTimeout)),
                Err(RelayError::Sink(_)) => {
                    uploaded = true;
                    upload_broken = true;
                }
                Err(RelayError::BadChunk) => {
                    return Err(Attempt::Failed(ProxyError::BadRequest("invalid chunked body\n")))
                }
                Err(RelayError::SourceClosed | RelayError::Source(_)) => return Err(Attempt::Closed),
            },
            () = tokio::time::sleep_until(deadline), if uploaded => {
                return Err(Attempt::Failed(ProxyError::UpstreamTimeout));
            }
        }
    };
    record(route, backend, head.status, started);
    response_buffer.consume(head.len);
    responded.set(true);
    let relayed = relay::body(
        &mut upstream_read,
        response_buffer,
        &mut client_write,
        head.framing,
        head.decode_chunks,
        Timeouts {
            read: settings.response_timeout,
            write: client_timeouts.write,
        },
        out,
    )
    .await;
    if let Err(error) = relayed {
        tracing::debug!(backend = %backend.addr, ?error, "response body not relayed whole");
        return Err(Attempt::Closed);
    }
    Ok((
        head.upstream_reusable && uploaded && !upload_broken,
        !head.client_close,
    ))
}

/// Reads until the backend's response head is complete; the head for the client is then
/// in `out`. Whether fulcrum is shutting down is read when the head is written, so a response
/// that arrives after SIGTERM tells the client to close.
async fn read_response_head(
    upstream: &mut tokio::net::tcp::ReadHalf<'_>,
    buffer: &mut ReadBuf,
    side: &ClientSide<'_>,
    idle: &IdleRegistry,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, &'static str> {
    let mut end = HeadEnd::default();
    loop {
        if end.may_be_complete(buffer.filled()) {
            let side = ClientSide {
                keep_alive: side.keep_alive && !idle.is_stopped(),
                ..*side
            };
            match response::parse(buffer.filled(), &side, out) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(bad) => return Err(bad.0),
            }
        }
        match buffer.read_from(upstream, MAX_RESPONSE_HEAD).await {
            Ok(0) if buffer.len() >= MAX_RESPONSE_HEAD => return Err("response head too large"),
            Ok(0) => return Err("connection closed before a response"),
            Ok(_) => {}
            Err(_) => return Err("connection failed before a response"),
        }
    }
}

/// Counts the response for the backend: requests, failures by status, latency for p2c_ewma.
fn record(route: &HttpRoute, backend: &LiveBackend, status: u16, started: Instant) {
    let stats = &backend.stats;
    stats.record_request();
    let pool = &route.pool;
    if pool.settings.algorithm == Algorithm::P2cEwma {
        stats.ewma.observe(pool.clock().now(), started.elapsed());
    }
    if route.failure_statuses.contains(status) {
        stats.record_failure();
    } else {
        stats.record_success();
    }
}

/// The peer address as written into X-Forwarded-For.
pub fn peer_text(peer: SocketAddr) -> Vec<u8> {
    peer.ip().to_string().into_bytes()
}
