//! Admin routes, as a table of (method, path) → action:
//!
//! | request | action |
//! | --- | --- |
//! | `GET /healthz` | `ok` while fulcrum runs and serves; 503 `standby` on an HA standby |
//! | `GET /api/ha` | HA role, leader, epoch, last renewal, peers, failover history |
//! | `GET /api/pools` | every pool with its backends |
//! | `GET /api/pools/{pool}` | one pool |
//! | `POST /api/pools/{pool}/backends` `{"addr", "weight"}` | add a backend (it warms up) |
//! | `POST /api/pools/{pool}/backends/{addr}/drain` | stop new requests, finish in-flight |
//! | `POST /api/pools/{pool}/backends/{addr}/enable` | back into rotation (slow start) |
//! | `POST /api/pools/{pool}/backends/{addr}/disable` | out of rotation until enabled |
//! | `DELETE /api/pools/{pool}/backends/{addr}` | drain, then remove |

use std::net::SocketAddr;

use bytes::Bytes;
use fulcrum_core::config::defaults;
use fulcrum_core::health::Cause;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::AdminState;
use super::{error, json, text};
use crate::pool::{AdminError, Pool, Pools};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    addr: String,
    weight: Option<u32>,
}

pub fn route(
    state: &AdminState,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let pools: &Pools = &state.pools;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => match &state.ha {
            Some(ha) if !ha.serving() => text(StatusCode::SERVICE_UNAVAILABLE, "standby\n"),
            _ => text(StatusCode::OK, "ok\n"),
        },
        (&Method::GET, ["api", "ha"]) => match &state.ha {
            Some(ha) => json(StatusCode::OK, &ha.status()),
            None => error(
                StatusCode::NOT_FOUND,
                "high availability is not configured (no [ha] section)",
            ),
        },
        (&Method::GET, ["api", "pools"]) => {
            let all: Vec<_> = pools.iter().map(|p| p.status()).collect();
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
            pool.add_backend(addr, new.weight.unwrap_or(defaults::WEIGHT))?;
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
        (_, ["healthz"] | ["api", "pools", ..]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        ),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
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
    match action(pool) {
        Ok((status, value)) => json(status, &value),
        Err(AdminError::NotFound(m)) => error(StatusCode::NOT_FOUND, &m),
        Err(AdminError::Conflict(m)) => error(StatusCode::CONFLICT, &m),
        Err(AdminError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, &m),
    }
}

fn no_pool(name: &str) -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, &format!("no pool named `{name}`"))
}

fn parse_addr(text: &str) -> Result<SocketAddr, AdminError> {
    text.parse()
        .map_err(|_| AdminError::BadRequest(format!("`{text}` is not an address (IP:PORT)")))
}
