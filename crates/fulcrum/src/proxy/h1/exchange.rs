//! An exchange with an HTTP/1.1 backend: the upstream codec of the request pipeline
//! (`proxy::pipeline` picks, accounts and retries; this file does one attempt), for any
//! [`Downstream`] client — an HTTP/1.1 connection or an HTTP/2 stream.
//!
//! One attempt: **connect** (a pooled connection or a new one; a failed connect moves on to
//! another backend) → **send** (the rewritten head, then the body while the response is
//! awaited) → **respond** (the response head rewritten for the client, its body streamed) →
//! **release** (the upstream connection back to the pool when it ended cleanly).
//!
//! Bodiless GET, HEAD and OPTIONS requests are sent again to another backend when one breaks
//! the exchange before answering, as nginx does; nothing else is ever replayed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::{HttpLimits, RateLimitAction, UpstreamProtocol};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::buffer::{BufferPool, ReadBuf};
use super::downstream::{Downstream, ResponseSink};
use super::framing::Framing;
use super::head_end::HeadEnd;
use super::idle::IdleRegistry;
use super::relay::{self, RelayError, Timeouts};
use super::response::{ClientSide, ResponseHead};
use super::switched;
use crate::access_log::AccessLog;
use crate::metrics::series::HttpShard;
use crate::pool::{LiveBackend, Pool};
use crate::proxy::client_io::ClientIo;
use crate::proxy::counters::ListenerStats;
use crate::proxy::error::ProxyError;
use crate::proxy::h2::alpn::ByAlpn;
use crate::proxy::h2::upstream::{H2Upstreams, ToHttp2};
use crate::proxy::marks::Marks;
use crate::proxy::pipeline::{self, Attempt, RequestFacts};
use crate::proxy::upstream::{self, UpstreamPool};
use crate::proxy::upstream_io::{Upstream, UpstreamRead};
use crate::tls::upstream::BackendTls;

/// Largest response head fulcrum accepts from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Everything one worker thread needs to proxy HTTP for one listener (one per listener and
/// worker; the listener's pool, this worker's connection and buffer pools, the limits).
#[derive(Debug)]
pub struct HttpContext {
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
    /// TLS to the pool's backends, when it speaks TLS.
    pub backend_tls: Option<Arc<BackendTls>>,
    /// The listener's connection counts.
    pub stats: Arc<ListenerStats>,
    /// This worker's HTTP/2 connections to backends.
    pub h2_upstreams: Rc<H2Upstreams>,
    /// This worker's counters for the listener and its pool.
    pub metrics: Arc<HttpShard>,
    pub access_log: Option<AccessLog>,
}

impl HttpContext {
    /// A request refused before it was parsed whole: counted, and logged without a method
    /// or path.
    pub fn refused(&self, peer: SocketAddr, protocol: &'static str, error: ProxyError) {
        self.metrics.refused(error);
        if let Some(log) = &self.access_log {
            log.refused(peer, protocol, error.status(), error.side(), &self.pool);
        }
    }
}

/// How one exchange on one upstream connection ended.
enum OnConnection {
    Ended(Attempt<Next>),
    /// A pooled connection turned out closed by the backend before it answered anything:
    /// most likely the backend closed it while it sat idle, just as the request arrived.
    /// Not the backend's failure either way. `resend`: the request can go again as it is on
    /// a new connection (nothing was sent, or it is safe to apply twice).
    Stale {
        resend: bool,
    },
}

impl From<Attempt<Next>> for OnConnection {
    fn from(attempt: Attempt<Next>) -> Self {
        Self::Ended(attempt)
    }
}

/// How a request body's upload ended, as the exchange waiting for the response sees it.
#[derive(Debug)]
pub enum Uploaded {
    /// Sent whole: the response timeout starts now.
    Whole,
    /// The backend stopped taking it; its response may still come (a `413`, say), and the
    /// client connection closes after it.
    BackendStoppedReading,
    /// The exchange ends here.
    End(Attempt<Next>),
}

/// Reads the end of an upload (`relay::body` towards either protocol's backend).
pub fn upload_ended(sent: Result<(), RelayError>) -> Uploaded {
    match sent {
        Ok(()) => Uploaded::Whole,
        Err(RelayError::Sink(_)) => Uploaded::BackendStoppedReading,
        Err(RelayError::Stalled) => Uploaded::End(Attempt::Failed(ProxyError::ClientBodyTimeout)),
        Err(RelayError::BadChunk) => Uploaded::End(Attempt::Failed(ProxyError::BadRequest(
            "invalid chunked body\n",
        ))),
        Err(RelayError::SourceClosed | RelayError::Source(_)) => {
            Uploaded::End(Attempt::Done(Next::Close))
        }
    }
}

