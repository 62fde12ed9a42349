//! Certificate rotation: every [`POLL`], each listener's certificate and key files are read
//! and hashed; when any changed, the whole set is loaded again and, if every pair loads, put
//! in service for the next handshakes. Open connections keep the certificate they were
//! opened with (a handshake is never redone). A renewal tool writing the certificate and the
//! key one after the other can be caught in between: the mismatched pair fails to load, the
//! old one keeps serving, and the next poll picks up the finished pair.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::Terminator;

/// How often the files are looked at (a hash of two small files per certificate).
pub const POLL: Duration = Duration::from_secs(2);

pub fn spawn(
    terminators: HashMap<String, Arc<Terminator>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    if terminators.is_empty() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("fulcrum-tls-rotation".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tick = tokio::time::interval(POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            for terminator in terminators.values() {
                                // Errors are logged and kept by the terminator itself.
                                let _ = terminator.reload(false);
                            }
                        }
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            });
        })?;
    Ok(Some(thread))
}
