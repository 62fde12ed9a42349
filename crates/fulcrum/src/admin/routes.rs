//! Admin routes, as a table of (method, path) → action:
//!
//! | request | action |
//! | --- | --- |
//! | `GET /` | the endpoints, as this table |
//! | `GET /healthz` | `ok` while fulcrum runs and serves; 503 `standby` on an HA standby |
//! | `GET /ui` | the dashboard (a page whose script reads the routes below) |
//! | `GET /metrics` | Prometheus metrics (text 0.0.4, or OpenMetrics when `Accept` asks) |
//! | `GET /api/ha` | HA role, leader, epoch, last renewal, peers, failover history |
//! | `GET /api/pools` | every pool with its backends |
//! | `GET /api/ws/connections` `?backend=&pool=` | the WebSockets open now |
//! | `GET /api/ws/connections/{id}` | one of them, by its id |
//! | `GET /api/reload` | reloads applied and refused, the last one, the upgrade generation |
//! | `POST /api/reload` | read the configuration file again and apply the difference |
//! | `GET /api/tls` | each TLS listener's certificates, rotation and handshakes |
//! | `POST /api/tls/reload` | read every certificate file again now |
//! | `GET /api/pools/{pool}` | one pool |
//! | `POST /api/pools/{pool}/backends` `{"addr", "weight"}` | add a backend (it warms up) |
//! | `POST /api/pools/{pool}/backends/{addr}/drain` | stop new requests, finish in-flight |
//! | `POST /api/pools/{pool}/backends/{addr}/enable` | back into rotation (slow start) |
//! | `POST /api/pools/{pool}/backends/{addr}/disable` | out of rotation until enabled |
//! | `DELETE /api/pools/{pool}/backends/{addr}` | drain, then remove |
//!
//! `HEAD` works wherever `GET` does; a known path with another method gets 405 with `Allow`;
//! `{addr}` may be percent-encoded (`%5B%3A%3A1%5D%3A8080` for `[::1]:8080`).

use std::net::SocketAddr;

use bytes::Bytes;
use fulcrum_core::config::defaults;
use fulcrum_core::health::Cause;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::AdminState;
use super::{error, json, text};
use crate::metrics::collect;
use crate::metrics::exposition::Format;
use crate::pool::{AdminError, Pool, Pools};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    addr: String,
    weight: Option<u32>,
}

/// What an admin request asks.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// The query string (`backend=…` for the WebSocket list).
    pub query: Option<&'a str>,
    pub body: &'a Bytes,
    /// The request's `Accept` header (the metrics' format).
    pub accept: Option<&'a str>,
}

