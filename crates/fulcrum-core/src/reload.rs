//! A configuration reload as data (Sōzu's way): the validated configuration running and the
//! validated one read from the file go in, the list of changes between them comes out, and
//! the running load balancer applies each change on its own — a listener whose socket can be
//! kept keeps it (and its connections), a pool swaps its settings, a backend that left is
//! drained. Deciding *what* changed lives here, free of sockets, so that every case is tested
//! exactly; applying it is the runtime's job.
//!
//! Things are matched by their stable names — listeners and pools by name, backends by
//! address within their pool — never by their position in the file, so reordering a file
//! changes nothing.

use std::fmt;
use std::net::SocketAddr;

use crate::config::{Algorithm, Config, Listener, Pool};

/// One difference between the running configuration and the new one.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    ListenerAdded {
        name: String,
    },
    /// Its socket is closed; its connections finish within the shutdown grace.
    ListenerRemoved {
        name: String,
    },
    /// The address or the protocol changed: a new socket replaces the old one (whose
    /// connections finish as on removal).
    ListenerRebound {
        name: String,
    },
    /// Same address and protocol, other settings (pool, timeouts, limits, TLS): the socket
    /// and its open connections are kept; new connections get the new settings.
    ListenerUpdated {
        name: String,
    },
    PoolAdded {
        name: String,
    },
    /// No listener refers to it any more (validation saw to that); its backends drain.
    PoolRemoved {
        name: String,
    },
    AlgorithmChanged {
        pool: String,
        from: Algorithm,
        to: Algorithm,
    },
    /// Timeouts, limits, hashing parameters, TLS or protocol towards the backends.
    PoolSettingsChanged {
        pool: String,
    },
    BackendAdded {
        pool: String,
        addr: SocketAddr,
        weight: u32,
    },
    /// Drained by the pool's drain rules, then removed.
    BackendRemoved {
        pool: String,
        addr: SocketAddr,
    },
    BackendWeightChanged {
        pool: String,
        addr: SocketAddr,
        from: u32,
        to: u32,
    },
    /// Active checks: the pool's health task restarts (its backends keep their state).
    HealthChanged {
        pool: String,
    },
    /// Passive checks (outlier detection) take the new thresholds.
    OutlierChanged {
        pool: String,
    },
    /// The pool's watch on its store restarts.
    DiscoveryChanged {
        pool: String,
    },
    AdminChanged,
    HaChanged,
    /// The worker count: only a restart or a binary upgrade changes it.
    WorkersChanged {
        from: usize,
        to: usize,
    },
    ShutdownGraceChanged,
    UpgradeSocketChanged,
}

impl Change {
    /// Whether the change can be made without restarting the process.
    pub fn in_place(&self) -> bool {
        !matches!(self, Change::WorkersChanged { .. })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::ListenerAdded { name } => write!(f, "listener {name} added"),
            Change::ListenerRemoved { name } => write!(f, "listener {name} removed"),
            Change::ListenerRebound { name } => {
                write!(f, "listener {name} rebound (address or protocol changed)")
            }
            Change::ListenerUpdated { name } => write!(f, "listener {name} settings changed"),
            Change::PoolAdded { name } => write!(f, "pool {name} added"),
            Change::PoolRemoved { name } => write!(f, "pool {name} removed"),
            Change::AlgorithmChanged { pool, from, to } => {
                write!(f, "pool {pool}: algorithm {} -> {}", from.name(), to.name())
            }
            Change::PoolSettingsChanged { pool } => write!(f, "pool {pool}: settings changed"),
            Change::BackendAdded { pool, addr, weight } => {
                write!(f, "pool {pool}: backend {addr} added (weight {weight})")
            }
            Change::BackendRemoved { pool, addr } => {
                write!(f, "pool {pool}: backend {addr} removed (drained)")
            }
            Change::BackendWeightChanged {
                pool,
                addr,
                from,
                to,
            } => write!(f, "pool {pool}: backend {addr} weight {from} -> {to}"),
            Change::HealthChanged { pool } => write!(f, "pool {pool}: health checks changed"),
            Change::OutlierChanged { pool } => write!(f, "pool {pool}: outlier detection changed"),
            Change::DiscoveryChanged { pool } => write!(f, "pool {pool}: discovery changed"),
            Change::AdminChanged => write!(f, "admin API changed"),
            Change::HaChanged => write!(f, "high availability changed"),
            Change::WorkersChanged { from, to } => write!(
                f,
                "runtime.workers {from} -> {to} (needs a restart or a binary upgrade)"
            ),
            Change::ShutdownGraceChanged => write!(f, "runtime.shutdown_grace changed"),
            Change::UpgradeSocketChanged => write!(f, "runtime.upgrade_socket changed"),
        }
    }
}

