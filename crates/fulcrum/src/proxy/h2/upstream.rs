//! HTTP/2 to backends (`protocol = "http2"` on a pool): the upstream codec of the request
//! pipeline for pools whose backends want it (gRPC services, HTTP/2-only servers). Each
//! request is a stream; each worker keeps its connections per backend and puts streams on one
//! until the backend's SETTINGS_MAX_CONCURRENT_STREAMS is reached, then opens another. A
//! connection the backend sends GOAWAY on (or that breaks) gets no new streams; the streams
//! open on it finish.
//!
//! The request goes out as the HTTP/1.1 request rules rewrote it (one set of rules for every
//! protocol pair): that head is read back into pseudo-headers and fields (`Host` becomes
//! `:authority`, chunked framing becomes DATA frames, `TE: trailers` is passed on when the
//! client sent it). The response's trailers reach HTTP/2 clients as trailers (gRPC's
//! `grpc-status`) and HTTP/1.1 clients in the last chunk.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::header::{HeaderName, HeaderValue, HOST, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::flow::DataSink;
use crate::pool::LiveBackend;
use crate::proxy::error::ProxyError;
use crate::proxy::h1::downstream::{Downstream, ResponseSink};
use crate::proxy::h1::exchange::{upload_ended, HttpContext, Next, Uploaded};
use crate::proxy::h1::framing::Framing;
use crate::proxy::h1::relay::{self, RelayError, Timeouts};
use crate::proxy::h1::request::RequestHead;
use crate::proxy::h1::response::ClientSide;
use crate::proxy::headers::{self, Class, MAX_HEADERS};
use crate::proxy::marks::Marks;
use crate::proxy::pipeline::{self, Attempt};
use crate::proxy::upstream;
use crate::proxy::upstream_io::Upstream;
use crate::tls::upstream::BackendTls;

/// The stream window fulcrum grants a backend's responses, and the connection window.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1 << 20;
/// Streams put on a new connection before the backend's SETTINGS have said its limit.
const INITIAL_STREAMS: usize = 10;

/// One worker's HTTP/2 connections to backends, by (address, TLS identity).
#[derive(Debug, Default)]
pub struct H2Upstreams {
    conns: RefCell<HashMap<Key, Vec<Rc<H2Conn>>>>,
    /// The connect in progress per backend: requests that find no stream to spare wait for
    /// it rather than each opening a connection of its own.
    connecting: RefCell<HashMap<Key, Rc<Connecting>>>,
}

pub type Key = (SocketAddr, u32);

#[derive(Debug, Default)]
struct Connecting {
    done: Notify,
    /// Why it failed: the requests waiting for it fail with it (and move on to another
    /// backend) instead of each waiting out a connect timeout of their own.
    failed: RefCell<Option<String>>,
}

/// The connect in progress for `key`, while it is: when dropped (done, failed, or the
/// request that started it gone), the waiters are told.
struct ConnectGuard<'a> {
    upstreams: &'a H2Upstreams,
    key: Key,
    pending: Rc<Connecting>,
}

impl Drop for ConnectGuard<'_> {
    fn drop(&mut self) {
        self.upstreams.connecting.borrow_mut().remove(&self.key);
        self.pending.done.notify_waiters();
    }
}

#[derive(Debug)]
struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams this worker has open on it.
    open: Cell<usize>,
    /// The connection task ended (GOAWAY and its last stream, or a failure), or a stream
    /// could not start on it: no new stream goes there.
    closed: Rc<Cell<bool>>,
    /// When its last stream ended.
    idle_since: Cell<Instant>,
    /// Closed after this long without a stream (the pool's `upstream_idle_timeout`).
    idle_timeout: Duration,
}

/// One stream's claim on a connection; released when dropped.
struct Claim(Rc<H2Conn>);

