//! Direct heartbeats between instances over UDP: one small JSON datagram per peer per
//! interval, carrying what the election rules need (node, role, epoch, whether the sender
//! reaches the store). UDP because a heartbeat that cannot arrive on time is worthless late.
//!
//! A heartbeat can stop a failover (a passive that hears an active holds back), so only the
//! configured peers are heard: a datagram from any other address is ignored. With a shared
//! key (`ha.heartbeat_key_file`), each datagram also carries an HMAC-SHA256 tag over its
//! text, and a sequence number that must grow per sender, so neither a forged report nor a
//! replayed one (an active's last words, repeated after it died) is believed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_core::ha::{Report, Role};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a tag (hex-encoded on the wire after a newline).
const TAG_LEN: usize = 32;
/// The shortest shared key accepted.
pub const MIN_KEY_LEN: usize = 16;

#[derive(Debug, Serialize, Deserialize)]
struct Wire<'a> {
    /// The election key or path: instances of different groups sharing a port ignore each
    /// other.
    group: &'a str,
    node: &'a str,
    role: &'a str,
    epoch: u64,
    store_ok_ms: Option<u64>,
    /// The epoch of the last active the sender heard (0: none), and how long ago.
    #[serde(default)]
    hears_active: u64,
    #[serde(default)]
    heard_active_ms: Option<u64>,
    /// Grows with every datagram a sender sends (its wall clock in microseconds, so it keeps
    /// growing across restarts); checked only when heartbeats are authenticated.
    #[serde(default)]
    seq: u64,
}

/// Encodes and checks this group's heartbeats.
#[derive(Debug)]
pub struct Heartbeats {
    group: String,
    /// The only addresses heartbeats are accepted from.
    peers: Vec<SocketAddr>,
    key: Option<Vec<u8>>,
    /// The last sequence number accepted from each configured peer.
    last_seq: HashMap<SocketAddr, u64>,
    next_seq: u64,
}

impl Heartbeats {
    pub fn new(group: &str, peers: &[SocketAddr], key: Option<Vec<u8>>) -> Self {
        Self {
            group: group.to_string(),
            peers: peers.to_vec(),
            key,
            last_seq: HashMap::new(),
            next_seq: 0,
        }
    }

