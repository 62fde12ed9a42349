//! The admin API: pool and backend state as JSON, backend lifecycle actions, and a liveness
//! probe for fulcrum itself. It runs on its own thread so it answers even when the workers are
//! saturated. Routes are in [`routes`], the dashboard's files in [`ui`]; this file serves
//! them, checks the bearer token and refuses actions a browser sends on another site's behalf.

mod routes;
mod ui;

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ha::HaShared;
use crate::metrics::collect::Sources;
use crate::pool::Pools;
use crate::reload::{ReloadRecord, Reloader};
use crate::views::ListenerViews;

/// What the admin API reads and acts on.
#[derive(Debug)]
pub struct AdminState {
    pub pools: Arc<Pools>,
    /// `None` without an `[ha]` section.
    pub ha: Option<Arc<HaShared>>,
    /// Every listener's connection counts and TLS terminations (a reload replaces them).
    pub listeners: Arc<ListenerViews>,
    pub reloads: Arc<ReloadRecord>,
    /// Asks the owner of the running app to reload (`POST /api/reload`).
    pub reloader: Reloader,
    /// When the process started (Unix seconds), for the metrics.
    pub started_unix: f64,
}

impl AdminState {
    /// What `/metrics` reads.
    pub fn metrics_sources(&self) -> Sources {
        Sources {
            pools: Arc::clone(&self.pools),
            listeners: Arc::clone(&self.listeners),
            ha: self.ha.clone(),
            reloads: Arc::clone(&self.reloads),
            started_unix: self.started_unix,
        }
    }
}

/// At shutdown, how long an open connection may take to deliver a request it already sent.
const UNREAD_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// At shutdown, how long requests already received may take to be answered.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `POST /api/reload` waits for the reload to be made.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest request body the admin API reads (a backend to add is a few dozen bytes).
const MAX_BODY: usize = 64 * 1024;

pub fn spawn(
    socket: StdListener,
    state: AdminState,
    token: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token: Option<Arc<str>> = token.map(Into::into);
    let state = Arc::new(state);
    std::thread::Builder::new()
        .name("fulcrum-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(socket) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin listener unusable");
                        return;
                    }
                };
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(e) => {
                                tracing::warn!(error = %e, "admin accept failed");
                                continue;
                            }
                        },
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    };
                    let state = Arc::clone(&state);
                    let token = token.clone();
                    let mut shutdown = shutdown.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let state = Arc::clone(&state);
                            let token = token.clone();
                            async move {
                                Ok::<_, Infallible>(handle(&state, token.as_deref(), req).await)
                            }
                        });
                        let connection =
                            http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => return,
                            _ = shutdown.wait_for(|stop| *stop) => {}
                        }
                        // Stopping (or handing over to a new binary, which shares this
                        // socket): a request already sent (a connection accepted just before
                        // is likely to carry one still unread) is given a moment to be read,
                        // then the request being served is answered and the connection
                        // closes.
                        if tokio::time::timeout(UNREAD_REQUEST_WAIT, connection.as_mut())
                            .await
                            .is_ok()
                        {
                            return;
                        }
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    });
                    while connections.try_join_next().is_some() {}
                }
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    while connections.join_next().await.is_some() {}
                })
                .await;
            });
        })
}

async fn handle(
    state: &AdminState,
    token: Option<&str>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    // External probes (a load balancer in front, keepalived, Kubernetes) have no token; the
    // dashboard's files hold no data and ask for the token themselves.
    let open = path.trim_matches('/') == "healthz" || ui::is_asset(&path);
    if let Some(token) = token {
        if !open && !authorized(&request, token) {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if cross_site(&request) {
        return error(
            StatusCode::FORBIDDEN,
            "refused: a browser sent this on behalf of another site (Origin or Sec-Fetch-Site says so)",
        );
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    if parts.method == Method::POST && path.trim_end_matches('/') == "/api/reload" {
        return reload(state).await;
    }
    // HEAD is answered as GET would be, without the body (its length is kept).
    let head = parts.method == Method::HEAD;
    let method = if head { Method::GET } else { parts.method };
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let response = match ui::asset(&path, token.is_some()) {
        Some(page) if method == Method::GET => page,
        _ => routes::route(
            state,
            routes::Asked {
                method: &method,
                path: &path,
                query: query.as_deref(),
                body: &body,
                accept,
            },
        ),
    };
    if !head {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let length = body.size_hint().exact().unwrap_or(0);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// `POST /api/reload`: the running process reads its configuration file again and applies
/// the difference; 200 with the changes, or 422 with the errors (nothing changed).
async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    match tokio::time::timeout(RELOAD_WAIT, state.reloader.reload()).await {
        Ok(Some(outcome)) => {
            // 422: the request was fine, the file is not (the old configuration keeps serving).
            let status = if outcome.applied {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &outcome)
        }
        Ok(None) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no reload was made: this fulcrum does not reload through the API (embedded), or is busy stopping",
        ),
    }
}

/// An action (anything but GET and HEAD) that a browser sends from a page of another origin:
/// without this, any web page open on the operator's machine could drain backends through a
/// loopback admin API that has no token (a plain form POST needs no CORS permission).
/// Browsers send `Sec-Fetch-Site` and `Origin` with such requests; curl and scripts send
/// neither and are not affected.
fn cross_site<B>(request: &Request<B>) -> bool {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return false;
    }
    let headers = request.headers();
    let value = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = value(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    match value(header::ORIGIN) {
        None => false,
        Some(origin) => {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            authority.is_none() || authority != value(header::HOST)
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings. The
/// scheme is case-insensitive (RFC 9110 §11.1).
fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let Some(presented) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, presented)| presented.trim())
    else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the answer\n",
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}