pub fn route(state: &AdminState, asked: Asked<'_>) -> Response<Full<Bytes>> {
    let Asked {
        method,
        path,
        query,
        body,
        accept,
    } = asked;
    let pools: &Pools = &state.pools;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, [""]) => json(StatusCode::OK, &endpoints()),
        (&Method::GET, ["healthz"]) => match &state.ha {
            Some(ha) if !ha.serving() => text(StatusCode::SERVICE_UNAVAILABLE, "standby\n"),
            _ => text(StatusCode::OK, "ok\n"),
        },
        (&Method::GET, ["metrics"]) => metrics(state, accept),
        (&Method::GET, ["api", "ha"]) => match &state.ha {
            Some(ha) => json(StatusCode::OK, &ha.status()),
            None => error(
                StatusCode::NOT_FOUND,
                "high availability is not configured (no [ha] section)",
            ),
        },
        (&Method::GET, ["api", "listeners"]) => json(
            StatusCode::OK,
            &serde_json::json!({
                "listeners": state.listeners.stats().iter().map(|l| l.status()).collect::<Vec<_>>()
            }),
        ),
        (&Method::GET, ["api", "ws", "connections"]) => websockets(state, query),
        (&Method::GET, ["api", "ws", "registry"]) => json(
            StatusCode::OK,
            &serde_json::json!({
                "registries": state
                    .pools
                    .all()
                    .iter()
                    .filter_map(|p| p.ws_registry().map(|r| r.status()))
                    .collect::<Vec<_>>()
            }),
        ),
        (&Method::GET, ["api", "ws", "connections", id]) => {
            let found = state
                .listeners
                .stats()
                .iter()
                .flat_map(|l| l.websockets.list(|c| c.id == *id))
                .next();
            match found {
                Some(connection) => json(StatusCode::OK, &connection),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no open WebSocket with id `{id}`"),
                ),
            }
        }
        (&Method::GET, ["api", "reload"]) => json(StatusCode::OK, &state.reloads.status()),
        (&Method::GET, ["api", "tls"]) => json(
            StatusCode::OK,
            &serde_json::json!({
                "listeners": state.listeners.tls().iter().map(|t| t.status()).collect::<Vec<_>>()
            }),
        ),
        (&Method::POST, ["api", "tls", "reload"]) => {
            let terminators = state.listeners.tls().clone();
            let results: Vec<serde_json::Value> = terminators
                .iter()
                .map(|t| match t.reload(true) {
                    Ok(_) => serde_json::json!({ "listener": t.listener, "reloaded": true }),
                    Err(error) => serde_json::json!({ "listener": t.listener, "reloaded": false, "error": error }),
                })
                .collect();
            let failed = results.iter().any(|r| r["reloaded"] == false);
            // 422: the request was fine, the files on disk are not (the old ones keep serving).
            let status = if failed {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            json(status, &serde_json::json!({ "listeners": results }))
        }
        (&Method::GET, ["api", "pools"]) => {
            let all: Vec<_> = pools.all().iter().map(|p| p.status()).collect();
            json(StatusCode::OK, &all)
        }
        (&Method::GET, ["api", "pools", pool]) => match pools.get(pool) {
            Some(pool) => json(StatusCode::OK, &pool.status()),
            None => no_pool(pool),
        },
        (&Method::POST, ["api", "pools", pool, "backends"]) => with_pool(pools, pool, |pool| {
            let new: NewBackend = serde_json::from_slice(body).map_err(|e| {
                AdminError::BadRequest(format!(
                    "expected {{\"addr\": \"IP:PORT\", \"weight\": N}}: {e}"
                ))
            })?;
            let addr = parse_addr(&new.addr)?;
            pool.add_backend(addr, new.weight.unwrap_or(defaults::WEIGHT), Cause::Admin)?;
            Ok((
                StatusCode::CREATED,
                serde_json::json!({ "added": addr, "state": "warming" }),
            ))
        }),
        (&Method::POST, ["api", "pools", pool, "backends", addr, action]) => {
            with_pool(pools, pool, |pool| {
                let addr = parse_addr(addr)?;
                match *action {
                    "drain" => {
                        let timeout = pool.drain(addr, Cause::Admin)?;
                        Ok((
                            StatusCode::OK,
                            serde_json::json!({ "draining": addr, "drain_timeout_ms": timeout.as_millis() as u64 }),
                        ))
                    }
                    "enable" => {
                        pool.enable(addr)?;
                        Ok((StatusCode::OK, serde_json::json!({ "enabled": addr })))
                    }
                    "disable" => {
                        pool.disable(addr)?;
                        Ok((StatusCode::OK, serde_json::json!({ "disabled": addr })))
                    }
                    other => Err(AdminError::NotFound(format!(
                        "unknown action `{other}`; valid: drain, enable, disable"
                    ))),
                }
            })
        }
        (&Method::DELETE, ["api", "pools", pool, "backends", addr]) => {
            with_pool(pools, pool, |pool| {
                let addr = parse_addr(addr)?;
                let timeout = pool.remove_backend(addr, Cause::Admin)?;
                Ok((
                    StatusCode::OK,
                    serde_json::json!({ "removing": addr, "drain_timeout_ms": timeout.as_millis() as u64 }),
                ))
            })
        }
        (_, known) => match allowed(known) {
            Some(allow) => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("method not allowed on this path; allowed: {allow}"),
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
            None => error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint; GET / lists them",
            ),
        },
    }
}

/// The methods a known path takes.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    match segments {
        [""]
        | ["healthz"]
        | ["metrics"]
        | ["ui"]
        | ["ui", "app.js" | "style.css"]
        | ["api", "listeners"]
        | ["api", "ws", "connections"]
        | ["api", "ws", "connections", _]
        | ["api", "ha"]
        | ["api", "tls"]
        | ["api", "pools"]
        | ["api", "pools", _] => Some("GET, HEAD"),
        ["api", "pools", _, "backends"]
        | ["api", "pools", _, "backends", _, _]
        | ["api", "tls", "reload"] => Some("POST"),
        ["api", "pools", _, "backends", _] => Some("DELETE"),
        ["api", "reload"] => Some("GET, HEAD, POST"),
        _ => None,
    }
}

