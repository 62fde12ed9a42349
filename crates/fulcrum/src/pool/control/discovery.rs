//! Discovery policy: what a pool does with the sets its store reports. A mass disappearance
//! looks exactly like the store or the network failing, so removals within a window count
//! together against the ejection cap; a backend over the cap is *held* in rotation until
//! checks confirm it dead or the hold times out.

use std::net::SocketAddr;
use std::sync::MutexGuard;
use std::time::Duration;

use fulcrum_core::config;
use fulcrum_core::health::{BackendId, Cause};

use super::{Control, Pool};

/// Discovery removals within this window count together against the ejection cap: a mass
/// lease expiry looks exactly like the store or the network failing.
pub const DISCOVERY_WINDOW: Duration = Duration::from_secs(10);
/// A backend held in rotation by that cap leaves after this long even if nothing confirms it
/// dead (health checks confirming it release it sooner).
pub const DISCOVERY_HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct DiscoveryState {
    pub connected: bool,
    pub revision: i64,
    pub disconnected_since: Option<std::time::Instant>,
    pub discovered: usize,
    /// Full lists or watch events applied.
    pub updates: u64,
    pub malformed: u64,
    /// Removals the blast-radius cap held back.
    pub held: u64,
    pub last_error: Option<String>,
}

impl Pool {
    /// A discovery source listed (or followed) its store: the pool becomes the static
    /// backends plus the discovered ones (a static entry wins for its address).
    pub fn discovery_synced(&self, found: &[config::Backend], revision: i64) {
        {
            let mut state = self.discovery_state();
            state.connected = true;
            state.revision = revision;
            state.disconnected_since = None;
            state.discovered = found.len();
            state.updates += 1;
            state.last_error = None;
        }
        let mut all = self.settings().backends.clone();
        for b in found {
            if !all.iter().any(|s| s.addr == b.addr) {
                all.push(*b);
            }
        }
        self.set_backends(&all, Cause::Discovery);
    }

    /// The store cannot be reached: the last known backends stay.
    pub fn discovery_lost(&self, error: &str) {
        let mut state = self.discovery_state();
        if state.connected || state.disconnected_since.is_none() {
            tracing::warn!(pool = %self.name, %error, "discovery store unreachable; keeping the last known backends");
        }
        state.connected = false;
        state
            .disconnected_since
            .get_or_insert_with(std::time::Instant::now);
        state.last_error = Some(error.to_string());
    }

    pub fn discovery_malformed(&self) {
        self.discovery_state().malformed += 1;
    }

    /// Lock order: the control lock (when held) comes first.
    pub(super) fn discovery_state(&self) -> MutexGuard<'_, DiscoveryState> {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a backend the store no longer lists in rotation (blast-radius cap).
    pub(super) fn hold_locked(&self, c: &mut Control, id: BackendId, now: Duration) {
        let Some(m) = c.by_id_mut(id) else {
            return;
        };
        if m.held_since.is_some() {
            return;
        }
        m.held_since = Some(now);
        self.discovery_state().held += 1;
        tracing::warn!(
            pool = %self.name,
            backend = %m.addr,
            "discovery removal held back: more of the pool vanished from the store at once than the ejection cap allows; it stays until checks confirm it dead or the hold times out"
        );
    }

    /// Releases held backends that checks now confirm dead or that waited out the hold.
    pub(super) fn release_held_locked(&self, c: &mut Control, now: Duration) {
        let due: Vec<(BackendId, SocketAddr)> = c
            .members
            .iter()
            .filter(|m| {
                m.held_since.is_some_and(|since| {
                    let confirmed = c
                        .health
                        .view(m.id, now)
                        .is_some_and(|v| v.state.is_ejected() || v.suppressed);
                    confirmed || now.saturating_sub(since) >= DISCOVERY_HOLD
                })
            })
            .map(|m| (m.id, m.addr))
            .collect();
        for (id, addr) in due {
            if let Some(m) = c.by_id_mut(id) {
                m.held_since = None;
            }
            c.discovery_removals.push(now);
            tracing::info!(pool = %self.name, backend = %addr, "releasing a held discovery removal");
            self.remove_locked(c, id, now, Cause::Discovery);
        }
    }
}
