//! Who is in the pool: backends added, drained, removed, disabled and enabled one at a time
//! (the admin API), or the whole set replaced at once (discovery). Each public call is one
//! transaction: the lock is taken once and one snapshot is published at the end, however
//! many backends it touches.

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_core::config::{self, defaults, DrainTimeout};
use fulcrum_core::health::{BackendId, Cause};

use super::status::AdminError;
use super::{new_member, Control, Drain, Pool};
use crate::pool::stats::BackendStats;

impl Pool {
    /// Adds a backend at runtime (through the admin API, or a reload: `cause`); it warms up
    /// through slow start.
    pub fn add_backend(
        &self,
        addr: SocketAddr,
        weight: u32,
        cause: Cause,
    ) -> Result<(), AdminError> {
        if !(1..=defaults::MAX_WEIGHT).contains(&weight) {
            return Err(AdminError::BadRequest(format!(
                "weight must be between 1 and {}",
                defaults::MAX_WEIGHT
            )));
        }
        let now = self.clock.now();
        let mut control = self.lock();
        self.add_locked(&mut control, addr, weight, now, cause)?;
        self.apply(&mut control, now);
        Ok(())
    }

    /// A reload's backend: added if it is not a member; if it is one on its way out (removed
    /// by an earlier reload or the admin API, still draining), its removal is called off and
    /// it comes back through slow start; either way it gets `weight`.
    pub fn ensure_backend(
        &self,
        addr: SocketAddr,
        weight: u32,
        cause: Cause,
    ) -> Result<(), AdminError> {
        let now = self.clock.now();
        let mut guard = self.lock();
        let c = &mut *guard;
        match c.member(addr).map(|m| (m.id, m.remove_after_drain)) {
            None => self.add_locked(c, addr, weight, now, cause)?,
            Some((id, leaving)) => {
                if leaving {
                    enable_locked(c, id, now);
                }
                if let Some(m) = c.by_id_mut(id) {
                    m.weight = weight;
                }
            }
        }
        self.apply(c, now);
        Ok(())
    }

    /// Stops new requests to `addr`; in-flight ones finish within the drain timeout. The
    /// snapshot without it is published before this returns.
    pub fn drain(&self, addr: SocketAddr, cause: Cause) -> Result<Duration, AdminError> {
        self.edit(addr, |pool, c, id, now| {
            pool.drain_locked(c, id, now, cause)
        })
    }

    /// Drains `addr`, then removes it from the pool.
    pub fn remove_backend(&self, addr: SocketAddr, cause: Cause) -> Result<Duration, AdminError> {
        self.edit(addr, |pool, c, id, now| {
            pool.remove_locked(c, id, now, cause)
        })
    }

    /// Gives `addr` a new weight; the balancer takes it with the next snapshot.
    pub fn set_weight(&self, addr: SocketAddr, weight: u32) -> Result<(), AdminError> {
        self.edit(addr, |_, c, id, _| {
            if let Some(m) = c.by_id_mut(id) {
                m.weight = weight;
            }
        })
    }

    pub fn disable(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.edit(addr, |_, c, id, now| {
            if let Some(m) = c.by_id_mut(id) {
                m.drain = None;
            }
            c.health.disable(id, now);
        })
    }

    pub fn enable(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.edit(addr, |_, c, id, now| enable_locked(c, id, now))
    }

