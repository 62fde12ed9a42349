//! `fulcrum run`'s configuration reload (on SIGHUP): the file is read and checked again, its
//! difference with the running configuration computed as data (`fulcrum_core::reload`), and
//! applied in place — or refused whole, leaving the running configuration untouched, when the
//! file has an error or holds a change this version cannot make without a restart.
//!
//! Applied in place so far: backends added to a pool's `backends` (they warm up through slow
//! start), backends removed (drained by the pool's drain rules, then removed) and weights
//! changed. Backends added through the admin API or discovery are not in the file's list and
//! are left alone. Every other change (listeners, algorithms, pool settings, health…) is
//! refused, each named, until the runtime can swap it.

use std::fmt;

use fulcrum_core::config::Config;
use fulcrum_core::health::Cause;
use fulcrum_core::reload::{self, Change};

use crate::app::RunningApp;
use crate::pool::Pool;
use crate::secrets;

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// The file's errors, each with its path.
    Invalid(Vec<String>),
    /// Changes this version makes only by a restart.
    NotInPlace(Vec<Change>),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Invalid(errors) => write!(f, "{}", errors.join("; ")),
            ReloadError::NotInPlace(changes) => {
                let named: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "not applied in place by this version (restart to apply): {}",
                    named.join("; ")
                )
            }
        }
    }
}

/// Whether this version applies `change` to a running fulcrum.
fn applies_in_place(change: &Change) -> bool {
    matches!(
        change,
        Change::BackendAdded { .. }
            | Change::BackendRemoved { .. }
            | Change::BackendWeightChanged { .. }
    )
}

impl RunningApp {
    /// Makes `new` the running configuration; returns what changed. On an error nothing
    /// has changed.
    pub fn reload(&mut self, new: Config) -> Result<Vec<Change>, ReloadError> {
        secrets::read(&new).map_err(ReloadError::Invalid)?;
        let changes = reload::diff(self.config(), &new);
        let refused: Vec<Change> = changes
            .iter()
            .filter(|c| !applies_in_place(c))
            .cloned()
            .collect();
        if !refused.is_empty() {
            return Err(ReloadError::NotInPlace(refused));
        }
        for change in &changes {
            self.apply(change);
        }
        self.set_config(new);
        Ok(changes)
    }

    fn apply(&self, change: &Change) {
        let pool = |name: &str| -> Option<&std::sync::Arc<Pool>> { self.pools().get(name) };
        // The pool exists (the diff found the backend in it in both files); a backend the
        // admin API already added, or already removed, is left as it is.
        match change {
            Change::BackendAdded {
                pool: name,
                addr,
                weight,
            } => {
                if let Some(p) = pool(name) {
                    if p.add_backend(*addr, *weight, Cause::Reload).is_err() {
                        let _ = p.set_weight(*addr, *weight);
                    }
                }
            }
            Change::BackendRemoved { pool: name, addr } => {
                if let Some(p) = pool(name) {
                    let _ = p.remove_backend(*addr, Cause::Reload);
                }
            }
            Change::BackendWeightChanged {
                pool: name,
                addr,
                to,
                ..
            } => {
                if let Some(p) = pool(name) {
                    let _ = p.set_weight(*addr, *to);
                }
            }
            _ => {}
        }
    }
}
