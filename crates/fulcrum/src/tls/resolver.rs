//! Choosing the certificate for a handshake by the client's server name (SNI), among each
//! certificate's own DNS names: an exact name first, then a wildcard one level up
//! (`*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`, as RFC
//! 6125 says), then the listener's first certificate. The set is swapped whole on rotation, so
//! a handshake sees either the old set or the new one.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCert;

/// The certificates of one listener, indexed by name.
#[derive(Debug)]
pub struct CertSet {
    /// In configuration order; the first is the default.
    pub certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, usize>,
}

impl CertSet {
    /// `certs` must not be empty (validation requires one).
    pub fn new(certs: Vec<LoadedCert>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                // The first certificate to claim a name keeps it.
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        CertSet {
            certs,
            exact,
            wildcard,
        }
    }

    /// The certificate for `server_name` (the default when none carries it, or without SNI).
    pub fn choose(&self, server_name: Option<&str>) -> Option<&LoadedCert> {
        let index = server_name
            .map(str::to_ascii_lowercase)
            .and_then(|name| {
                self.exact.get(&name).copied().or_else(|| {
                    let (_, parent) = name.split_once('.')?;
                    self.wildcard.get(parent).copied()
                })
            })
            .unwrap_or(0);
        self.certs.get(index)
    }
}

/// rustls' hook into the current [`CertSet`].
#[derive(Debug)]
pub struct SniResolver {
    pub current: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        set.choose(client_hello.server_name())
            .map(|cert| Arc::clone(&cert.key))
    }
}
