//! What an election store task and the HA loop say to each other. The store task (etcd or
//! ZooKeeper) owns every store call; the loop owns the role. Neither blocks the other: a
//! store that hangs delays only its own events, never the heartbeats.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::pool::Clock;

#[derive(Debug)]
pub enum StoreEvent {
    /// A round trip that started at `started` succeeded; the current leader, if any.
    Reached {
        started: Duration,
        leader: Option<(String, u64)>,
    },
    Failed {
        error: String,
    },
    Won {
        epoch: u64,
        started: Duration,
    },
    Renewed {
        started: Duration,
    },
    /// Our claim is gone from the store.
    Lost {
        why: String,
    },
    /// The claim was given up for shutdown; the task has ended.
    Resigned,
}

#[derive(Debug)]
pub enum StoreCommand {
    /// Give up the claim (after a demotion) and go back to standing by.
    StepDown,
    /// Give up the claim and end.
    Resign,
    /// A binary upgrade: stop calling the store, keep the claim alive for the successor
    /// (never release it) and say what it is. A candidate that does not lead is released.
    Freeze(oneshot::Sender<Claim>),
}

/// The claim a store task holds, as a successor can take it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    None,
    /// etcd: the lease the leader key is attached to (any client may keep it alive).
    EtcdLease {
        id: i64,
    },
    /// ZooKeeper: the leading znode, on the predecessor's session (which the successor
    /// cannot take over: it replaces the znode by one of its own in one transaction).
    ZooKeeperZnode {
        name: String,
    },
}

/// The store task's end of the channels.
#[derive(Debug)]
pub struct StoreLink {
    pub clock: Clock,
    pub events: mpsc::Sender<StoreEvent>,
    pub commands: mpsc::Receiver<StoreCommand>,
    /// Whether a standby may campaign now (see `Node::may_campaign`).
    pub may_campaign: watch::Receiver<bool>,
}

impl StoreLink {
    pub async fn send(&self, event: StoreEvent) {
        // The loop outlives the task except at exit, when nobody needs the event.
        let _ = self.events.send(event).await;
    }
}