/// What to do with a client connection after one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close: the client sent nothing fulcrum left unread.
    Close,
    /// Close, but the client may still be sending a body fulcrum did not read: closing a
    /// socket with unread bytes sends a reset, which can destroy the answer before the client
    /// reads it. Stop writing, then read and discard for a bounded time (a lingering close).
    Linger,
}

/// Proxies one request; returns what to do with the client connection.
pub async fn proxy<D: Downstream>(ctx: &HttpContext, client: &mut D) -> Next {
    if let Some(limit) = &ctx.limits.rate_limit {
        if !ctx.stats.clients.allow_request(client.peer().ip(), limit) {
            ListenerStats::count(&ctx.stats.refused.rate_limit);
            tracing::debug!(listener = %ctx.listener, peer = %client.peer(), "client over the rate limit");
            if limit.action == RateLimitAction::Close {
                ctx.metrics.error(ProxyError::RateLimited);
                return Next::Close;
            }
            let next = respond_error(ctx, client, ProxyError::RateLimited).await;
            return finish(ctx, client, next);
        }
    }
    let request = client.request();
    let facts = RequestFacts {
        replayable: request.replayable,
        key: request.key,
    };
    let forwarded = match ctx.pool.settings().protocol {
        UpstreamProtocol::Http1 => {
            let mut exchange = ToHttp1 {
                ctx,
                client: &mut *client,
            };
            pipeline::forward(&ctx.pool, facts, &mut exchange).await
        }
        UpstreamProtocol::Http2 => {
            let mut exchange = ToHttp2 {
                ctx,
                client: &mut *client,
            };
            pipeline::forward(&ctx.pool, facts, &mut exchange).await
        }
        UpstreamProtocol::Auto => {
            let mut exchange = ByAlpn {
                ctx,
                client: &mut *client,
            };
            pipeline::forward(&ctx.pool, facts, &mut exchange).await
        }
    };
    let next = match forwarded {
        Ok(next) => next,
        Err(error) => respond_error(ctx, client, error).await,
    };
    finish(ctx, client, next)
}

/// The end of a request: counted and logged.
fn finish<D: Downstream>(ctx: &HttpContext, client: &D, next: Next) -> Next {
    let end = Instant::now();
    ctx.metrics.finished(&client.request().marks, end);
    if let Some(log) = &ctx.access_log {
        log.request(&ctx.pool, client, end);
    }
    next
}

/// One request of `client` on its way to HTTP/1.1 backends.
struct ToHttp1<'a, D> {
    ctx: &'a HttpContext,
    client: &'a mut D,
}

impl<D: Downstream> pipeline::Exchange for ToHttp1<'_, D> {
    type Done = Next;

    fn marks(&self) -> &Marks {
        &self.client.request().marks
    }

    async fn attempt(&mut self, backend: &LiveBackend, picked: Instant) -> Attempt<Next> {
        let tls_id = self.ctx.backend_tls.as_ref().map_or(0, |t| t.id);
        // A connection that began with a PROXY header is its client's alone: never pooled.
        let pooled = match self.ctx.pool.settings().proxy_protocol {
            None => self.ctx.upstreams.checkout(backend.addr, tls_id, picked),
            Some(_) => None,
        };
        over_http1(self.ctx, backend, self.client, picked, pooled).await
    }
}

/// One attempt over HTTP/1.1: over `pooled` when there is one, and once more over a new
/// connection, without counting a failure, when the pooled one turns out stale (the backend
/// closed it while it sat idle, and the request can be sent again whole) — as nginx and Go's
/// client do.
pub(crate) async fn over_http1<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    client: &mut D,
    picked: Instant,
    pooled: Option<Upstream>,
) -> Attempt<Next> {
    if let Some(stream) = pooled {
        match attempt(ctx, backend, stream, true, client, picked).await {
            OnConnection::Stale { resend: true } => {
                tracing::debug!(backend = %backend.addr, "pooled connection was closed by the backend; sending on a new one");
            }
            OnConnection::Stale { resend: false } => return Attempt::Stale,
            OnConnection::Ended(attempt) => return attempt,
        }
    }
    let settings = ctx.pool.settings();
    let proxy_header = crate::proxy::proxy_header::for_backend(
        settings.proxy_protocol,
        crate::proxy::Addrs {
            peer: client.peer(),
            local: client.local(),
        },
    );
    match upstream::connect(
        backend.addr,
        settings.connect_timeout,
        ctx.backend_tls.as_deref(),
        &proxy_header,
    )
    .await
    {
        Ok(stream) => over_new_http1(ctx, backend, client, stream).await,
        Err(e) => Attempt::NotSent(e.to_string()),
    }
}