impl Drop for Claim {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

impl H2Upstreams {
    /// A connection to `addr` with a stream to spare, or a new one (one connect at a time
    /// per backend).
    async fn claim(
        &self,
        addr: SocketAddr,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Claim, String> {
        let key = (addr, tls.map_or(0, |t| t.id));
        loop {
            if let Some(conn) = self.spare(key) {
                return Ok(Self::claimed(conn));
            }
            let pending = self.connecting.borrow().get(&key).cloned();
            if let Some(pending) = pending {
                pending.done.notified().await;
                if let Some(error) = pending.failed.borrow().clone() {
                    return Err(error);
                }
                continue;
            }
            let guard = ConnectGuard {
                upstreams: self,
                key,
                pending: Rc::default(),
            };
            self.connecting
                .borrow_mut()
                .insert(key, Rc::clone(&guard.pending));
            return match connect(addr, tls, connect_timeout, idle_timeout).await {
                Ok(conn) => {
                    let conn = Rc::new(conn);
                    self.conns
                        .borrow_mut()
                        .entry(key)
                        .or_default()
                        .push(Rc::clone(&conn));
                    Ok(Self::claimed(conn))
                }
                Err(error) => {
                    *guard.pending.failed.borrow_mut() = Some(error.clone());
                    Err(error)
                }
            };
        }
    }

    fn claimed(conn: Rc<H2Conn>) -> Claim {
        conn.open.set(conn.open.get() + 1);
        Claim(conn)
    }

    /// Whether this worker has an open HTTP/2 connection to the backend of `key`.
    pub fn speaks_h2(&self, key: Key) -> bool {
        self.conns
            .borrow()
            .get(&key)
            .is_some_and(|list| list.iter().any(|c| !c.closed.get()))
    }

    /// Takes `io`, a connection to `addr` on which the backend chose `h2` by ALPN, as one of
    /// its HTTP/2 connections.
    pub async fn adopt(
        &self,
        key: Key,
        io: Upstream,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<(), String> {
        let conn = handshake(key.0, io, connect_timeout, idle_timeout).await?;
        self.conns
            .borrow_mut()
            .entry(key)
            .or_default()
            .push(Rc::new(conn));
        Ok(())
    }

    /// An open connection with a stream to spare; closed ones are forgotten on the way.
    fn spare(&self, key: (SocketAddr, u32)) -> Option<Rc<H2Conn>> {
        let mut conns = self.conns.borrow_mut();
        let list = conns.get_mut(&key)?;
        list.retain(|c| !c.closed.get());
        list.iter()
            .find(|c| c.open.get() < c.send.current_max_send_streams())
            .cloned()
    }

    /// Closes connections no stream has used for their idle timeout (dropping the last
    /// handle ends the connection with GOAWAY).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.conns.borrow_mut().retain(|_, list| {
            list.retain(|c| {
                !c.closed.get()
                    && (c.open.get() > 0 || now.duration_since(c.idle_since.get()) < c.idle_timeout)
            });
            !list.is_empty()
        });
    }
}

/// A new HTTP/2 connection to `addr`, its task driving it spawned on this worker.
async fn connect(
    addr: SocketAddr,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<H2Conn, String> {
    let io = upstream::connect(addr, connect_timeout, tls, &[])
        .await
        .map_err(|e| e.to_string())?;
    if tls.is_some() && io.alpn() != Some(b"h2") {
        return Err("the backend did not agree to HTTP/2 (ALPN)".into());
    }
    handshake(addr, io, connect_timeout, idle_timeout).await
}

/// HTTP/2 over `io`, a connection to `addr` just opened.
async fn handshake(
    addr: SocketAddr,
    io: Upstream,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<H2Conn, String> {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // Until the backend's SETTINGS say how many streams it takes: few, so a burst
        // waits for them instead of queueing past the backend's limit.
        .initial_max_send_streams(INITIAL_STREAMS)
        .enable_push(false);
    let handshake = builder.handshake::<_, Bytes>(io);
    let (send, connection) = match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(format!("HTTP/2 handshake failed: {e}")),
        Err(_) => return Err("HTTP/2 handshake timed out".into()),
    };
    let closed = Rc::new(Cell::new(false));
    let ended = Rc::clone(&closed);
    tokio::task::spawn_local(async move {
        if let Err(error) = connection.await {
            tracing::debug!(backend = %addr, %error, "HTTP/2 backend connection ended");
        }
        ended.set(true);
    });
    Ok(H2Conn {
        send,
        open: Cell::new(0),
        closed,
        idle_since: Cell::new(Instant::now()),
        idle_timeout,
    })
}

/// One request of `client` on its way to HTTP/2 backends.
pub(crate) struct ToHttp2<'a, D> {
    pub ctx: &'a HttpContext,
    pub client: &'a mut D,
}

