//! High availability between fulcrum instances: which one is active, decided from the
//! election store's answers and the peers' heartbeats, with time as an argument. The daemon
//! (`fulcrum::ha`) does the I/O: store calls, UDP heartbeats, the virtual IP.

mod node;
mod timing;

pub use node::{Change, Hold, Node, Peer, Report, Role, Succession, Transition, MAX_PEERS};
pub use timing::Timing;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
