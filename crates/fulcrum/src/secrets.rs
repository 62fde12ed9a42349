//! The secrets a configuration names by file — the admin token, the heartbeat key, TLS
//! certificates and their keys — read
//! in one place, by `run` before anything starts and by `check`, so a file `run` would refuse
//! is refused by `check` too. Every unreadable or unusable file is reported, with its key.

use std::collections::HashMap;
use std::sync::Arc;

use fulcrum_core::config::{Config, HaMode, UpstreamProtocol};

use crate::tls::upstream::BackendTls;
use crate::tls::Terminator;

use crate::ha::heartbeat;

/// What the files hold.
#[derive(Debug, Default)]
pub struct Secrets {
    pub admin_token: Option<String>,
    pub heartbeat_key: Option<Vec<u8>>,
    /// Each TLS listener's termination, by listener name.
    pub tls: HashMap<String, Arc<Terminator>>,
    /// TLS to backends, by pool name, for each pool with a `tls` table.
    pub backend_tls: Arc<HashMap<String, Arc<BackendTls>>>,
}

/// Reads every secret file `config` names; the errors of all of them, each with its key.
pub fn read(config: &Config) -> Result<Secrets, Vec<String>> {
    let mut secrets = Secrets::default();
    let mut errors = Vec::new();
    if let Some(path) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => {
                errors.push(format!("admin.token_file: {} is empty", path.display()))
            }
            Ok(text) => secrets.admin_token = Some(text.trim().to_string()),
            Err(e) => errors.push(format!(
                "admin.token_file: cannot read {}: {e}",
                path.display()
            )),
        }
    }
    let pair = config.ha.as_ref().and_then(|ha| match &ha.mode {
        HaMode::ActivePassive(pair) => Some(pair),
        HaMode::ActiveActive => None,
    });
    if let Some(path) = pair.and_then(|p| p.heartbeat_key_file.as_deref()) {
        match heartbeat::read_key(path) {
            Ok(key) => secrets.heartbeat_key = Some(key),
            Err(e) => errors.push(e),
        }
    }
    match crate::tls::load_all(&config.listeners) {
        Ok(tls) => secrets.tls = tls,
        Err(e) => errors.extend(e),
    }
    let mut backend_tls = HashMap::new();
    for (name, pool) in &config.pools {
        let Some(tls) = &pool.tls else { continue };
        // HTTP/2 over TLS is chosen by ALPN (RFC 9113 §3.2); HTTP/1.1 needs no ALPN.
        let alpn: &[&[u8]] = match pool.protocol {
            UpstreamProtocol::Http2 => &[b"h2"],
            UpstreamProtocol::Auto => &[b"h2", b"http/1.1"],
            UpstreamProtocol::Http1 => &[],
        };
        match BackendTls::load(&format!("pools.{name}.tls"), tls, alpn) {
            Ok(loaded) => {
                backend_tls.insert(name.clone(), Arc::new(loaded));
            }
            Err(e) => errors.push(e),
        }
    }
    secrets.backend_tls = Arc::new(backend_tls);
    if errors.is_empty() {
        Ok(secrets)
    } else {
        Err(errors)
    }
}