impl<D: Downstream> pipeline::Exchange for ToHttp2<'_, D> {
    type Done = Next;

    fn marks(&self) -> &Marks {
        &self.client.request().marks
    }

    /// A stream the backend did not process (refused, or above the last stream its GOAWAY
    /// accepts: RFC 9113 §8.7) is sent once more on another connection when it has no body,
    /// as a stale HTTP/1.1 connection's request is; otherwise another backend may take it.
    async fn attempt(&mut self, backend: &LiveBackend, picked: Instant) -> Attempt<Next> {
        let bodiless = self.client.request().framing == Framing::Empty;
        let mut tries = if bodiless { 2 } else { 1 };
        loop {
            tries -= 1;
            match self.attempt_once(backend, picked).await {
                Ok(attempt) => return attempt,
                Err(why) if tries > 0 => {
                    tracing::debug!(backend = %backend.addr, %why, "HTTP/2 stream not processed; sending it on another connection");
                }
                Err(why) => return Attempt::NotSent(why),
            }
        }
    }
}

impl<D: Downstream> ToHttp2<'_, D> {
    /// One stream; `Err`: the backend did not process it (nothing of it took effect).
    async fn attempt_once(
        &mut self,
        backend: &LiveBackend,
        picked: Instant,
    ) -> Result<Attempt<Next>, String> {
        let ctx = self.ctx;
        let settings = ctx.pool.settings();
        let tls = ctx.backend_tls.as_deref();
        let claim = match ctx
            .h2_upstreams
            .claim(
                backend.addr,
                tls,
                settings.connect_timeout,
                settings.upstream_idle_timeout,
            )
            .await
        {
            Ok(claim) => claim,
            Err(error) => return Ok(Attempt::NotSent(error)),
        };
        let request = match request_for(
            self.client.request(),
            self.client.upstream_head(),
            backend.addr,
            tls.is_some(),
        ) {
            Ok(request) => request,
            Err(error) => return Ok(Attempt::Failed(error)),
        };
        let mut send = claim.0.send.clone();
        if let Err(error) = std::future::poll_fn(|cx| send.poll_ready(cx)).await {
            claim.0.closed.set(true);
            return Err(format!("HTTP/2 connection refused a new stream: {error}"));
        }
        let bodiless = self.client.request().framing == Framing::Empty;
        let (response, body) = match send.send_request(request, bodiless) {
            Ok(pair) => {
                self.client.request().marks.sent_now();
                pair
            }
            Err(error) => {
                claim.0.closed.set(true);
                return Err(format!("HTTP/2 stream not started: {error}"));
            }
        };
        let responded = Cell::new(false);
        let exchange = exchange(
            ctx,
            backend,
            self.client,
            response,
            DataSink(body),
            &responded,
            picked,
        );
        let outcome = tokio::select! {
            outcome = exchange => outcome,
            () = backend.stats.aborted() => {
                tracing::debug!(backend = %backend.addr, "upstream stream reset: drain timed out");
                Ok(if responded.get() {
                    Attempt::Done(Next::Close)
                } else {
                    Attempt::Failed(ProxyError::UpstreamFailed)
                })
            }
        };
        if outcome.is_err() {
            // Refused by GOAWAY or REFUSED_STREAM: no new streams on this connection.
            claim.0.closed.set(true);
        }
        outcome
    }
}

