//! Reading a certificate chain and its key from PEM files into what rustls serves, with the
//! facts an operator needs about it (its DNS names, when it expires) and a digest of the files
//! so a rotation can tell a renewed pair from an untouched one.

use std::path::Path;
use std::sync::Arc;

use fulcrum_core::config::CertificateFiles;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// One certificate, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the end-entity certificate (subject alternative names; the subject's
    /// common name only when it has none), lowercased; wildcards as written (`*.example.com`).
    pub names: Vec<String>,
    /// Seconds since the Unix epoch after which the certificate is no longer valid.
    pub not_after: i64,
    /// SHA-256 of the two files' contents.
    pub digest: [u8; 32],
}

/// Reads `files`; an error names what is wrong, starting with the key `path` it belongs to
/// (`listeners[0].tls.certificates[1].key: …`).
pub fn load(
    path: &str,
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let (cert_bytes, key_bytes) = read_pair(path, files)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{path}.cert: {} is not a PEM certificate chain: {e}",
                files.cert.display()
            )
        })?;
    let Some(end_entity) = chain.first() else {
        return Err(format!(
            "{path}.cert: {} holds no certificate",
            files.cert.display()
        ));
    };
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        format!(
            "{path}.key: {} is not a PEM private key: {e}",
            files.key.display()
        )
    })?;
    let (names, not_after) =
        describe(end_entity).map_err(|e| format!("{path}.cert: {}: {e}", files.cert.display()))?;
    if names.is_empty() {
        return Err(format!(
            "{path}.cert: {} carries no DNS name (subject alternative name) to be chosen by",
            files.cert.display()
        ));
    }
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "{path}.key: {} does not go with {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
        digest: digest(&cert_bytes, &key_bytes),
    })
}

/// The digest of the pair as it is on disk now, to tell whether it changed.
pub fn digest_of(files: &CertificateFiles) -> std::io::Result<[u8; 32]> {
    Ok(digest(
        &std::fs::read(&files.cert)?,
        &std::fs::read(&files.key)?,
    ))
}

fn read_pair(path: &str, files: &CertificateFiles) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |key: &str, file: &Path| {
        std::fs::read(file)
            .map_err(|e| format!("{path}.{key}: cannot read {}: {e}", file.display()))
    };
    Ok((read("cert", &files.cert)?, read("key", &files.key)?))
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((cert.len() as u64).to_le_bytes());
    hash.update(cert);
    hash.update(key);
    hash.finalize().into()
}

/// The DNS names and expiry of an end-entity certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Old certificates name their host only in the subject's common name.
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                if cn.contains('.') && !cn.contains(' ') {
                    names.push(cn.to_ascii_lowercase());
                }
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// The CA certificates in the PEM file `ca`, for verifying peers (clients for mTLS, backends
/// for upstream TLS); errors start with `key`, the configuration path of the file.
pub fn load_roots(key: &str, ca: &Path) -> Result<rustls::RootCertStore, String> {
    let error = |e: String| format!("{key}: {}: {e}", ca.display());
    let pem = std::fs::read(ca).map_err(|e| error(format!("cannot read it: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| error(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| error(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(error("holds no certificate".to_string()));
    }
    Ok(roots)
}

/// The subject of a client certificate, as the backend gets it (`CN=alice,O=Example`).
pub fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.subject().to_string())
}
