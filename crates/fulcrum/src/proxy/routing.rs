//! The route phase of an HTTP request: the listener's route table (fulcrum-core's
//! [`RouteTable`]) asked once per request, right after the head is parsed and checked and
//! before anything pool-specific is done with it (hash key, WebSocket handshake, the head
//! written upstream), so that everything after it is the chosen pool's.
//!
//! An HTTP listener's service is an [`HttpService`]: one [`HttpContext`] per pool it sends to
//! (routes to the same pool share one), and the table that chooses among them.

use std::rc::Rc;

use fulcrum_core::config::Pool as PoolSettings;
use fulcrum_core::routing::{RequestView, Route, RouteTable};

use super::h1::exchange::HttpContext;

/// A parsed request head as a route sees it.
#[derive(Debug)]
pub struct HeadView<'h> {
    pub method: &'h str,
    /// The absolute-form authority or the Host header.
    pub host: Option<&'h [u8]>,
    /// The target's path (`/` for an absolute-form target without one, `*` for OPTIONS *).
    pub path: &'h str,
    pub query: &'h str,
    pub headers: &'h [httparse::Header<'h>],
}

impl RequestView for HeadView<'_> {
    fn method(&self) -> &[u8] {
        self.method.as_bytes()
    }

    fn host(&self) -> Option<&[u8]> {
        self.host
    }

    fn path(&self) -> &[u8] {
        self.path.as_bytes()
    }

    fn query(&self) -> &[u8] {
        self.query.as_bytes()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Chooses the pool a request goes to.
pub trait Router: std::fmt::Debug {
    fn route(&self, request: &HeadView<'_>) -> Routed<'_>;
}

/// Where a request goes: the route that took it (`None`: the listener's own pool) and that
/// pool's settings.
#[derive(Debug)]
pub struct Routed<'r> {
    pub index: Option<usize>,
    pub route: Option<&'r Route>,
    pub settings: Rc<PoolSettings>,
}

/// Every request to one pool (a listener without routes; the fuzzers).
#[derive(Debug)]
pub struct OnePool(pub Rc<PoolSettings>);

impl Router for OnePool {
    fn route(&self, _: &HeadView<'_>) -> Routed<'_> {
        Routed {
            index: None,
            route: None,
            settings: Rc::clone(&self.0),
        }
    }
}

/// An HTTP listener's service on one worker.
#[derive(Debug)]
pub struct HttpService {
    /// The listener's own pool: requests no route takes, and everything that happens before
    /// a request is routed (a head refused, a timeout).
    pub default: Rc<HttpContext>,
    pub table: RouteTable,
    /// `targets[i]` serves `table.routes[i]`.
    pub targets: Vec<Rc<HttpContext>>,
}

impl HttpService {
    /// The context of the route `index` chose.
    pub fn context(&self, index: Option<usize>) -> &Rc<HttpContext> {
        index
            .and_then(|i| self.targets.get(i))
            .unwrap_or(&self.default)
    }
}

impl Router for HttpService {
    fn route(&self, request: &HeadView<'_>) -> Routed<'_> {
        match self.table.find(request) {
            Some((i, route)) => Routed {
                index: Some(i),
                route: Some(route),
                settings: self.context(Some(i)).pool.settings(),
            },
            None => Routed {
                index: None,
                route: None,
                settings: self.default.pool.settings(),
            },
        }
    }
}