/// The HTTP/2 request for the head the request rules wrote (`head`: HTTP/1.1 bytes).
fn request_for(
    request: &RequestHead,
    head: &[u8],
    backend: SocketAddr,
    tls: bool,
) -> Result<http::Request<()>, ProxyError> {
    let invalid = ProxyError::BadRequest("request not expressible in HTTP/2\n");
    // One copy of the head; the target, authority and every value are slices of it (no
    // allocation per field).
    let shared = Bytes::copy_from_slice(head);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    if !matches!(parsed.parse(&shared), Ok(httparse::Status::Complete(_))) {
        return Err(invalid);
    }
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return Err(invalid);
    };
    let authority = match parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
    {
        Some(host) => Authority::from_maybe_shared(shared.slice_ref(host.value)),
        None => Authority::try_from(backend.to_string()),
    }
    .map_err(|_| invalid)?;
    let path =
        PathAndQuery::from_maybe_shared(shared.slice_ref(path.as_bytes())).map_err(|_| invalid)?;
    let uri = http::Uri::builder()
        .scheme(if tls { Scheme::HTTPS } else { Scheme::HTTP })
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| invalid)?;
    let mut out = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .map_err(|_| invalid)?;
    let fields = out.headers_mut();
    for h in parsed.headers.iter() {
        // Host is :authority now; the rest of what HTTP/2 forbids is gone already, but
        // for the framing the rules wrote. The names fulcrum writes itself are static.
        let name = match headers::classify(h.name) {
            Class::Host | Class::TransferEncoding | Class::Connection | Class::HopByHop => continue,
            Class::XForwardedFor => X_FORWARDED_FOR,
            _ if h.name == "x-forwarded-proto" => X_FORWARDED_PROTO,
            _ if h.name == "x-forwarded-host" => X_FORWARDED_HOST,
            _ => HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| invalid)?,
        };
        let value =
            HeaderValue::from_maybe_shared(shared.slice_ref(h.value)).map_err(|_| invalid)?;
        fields.append(name, value);
    }
    if request.te_trailers {
        fields.insert(TE, HeaderValue::from_static("trailers"));
    }
    debug_assert!(!fields.contains_key(HOST));
    Ok(out)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Uploads the body while waiting for the response head, then relays the response, its
