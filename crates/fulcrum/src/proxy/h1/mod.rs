//! fulcrum's own HTTP/1.1 proxy codec.
//!
//! A proxy needs much less than a general HTTP library: find where a head ends, check it,
//! rewrite a few headers, and move body bytes until their framing says stop. Doing exactly
//! that over the two sockets of an exchange, in one task, keeps the hot path to the system
//! calls it cannot avoid: no header map, no body frames, no per-connection task or channel
//! for the upstream side, and no buffer held by an idle connection.

pub mod buffer;
pub mod conn;
pub mod downstream;
pub mod exchange;
pub mod framing;
pub mod head_end;
pub mod idle;
pub mod relay;
pub mod request;
pub mod response;
pub mod switched;
pub mod websocket;
