//! The admin API: pool and backend state as JSON, and a liveness probe for fulcrum itself.
//! It runs on its own thread so it answers even when the workers are saturated.
//!
//! - `GET /healthz` → `200 ok`
//! - `GET /api/pools` → every pool with its backends and their counters
//! - `GET /api/pools/{name}` → one pool, or 404

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pool::Pools;

pub fn spawn(
    socket: StdListener,
    pools: Arc<Pools>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(e) => {
                                tracing::warn!(error = %e, "admin accept failed");
                                continue;
                            }
                        },
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    };
                    let pools = Arc::clone(&pools);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let pools = Arc::clone(&pools);
                            async move { Ok::<_, Infallible>(route(&pools, &req)) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })
}

fn route(pools: &Pools, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
    }
    let path = request.uri().path();
    match path.trim_end_matches('/') {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/api/pools" => {
            let all: Vec<_> = pools.iter().map(|p| p.status()).collect();
            json(&all)
        }
        other => match other.strip_prefix("/api/pools/") {
            Some(name) => match pools.get(name) {
                Some(pool) => json(&pool.status()),
                None => text(StatusCode::NOT_FOUND, "no such pool\n"),
            },
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
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

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the status\n",
        ),
    }
}