/// One attempt over HTTP/1.1 on a connection just opened.
pub(crate) async fn over_new_http1<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    client: &mut D,
    stream: Upstream,
) -> Attempt<Next> {
    match attempt(ctx, backend, stream, false, client, Instant::now()).await {
        OnConnection::Ended(attempt) => attempt,
        OnConnection::Stale { .. } => Attempt::Stale,
    }
}

/// Sends fulcrum's own response for `error`; the connection stays open only when the
/// request had no body (an unread body would be taken for the next request).
async fn respond_error<D: Downstream>(
    ctx: &HttpContext,
    client: &mut D,
    error: ProxyError,
) -> Next {
    tracing::debug!(listener = %ctx.listener, %error, "request failed");
    let request = client.request();
    request
        .marks
        .answered_by_fulcrum(error.status(), error.side());
    ctx.metrics.error(error);
    let bodiless = request.framing == Framing::Empty;
    let keep_alive = request.keep_alive && bodiless && !ctx.idle.is_stopped();
    let kept = client.send_error(ctx, error, keep_alive).await;
    match (kept, bodiless) {
        (true, _) => Next::KeepAlive,
        (false, true) => Next::Close,
        (false, false) => Next::Linger,
    }
}

/// What sending fulcrum's own answer did.
#[derive(Debug, Clone, Copy)]
pub struct ErrorSent {
    /// The connection stays open.
    pub kept: bool,
    /// Bytes written to the client.
    pub written: usize,
}

/// Writes fulcrum's own answer for `error` (without a body when it answers a HEAD request);
/// the connection stays open only when `keep_alive` and the error does not end the
/// connection anyway.
pub async fn send_error<S: ClientIo>(
    ctx: &HttpContext,
    stream: &mut S,
    error: ProxyError,
    keep_alive: bool,
    head_request: bool,
) -> ErrorSent {
    let keep_alive = keep_alive && !error.closes_connection();
    let mut out = ctx.buffers.take_write();
    error.write_response(&mut out, !keep_alive, head_request);
    let written = relay::write_slice(stream, &out, ctx.idle_timeout).await;
    let sent = ErrorSent {
        kept: keep_alive && written.is_ok(),
        written: if written.is_ok() { out.len() } else { 0 },
    };
    ctx.buffers.give_write(out);
    sent
}

/// One exchange with one backend over `upstream`, guarded by the backend's drain abort.
/// `reused`: the connection came from the pool (so it may be stale).
async fn attempt<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    upstream: Upstream,
    reused: bool,
    client: &mut D,
    started: Instant,
) -> OnConnection {
    let responded = Cell::new(false);
    let aborted = backend.stats.aborted();
    tokio::select! {
        outcome = exchange(ctx, backend, upstream, reused, client, &responded, started) => outcome,
        () = aborted => {
            tracing::debug!(backend = %backend.addr, "upstream connection closed: drain timed out");
            if responded.get() {
                Attempt::Done(Next::Close).into()
            } else {
                Attempt::Failed(ProxyError::UpstreamFailed).into()
            }
        }
    }
}

