//! The HTTP/1.1 request path, in the order a request lives through it:
//! **check** (is it a request we can forward?) → **rewrite** (hop-by-hop headers out,
//! X-Forwarded-* in) → **pick and forward** (a backend from the pool's snapshot, a pooled or
//! new connection, connect failures retried on other backends) → **respond** (headers cleaned,
//! body streamed back).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::{Algorithm, StatusRange};
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::{ProxyBody, Release, UpstreamBody};
use super::client_io::ConnPhase;
use super::error::ProxyError;
use super::hash_key;
use super::headers;
use super::request_body::{BodyProgress, RequestBody};
use super::upstream::{self, Sender, UpstreamPool};
use crate::pool::{random_u64, InFlight, LiveBackend, Pool, Tried};

/// Everything a worker needs to proxy HTTP for one listener.
#[derive(Debug)]
pub struct HttpRoute {
    pub listener: String,
    pub pool: Arc<Pool>,
    pub upstreams: Rc<UpstreamPool>,
    pub max_request_line_bytes: usize,
    /// A request body that stops arriving for this long ends the exchange (408).
    pub body_stall_timeout: Duration,
    /// Response statuses that count as backend failures (outlier detection, counters).
    pub failure_statuses: StatusRange,
}

/// One client connection's context for its requests.
#[derive(Debug)]
pub struct ClientConn {
    pub route: Rc<HttpRoute>,
    pub phase: Rc<ConnPhase>,
    /// The peer's IP, formatted once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
    pub peer: SocketAddr,
}

impl ClientConn {
    pub fn new(route: Rc<HttpRoute>, phase: Rc<ConnPhase>, peer: SocketAddr) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            route,
            phase,
            peer_ip,
            peer,
        }
    }
}

/// hyper's service entry point: every outcome becomes a response, never an error.
pub async fn serve(
    conn: Rc<ClientConn>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let serving = conn.phase.request_started();
    let response = match proxy(&conn, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(listener = %conn.route.listener, %error, "request failed");
            error.into_response()
        }
    };
    Ok(response.map(|body| body.serving(serving)))
}

async fn proxy(
    conn: &ClientConn,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    check(&conn.route, &mut request)?;
    let (key, new_cookie) = hash_key(conn, &request);
    rewrite(conn, &mut request);
    let (parts, body) = request.into_parts();
    let (body, progress) = RequestBody::new(body, conn.route.body_stall_timeout);
    let response = forward(
        &conn.route,
        Request::from_parts(parts, body),
        &progress,
        key,
    )
    .await?;
    let mut response = respond(response);
    if let Some(cookie) = new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The request's hash key for hashing pools and, when the key is a missing cookie that
/// fulcrum should set (`sticky_cookie`), the Set-Cookie header that makes the next request
/// land on the same backend.
fn hash_key(conn: &ClientConn, request: &Request<Incoming>) -> (Option<u64>, Option<HeaderValue>) {
    let settings = &conn.route.pool.settings;
    let Some(key) = &settings.hash_key else {
        return (None, None);
    };
    let found = hash_key::request_key(key, request.headers(), request.uri(), conn.peer.ip());
    match (found, &settings.sticky_cookie) {
        (None, Some(sticky)) => {
            let value = format!("{:016x}", random_u64());
            let cookie = format!(
                "{}={value}; Path=/; Max-Age={}; HttpOnly",
                sticky.name,
                sticky.ttl.as_secs()
            );
            (
                Some(hash_key::cookie_value_key(&value)),
                HeaderValue::from_str(&cookie).ok(),
            )
        }
        (found, _) => (found, None),
    }
}

/// Rejects what cannot be forwarded safely and brings the target into origin form.
fn check(route: &HttpRoute, request: &mut Request<Incoming>) -> Result<(), ProxyError> {
    let line = request.method().as_str().len() + request_target_len(request.uri()) + 10;
    if line > route.max_request_line_bytes {
        return Err(ProxyError::RequestLineTooLong);
    }
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host header\n"));
    }
    if let Some(authority) = request.uri().authority() {
        // Absolute form: the target's authority is the host (RFC 9112 §3.2.2).
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid request target\n"))?;
        request.headers_mut().insert(header::HOST, host);
    } else if hosts == 0 && request.version() == Version::HTTP_11 {
        return Err(ProxyError::BadRequest("missing Host header\n"));
    }
    if request.uri().scheme().is_some() {
        let origin = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse::<Uri>()
            .map_err(|_| ProxyError::BadRequest("invalid request target\n"))?;
        *request.uri_mut() = origin;
    }
    Ok(())
}

fn request_target_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    scheme + authority + path
}

fn rewrite(conn: &ClientConn, request: &mut Request<Incoming>) {
    let headers = request.headers_mut();
    headers::remove_hop_by_hop(headers);
    headers::add_forwarded(headers, &conn.peer_ip, "http");
    // The upstream connection is always HTTP/1.1 keep-alive, whatever the client spoke.
    *request.version_mut() = Version::HTTP_11;
}

