//! A binary upgrade of an HA instance without a failover: the old process hands its role and
//! its claim in the store to the new one, instead of resigning (which would make the standby
//! take over) or keeping both processes in the election (which could make two actives).
//!
//! Once the new process is ready, the old one *freezes*: its store task stops calling the
//! store without releasing anything, its loop stops heartbeating, and the VIP stays on the
//! interface (refreshed one last time). It then sends the role, the epoch and the claim
//! ([`Handover`]); the new process takes them over with the heartbeat socket it received with
//! the listening sockets. To the store and the peers nothing changed: the same node name,
//! the same address, the same claim.
//!
//! - etcd: the leader key hangs on a lease, and any client may keep a lease alive by its id,
//!   so the successor simply renews the same lease: key, value and epoch stay as they were.
//! - ZooKeeper: the leading znode lives on the old process's session, which cannot be handed
//!   over (the client library keeps the session password to itself). So the old process keeps
//!   that session open until it exits, and the successor replaces the znode by one of its own
//!   in one transaction (delete the old, create ours): the queue never lacks our claim, and
//!   our znode is first in it. The epoch moves on (a new sequence) within the same tenure, so
//!   peers that heard the old epoch still hear us.
//!
//! The successor trusts the claim exactly as long as its predecessor would have (ages carried
//! over, the transit time added), so the fencing rules hold across the handover: a successor
//! that cannot reach the store fences itself on the predecessor's deadline.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulcrum_core::config::{ElectionStore, Ha as HaConfig, HaMode};
use fulcrum_core::ha::{Node, Role, Succession, Timing};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::store::{Claim, StoreCommand, StoreEvent};
use super::vip::VirtualIp;
use super::HaLoop;
use crate::pool::Clock;

/// What the new process inherits: the heartbeat socket at once, the role once the old
/// process has frozen (a closed channel: it never did, so the new one starts standing by).
#[derive(Debug)]
pub struct Inherit {
    pub socket: Option<StdUdpSocket>,
    pub handover: oneshot::Receiver<Handover>,
}

/// Who the old process is in the HA group, sent with the listening sockets so the new one
/// refuses an incompatible file before it takes anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HandedHa {
    pub node: String,
    /// `etcd KEY` or `zookeeper PATH`: the election the claim belongs to.
    pub election: String,
    /// Where the heartbeat socket (attached) is bound.
    pub heartbeat: SocketAddr,
}

impl HandedHa {
    /// This instance as a predecessor; `None` unless active-passive.
    pub fn of(config: &HaConfig, heartbeat: SocketAddr) -> Option<Self> {
        let HaMode::ActivePassive(pair) = &config.mode else {
            return None;
        };
        Some(Self {
            node: config.node.clone(),
            election: election_of(&pair.election.store),
            heartbeat,
        })
    }

    /// Whether a successor started with `config` can take this role over; the error says
    /// why not, with the key to change.
    pub fn accepts(&self, config: Option<&HaConfig>) -> Result<(), String> {
        let pair = match config.map(|c| (c, &c.mode)) {
            Some((c, HaMode::ActivePassive(pair))) if c.node == self.node => pair,
            Some((c, HaMode::ActivePassive(_))) => {
                return Err(format!(
                    "ha.node: the running fulcrum is node `{}`, this file names `{}`; an upgrade \
                     keeps the node (rename it with a restart)",
                    self.node, c.node
                ))
            }
            _ => {
                return Err(format!(
                    "ha: the running fulcrum is node `{}` of an active-passive pair; this file \
                     has no active-passive [ha] (change that with a restart, after the standby \
                     took over)",
                    self.node
                ))
            }
        };
        let election = election_of(&pair.election.store);
        if election != self.election {
            return Err(format!(
                "ha.election: the running fulcrum's claim is in {}, this file names {election}; \
                 an upgrade keeps the election (change it with a restart)",
                self.election
            ));
        }
        Ok(())
    }
}

fn election_of(store: &ElectionStore) -> String {
    match store {
        ElectionStore::Etcd { key, .. } => format!("etcd {key}"),
        ElectionStore::ZooKeeper { path, .. } => format!("zookeeper {path}"),
    }
}

/// The role and the claim as the old process froze them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handover {
    pub node: String,
    pub role: String,
    pub epoch: u64,
    pub tenure_epoch: u64,
    pub confirmed_ago_us: Option<u64>,
    pub store_ok_ago_us: Option<u64>,
    pub claim: Claim,
    /// Wall-clock time of sending (same host), to add the transit to every age.
    pub sent_unix_us: u64,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Handover {
    fn new(node: &str, succession: &Succession, claim: Claim) -> Self {
        Self {
            node: node.to_string(),
            role: succession.role.name().to_string(),
            epoch: succession.epoch,
            tenure_epoch: succession.tenure_epoch,
            confirmed_ago_us: succession.confirmed_ago.map(micros),
            store_ok_ago_us: succession.store_ok_ago.map(micros),
            claim,
            sent_unix_us: unix_micros(),
        }
    }

    fn succession(&self) -> Result<Succession, String> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            format!(
                "the previous process handed over an unknown role `{}`",
                self.role
            )
        })?;
        Ok(Succession {
            role,
            epoch: self.epoch,
            tenure_epoch: self.tenure_epoch,
            confirmed_ago: self.confirmed_ago_us.map(Duration::from_micros),
            store_ok_ago: self.store_ok_ago_us.map(Duration::from_micros),
        })
    }

    /// How long the handover took to arrive (never negative).
    fn in_transit(&self) -> Duration {
        Duration::from_micros(unix_micros().saturating_sub(self.sent_unix_us))
    }
}