    /// The datagram for `report`; `now_micros` is the wall clock (the sequence's floor).
    pub fn encode(&mut self, report: &Report, now_micros: u64) -> Vec<u8> {
        self.next_seq = now_micros.max(self.next_seq + 1);
        let wire = Wire {
            group: &self.group,
            node: &report.node,
            role: report.role.name(),
            epoch: report.epoch,
            store_ok_ms: report.store_ok_ago.map(|d| d.as_millis() as u64),
            hears_active: report.hears_active,
            heard_active_ms: report.heard_active_ago.map(|d| d.as_millis() as u64),
            seq: self.next_seq,
        };
        let mut datagram = serde_json::to_vec(&wire).unwrap_or_default();
        if let Some(mac) = self.mac() {
            let tag = mac.chain_update(&datagram).finalize().into_bytes();
            datagram.push(b'\n');
            for byte in tag {
                datagram.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
        }
        datagram
    }

    /// A heartbeat of our group from a configured peer, or why the datagram was ignored.
    pub fn decode(&mut self, datagram: &[u8], from: SocketAddr) -> Result<Report, String> {
        if !self.peers.contains(&from) {
            return Err(format!(
                "heartbeat from {from}, which is not one of the configured peers"
            ));
        }
        let text = match self.mac() {
            None => datagram,
            Some(mac) => {
                let split = datagram.iter().rposition(|&b| b == b'\n');
                let (text, tag) = match split {
                    Some(at) => (&datagram[..at], &datagram[at + 1..]),
                    None => return Err(format!("heartbeat from {from} has no tag")),
                };
                let tag = decode_hex(tag)
                    .ok_or_else(|| format!("heartbeat from {from} has a malformed tag"))?;
                mac.chain_update(text)
                    .verify_slice(&tag)
                    .map_err(|_| format!("heartbeat from {from} has a wrong tag"))?;
                text
            }
        };
        let wire: Wire<'_> = serde_json::from_slice(text)
            .map_err(|e| format!("malformed heartbeat from {from}: {e}"))?;
        if wire.group != self.group {
            return Err(format!(
                "heartbeat from {from} belongs to group `{}`, not ours",
                wire.group
            ));
        }
        let role = Role::parse(wire.role)
            .ok_or_else(|| format!("heartbeat from {from} has unknown role `{}`", wire.role))?;
        if self.key.is_some() {
            let last = self.last_seq.entry(from).or_insert(0);
            if wire.seq <= *last {
                return Err(format!(
                    "heartbeat from {from} replays sequence {} (last {})",
                    wire.seq, *last
                ));
            }
            *last = wire.seq;
        }
        Ok(Report {
            node: wire.node.to_string(),
            role,
            epoch: wire.epoch,
            store_ok_ago: wire.store_ok_ms.map(Duration::from_millis),
            hears_active: wire.hears_active,
            heard_active_ago: wire.heard_active_ms.map(Duration::from_millis),
        })
    }

    fn mac(&self) -> Option<HmacSha256> {
        // HMAC takes a key of any length, so this cannot fail.
        self.key
            .as_ref()
            .and_then(|key| HmacSha256::new_from_slice(key).ok())
    }
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() != TAG_LEN * 2 {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect()
}

/// Reads the shared key from `path`: its bytes, without a trailing newline, at least
/// [`MIN_KEY_LEN`] of them.
pub fn read_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut key = std::fs::read(path)
        .map_err(|e| format!("ha.heartbeat_key_file: cannot read {}: {e}", path.display()))?;
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "ha.heartbeat_key_file: {} holds {} bytes; the key must have at least {MIN_KEY_LEN} (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
            path.display(),
            key.len(),
            path.display()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            node: "lb1".into(),
            role: Role::Active,
            epoch: 42,
            store_ok_ago: Some(Duration::from_millis(35)),
            hears_active: 41,
            heard_active_ago: Some(Duration::from_millis(80)),
        }
    }

    fn peer() -> SocketAddr {
        "10.0.0.1:7946".parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_report_survives_the_wire_and_other_groups_are_ignored() {
        let mut ours = Heartbeats::new("/fulcrum/ha/edge", &[peer()], None);
        let bytes = ours.encode(&report(), 1);
        assert_eq!(ours.decode(&bytes, peer()), Ok(report()));
        let mut other = Heartbeats::new("/other", &[peer()], None);
        assert!(other.decode(&bytes, peer()).is_err());
        assert!(ours.decode(b"{", peer()).is_err());
    }

    #[test]
    fn heartbeats_from_an_unlisted_address_are_ignored() {
        let mut ours = Heartbeats::new("/g", &[peer()], None);
        let bytes = ours.encode(&report(), 1);
        for stranger in ["10.0.0.9:7946", "10.0.0.1:7947"] {
            let from: SocketAddr = stranger.parse().unwrap_or_else(|e| panic!("{e}"));
            let refused = ours.decode(&bytes, from);
            assert!(refused.is_err(), "{stranger}: {refused:?}");
        }
    }

    #[test]
    fn with_a_key_forged_tampered_and_replayed_heartbeats_are_ignored() {
        let key = b"0123456789abcdef0123".to_vec();
        let mut sender = Heartbeats::new("/g", &[peer()], Some(key.clone()));
        let mut receiver = Heartbeats::new("/g", &[peer()], Some(key));
        let first = sender.encode(&report(), 1_000);
        assert_eq!(receiver.decode(&first, peer()), Ok(report()));
        assert!(
            receiver.decode(&first, peer()).is_err(),
            "the same datagram again is a replay"
        );
        let second = sender.encode(&report(), 900);
        assert_eq!(
            receiver.decode(&second, peer()),
            Ok(report()),
            "the sequence grows even if the clock steps back"
        );
        // Without the key: no tag, or a tag made with another key.
        let mut plain = Heartbeats::new("/g", &[peer()], None);
        assert!(receiver
            .decode(&plain.encode(&report(), 5_000), peer())
            .is_err());
        let mut stranger =
            Heartbeats::new("/g", &[peer()], Some(b"another key, 16+ bytes".to_vec()));
        assert!(receiver
            .decode(&stranger.encode(&report(), 6_000), peer())
            .is_err());
        // One byte of the text changed.
        let mut tampered = sender.encode(&report(), 7_000);
        let at = tampered
            .windows(2)
            .position(|w| w == b"42")
            .unwrap_or_else(|| panic!("epoch in the text"));
        tampered[at] = b'9';
        assert!(receiver.decode(&tampered, peer()).is_err());
    }
}
