//! The PROXY protocol on the way in: a listener that accepts it reads the header off each new
//! connection (only from its allowed sources, within its deadline) before anything else, and
//! the connection is then served as the client the header names. On the way out, the header
//! for a backend connection.
//!
//! The header is peeked, parsed, and only its own bytes are read, so whatever follows (a TLS
//! ClientHello, a request) stays in the socket for the next stage, which may even be the
//! kernel's splice.

use fulcrum_core::config::ProxyProtocolIn;
use fulcrum_core::proxy_protocol::{self, Header, Parsed, Version, V2_MAX};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Addrs;

/// How long to wait before peeking again at a header that arrived in pieces (peeking at the
/// same bytes again would not wait at all).
const PIECES_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Reads the connection's PROXY header; the addresses to serve it with, or why it is closed.
pub async fn read(
    stream: &mut TcpStream,
    socket: Addrs,
    settings: &ProxyProtocolIn,
) -> Result<Addrs, &'static str> {
    if !settings.allow.contains(socket.peer.ip()) {
        return Err("a source not allowed to send a PROXY header");
    }
    let deadline = super::deadline(Instant::now(), settings.timeout);
    let mut buffer = vec![0u8; V2_MAX];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await;
        let n = match peeked {
            Err(_) => return Err("no PROXY header within the timeout"),
            Ok(Err(_)) => return Err("the connection failed before its PROXY header"),
            Ok(Ok(0)) => return Err("the connection closed before its PROXY header"),
            Ok(Ok(n)) => n,
        };
        match proxy_protocol::parse(&buffer[..n]) {
            Ok(Parsed::Complete { header, len }) => {
                if stream.read_exact(&mut buffer[..len]).await.is_err() {
                    return Err("the connection failed while its PROXY header was read");
                }
                return Ok(match header {
                    Header::Proxied {
                        source,
                        destination,
                    } => Addrs {
                        peer: source,
                        local: destination,
                    },
                    Header::Local => socket,
                });
            }
            Ok(Parsed::Incomplete) => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(PIECES_PAUSE))
                    .await
                    .is_err()
                {
                    return Err("no PROXY header within the timeout");
                }
            }
            Err(invalid) => return Err(invalid.0),
        }
    }
}

/// The header a backend connection starts with when its pool asks for one.
pub fn for_backend(version: Option<Version>, addrs: Addrs) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(version) = version {
        proxy_protocol::write(&mut out, version, addrs.peer, addrs.local);
    }
    out
}
