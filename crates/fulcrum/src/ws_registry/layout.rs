//! The registry's key layout in Redis, kept in one place because other services read it
//! (the README documents it, and the tests read Redis through it):
//!
//! - `{prefix}conn:{id}`: a hash per open connection — `backend`, `pool`, `listener`,
//!   `client`, `since` (Unix seconds) — that expires `ttl` after its last refresh;
//! - `{prefix}backend:{ip:port}`: a sorted set per backend of the ids of its connections,
//!   each scored with the Unix time in milliseconds its entry expires at. A reader takes the
//!   members scored from now on (`ZRANGE key <now_ms> +inf BYSCORE`); writers drop members
//!   whose time has passed, so ids left by a fulcrum that died vanish even while other
//!   instances keep the set alive. The set itself expires `ttl` after its last write.
//!
//! Every command here is idempotent: writing an entry twice, or deleting one that is gone,
//! leaves Redis as once, which is what lets the writer retry and rewrite freely.

use std::net::SocketAddr;
use std::time::Duration;

use redis::Pipeline;

use crate::proxy::websockets::{id_text, WsConnection};

#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
    ttl_ms: u64,
}

impl Layout {
    pub fn new(prefix: &str, ttl: Duration) -> Self {
        Self {
            prefix: prefix.to_string(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn connection_key(&self, id: u64) -> String {
        format!("{}conn:{}", self.prefix, id_text(id))
    }

    pub fn backend_key(&self, backend: SocketAddr) -> String {
        format!("{}backend:{backend}", self.prefix)
    }

    /// Records (or refreshes) one open connection: its hash, and its id in its backend's set.
    pub fn write(&self, pipe: &mut Pipeline, id: u64, c: &WsConnection, now_ms: u64) {
        let key = self.connection_key(id);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("backend")
            .arg(c.backend.to_string())
            .arg("pool")
            .arg(&c.pool)
            .arg("listener")
            .arg(&c.listener)
            .arg("client")
            .arg(c.client.to_string())
            .arg("since")
            .arg(format!("{:.3}", c.since))
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(self.ttl_ms).ignore();
        let set = self.backend_key(c.backend);
        pipe.cmd("ZADD")
            .arg(&set)
            .arg(now_ms.saturating_add(self.ttl_ms))
            .arg(id_text(id))
            .ignore();
        pipe.cmd("PEXPIRE").arg(&set).arg(self.ttl_ms).ignore();
    }

    /// Removes a closed connection.
    pub fn delete(&self, pipe: &mut Pipeline, id: u64, backend: SocketAddr) {
        pipe.cmd("DEL").arg(self.connection_key(id)).ignore();
        pipe.cmd("ZREM")
            .arg(self.backend_key(backend))
            .arg(id_text(id))
            .ignore();
    }

    /// Drops the ids in a backend's set whose entries have expired (left by a fulcrum that
    /// died, or written before an outage).
    pub fn prune(&self, pipe: &mut Pipeline, backend: SocketAddr, now_ms: u64) {
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.backend_key(backend))
            .arg("-inf")
            .arg(format!("({now_ms}"))
            .ignore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(pipe: &Pipeline) -> String {
        String::from_utf8_lossy(&pipe.get_packed_pipeline()).replace("\r\n", " ")
    }

    #[test]
    fn an_entry_is_a_hash_by_id_and_a_member_of_its_backends_set_both_with_the_ttl() {
        let layout = Layout::new("fulcrum:ws:", Duration::from_secs(30));
        let c = WsConnection {
            id: id_text(0xab),
            listener: "web".into(),
            pool: "chat".into(),
            backend: "127.0.0.1:9001".parse().unwrap(),
            client: "127.0.0.1:50000".parse().unwrap(),
            since: 1_700_000_000.25,
        };
        assert_eq!(
            layout.connection_key(0xab),
            "fulcrum:ws:conn:00000000000000ab"
        );
        assert_eq!(
            layout.backend_key("[::1]:9001".parse().unwrap()),
            "fulcrum:ws:backend:[::1]:9001"
        );
        let mut pipe = redis::pipe();
        layout.write(&mut pipe, 0xab, &c, 1_000);
        let text = packed(&pipe);
        for part in [
            "HSET $32 fulcrum:ws:conn:00000000000000ab $7 backend $14 127.0.0.1:9001 $4 pool $4 chat $8 listener $3 web $6 client $15 127.0.0.1:50000 $5 since $14 1700000000.250",
            "PEXPIRE $32 fulcrum:ws:conn:00000000000000ab $5 30000",
            "ZADD $33 fulcrum:ws:backend:127.0.0.1:9001 $5 31000 $16 00000000000000ab",
            "PEXPIRE $33 fulcrum:ws:backend:127.0.0.1:9001 $5 30000",
        ] {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
        let mut pipe = redis::pipe();
        layout.delete(&mut pipe, 0xab, c.backend);
        layout.prune(&mut pipe, c.backend, 5_000);
        let text = packed(&pipe);
        assert!(
            text.contains("DEL $32 fulcrum:ws:conn:00000000000000ab"),
            "{text}"
        );
        assert!(
            text.contains("ZREM $33 fulcrum:ws:backend:127.0.0.1:9001 $16 00000000000000ab"),
            "{text}"
        );
        assert!(
            text.contains(
                "ZREMRANGEBYSCORE $33 fulcrum:ws:backend:127.0.0.1:9001 $4 -inf $5 (5000"
            ),
            "{text}"
        );
    }
}
