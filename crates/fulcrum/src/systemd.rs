//! systemd's service notifications (sd_notify(3)) for units with `Type=notify`: `READY=1`
//! once every listener is bound and the workers serve — `systemctl start` returns, and units
//! ordered after fulcrum start, only then — `RELOADING=1` then `READY=1` around a reload
//! (SIGHUP, `ExecReload=`), and `STOPPING=1` when shutdown begins. Sent only
//! when systemd asked for them (`NOTIFY_SOCKET` set); a notification that cannot be sent is
//! logged and never stops fulcrum.

use sd_notify::NotifyState;

/// Every listener is bound and the workers serve.
pub fn ready(listeners: usize) {
    let status = format!("serving on {listeners} listener(s)");
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(&status),
    ]);
}

/// A reload (SIGHUP) began; `ready` follows when it ended, applied or refused. systemd 253
/// and later want the monotonic time of the request with it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Shutdown began: listeners are closed, in-flight requests finish within the grace period.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight requests"),
    ]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "could not notify systemd (NOTIFY_SOCKET)");
    }
}
