//! Certificates for the TLS tests, made by rcgen: a CA of the test's own, server and client
//! certificates it signs, written as PEM files, and rustls client configurations trusting it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and the files of the certificates it signs, in a directory of the test's own.
pub struct Pki {
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    pub fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("fulcrum-tls-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "fulcrum test CA");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// Writes `NAME.pem` and `NAME.key` for a server certificate carrying `names`.
    pub fn server(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.write(file, params)
    }

    /// A server certificate for `names` that expires `days` from now.
    pub fn server_expiring(&self, file: &str, names: &[&str], days: i64) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        self.write(file, params)
    }

    /// A client certificate for mTLS, subject `CN=<cn>,O=Example`.
    pub fn client(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.write(file, params)
    }

    fn write(&self, file: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        // Written beside, then renamed: a reader never sees half a file.
        for (path, text) in [(&cert_path, cert.pem()), (&key_path, key.serialize_pem())] {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text).unwrap();
            std::fs::rename(&partial, path).unwrap();
        }
        (cert_path, key_path)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn client_config(&self, client_cert: Option<(&Path, &Path)>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in pem_certificates(&self.ca_pem) {
            roots.add(cert).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = pem_certificates(&std::fs::read_to_string(cert).unwrap());
                let key = read_key(key);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn pem_certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn read_key(path: &Path) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).unwrap()
}

pub fn toml_path(path: &Path) -> String {
    path.display().to_string()
}

impl Pki {
    /// A rustls server configuration serving the pair (for TLS backends).
    pub fn server_config(&self, pair: &(PathBuf, PathBuf)) -> rustls::ServerConfig {
        let chain = pem_certificates(&std::fs::read_to_string(&pair.0).unwrap());
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, read_key(&pair.1))
        .unwrap()
    }
}
