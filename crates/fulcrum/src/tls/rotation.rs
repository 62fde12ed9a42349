//! Certificate rotation: every [`POLL`], each listener's certificate and key files are read
//! and hashed; when any changed, the whole set is loaded again and, if every pair loads, put
//! in service for the next handshakes. Open connections keep the certificate they were
//! opened with (a handshake is never redone). A renewal tool writing the certificate and the
//! key one after the other can be caught in between: the mismatched pair fails to load, the
//! old one keeps serving, and the next poll picks up the finished pair.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::views::ListenerViews;

/// How often the files are looked at (a hash of two small files per certificate).
pub const POLL: Duration = Duration::from_secs(2);

/// Polls the running listeners' certificate files until shutdown (a task of the control
/// thread; a reload's new TLS listeners are in `views` from then on).
pub async fn run(views: Arc<ListenerViews>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let terminators = views.tls().clone();
                for terminator in &terminators {
                    // Errors are logged and kept by the terminator itself.
                    let _ = terminator.reload(false);
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
