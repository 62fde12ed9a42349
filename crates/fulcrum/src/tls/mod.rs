//! TLS termination: each listener with a `tls` table gets a [`Terminator`] holding its rustls
//! configuration (modern versions and AEAD suites only: rustls offers nothing else), its
//! certificates chosen by SNI, and their rotation from disk. The proxies then serve the
//! decrypted stream exactly as they serve a plain one.

pub mod certs;
mod resolver;
pub mod rotation;
pub mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use fulcrum_core::config::{CertificateFiles, ClientAuth, Listener, ListenerTls, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use certs::LoadedCert;
use resolver::{CertSet, SniResolver};

/// The crypto provider: ring, which builds with a C compiler alone (aws-lc-rs needs more
/// of the build machine, and its speed advantage is in RSA, which the benchmark does not use).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How long before a certificate expires fulcrum starts warning about it (at start and at
/// each rotation).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// One listener's TLS termination.
#[derive(Debug)]
pub struct Terminator {
    pub listener: String,
    /// The configuration path of the `tls` table, for messages.
    path: String,
    files: Vec<CertificateFiles>,
    resolver: Arc<SniResolver>,
    config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    subject_header: Option<String>,
    provider: Arc<CryptoProvider>,
    rotation: Mutex<RotationStatus>,
    pub counters: TlsCounters,
}

/// The outcome of the last look at the certificate files.
#[derive(Debug, Clone, Default)]
pub struct RotationStatus {
    /// Times a changed set of files was loaded and put in service.
    pub reloads: u64,
    /// Why the files on disk are not being served, when they are not (the previous set is).
    pub error: Option<String>,
    pub last_change: Option<SystemTime>,
}

/// Handshakes, by how they ended.
#[derive(Debug, Default)]
pub struct TlsCounters {
    pub tls12: AtomicU64,
    pub tls13: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
}

/// What the request path needs to know about a terminated connection.
#[derive(Debug)]
pub struct TlsFacts {
    /// The header and value carrying a verified client certificate's subject, when the
    /// listener passes it on (the header name also when the client presented none, so a
    /// client-sent copy is removed).
    subject: Option<(String, Option<String>)>,
    /// The client chose HTTP/2 by ALPN.
    pub h2: bool,
}

impl TlsFacts {
    pub fn subject_header(&self) -> Option<&str> {
        self.subject.as_ref().map(|(name, _)| name.as_str())
    }

    pub fn client_subject(&self) -> Option<(&str, &str)> {
        let (name, value) = self.subject.as_ref()?;
        Some((name.as_str(), value.as_deref()?))
    }
}

impl Terminator {
    /// Reads every file `tls` names and builds the listener's TLS configuration; every error
    /// with its configuration path.
    pub fn load(path: &str, listener: &Listener, tls: &ListenerTls) -> Result<Self, Vec<String>> {
        let provider = provider();
        let certs = load_certs(path, &tls.certificates, &provider)?;
        let resolver = Arc::new(SniResolver {
            current: ArcSwap::from_pointee(CertSet::new(certs)),
        });
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| vec![format!("{path}.min_version: {e}")])?;
        let builder = match &tls.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => {
                builder.with_client_cert_verifier(client_verifier(path, auth, &provider)?)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as _);
        config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Terminator {
            listener: listener.name.clone(),
            path: path.to_string(),
            files: tls.certificates.clone(),
            resolver,
            config: Arc::new(config),
            handshake_timeout: tls.handshake_timeout,
            subject_header: tls
                .client_auth
                .as_ref()
                .and_then(|a| a.subject_header.clone()),
            provider,
            rotation: Mutex::new(RotationStatus::default()),
            counters: TlsCounters::default(),
        })
    }

    /// The handshake, within the handshake timeout. `None`: it failed or took too long (the
    /// connection is dropped; counted).
    pub async fn accept(&self, stream: TcpStream) -> Option<(TlsStream<TcpStream>, TlsFacts)> {
        let handshake = TlsAcceptor::from(Arc::clone(&self.config)).accept(stream);
        let stream = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = %self.listener, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = %self.listener, "TLS handshake timed out");
                return None;
            }
        };
        let session = stream.get_ref().1;
        let counter = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => &self.counters.tls13,
            _ => &self.counters.tls12,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let subject = self.subject_header.as_ref().map(|name| {
            let value = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(certs::subject_of)
                .map(|s| header_safe(&s));
            (name.clone(), value)
        });
        let h2 = session.alpn_protocol() == Some(b"h2");
        Some((stream, TlsFacts { subject, h2 }))
    }

    /// The certificates being served now.
    pub fn serving(&self) -> Arc<CertSet> {
        self.resolver.current.load_full()
    }

    /// What the admin API shows: the certificates served (files, names, expiry), the last
    /// rotation, and handshakes by outcome.
    pub fn status(&self) -> serde_json::Value {
        let serving = self.serving();
        let rotation = self.rotation();
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "listener": self.listener,
            "certificates": serving.certs.iter().zip(&self.files).map(|(cert, files)| serde_json::json!({
                "cert": files.cert.display().to_string(),
                "key": files.key.display().to_string(),
                "names": cert.names,
                "not_after": cert.not_after,
            })).collect::<Vec<_>>(),
            "rotation": {
                "reloads": rotation.reloads,
                "error": rotation.error,
                "last_change": rotation.last_change.map(unix),
            },
            "handshakes": {
                "tls12": count(&self.counters.tls12),
                "tls13": count(&self.counters.tls13),
                "failed": count(&self.counters.failed),
                "timed_out": count(&self.counters.timed_out),
            },
        })
    }

    /// Logs each certificate served with its names and expiry: a warning from
    /// [`EXPIRY_WARNING`] before it expires, an error once it has.
    pub fn log_expiry(&self, now: SystemTime) {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for cert in &self.serving().certs {
            let names = cert.names.join(", ");
            let left = cert.not_after - now;
            let days = left / 86_400;
            if left <= 0 {
                tracing::error!(listener = %self.listener, %names, "TLS certificate has expired; clients will refuse it");
            } else if left < EXPIRY_WARNING.as_secs() as i64 {
                tracing::warn!(listener = %self.listener, %names, days_left = days, "TLS certificate expires soon");
            } else {
                tracing::info!(listener = %self.listener, %names, days_left = days, "TLS certificate");
            }
        }
    }

    pub fn rotation(&self) -> RotationStatus {
        self.rotation.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Loads the files again when any of them changed since the set being served was read
    /// (or always, with `force`). A set that fails to load leaves the served one in place;
    /// the error is kept for the admin API and logged once per distinct failure.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let serving = self.serving();
        if !force && !self.changed_on_disk(&serving) {
            return Ok(false);
        }
        match load_certs(&self.path, &self.files, &self.provider) {
            Ok(certs) => {
                let unchanged = certs
                    .iter()
                    .zip(&serving.certs)
                    .all(|(new, old)| new.digest == old.digest);
                if unchanged && !force {
                    self.record(|s| s.error = None);
                    return Ok(false);
                }
                let names: Vec<String> = certs.iter().flat_map(|c| c.names.clone()).collect();
                self.resolver.current.store(Arc::new(CertSet::new(certs)));
                self.record(|s| {
                    s.reloads += 1;
                    s.error = None;
                    s.last_change = Some(SystemTime::now());
                });
                tracing::info!(listener = %self.listener, names = %names.join(", "), "TLS certificates reloaded; new handshakes get them");
                self.log_expiry(SystemTime::now());
                Ok(true)
            }
            Err(errors) => {
                let error = errors.join("; ");
                let repeated = self.rotation().error.as_deref() == Some(error.as_str());
                if !repeated {
                    tracing::warn!(listener = %self.listener, %error, "TLS certificates on disk cannot be loaded; still serving the previous ones");
                }
                self.record(|s| s.error = Some(error.clone()));
                Err(error)
            }
        }
    }

    fn changed_on_disk(&self, serving: &CertSet) -> bool {
        self.files
            .iter()
            .zip(&serving.certs)
            .any(|(files, cert)| certs::digest_of(files).map_or(true, |d| d != cert.digest))
    }

    fn record(&self, update: impl FnOnce(&mut RotationStatus)) {
        if let Ok(mut status) = self.rotation.lock() {
            update(&mut status);
        }
    }
}