/// What `GET /` answers: every endpoint with what it does.
fn endpoints() -> serde_json::Value {
    serde_json::json!({ "endpoints": [
        { "method": "GET", "path": "/healthz", "does": "ok while serving; 503 standby on an HA standby (no token needed)" },
        { "method": "GET", "path": "/ui", "does": "the dashboard: pools and backends live, with drain, enable and disable buttons (the page asks for the token when one is set)" },
        { "method": "GET", "path": "/metrics", "does": "Prometheus metrics: text format 0.0.4, or OpenMetrics when Accept asks for it" },
        { "method": "GET", "path": "/api/ha", "does": "HA role, leader, epoch, peers, failovers" },
        { "method": "GET", "path": "/api/listeners", "does": "every listener with its client connections by protocol (http1, http2, tcp)" },
        { "method": "GET", "path": "/api/pools", "does": "every pool with its backends" },
        { "method": "GET", "path": "/api/ws/connections", "does": "the WebSockets open now (id, listener, pool, backend, client, since); ?backend=IP:PORT and ?pool=NAME narrow the list" },
        { "method": "GET", "path": "/api/ws/connections/{id}", "does": "one open WebSocket, by the id its backend got in the handshake" },
        { "method": "GET", "path": "/api/ws/registry", "does": "each pool's Redis registry of WebSockets: up, connections held, round trips, errors, rewrites, last error" },
        { "method": "GET", "path": "/api/reload", "does": "reloads applied and refused, the last one (when, trigger, changes or errors), the upgrade generation, the pid" },
        { "method": "POST", "path": "/api/reload", "does": "read the configuration file again and apply the difference: 200 with the changes, 422 with the errors (nothing changed)" },
        { "method": "GET", "path": "/api/tls", "does": "each TLS listener's certificates (names, expiry), rotation, handshakes" },
        { "method": "POST", "path": "/api/tls/reload", "does": "read every certificate file again now; 422 when one cannot be loaded (the previous set keeps serving)" },
        { "method": "GET", "path": "/api/pools/{pool}", "does": "one pool" },
        { "method": "POST", "path": "/api/pools/{pool}/backends", "does": "add a backend: {\"addr\": \"IP:PORT\", \"weight\": N}" },
        { "method": "POST", "path": "/api/pools/{pool}/backends/{addr}/drain", "does": "stop new requests, finish in-flight" },
        { "method": "POST", "path": "/api/pools/{pool}/backends/{addr}/enable", "does": "back into rotation through slow start" },
        { "method": "POST", "path": "/api/pools/{pool}/backends/{addr}/disable", "does": "out of rotation until enabled" },
        { "method": "DELETE", "path": "/api/pools/{pool}/backends/{addr}", "does": "drain, then remove" },
    ]})
}

/// `GET /api/ws/connections`, narrowed by `backend=IP:PORT` and `pool=NAME`.
fn websockets(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    let (mut backend, mut pool) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "backend" => match parse_addr(value) {
                Ok(addr) => backend = Some(addr),
                Err(AdminError::BadRequest(m)) => return error(StatusCode::BAD_REQUEST, &m),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            },
            "pool" => match percent_decode(value) {
                Some(name) => pool = Some(name),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "`pool` is not percent-encoded UTF-8",
                    )
                }
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown parameter `{other}`; valid: backend, pool"),
                )
            }
        }
    }
    let connections: Vec<_> = state
        .listeners
        .stats()
        .iter()
        .flat_map(|l| {
            l.websockets.list(|c| {
                backend.is_none_or(|b| c.backend == b)
                    && pool.as_deref().is_none_or(|p| c.pool == p)
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "count": connections.len(), "connections": connections }),
    )
}

/// `GET /metrics`, in the format the scraper accepts.
fn metrics(state: &AdminState, accept: Option<&str>) -> Response<Full<Bytes>> {
    let format = Format::negotiate(accept);
    match collect::render(&state.metrics_sources(), format) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        ),
    }
}

fn with_pool(
    pools: &Pools,
    name: &str,
    action: impl FnOnce(&Pool) -> Result<(StatusCode, serde_json::Value), AdminError>,
) -> Response<Full<Bytes>> {
    let Some(pool) = pools.get(name) else {
        return no_pool(name);
    };
    match action(&pool) {
        Ok((status, value)) => json(status, &value),
        Err(AdminError::NotFound(m)) => error(StatusCode::NOT_FOUND, &m),
        Err(AdminError::Conflict(m)) => error(StatusCode::CONFLICT, &m),
        Err(AdminError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, &m),
    }
}

fn no_pool(name: &str) -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, &format!("no pool named `{name}`"))
}

/// A backend address from a path segment, percent-encoded or not.
fn parse_addr(text: &str) -> Result<SocketAddr, AdminError> {
    let bad = || AdminError::BadRequest(format!("`{text}` is not an address (IP:PORT)"));
    percent_decode(text)
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_may_be_percent_encoded() {
        for (text, addr) in [
            ("127.0.0.1:9001", "127.0.0.1:9001"),
            ("127.0.0.1%3A9001", "127.0.0.1:9001"),
            ("%5B%3A%3A1%5D%3A8080", "[::1]:8080"),
            ("[::1]:8080", "[::1]:8080"),
        ] {
            assert_eq!(
                parse_addr(text).map(|a| a.to_string()),
                Ok(addr.to_string()),
                "{text}"
            );
        }
        for bad in ["127.0.0.1%3", "127.0.0.1%zz9001", "%ff%fe", "nope"] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn known_paths_name_their_methods() {
        assert_eq!(allowed(&["api", "pools", "app"]), Some("GET, HEAD"));
        assert_eq!(allowed(&["api", "pools", "app", "backends"]), Some("POST"));
        assert_eq!(
            allowed(&["api", "pools", "app", "backends", "127.0.0.1:1"]),
            Some("DELETE")
        );
        assert_eq!(allowed(&["api", "nothing"]), None);
    }
}