/// trailers included.
async fn exchange<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    client: &mut D,
    response: h2::client::ResponseFuture,
    mut upload_sink: DataSink,
    responded: &Cell<bool>,
    started: Instant,
) -> Result<Attempt<Next>, String> {
    let settings = ctx.pool.settings();
    let request = client.request();
    let (is_head, http10, keep_alive, framing) = (
        request.is_head,
        request.http10,
        request.keep_alive,
        request.framing,
    );
    let set_cookie = request.set_cookie.clone();
    let body_framing = client.body_for_http2();
    let (mut client_read, input, mut sink, marks) = client.split();
    let mut uploaded = framing == Framing::Empty;
    let mut upload_broken = false;
    let mut no_prefix = Vec::new();
    let upload = async {
        relay::body(
            &mut client_read,
            input,
            &mut upload_sink,
            body_framing,
            true,
            Timeouts {
                read: ctx.idle_timeout,
                write: settings.response_timeout,
                min_rate: ctx.limits.min_upload_rate,
            },
            &mut no_prefix,
        )
        .await?;
        upload_sink.finish().map_err(RelayError::Sink)
    };
    tokio::pin!(upload);
    tokio::pin!(response);
    let mut deadline = crate::proxy::deadline(started, settings.response_timeout);
    let head = loop {
        let next = std::future::poll_fn(|cx| poll_head(response.as_mut().get_mut(), cx));
        tokio::select! {
            biased;
            head = next => match head {
                Head::Interim(head) => {
                    // HTTP/1.0 clients do not know 1xx responses.
                    if !http10 {
                        let mut interim = Vec::new();
                        sink.start_informational(head.into_parts().0, &mut interim);
                        if sink.informational(&interim, ctx).await.is_err() {
                            return Ok(Attempt::Done(Next::Close));
                        }
                    }
                }
                Head::Final(Ok(head)) => break head,
                // Not processed (RFC 9113 §8.7): safe to send again.
                Head::Final(Err(error)) if error.reason() == Some(Reason::REFUSED_STREAM) || error.is_go_away() => {
                    return Err(format!("stream not processed: {error}"));
                }
                Head::Final(Err(error)) => {
                    tracing::debug!(backend = %backend.addr, %error, "HTTP/2 upstream exchange failed");
                    return Ok(Attempt::Failed(ProxyError::UpstreamFailed));
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
                Uploaded::End(attempt) => return Ok(attempt),
            },
            () = tokio::time::sleep_until(deadline), if uploaded => {
                return Ok(Attempt::Failed(ProxyError::UpstreamTimeout));
            }
        }
    };
    let status_failed =
        pipeline::observe_head(&ctx.pool, backend, marks, head.status().as_u16(), started);
    responded.set(true);
    let (mut parts, mut body) = head.into_parts();
    let side = ClientSide {
        request_is_head: is_head,
        http10,
        keep_alive: keep_alive && uploaded && !upload_broken && !ctx.idle.is_stopped(),
        set_cookie: set_cookie.as_deref(),
        // A WebSocket over an HTTP/2 backend would need RFC 8441: never asked for.
        upgrade: false,
    };
    let mut out = ctx.buffers.take_write();
    let relayed = match sink.start_parts(&mut parts, body.is_end_stream(), &side, &mut out) {
        Ok(close) => {
            let relayed = relay_body(
                ctx,
                &mut body,
                &mut sink,
                &mut out,
                upload.as_mut(),
                uploaded,
            )
            .await;
            relayed.map(|()| close)
        }
        Err(_) => Err(BodyError::Backend(
            "response head not expressible to the client".into(),
        )),
    };
    ctx.buffers.give_write(out);
    Ok(match relayed {
        Ok(close) => {
            pipeline::record_outcome(backend, status_failed);
            Attempt::Done(if close || upload_broken {
                Next::Close
            } else {
                Next::KeepAlive
            })
        }
        Err(BodyError::Client) => {
            // The client went away: the backend did its part.
            pipeline::record_outcome(backend, status_failed);
            Attempt::Done(Next::Close)
        }
        Err(BodyError::Backend(why)) => {
            backend.stats.record_failure();
            tracing::debug!(backend = %backend.addr, error = %why, "HTTP/2 response not relayed whole");
            Attempt::Done(Next::Close)
        }
    })
}

/// The next head a backend sent on a stream.
enum Head {
    /// A 1xx head (`100 Continue`, `103 Early Hints`); the final one is still to come.
    Interim(http::Response<()>),
    Final(Result<http::Response<RecvStream>, h2::Error>),
}

/// Polls for the stream's next head, an informational one first: the `h2` crate skips those
/// that are still queued once the final head is polled for.
fn poll_head(response: &mut h2::client::ResponseFuture, cx: &mut Context<'_>) -> Poll<Head> {
    if let Poll::Ready(Some(Ok(head))) = response.poll_informational(cx) {
        return Poll::Ready(Head::Interim(head));
    }
    Pin::new(response).poll(cx).map(Head::Final)
}

enum BodyError {
    Client,
    Backend(String),
}

/// Relays the response's DATA frames and trailers, the upload going on meanwhile if it has
/// not ended (a gRPC bidirectional stream).
async fn relay_body<K: ResponseSink, U: std::future::Future<Output = Result<(), RelayError>>>(
    ctx: &HttpContext,
    body: &mut RecvStream,
    sink: &mut K,
    out: &mut Vec<u8>,
    mut upload: std::pin::Pin<&mut U>,
    mut uploaded: bool,
) -> Result<(), BodyError> {
    let read_timeout = ctx.pool.settings().response_timeout;
    loop {
        let data = tokio::select! {
            biased;
            data = relay::timed(read_timeout, body.data()) => data,
            sent = &mut upload, if !uploaded => {
                uploaded = true;
                if let Err(error) = sent {
                    tracing::debug!(?error, "upload ended early while the response streamed");
                }
                continue;
            }
        };
        match data {
            None => {
                return Err(BodyError::Backend(
                    "no DATA for the response timeout".into(),
                ))
            }
            Some(None) => break,
            Some(Some(Ok(data))) => {
                // The window is handed back once the client took the bytes: a slow client
                // slows the backend instead of filling fulcrum.
                let len = data.len();
                if sink.send_body(data, out, ctx.idle_timeout).await.is_err() {
                    return Err(BodyError::Client);
                }
                let _ = body.flow_control().release_capacity(len);
            }
            Some(Some(Err(error))) => return Err(BodyError::Backend(error.to_string())),
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| BodyError::Backend(e.to_string()))?;
    sink.end_body(trailers, out, ctx.idle_timeout)
        .await
        .map_err(|_| BodyError::Client)
}