async fn exchange<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    mut upstream: Upstream,
    reused: bool,
    client: &mut D,
    responded: &Cell<bool>,
    started: Instant,
) -> OnConnection {
    let settings = ctx.pool.settings();
    let with_host;
    let head = if client.request().host_missing {
        with_host = head_with_host(client.upstream_head(), backend.addr);
        &with_host[..]
    } else {
        client.upstream_head()
    };
    if let Err(error) = relay::write_slice(&mut upstream, head, settings.response_timeout).await {
        // Nothing of the body has been read from the client yet: any request can go again.
        return if reused {
            OnConnection::Stale { resend: true }
        } else {
            Attempt::NotSent(format!("{error:?}")).into()
        };
    }
    client.request().marks.sent_now();
    let mut response_buffer = ReadBuf::new(Rc::clone(&ctx.buffers));
    let mut out = ctx.buffers.take_write();
    let result = send_and_respond(
        ctx,
        backend,
        &mut upstream,
        client,
        &mut response_buffer,
        &mut out,
        responded,
        started,
    )
    .await;
    ctx.buffers.give_write(out);
    match result {
        Ok(relayed) if relayed.switched => {
            switched::tunnel(ctx, backend, client, upstream, &response_buffer).await;
            Attempt::Done(Next::Close).into()
        }
        Ok(relayed) => {
            let private = settings.proxy_protocol.is_some();
            if relayed.upstream_reusable && response_buffer.is_empty() && !private {
                ctx.upstreams.checkin(
                    backend.addr,
                    ctx.backend_tls.as_ref().map_or(0, |t| t.id),
                    upstream,
                    &backend.stats,
                    settings.upstream_idle_timeout,
                    settings.max_idle_per_backend,
                );
            }
            Attempt::Done(relayed.next).into()
        }
        // Closed without a byte of answer: on a pooled connection that is most likely the
        // backend having closed it while idle, just as the request arrived. Only a request
        // that is safe to apply twice goes again (RFC 9112 §9.3.1, Go's client's rule): the
        // backend may also have crashed while processing it.
        Err(Attempt::Failed(ProxyError::UpstreamFailed))
            if reused && response_buffer.is_empty() =>
        {
            OnConnection::Stale {
                resend: client.request().replayable,
            }
        }
        Err(attempt) => attempt.into(),
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

/// Uploads the request body while waiting for the response head, then streams the response
/// (the upload going on meanwhile if it has not ended).
#[allow(clippy::too_many_arguments)]
async fn send_and_respond<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    upstream: &mut Upstream,
    client: &mut D,
    response_buffer: &mut ReadBuf,
    out: &mut Vec<u8>,
    responded: &Cell<bool>,
    started: Instant,
) -> Result<Relayed, Attempt<Next>> {
    let settings = ctx.pool.settings();
    let (mut upstream_read, mut upstream_write) = upstream.halves();
    let request = client.request();
    let (is_head, http10, keep_alive, framing, upgrade) = (
        request.is_head,
        request.http10,
        request.keep_alive,
        request.framing,
        request.upgrade,
    );
    let set_cookie = request.set_cookie.clone();
    let (mut client_read, input, mut client_write, marks) = client.split();
    let client_timeouts = Timeouts {
        read: ctx.idle_timeout,
        write: ctx.idle_timeout,
        min_rate: None,
    };
    let mut uploaded = framing == Framing::Empty;
    // The backend stopped taking the body: it may still answer (413, say), but the rest of
    // the body stays unread, so the client connection cannot carry another request.
    let mut upload_broken = false;
    let mut no_prefix = Vec::new();
    let upload = relay::body(
        &mut client_read,
        input,
        &mut upstream_write,
        framing,
        false,
        Timeouts {
            read: ctx.idle_timeout,
            write: settings.response_timeout,
            min_rate: ctx.limits.min_upload_rate,
        },
        &mut no_prefix,
    );
    tokio::pin!(upload);
    // The response timeout runs from the moment the whole request has been sent (for a
    // bodiless request, the head went out just now).
    let mut deadline = crate::proxy::deadline(started, settings.response_timeout);
    let head: ResponseHead = loop {
        let side = ClientSide {
            request_is_head: is_head,
            http10,
            // A response that comes before the whole request was read ends the connection.
            keep_alive: keep_alive && uploaded && !upload_broken,
            set_cookie: set_cookie.as_deref(),
            upgrade,
        };
        let read_head = read_response_head(
            &mut upstream_read,
            response_buffer,
            &side,
            &ctx.idle,
            &mut client_write,
            out,
        );
        tokio::select! {
            // In this order: the deadline is polled (and its timer armed) only when neither
            // the response nor the upload can make progress.
            biased;
            head = read_head => match head {
                Ok(head) if head.informational => {
                    response_buffer.consume(head.len);
                    // HTTP/1.0 clients do not know 1xx responses.
                    if !http10 && client_write.informational(out, ctx).await.is_err() {
                        return Err(Attempt::Done(Next::Close));
                    }
                    out.clear();
                }
                Ok(head) => break head,
                Err(why) => {
                    tracing::debug!(backend = %backend.addr, error = why, "upstream exchange failed");
                    return Err(Attempt::Failed(ProxyError::UpstreamFailed));
                }
            },
            sent = &mut upload, if !uploaded => match upload_ended(sent) {
                Uploaded::Whole => {
                    uploaded = true;
                    deadline = crate::proxy::deadline(Instant::now(), settings.response_timeout);
                }
                Uploaded::BackendStoppedReading => {
                    uploaded = true;
                    upload_broken = true;
                }
                Uploaded::End(attempt) => return Err(attempt),
            },
            () = tokio::time::sleep_until(deadline), if uploaded => {
                return Err(Attempt::Failed(ProxyError::UpstreamTimeout));
            }
        }
    };
    let status_failed = pipeline::observe_head(&ctx.pool, backend, marks, head.status, started);
    response_buffer.consume(head.len);
    responded.set(true);
    if head.switched {
        // The 101 goes out now; the tunnel takes over once this attempt's halves are free.
        let written = relay::write_slice(&mut client_write, out, client_timeouts.write).await;
        out.clear();
        if written.is_err() || client_write.flush().await.is_err() {
            return Err(Attempt::Done(Next::Close));
        }
        return Ok(Relayed {
            upstream_reusable: false,
            next: Next::Close,
            switched: true,
        });
    }
    let response = relay::body(
        &mut upstream_read,
        response_buffer,
        &mut client_write,
        head.framing,
        head.decode_chunks,
        Timeouts {
            read: settings.response_timeout,
            write: client_timeouts.write,
            min_rate: None,
        },
        out,
    );
    let relayed = if uploaded {
        response.await
    } else {
        // Full duplex: a backend may stream its answer while it still reads the upload (an
        // echo, a transcoder), so the upload goes on while the response streams. When the
        // response ends first, the rest of the upload is left unread (as nginx does).
        tokio::pin!(response);
        loop {
            tokio::select! {
                biased;
                relayed = &mut response => break relayed,
                sent = &mut upload, if !uploaded => {
                    uploaded = true;
                    if let Err(error) = sent {
                        tracing::debug!(backend = %backend.addr, ?error, "upload ended early while the response streamed");
                        upload_broken = true;
                    }
                }
            }
        }
    };
    let upload_whole = uploaded && !upload_broken;
    let relayed = relayed.and_then(|()| client_write.end_response().map_err(RelayError::Sink));
    match relayed {
        Ok(()) => pipeline::record_outcome(backend, status_failed),
        Err(error @ RelayError::Sink(_)) => {
            // The client went away: the backend did its part.
            pipeline::record_outcome(backend, status_failed);
            tracing::debug!(backend = %backend.addr, ?error, "client left before the response ended");
            return Err(Attempt::Done(Next::Close));
        }
        Err(error) if !out.is_empty() => {
            // The body broke before the head went out (it travels with the first bytes of
            // the body): nothing reached the client, so it gets a 502 as for a bad head.
            tracing::debug!(backend = %backend.addr, ?error, "response body broken before any of it was relayed");
            responded.set(false);
            out.clear();
            return Err(Attempt::Failed(ProxyError::UpstreamFailed));
        }
        Err(error) => {
            // A failure mid-body is the backend's, whatever its status said.
            backend.stats.record_failure();
            tracing::debug!(backend = %backend.addr, ?error, "response body not relayed whole");
            return Err(Attempt::Done(Next::Close));
        }
    }
    Ok(Relayed {
        switched: false,
        upstream_reusable: head.upstream_reusable && upload_whole,
        next: if !head.client_close {
            Next::KeepAlive
        } else if upload_whole {
            Next::Close
        } else {
            Next::Linger
        },
    })
}

/// How a relayed exchange left the two connections.
struct Relayed {
    upstream_reusable: bool,
    next: Next,
    /// A `101` to WebSocket was relayed: the two connections become a tunnel.
    switched: bool,
}

/// Reads until the backend's response head is complete; the head for the client is then
/// in `out`. Whether fulcrum is shutting down is read when the head is written, so a response
/// that arrives after SIGTERM tells the client to close.
async fn read_response_head<K: ResponseSink>(
    upstream: &mut UpstreamRead<'_>,
    buffer: &mut ReadBuf,
    side: &ClientSide<'_>,
    idle: &IdleRegistry,
    client: &mut K,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, &'static str> {
    let mut end = HeadEnd::default();
    loop {
        if end.worth_parsing(buffer.filled()) {
            let side = ClientSide {
                keep_alive: side.keep_alive && !idle.is_stopped(),
                ..*side
            };
            match client.start_response(buffer.filled(), &side, out) {
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

/// The peer address as written into X-Forwarded-For.
pub fn peer_text(peer: SocketAddr) -> Vec<u8> {
    peer.ip().to_string().into_bytes()
}
