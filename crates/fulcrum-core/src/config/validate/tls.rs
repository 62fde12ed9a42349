//! Validation of a listener's `tls` table: the certificate files named (their contents are
//! read and checked by the daemon, which owns file I/O), the version floor, ALPN, the
//! handshake deadline and client certificates.

use std::path::PathBuf;
use std::time::Duration;

use super::super::defaults;
use super::super::model::*;
use super::super::raw::*;

use super::Validator;

/// The ALPN names fulcrum can serve on an HTTP listener today.
const HTTP_ALPN: &[&str] = &["h2", "http/1.1"];

impl Validator {
    pub(super) fn listener_tls(
        &mut self,
        path: &str,
        raw: RawListenerTls,
        protocol: &ListenerProtocol,
    ) -> Option<ListenerTls> {
        let key = |k: &str| format!("{path}.{k}");
        let client_auth = self.client_auth(path, &raw, protocol);
        let certificates = self.certificate_files(&key("certificates"), raw.certificates);
        let min_version = match raw.min_version.as_deref() {
            None | Some("1.2") => TlsVersion::Tls12,
            Some("1.3") => TlsVersion::Tls13,
            Some(other) => {
                self.error(
                    key("min_version"),
                    format!("`{other}` is not a TLS version fulcrum offers; valid: \"1.2\", \"1.3\" (older versions are never offered)"),
                );
                TlsVersion::Tls12
            }
        };
        let alpn = self.alpn(&key("alpn"), raw.alpn, protocol);
        let handshake_timeout = self.duration(
            &key("handshake_timeout"),
            raw.handshake_timeout.as_deref(),
            defaults::TLS_HANDSHAKE_TIMEOUT,
            Duration::from_millis(1),
        );
        Some(ListenerTls {
            certificates: certificates?,
            min_version,
            alpn,
            handshake_timeout,
            client_auth,
        })
    }

    fn certificate_files(
        &mut self,
        path: &str,
        raw: Option<Vec<RawCertificate>>,
    ) -> Option<Vec<CertificateFiles>> {
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            self.error(
                path,
                "at least one certificate is required, e.g. [{ cert = \"example.pem\", key = \"example.key\" }]",
            );
            return None;
        }
        let mut files = Vec::with_capacity(raw.len());
        for (i, c) in raw.into_iter().enumerate() {
            let cert = self.file_path(&format!("{path}[{i}].cert"), c.cert);
            let key = self.file_path(&format!("{path}[{i}].key"), c.key);
            if let (Some(cert), Some(key)) = (cert, key) {
                files.push(CertificateFiles { cert, key });
            }
        }
        Some(files)
    }

    fn file_path(&mut self, path: &str, raw: Option<String>) -> Option<PathBuf> {
        match raw {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => {
                self.error(path, "is required: the path of a PEM file");
                None
            }
        }
    }

    fn alpn(
        &mut self,
        path: &str,
        raw: Option<Vec<String>>,
        protocol: &ListenerProtocol,
    ) -> Vec<String> {
        match (raw, protocol) {
            (None, ListenerProtocol::Http(_)) => HTTP_ALPN.iter().map(|s| s.to_string()).collect(),
            (None, _) => Vec::new(),
            (Some(names), ListenerProtocol::Http(_)) => {
                for (i, name) in names.iter().enumerate() {
                    if !HTTP_ALPN.contains(&name.as_str()) {
                        self.error(
                            format!("{path}[{i}]"),
                            format!(
                                "`{name}` is not a protocol this HTTP listener serves; valid: {}",
                                HTTP_ALPN.join(", ")
                            ),
                        );
                    }
                }
                names
            }
            (Some(names), _) => {
                for (i, name) in names.iter().enumerate() {
                    if name.is_empty() || name.len() > 255 {
                        self.error(format!("{path}[{i}]"), "must be 1 to 255 bytes");
                    }
                }
                names
            }
        }
    }

    fn client_auth(
        &mut self,
        path: &str,
        raw: &RawListenerTls,
        protocol: &ListenerProtocol,
    ) -> Option<ClientAuth> {
        let key = |k: &str| format!("{path}.{k}");
        let required = match raw.client_auth.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.error(
                    key("client_auth"),
                    format!(
                        "`{other}` is not a client_auth mode; valid: \"required\", \"optional\""
                    ),
                );
                true
            }
        };
        let subject_header = raw.client_subject_header.clone();
        if let Some(name) = &subject_header {
            if !is_header_name(name) {
                self.error(
                    key("client_subject_header"),
                    format!("`{name}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
                );
            } else if !matches!(protocol, ListenerProtocol::Http(_)) {
                self.error(
                    key("client_subject_header"),
                    "applies only to protocol = \"http\"",
                );
            }
        }
        let Some(ca) = raw.client_ca.as_deref() else {
            for (name, present) in [
                ("client_auth", raw.client_auth.is_some()),
                ("client_subject_header", subject_header.is_some()),
            ] {
                if present {
                    self.error(
                        key(name),
                        "needs client_ca, the CA client certificates are verified against",
                    );
                }
            }
            return None;
        };
        let ca = self.file_path(&key("client_ca"), Some(ca.to_string()))?;
        Some(ClientAuth {
            ca,
            required,
            subject_header: subject_header.map(|h| h.to_ascii_lowercase()),
        })
    }
}

/// An HTTP field name (RFC 9110 §5.1: a token).
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
