//! fulcrum, the load balancer: everything with I/O. The pure logic (configuration, balancing
//! algorithms) lives in `fulcrum-core`; this crate binds sockets, proxies bytes and requests,
//! serves the admin API and runs the built-in demo.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod demo;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod health;
pub mod lab;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod register;
pub mod reload;
pub mod route_cli;
pub mod secrets;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod views;
pub mod ws_registry;

pub use app::RunningApp;