/// Picks a backend and sends the request, moving to another backend when a connection
/// cannot be made (nothing was sent, so this is safe for every method) and, for bodiless
/// GET/HEAD/OPTIONS requests, when a backend breaks the exchange before answering.
async fn forward(
    route: &HttpRoute,
    mut request: Request<RequestBody>,
    progress: &BodyProgress,
    key: Option<u64>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let pool = &route.pool;
    let snapshot = pool.snapshot_full();
    let mut tried = Tried::default();
    // A copy for a replay costs a header map per request: take it only when there is
    // another backend to replay on.
    let replay = if pool.settings.connect_attempts > 1 && snapshot.backends.len() > 1 {
        Replay::of(&request)
    } else {
        None
    };
    let mut broke = false;
    for _ in 0..pool.settings.connect_attempts {
        let Some(index) = snapshot.pick(&tried, key) else {
            break;
        };
        tried.push(index);
        let backend = &snapshot.backends[index];
        let in_flight = InFlight::start(&backend.stats);
        let started = tokio::time::Instant::now();
        match send(route, backend, request, progress).await {
            Ok((response, sender)) => {
                backend.stats.record_request();
                if pool.settings.algorithm == Algorithm::P2cEwma {
                    backend
                        .stats
                        .ewma
                        .observe(pool.clock().now(), started.elapsed());
                }
                if route.failure_statuses.contains(response.status().as_u16()) {
                    backend.stats.record_failure();
                } else {
                    backend.stats.record_success();
                }
                let release = Release {
                    pool: Rc::clone(&route.upstreams),
                    addr: backend.addr,
                    sender,
                    idle_timeout: pool.settings.upstream_idle_timeout,
                    max_idle: pool.settings.max_idle_per_backend,
                };
                return Ok(response.map(|body| {
                    ProxyBody::upstream(UpstreamBody {
                        body,
                        in_flight,
                        release: Some(release),
                        ended: false,
                        started,
                    })
                }));
            }
            Err(SendFailure::NotSent(returned, error)) => {
                backend.stats.record_failure();
                tracing::warn!(pool = %pool.name, backend = %backend.addr, %error, "connect failed; trying another backend");
                request = *returned;
            }
            Err(SendFailure::Failed(_)) if progress.stalled() => {
                tracing::debug!(pool = %pool.name, "client stopped sending its request body");
                return Err(ProxyError::ClientBodyTimeout);
            }
            Err(SendFailure::Failed(error)) => {
                backend.stats.record_failure();
                match (&replay, error) {
                    (Some(replay), ProxyError::UpstreamFailed) => {
                        tracing::warn!(pool = %pool.name, backend = %backend.addr, "upstream broke the exchange; retrying the idempotent request on another backend");
                        request = replay.request();
                        broke = true;
                    }
                    (_, error) => {
                        tracing::warn!(pool = %pool.name, backend = %backend.addr, ?error, "upstream failed");
                        return Err(error);
                    }
                }
            }
        }
    }
    Err(if broke {
        ProxyError::UpstreamFailed
    } else if tried.is_empty() {
        ProxyError::NoBackend
    } else {
        ProxyError::ConnectFailed
    })
}

/// A copy of a bodiless GET, HEAD or OPTIONS request, so it can be sent again when a backend
/// breaks the exchange before answering (a backend that dies, or closes a keep-alive
/// connection just as the request is written). Like nginx, fulcrum retries only those
/// methods, and never a request with a body.
struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Option<Self> {
        let method = request.method();
        let idempotent = method == http::Method::GET
            || method == http::Method::HEAD
            || method == http::Method::OPTIONS;
        (idempotent && http_body::Body::is_end_stream(request.body())).then(|| Self {
            method: method.clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        })
    }

    fn request(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

enum SendFailure {
    /// Nothing reached the backend; the request can go elsewhere.
    NotSent(Box<Request<RequestBody>>, String),
    Failed(ProxyError),
}

/// Sends on a pooled connection, or on a new one when none is idle or the pooled one turns
/// out to be closed before the request could be written.
async fn send(
    route: &HttpRoute,
    backend: &LiveBackend,
    mut request: Request<RequestBody>,
    progress: &BodyProgress,
) -> Result<(Response<Incoming>, Sender), SendFailure> {
    let settings = &route.pool.settings;
    let (mut sender, mut fresh) = match route.upstreams.checkout(backend.addr).await {
        Some(sender) => (sender, false),
        None => match Box::pin(upstream::connect(
            &backend.stats,
            backend.addr,
            settings.connect_timeout,
        ))
        .await
        {
            Ok(sender) => (sender, true),
            Err(e) => return Err(SendFailure::NotSent(Box::new(request), e.to_string())),
        },
    };
    loop {
        // The response timeout runs from the moment the whole request has been read.
        let deadline = async {
            progress.finished().await;
            tokio::time::sleep(settings.response_timeout).await;
        };
        let sent = tokio::select! {
            sent = sender.try_send_request(request) => sent,
            () = deadline => return Err(SendFailure::Failed(ProxyError::UpstreamTimeout)),
        };
        match sent {
            Ok(response) => return Ok((response, sender)),
            Err(mut error) => match error.take_message() {
                Some(returned) if fresh => {
                    return Err(SendFailure::NotSent(
                        Box::new(returned),
                        error.error().to_string(),
                    ));
                }
                // The pooled connection closed under us before the request was written.
                Some(returned) => {
                    request = returned;
                    fresh = true;
                    sender = match Box::pin(upstream::connect(
                        &backend.stats,
                        backend.addr,
                        settings.connect_timeout,
                    ))
                    .await
                    {
                        Ok(sender) => sender,
                        Err(e) => {
                            return Err(SendFailure::NotSent(Box::new(request), e.to_string()))
                        }
                    };
                }
                None => {
                    tracing::debug!(backend = %backend.addr, error = %error.error(), "upstream exchange failed");
                    return Err(SendFailure::Failed(ProxyError::UpstreamFailed));
                }
            },
        }
    }
}

/// Cleans the backend's response for the client; the body streams through untouched.
fn respond(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    headers::remove_hop_by_hop(response.headers_mut());
    response
}
