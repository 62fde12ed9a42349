//! Validation of a pool's `discovery` section, and the store settings (etcd endpoints,
//! ZooKeeper servers and paths) that the `[ha]` election shares.

use super::super::model::*;
use super::super::raw::*;

use super::Validator;

impl Validator {
    /// etcd endpoints: at least one, each HOST:PORT (an `http://` prefix is allowed).
    pub(super) fn etcd_endpoints(&mut self, path: &str, raw: Option<Vec<String>>) -> Vec<String> {
        let endpoints = raw.unwrap_or_default();
        if endpoints.is_empty() {
            self.error(
                format!("{path}.endpoints"),
                "at least one etcd endpoint (\"HOST:PORT\") is required",
            );
        }
        for (i, e) in endpoints.iter().enumerate() {
            if !is_host_port(e.trim_start_matches("http://")) {
                self.error(
                    format!("{path}.endpoints[{i}]"),
                    format!("`{e}` is not HOST:PORT"),
                );
            }
        }
        endpoints
    }

    /// A ZooKeeper connect string: HOST:PORT[,HOST:PORT…].
    pub(super) fn zookeeper_servers(&mut self, path: &str, raw: Option<String>) -> String {
        let servers = raw.unwrap_or_default();
        if servers.is_empty() || !servers.split(',').all(|s| is_host_port(s.trim())) {
            self.error(
                format!("{path}.servers"),
                format!("`{servers}` is not HOST:PORT[,HOST:PORT…]"),
            );
        }
        servers
    }

    pub(super) fn znode_path(&mut self, path: &str, raw: Option<String>, example: &str) -> String {
        let znode = raw.unwrap_or_default();
        if !znode.starts_with('/') || (znode.len() > 1 && znode.ends_with('/')) {
            self.error(
                format!("{path}.path"),
                format!("must be an absolute znode path without a trailing /, e.g. \"{example}\""),
            );
        }
        znode
    }

    /// Keys of another variant that were set anyway: each is an error naming the variant
    /// it belongs to.
    pub(super) fn foreign_keys(&mut self, path: &str, keys: &[(&str, bool)], belongs_to: &str) {
        for (key, present) in keys {
            if *present {
                self.error(format!("{path}.{key}"), format!("applies to {belongs_to}"));
            }
        }
    }

    /// A store `type` that is neither etcd nor zookeeper (or is missing).
    pub(super) fn unknown_store(&mut self, path: &str, kind: Option<&str>, what: &str) {
        let message = match kind {
            Some(other) => format!("unknown {what} type `{other}`; valid: etcd, zookeeper"),
            None => "is required (\"etcd\" or \"zookeeper\")".to_string(),
        };
        self.error(format!("{path}.type"), message);
    }

    pub(super) fn discovery(&mut self, path: &str, raw: RawDiscovery) -> Option<Discovery> {
        match raw.kind.as_deref() {
            Some("etcd") => {
                self.foreign_keys(
                    path,
                    &[
                        ("servers", raw.servers.is_some()),
                        ("path", raw.path.is_some()),
                    ],
                    "zookeeper, not etcd",
                );
                let endpoints = self.etcd_endpoints(path, raw.endpoints);
                let prefix = raw.prefix.unwrap_or_default();
                if prefix.is_empty() {
                    self.error(
                        format!("{path}.prefix"),
                        "is required, e.g. \"/fulcrum/pools/app/\"",
                    );
                }
                Some(Discovery::Etcd { endpoints, prefix })
            }
            Some("zookeeper") => {
                self.foreign_keys(
                    path,
                    &[
                        ("endpoints", raw.endpoints.is_some()),
                        ("prefix", raw.prefix.is_some()),
                    ],
                    "etcd, not zookeeper",
                );
                let servers = self.zookeeper_servers(path, raw.servers);
                let znode = self.znode_path(path, raw.path, "/fulcrum/pools/app");
                Some(Discovery::ZooKeeper {
                    servers,
                    path: znode,
                })
            }
            other => {
                self.unknown_store(path, other, "discovery");
                None
            }
        }
    }
}

fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_some()
}
