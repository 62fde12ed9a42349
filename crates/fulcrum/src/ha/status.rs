//! What `GET /api/ha` shows: the HA loop's view of the role, the store and the peers,
//! published after every event for the admin API and `/healthz`.

use std::time::Duration;

use serde_json::{json, Value};

use super::HaLoop;

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
        self.shared.publish(node.serving(), status);
    }
}