fn load_certs(
    path: &str,
    files: &[CertificateFiles],
    provider: &CryptoProvider,
) -> Result<Vec<LoadedCert>, Vec<String>> {
    let mut certs = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for (i, pair) in files.iter().enumerate() {
        match certs::load(&format!("{path}.certificates[{i}]"), pair, provider) {
            Ok(cert) => certs.push(cert),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() && !certs.is_empty() {
        Ok(certs)
    } else {
        Err(errors)
    }
}

fn client_verifier(
    path: &str,
    auth: &ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Vec<String>> {
    let roots = certs::load_roots(&format!("{path}.client_ca"), &auth.ca).map_err(|e| vec![e])?;
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if auth.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| {
        vec![format!(
            "{path}.client_ca: {}: cannot verify clients with it: {e}",
            auth.ca.display()
        )]
    })
}

/// A header value cannot carry control characters (a certificate's subject can): those are
/// written as `\xHH`.
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (' '..='~').contains(&c) && c != '\\' {
            out.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

/// Every listener's terminator, by listener name; the errors of all of them.
pub fn load_all(
    listeners: &[Listener],
) -> Result<std::collections::HashMap<String, Arc<Terminator>>, Vec<String>> {
    let mut terminators = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let Some(tls) = &listener.tls else { continue };
        match Terminator::load(&format!("listeners[{i}].tls"), listener, tls) {
            Ok(t) => {
                terminators.insert(listener.name.clone(), Arc::new(t));
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(terminators)
    } else {
        Err(errors)
    }
}
