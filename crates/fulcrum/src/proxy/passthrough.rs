//! TLS passthrough: fulcrum reads the client's ClientHello without answering it, routes the
//! connection by the server name in it (Traefik's `HostSNI`, HAProxy's `req.ssl_sni`), and
//! relays every byte, the ClientHello first, to a backend of the chosen pool. The TLS session
//! is between the client and the backend: fulcrum holds no certificate and sees no plaintext.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use fulcrum_core::config::{route_by_server_name, SniRoute};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::l4::{self, TcpContext};
use super::Addrs;

/// The ClientHello must arrive within this from accept.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A ClientHello is one handshake message of at most 2^24 bytes, but real ones are a few
/// hundred bytes to a few KiB (post-quantum key shares included); anything larger is refused.
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// One passthrough listener on one worker: its routes, and the TCP context of each pool they
/// name (by pool name).
#[derive(Debug)]
pub struct PassthroughContext {
    pub listener: String,
    pub routes: Vec<SniRoute>,
    pub pools: HashMap<String, Rc<TcpContext>>,
    /// For names no route matches (and clients without SNI); `None`: they are closed.
    pub default: Option<Rc<TcpContext>>,
}

pub async fn serve(ctx: &PassthroughContext, mut client: TcpStream, addrs: Addrs) {
    let peer = addrs.peer;
    let hello = match tokio::time::timeout(CLIENT_HELLO_TIMEOUT, read_client_hello(&mut client))
        .await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(why)) => {
            tracing::debug!(listener = %ctx.listener, %peer, why, "not a TLS ClientHello; closing");
            return;
        }
        Err(_) => {
            tracing::debug!(listener = %ctx.listener, %peer, "no ClientHello within the timeout; closing");
            return;
        }
    };
    let chosen = route_by_server_name(&ctx.routes, hello.server_name.as_deref())
        .and_then(|route| ctx.pools.get(&route.pool))
        .or(ctx.default.as_ref());
    let Some(target) = chosen else {
        tracing::debug!(listener = %ctx.listener, %peer, server_name = ?hello.server_name, "no route for this server name and no default pool; closing");
        return;
    };
    l4::serve(target, client, addrs, &hello.bytes).await;
}

/// The ClientHello as read (to be sent on first) and the server name in it.
struct ClientHello {
    bytes: Vec<u8>,
    server_name: Option<String>,
}

/// Reads until the bytes hold a whole ClientHello, parsed by rustls' own acceptor (so this
/// reads the handshake exactly as a TLS server would, and no parser is written by hand here).
async fn read_client_hello(stream: &mut TcpStream) -> Result<ClientHello, &'static str> {
    let mut bytes = Vec::with_capacity(2048);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| "the connection failed")?;
        if n == 0 {
            return Err("the client closed before a whole ClientHello");
        }
        bytes.extend_from_slice(&chunk[..n]);
        if bytes.len() > MAX_CLIENT_HELLO {
            return Err("the ClientHello is too large");
        }
        // The record layer's first byte is 22 (handshake) for TLS; anything else is not.
        if bytes[0] != 22 {
            return Err("the first record is not a TLS handshake");
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut unread = &bytes[..];
        while !unread.is_empty() {
            match acceptor.read_tls(&mut unread) {
                Ok(0) | Err(_) => return Err("the ClientHello is malformed or too large"),
                Ok(_) => {}
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let server_name = accepted
                        .client_hello()
                        .server_name()
                        .map(str::to_ascii_lowercase);
                    return Ok(ClientHello { bytes, server_name });
                }
                Ok(None) => {}
                Err(_) => return Err("the ClientHello is malformed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, as rustls' client writes it, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn the_server_name_is_read_from_a_hello_that_arrives_in_pieces() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello("DB.example.com");
        let sent = hello.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut client = TcpStream::connect(addr).await.unwrap();
            for piece in sent.chunks(7) {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let read = read_client_hello(&mut server).await.unwrap();
        assert_eq!(read.server_name.as_deref(), Some("db.example.com"));
        assert_eq!(read.bytes, hello, "every byte is kept to be relayed");
    }
}
