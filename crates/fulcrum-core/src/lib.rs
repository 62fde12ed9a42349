//! fulcrum-core: the load balancer's pure logic.
//!
//! Everything here is deterministic and free of I/O: configuration parsing and validation,
//! and the balancing algorithms. Time and randomness are passed in by the caller, so every
//! behaviour can be tested exactly, without sockets, sleeps or a runtime.

pub mod balance;
pub mod config;
pub mod ewma;
pub mod ha;
pub mod health;
pub mod latency;
pub mod limits;
pub mod proxy_protocol;
pub mod rand;
pub mod reload;
pub mod retry;
pub mod routing;
pub mod warn_gate;
pub mod websocket;
