//! The running listeners as the admin API and certificate rotation see them: their counters
//! and their TLS terminations, in configuration order. A reload replaces the lists whole
//! (counters of a listener that stays are the same objects, so its figures carry on).

use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::proxy::counters::ListenerStats;
use crate::tls::Terminator;

#[derive(Debug, Default)]
pub struct ListenerViews {
    stats: RwLock<Vec<Arc<ListenerStats>>>,
    tls: RwLock<Vec<Arc<Terminator>>>,
}

impl ListenerViews {
    pub fn new(stats: Vec<Arc<ListenerStats>>, tls: Vec<Arc<Terminator>>) -> Self {
        Self {
            stats: RwLock::new(stats),
            tls: RwLock::new(tls),
        }
    }

    /// Every listener's counters.
    pub fn stats(&self) -> RwLockReadGuard<'_, Vec<Arc<ListenerStats>>> {
        // Replaced whole, never edited in place: a panicking writer cannot leave it torn.
        self.stats.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS listeners' terminations.
    pub fn tls(&self) -> RwLockReadGuard<'_, Vec<Arc<Terminator>>> {
        self.tls.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn replace(&self, stats: Vec<Arc<ListenerStats>>, tls: Vec<Arc<Terminator>>) {
        *self.stats.write().unwrap_or_else(|p| p.into_inner()) = stats;
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
    }
}
