//! Validation of the `[ha]` section: the election store, the virtual IP, heartbeats and the
//! timing rules that keep "never two actives" true (see `ha/LIFECYCLE.md`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::super::defaults;
use super::super::model::*;
use super::super::raw::*;
use super::Validator;

/// A heartbeat must be much shorter than the lease: an active decides whether it is the one
/// cut off from the store from its peers' reports, which must be fresh at that moment.
const HEARTBEATS_PER_TTL: u32 = 10;

impl Validator {
    pub(super) fn ha(&mut self, raw: RawHa) -> Ha {
        let node = match raw.node.as_deref().map(str::trim) {
            Some(n)
                if !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                n.to_string()
            }
            Some(_) => {
                self.error(
                    "ha.node",
                    "must be a non-empty name of letters, digits, '-', '_' and '.'",
                );
                String::new()
            }
            None => {
                self.error("ha.node", "is required: a name unique to this instance");
                String::new()
            }
        };
        let mode = match raw.mode.as_deref() {
            None | Some("active_passive") => self.active_passive(raw),
            Some("active_active") => {
                self.foreign_keys(
                    "ha",
                    &[
                        ("election", raw.election.is_some()),
                        ("vip", raw.vip.is_some()),
                        ("peers", raw.peers.is_some()),
                        ("heartbeat", raw.heartbeat.is_some()),
                        ("heartbeat_bind", raw.heartbeat_bind.is_some()),
                        ("on_promote", raw.on_promote.is_some()),
                        ("on_demote", raw.on_demote.is_some()),
                    ],
                    "mode = \"active_passive\" (in active_active every instance serves)",
                );
                HaMode::ActiveActive
            }
            Some(other) => {
                self.error(
                    "ha.mode",
                    format!("unknown mode `{other}`; valid: active_passive, active_active"),
                );
                HaMode::ActiveActive
            }
        };
        Ha { node, mode }
    }

    fn active_passive(&mut self, raw: RawHa) -> HaMode {
        // The lease as written (etcd's `ttl`, ZooKeeper's `session_timeout`): a lease refused
        // for its range still decides whether the heartbeat fits in it.
        let lease_text = raw.election.as_ref().and_then(|e| match e.kind.as_deref() {
            Some("zookeeper") => e.session_timeout.clone(),
            _ => e.ttl.clone(),
        });
        let election = match raw.election {
            Some(e) => self.election("ha.election", e),
            None => {
                self.error(
                    "ha.election",
                    "is required in active_passive mode, e.g. { type = \"etcd\", endpoints = [\"10.0.0.2:2379\"], key = \"/fulcrum/ha/edge\" }",
                );
                None
            }
        };
        let heartbeat = self.duration(
            "ha.heartbeat",
            raw.heartbeat.as_deref(),
            defaults::HA_HEARTBEAT,
            Duration::from_millis(10),
        );
        let ttl = election.as_ref().map_or(defaults::HA_ETCD_TTL, |e| e.ttl);
        let written_ttl = Self::as_written(lease_text.as_deref(), ttl);
        let written_heartbeat = Self::as_written(raw.heartbeat.as_deref(), heartbeat);
        if let (Some(beat), Some(lease)) = (written_heartbeat, written_ttl) {
            if beat > lease / HEARTBEATS_PER_TTL {
                self.error(
                    "ha.heartbeat",
                    format!(
                        "{} is more than a tenth of the election's lease ({}), so peers' reports would be stale when a lease decision is due",
                        Self::shown(raw.heartbeat.as_deref(), heartbeat),
                        Self::shown(lease_text.as_deref(), ttl)
                    ),
                );
            }
        }
        let heartbeat_bind = match raw.heartbeat_bind.as_deref() {
            None => SocketAddr::from(([0, 0, 0, 0], defaults::HA_HEARTBEAT_PORT)),
            Some(text) => self
                .addr("ha.heartbeat_bind", Some(text))
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        let peers = raw
            .peers
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.addr(&format!("ha.peers[{i}]"), Some(p)))
            .collect();
        let heartbeat_key_file = match raw.heartbeat_key_file {
            Some(path) if path.trim().is_empty() => {
                self.error(
                    "ha.heartbeat_key_file",
                    "must be a path to the file holding the shared key",
                );
                None
            }
            path => path.map(std::path::PathBuf::from),
        };
        let vip = raw.vip.and_then(|v| self.vip("ha.vip", v));
        let on_promote = self.hook("ha.on_promote", raw.on_promote);
        let on_demote = self.hook("ha.on_demote", raw.on_demote);
        match election {
            Some(election) => HaMode::ActivePassive(Box::new(ActivePassive {
                election,
                vip,
                peers,
                heartbeat,
                heartbeat_bind,
                heartbeat_key_file,
                on_promote,
                on_demote,
            })),
            None => HaMode::ActiveActive,
        }
    }

    fn election(&mut self, path: &str, raw: RawElection) -> Option<Election> {
        match raw.kind.as_deref() {
            Some("etcd") => {
                self.foreign_keys(
                    path,
                    &[
                        ("servers", raw.servers.is_some()),
                        ("path", raw.path.is_some()),
                        ("session_timeout", raw.session_timeout.is_some()),
                    ],
                    "zookeeper, not etcd",
                );
                let endpoints = self.etcd_endpoints(path, raw.endpoints);
                let key = raw.key.unwrap_or_default();
                if !key.starts_with('/') || key.ends_with('/') {
                    self.error(
                        format!("{path}.key"),
                        "is required: a key such as \"/fulcrum/ha/edge\" (not ending in /)",
                    );
                }
                let ttl = self.duration(
                    &format!("{path}.ttl"),
                    raw.ttl.as_deref(),
                    defaults::HA_ETCD_TTL,
                    Duration::from_secs(1),
                );
                if ttl.subsec_nanos() != 0 {
                    self.error(
                        format!("{path}.ttl"),
                        "must be whole seconds (etcd leases count seconds)",
                    );
                }
                Some(Election {
                    store: ElectionStore::Etcd { endpoints, key },
                    ttl,
                })
            }
            Some("zookeeper") => {
                self.foreign_keys(
                    path,
                    &[
                        ("endpoints", raw.endpoints.is_some()),
                        ("key", raw.key.is_some()),
                        ("ttl", raw.ttl.is_some()),
                    ],
                    "etcd, not zookeeper (ZooKeeper's lease is session_timeout)",
                );
                let servers = self.zookeeper_servers(path, raw.servers);
                let znode = self.znode_path(path, raw.path, "/fulcrum/ha/edge");
                let ttl = self.duration(
                    &format!("{path}.session_timeout"),
                    raw.session_timeout.as_deref(),
                    defaults::HA_ZOOKEEPER_SESSION,
                    Duration::from_millis(100),
                );
                Some(Election {
                    store: ElectionStore::ZooKeeper {
                        servers,
                        path: znode,
                    },
                    ttl,
                })
            }
            other => {
                self.unknown_store(path, other, "election");
                None
            }
        }
    }

    fn vip(&mut self, path: &str, raw: RawVip) -> Option<Vip> {
        let interface = raw.interface.unwrap_or_default();
        if interface.is_empty() {
            self.error(
                format!("{path}.interface"),
                "is required: the interface that carries the address, e.g. \"eth0\"",
            );
        }
        let garp_count = self.integer(
            &format!("{path}.garp_count"),
            raw.garp_count,
            i64::from(defaults::GARP_COUNT),
            (0, 100),
        ) as u32;
        let garp_interval = self.duration(
            &format!("{path}.garp_interval"),
            raw.garp_interval.as_deref(),
            defaults::GARP_INTERVAL,
            Duration::from_millis(10),
        );
        let text = self.required(&format!("{path}.address"), raw.address.as_deref())?;
        let parsed = text.split_once('/').and_then(|(ip, len)| {
            let ip: Ipv4Addr = ip.parse().ok()?;
            let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
            Some((ip, len))
        });
        match parsed {
            Some((address, prefix_len)) => Some(Vip {
                address,
                prefix_len,
                interface,
                garp_count,
                garp_interval,
            }),
            None => {
                self.error(
                    format!("{path}.address"),
                    format!("`{text}` is not an IPv4 address with a prefix length, e.g. \"10.0.0.100/24\""),
                );
                None
            }
        }
    }

    fn hook(&mut self, path: &str, raw: Option<Vec<String>>) -> Vec<String> {
        let command = raw.unwrap_or_default();
        if command
            .first()
            .is_some_and(|program| program.trim().is_empty())
        {
            self.error(path, "the first element must be the program to run");
        }
        command
    }
}
