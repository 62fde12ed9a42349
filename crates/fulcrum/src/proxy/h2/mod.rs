//! HTTP/2 from clients (RFC 9113), over TLS (ALPN `h2`) or in clear text (prior knowledge,
//! told from HTTP/1.1 by the connection preface). The `h2` crate does the framing, HPACK,
//! flow control and the protocol's abuse defences (rapid reset, CONTINUATION floods, header
//! list size); fulcrum gives each stream to the same request pipeline an HTTP/1.1 request
//! takes, so every stream is balanced, retried and accounted on its own.
//!
//! - `server`: one client connection — SETTINGS from the listener's limits, streams
//!   accepted and spawned, idle timeout and GOAWAY on shutdown;
//! - `request`: a stream's request head translated into the HTTP/1.1 head fulcrum's request
//!   rules read (pseudo-headers → request line and Host, cookies joined);
//! - `stream`: one stream as the pipeline's client (request body in, response out);
//! - `flow`: bodies written within a stream's flow-control window;
//! - `header_block`: a request head's frames timed by the listener's header timeout;
//! - `upstream`: HTTP/2 to backends — multiplexed connections, each request a stream;
//! - `alpn`: `protocol = "auto"`, each backend spoken to in the protocol it chose by ALPN.

pub mod alpn;
pub mod flow;
pub mod header_block;
pub mod request;
pub mod server;
pub mod stream;
pub mod upstream;

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client with prior knowledge starts with
/// it, and no HTTP/1.1 request can.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
