//! Direct heartbeats between instances over UDP: one small JSON datagram per peer per
//! interval, carrying what the election rules need (node, role, epoch, whether the sender
//! reaches the store). UDP because a heartbeat that cannot arrive on time is worthless late.

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_core::ha::{Report, Role};
use serde::{Deserialize, Serialize};

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
}

pub fn encode(group: &str, report: &Report) -> Vec<u8> {
    let wire = Wire {
        group,
        node: &report.node,
        role: report.role.name(),
        epoch: report.epoch,
        store_ok_ms: report.store_ok_ago.map(|d| d.as_millis() as u64),
        hears_active: report.hears_active,
        heard_active_ms: report.heard_active_ago.map(|d| d.as_millis() as u64),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// A heartbeat of our group, or why the datagram was ignored.
pub fn decode(group: &str, datagram: &[u8], from: SocketAddr) -> Result<Report, String> {
    let wire: Wire<'_> = serde_json::from_slice(datagram)
        .map_err(|e| format!("malformed heartbeat from {from}: {e}"))?;
    if wire.group != group {
        return Err(format!(
            "heartbeat from {from} belongs to group `{}`, not ours",
            wire.group
        ));
    }
    let role = Role::parse(wire.role)
        .ok_or_else(|| format!("heartbeat from {from} has unknown role `{}`", wire.role))?;
    Ok(Report {
        node: wire.node.to_string(),
        role,
        epoch: wire.epoch,
        store_ok_ago: wire.store_ok_ms.map(Duration::from_millis),
        hears_active: wire.hears_active,
        heard_active_ago: wire.heard_active_ms.map(Duration::from_millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_wire_and_other_groups_are_ignored() {
        let report = Report {
            node: "lb1".into(),
            role: Role::Active,
            epoch: 42,
            store_ok_ago: Some(Duration::from_millis(35)),
            hears_active: 41,
            heard_active_ago: Some(Duration::from_millis(80)),
        };
        let from: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let bytes = encode("/fulcrum/ha/edge", &report);
        assert_eq!(decode("/fulcrum/ha/edge", &bytes, from), Ok(report));
        assert!(decode("/other", &bytes, from).is_err());
        assert!(decode("/fulcrum/ha/edge", b"{", from).is_err());
    }
}