/// The successor's side: waits for the handover, then builds the node that carries the role
/// on, on a clock that starts early enough to place the predecessor's moments. Without a
/// handover (the old process went away first) or with an unusable one, it starts standing by
/// like a fresh instance, and any claim left behind expires by itself.
pub(super) async fn take_over(
    handover: oneshot::Receiver<Handover>,
    name: String,
    timing: Timing,
    clock: Clock,
    vip: Option<&VirtualIp>,
) -> (Node, Clock, Claim) {
    let resumed = match handover.await {
        Ok(h) if h.node == name => h.succession().map(|s| (s, h.in_transit(), h.claim)),
        Ok(h) => Err(format!(
            "the previous process handed over node `{}`",
            h.node
        )),
        Err(_) => Err("the previous process handed no role over".to_string()),
    };
    match resumed {
        Ok((succession, in_transit, claim)) => {
            // A second of slack beyond the oldest moment: the clock must not start after it.
            let clock = Clock::backdated(succession.oldest() + in_transit + Duration::from_secs(1));
            let node = Node::succeed(name, timing, clock.now(), &succession, in_transit);
            let claim = if node.role().claims() {
                claim
            } else {
                Claim::None
            };
            tracing::info!(
                role = %node.role(),
                epoch = node.epoch(),
                in_transit_us = micros(in_transit),
                "HA: took the role over from the previous process"
            );
            if !node.role().claims() {
                remove_leftover(vip).await;
            }
            (node, clock, claim)
        }
        Err(why) => {
            tracing::warn!(why = %why, "HA: starting as a fresh instance (standing by)");
            remove_leftover(vip).await;
            (Node::new(name, timing, clock.now()), clock, Claim::None)
        }
    }
}

async fn remove_leftover(vip: Option<&VirtualIp>) {
    if let Some(vip) = vip {
        if let Err(e) = vip.remove().await {
            tracing::warn!(error = %e, "HA: cannot remove a leftover virtual IP");
        }
    }
}

impl HaLoop {
    /// The old process's side (see the module's documentation): stops the store task without
    /// releasing the claim, takes in what it said before it stopped, and describes the role.
    /// A store task that does not stop in time is resigned instead: the standby takes over
    /// (a failover, never two actives), and the successor starts standing by.
    pub(super) async fn freeze(
        &mut self,
        socket: &UdpSocket,
        commands: &mpsc::Sender<StoreCommand>,
        events: &mut mpsc::Receiver<StoreEvent>,
    ) -> Handover {
        if self.node.serving() {
            // A full lifetime for the successor to renew it in.
            self.refresh_vip(self.clock.now()).await;
        }
        if let Some(task) = self.announcing.take() {
            task.abort();
        }
        let (reply, claim) = oneshot::channel();
        let limit = self.node.timing().ttl * 2;
        let claim = match commands.send(StoreCommand::Freeze(reply)).await {
            Ok(()) => tokio::time::timeout(limit, claim)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        // What the store task said before it stopped still counts (a win, a loss).
        while let Ok(event) = events.try_recv() {
            let now = self.clock.now();
            if let Some(change) = self.store_event(event, now) {
                self.act(change, commands).await;
            }
        }
        let Some(claim) = claim else {
            tracing::error!(
                "HA: the store task did not stop for the handover; resigning instead (the \
                 standby takes over)"
            );
            self.resign(socket, commands, events).await;
            let standby = self.node.succession(self.clock.now());
            return Handover::new(self.node.name(), &standby, Claim::None);
        };
        let now = self.clock.now();
        if let Some(change) = self.node.tick(now) {
            self.act(change, commands).await;
        }
        let succession = self.node.succession(now);
        let claim = if succession.role.claims() {
            claim
        } else {
            Claim::None
        };
        tracing::info!(
            role = %succession.role,
            epoch = succession.epoch,
            "HA: handed the role over to the new process"
        );
        self.shared.publish(
            false,
            json!({
                "mode": "active_passive",
                "node": self.node.name(),
                "role": "handed_over",
                "epoch": succession.epoch,
            }),
        );
        Handover::new(self.node.name(), &succession, claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ha(text: &str) -> HaConfig {
        let file = format!(
            "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
             [pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n{text}"
        );
        fulcrum_core::config::Config::from_toml(&file)
            .unwrap()
            .ha
            .unwrap()
    }

    const PAIR: &str = r#"[ha]
mode = "active_passive"
node = "lb1"
election = { type = "etcd", endpoints = ["127.0.0.1:2379"], key = "/fulcrum/ha/web" }
peers = ["127.0.0.1:7946"]
"#;

    #[test]
    fn a_successor_must_keep_the_node_and_the_election() {
        let handed = HandedHa::of(&ha(PAIR), "127.0.0.1:7946".parse().unwrap()).unwrap();
        assert_eq!(handed.election, "etcd /fulcrum/ha/web");
        assert_eq!(handed.accepts(Some(&ha(PAIR))), Ok(()));
        let renamed = ha(&PAIR.replace("lb1", "lb9"));
        assert!(handed
            .accepts(Some(&renamed))
            .unwrap_err()
            .starts_with("ha.node: the running fulcrum is node `lb1`, this file names `lb9`"));
        let moved = ha(&PAIR.replace("/fulcrum/ha/web", "/fulcrum/ha/other"));
        assert!(handed
            .accepts(Some(&moved))
            .unwrap_err()
            .starts_with("ha.election:"));
        assert!(handed.accepts(None).unwrap_err().starts_with("ha: "));
        let active_active = ha("[ha]\nnode = \"lb1\"\nmode = \"active_active\"\n");
        assert!(HandedHa::of(&active_active, "127.0.0.1:7946".parse().unwrap()).is_none());
        assert!(handed.accepts(Some(&active_active)).is_err());
    }
}