    /// Replaces the whole backend set (as a discovery source does), in one transaction: new
    /// backends warm up, missing ones are drained and then removed (for discovery, no more
    /// at once than the blast-radius cap allows; the rest are held), returning ones stop
    /// draining, and changed weights apply. One snapshot is published, so a hashing table
    /// is rebuilt once, not once per backend.
    pub fn set_backends(&self, backends: &[config::Backend], cause: Cause) {
        let now = self.clock.now();
        let mut guard = self.lock();
        let c = &mut *guard;
        let vanished: Vec<BackendId> = c
            .members
            .iter()
            .filter(|m| !m.remove_after_drain && !backends.iter().any(|b| b.addr == m.addr))
            .map(|m| m.id)
            .collect();
        let allowed = if cause == Cause::Discovery {
            discovery_removal_room(c, now)
        } else {
            usize::MAX
        };
        for (n, id) in vanished.into_iter().enumerate() {
            if n < allowed {
                if cause == Cause::Discovery {
                    c.discovery_removals.push(now);
                }
                self.remove_locked(c, id, now, cause);
            } else {
                self.hold_locked(c, id, now);
            }
        }
        for b in backends {
            match c
                .member(b.addr)
                .map(|m| (m.id, m.weight, m.remove_after_drain))
            {
                None => {
                    // The address is not a member, so adding cannot conflict.
                    let _ = self.add_locked(c, b.addr, b.weight, now, cause);
                }
                Some((id, _, true)) => enable_locked(c, id, now),
                Some((_, weight, false)) if weight != b.weight => {
                    if let Some(m) = c.member_mut(b.addr) {
                        m.weight = b.weight;
                    }
                }
                Some(_) => {}
            }
            if let Some(m) = c.member_mut(b.addr) {
                m.held_since = None;
            }
        }
        self.apply(c, now);
    }

    /// Runs `f` on the member at `addr` under the lock, then publishes.
    pub(super) fn edit<T>(
        &self,
        addr: SocketAddr,
        f: impl FnOnce(&Self, &mut Control, BackendId, Duration) -> T,
    ) -> Result<T, AdminError> {
        let now = self.clock.now();
        let mut control = self.lock();
        let id = control.member(addr).map(|m| m.id).ok_or_else(|| {
            AdminError::NotFound(format!("no backend {addr} in pool {}", self.name))
        })?;
        let out = f(self, &mut control, id, now);
        self.apply(&mut control, now);
        Ok(out)
    }

    fn add_locked(
        &self,
        c: &mut Control,
        addr: SocketAddr,
        weight: u32,
        now: Duration,
        cause: Cause,
    ) -> Result<(), AdminError> {
        if c.member(addr).is_some() {
            return Err(AdminError::Conflict(format!(
                "{addr} is already in pool {}",
                self.name
            )));
        }
        let id = c.health.add(now, cause);
        c.members
            .push(new_member(&self.settings(), id, addr, weight));
        tracing::info!(pool = %self.name, backend = %addr, weight, %cause, "backend added");
        Ok(())
    }

    fn drain_locked(
        &self,
        c: &mut Control,
        id: BackendId,
        now: Duration,
        cause: Cause,
    ) -> Duration {
        let Some(m) = c.by_id_mut(id) else {
            return Duration::ZERO;
        };
        let timeout = self.drain_timeout(&m.stats);
        if m.drain.is_none() {
            m.drain = Some(Drain {
                timeout,
                deadline: now.saturating_add(timeout),
                told: false,
            });
        }
        c.health.drain(id, now, cause);
        timeout
    }

    pub(super) fn remove_locked(
        &self,
        c: &mut Control,
        id: BackendId,
        now: Duration,
        cause: Cause,
    ) -> Duration {
        let timeout = self.drain_locked(c, id, now, cause);
        if let Some(m) = c.by_id_mut(id) {
            m.remove_after_drain = true;
        }
        timeout
    }

    pub(super) fn drain_timeout(&self, stats: &BackendStats) -> Duration {
        match self.settings().drain_timeout {
            DrainTimeout::Fixed(d) => d,
            DrainTimeout::Auto => stats
                .latency
                .quantile(0.99)
                .map(|p99| (p99 * 2).clamp(defaults::DRAIN_MIN, defaults::DRAIN_MAX))
                .unwrap_or(defaults::DRAIN_WITHOUT_DATA),
        }
    }
}

fn enable_locked(c: &mut Control, id: BackendId, now: Duration) {
    if let Some(m) = c.by_id_mut(id) {
        m.drain = None;
        m.remove_after_drain = false;
    }
    c.health.enable(id, now);
}

/// How many more backends discovery may remove now: the ejection cap, less what it removed
/// within the window.
fn discovery_removal_room(c: &mut Control, now: Duration) -> usize {
    c.discovery_removals
        .retain(|t| now.saturating_sub(*t) < super::discovery::DISCOVERY_WINDOW);
    c.health.cap().saturating_sub(c.discovery_removals.len())
}
