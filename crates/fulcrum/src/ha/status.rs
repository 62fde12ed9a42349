//! What `GET /api/ha` shows: the HA loop's view of the role, the store and the peers,
//! published after every event for the admin API, `/healthz` and the metrics.

use std::time::Duration;

use fulcrum_core::ha::Node;
use serde_json::{json, Value};

use super::HaLoop;
use crate::metrics::cell::{HistogramSum, FAILOVER};

/// What the metrics show of HA.
#[derive(Debug, Clone)]
pub struct HaMetrics {
    /// `active_passive` or `active_active`.
    pub mode: &'static str,
    /// standby, elected, active or resigning (active in active-active mode).
    pub role: &'static str,
    pub serving: bool,
    pub epoch: u64,
    pub promotions: u64,
    pub demotions: u64,
    /// Times the store became unreachable for every instance and the role was held.
    pub holds: u64,
    pub holding: bool,
    /// This instance's takeovers: from the active's last sign of life to serving.
    pub failovers: HistogramSum,
}

impl HaMetrics {
    pub fn new(mode: &'static str, serving: bool) -> Self {
        Self {
            mode,
            role: if serving { "active" } else { "standby" },
            serving,
            epoch: 0,
            promotions: 0,
            demotions: 0,
            holds: 0,
            holding: false,
            failovers: HistogramSum::empty(FAILOVER),
        }
    }

    /// Brings the figures up to date with `node` after an event.
    fn update(&mut self, node: &Node) {
        if node.promotions() > self.promotions {
            if let Some(took) = node.history().last().and_then(|t| t.failover) {
                self.failovers.observe(took);
            }
        }
        let holding = node.hold().is_some();
        if holding && !self.holding {
            self.holds += 1;
        }
        self.holding = holding;
        self.role = node.role().name();
        self.serving = node.serving();
        self.epoch = node.epoch();
        self.promotions = node.promotions();
        self.demotions = node.demotions();
    }
}

impl HaLoop {
    pub(super) fn publish(&self) {
        let now = self.clock.now();
        let node = &self.node;
        let ago = |t: Option<Duration>| t.map(|t| now.saturating_sub(t).as_millis() as u64);
        let peers: Vec<Value> = node
            .peers()
            .iter()
            .map(|(name, p)| {
                json!({
                    "node": name,
                    "role": p.role.name(),
                    "epoch": p.epoch,
                    "heard_ms_ago": now.saturating_sub(p.heard_at).as_millis() as u64,
                    "store_ok_ms_ago": ago(p.store_ok_at),
                })
            })
            .collect();
        let history: Vec<Value> = node
            .history()
            .map(|t| {
                json!({
                    "at_unix": self.clock.unix_seconds(t.at),
                    "from": t.from.name(),
                    "to": t.to.name(),
                    "epoch": t.epoch,
                    "reason": t.reason,
                    "failover_ms": t.failover.map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        let failover_available = !node.store_failing() && node.hold().is_none();
        let status = json!({
            "mode": "active_passive",
            "node": node.name(),
            "role": node.role().name(),
            "epoch": node.epoch(),
            "role_since_unix": self.clock.unix_seconds(node.since()),
            "leader": self.leader.as_ref().map(|(n, e)| json!({ "node": n, "epoch": e })),
            "last_renewal_ms_ago": ago(node.confirmed_at()),
            "store_ok_ms_ago": ago(node.store_ok_at()),
            "store_error": self.store_error,
            "hold": node.hold().map(|h| json!({
                "since_unix": self.clock.unix_seconds(h.since),
                "reason": "the store is unreachable for every instance: keeping the role; failover is unavailable until it returns",
            })),
            "failover_available": failover_available,
            "promotions": node.promotions(),
            "demotions": node.demotions(),
            "last_failover_ms": node
                .history()
                .filter_map(|t| t.failover)
                .last()
                .map(|d| d.as_millis() as u64),
            "vip": self.vip.as_ref().map(|v| v.address().to_string()),
            "peers": peers,
            "history": history,
        });
        self.shared.metrics_mut().update(node);
        self.shared.publish(node.serving(), status);
    }
}
