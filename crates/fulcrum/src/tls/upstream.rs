//! TLS to a pool's backends: the client configuration (the certificate always verified,
//! against the pool's CA or the system's trust store), the name sent as SNI and verified, and
//! an id that keeps pooled connections of different TLS identities apart.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use fulcrum_core::config::UpstreamTls;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// One pool's TLS to its backends.
#[derive(Debug)]
pub struct BackendTls {
    /// Unique per pool with TLS (0 is plain TCP): idle connections are pooled by backend
    /// address *and* this, so a connection verified for one pool's name is never handed to
    /// another pool expecting a different one.
    pub id: u32,
    config: Arc<ClientConfig>,
    /// `None`: the backend's IP address is the name.
    server_name: Option<ServerName<'static>>,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

impl BackendTls {
    /// Builds the pool's TLS client from `tls` (reading its CA file, or the system's store);
    /// errors name `path`.
    pub fn load(path: &str, tls: &UpstreamTls, alpn: &[&[u8]]) -> Result<Self, String> {
        let roots = match &tls.ca {
            Some(ca) => super::certs::load_roots(&format!("{path}.ca"), ca)?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(format!(
                        "{path}.ca: not set, and the system's trust store has no certificate (install ca-certificates, or set ca)"
                    ));
                }
                roots
            }
        };
        let mut config = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("{path}: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server_name = match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| format!("{path}.server_name: `{name}`: {e}"))?,
            ),
            None => None,
        };
        Ok(BackendTls {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config: Arc::new(config),
            server_name,
        })
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.config))
    }

    /// The name to send and verify for a backend at `addr`.
    pub fn name_for(&self, addr: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}