/// The changes that turn `old` into `new`, in the order they are best applied: pools added
/// and changed first (so that a listener finds the pool it now names), then listeners, then
/// pools removed (once no listener sends to them), then the rest. Empty when the
/// two configurations are the same, whatever the order of their entries.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    for (name, pool) in &new.pools {
        match old.pools.get(name) {
            None => changes.push(Change::PoolAdded { name: name.clone() }),
            Some(before) => pool_changes(name, before, pool, &mut changes),
        }
    }
    for listener in &new.listeners {
        match old.listeners.iter().find(|l| l.name == listener.name) {
            None => changes.push(Change::ListenerAdded {
                name: listener.name.clone(),
            }),
            Some(before) => {
                if let Some(change) = listener_change(before, listener) {
                    changes.push(change);
                }
            }
        }
    }
    for listener in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == listener.name) {
            changes.push(Change::ListenerRemoved {
                name: listener.name.clone(),
            });
        }
    }
    for name in old.pools.keys().filter(|n| !new.pools.contains_key(*n)) {
        changes.push(Change::PoolRemoved { name: name.clone() });
    }
    if old.admin != new.admin {
        changes.push(Change::AdminChanged);
    }
    if old.ha != new.ha {
        changes.push(Change::HaChanged);
    }
    if old.runtime.workers != new.runtime.workers {
        changes.push(Change::WorkersChanged {
            from: old.runtime.workers,
            to: new.runtime.workers,
        });
    }
    if old.runtime.shutdown_grace != new.runtime.shutdown_grace {
        changes.push(Change::ShutdownGraceChanged);
    }
    if old.runtime.upgrade_socket != new.runtime.upgrade_socket {
        changes.push(Change::UpgradeSocketChanged);
    }
    changes
}

fn listener_change(old: &Listener, new: &Listener) -> Option<Change> {
    let name = new.name.clone();
    if old.bind != new.bind || old.protocol.name() != new.protocol.name() {
        Some(Change::ListenerRebound { name })
    } else if old != new {
        Some(Change::ListenerUpdated { name })
    } else {
        None
    }
}

fn pool_changes(name: &str, old: &Pool, new: &Pool, changes: &mut Vec<Change>) {
    let pool = || name.to_string();
    if old.algorithm != new.algorithm {
        changes.push(Change::AlgorithmChanged {
            pool: pool(),
            from: old.algorithm,
            to: new.algorithm,
        });
    }
    if settings_of(old) != settings_of(new) {
        changes.push(Change::PoolSettingsChanged { pool: pool() });
    }
    for backend in &new.backends {
        match old.backends.iter().find(|b| b.addr == backend.addr) {
            None => changes.push(Change::BackendAdded {
                pool: pool(),
                addr: backend.addr,
                weight: backend.weight,
            }),
            Some(before) if before.weight != backend.weight => {
                changes.push(Change::BackendWeightChanged {
                    pool: pool(),
                    addr: backend.addr,
                    from: before.weight,
                    to: backend.weight,
                });
            }
            Some(_) => {}
        }
    }
    for backend in &old.backends {
        if !new.backends.iter().any(|b| b.addr == backend.addr) {
            changes.push(Change::BackendRemoved {
                pool: pool(),
                addr: backend.addr,
            });
        }
    }
    if old.health != new.health {
        changes.push(Change::HealthChanged { pool: pool() });
    }
    if old.outlier != new.outlier {
        changes.push(Change::OutlierChanged { pool: pool() });
    }
    if old.discovery != new.discovery {
        changes.push(Change::DiscoveryChanged { pool: pool() });
    }
}

/// A pool without what has a change of its own (algorithm, backends, health, outlier
/// detection, discovery): what is left are the settings swapped as one.
fn settings_of(pool: &Pool) -> Pool {
    Pool {
        algorithm: Algorithm::RoundRobin,
        backends: Vec::new(),
        health: None,
        outlier: None,
        discovery: None,
        ..pool.clone()
    }
}

#[cfg(test)]
mod tests;
