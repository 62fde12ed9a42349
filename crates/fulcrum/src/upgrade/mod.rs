//! Binary upgrade without a refused connection (see `LIFECYCLE.md` beside this file): the
//! running fulcrum listens on a Unix socket; a new binary started with `run --upgrade`
//! connects, takes every listening socket over ([`handover`]), builds its whole app on them
//! and says it is ready; only then does the old process stop accepting, let its connections
//! finish within `runtime.shutdown_grace` (keep-alive clients are told to close) and exit.
//! A new process that fails before it is ready changes nothing: the old one never stopped.

pub mod command;
pub mod handover;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fulcrum_core::config::Config;
use tokio::sync::mpsc;

use crate::ha::{HaShared, HandedHa};
use handover::{HandedListener, Header};

/// How long the old process waits for its successor to build its app and say it is ready.
pub const READY_WAIT: Duration = Duration::from_secs(120);

/// Where the upgrade socket is: the file's `runtime.upgrade_socket`, else under the runtime
/// directory (systemd's `RuntimeDirectory=`, then `XDG_RUNTIME_DIR`), else `/run/fulcrum` for
/// root and `/tmp/fulcrum-UID` for anyone else.
pub fn socket_path(config: &Config) -> PathBuf {
    if let Some(path) = &config.runtime.upgrade_socket {
        return path.clone();
    }
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several directories, separated by colons: the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first).join("upgrade.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("fulcrum").join("upgrade.sock");
    }
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        PathBuf::from("/run/fulcrum/upgrade.sock")
    } else {
        PathBuf::from(format!("/tmp/fulcrum-{uid}/upgrade.sock"))
    }
}

/// Copies of every listening socket this process serves, kept to hand them over: a reload
/// adds and removes entries as it adds and closes listeners (a copy left behind would keep a
/// closed listener's socket open, and connections would queue on it unanswered).
#[derive(Debug, Default)]
pub struct SocketRegistry {
    inner: Mutex<Registered>,
}

#[derive(Debug, Default)]
struct Registered {
    listeners: BTreeMap<String, (HandedListener, Vec<OwnedFd>)>,
    admin: Option<(SocketAddr, OwnedFd)>,
    ha: Option<(HandedHa, OwnedFd)>,
}

impl SocketRegistry {
    pub fn insert_listener<'a>(
        &self,
        name: &str,
        bind: SocketAddr,
        addr: SocketAddr,
        sockets: impl IntoIterator<Item = &'a StdListener>,
    ) -> io::Result<()> {
        let copies = sockets
            .into_iter()
            .map(|s| s.try_clone().map(OwnedFd::from))
            .collect::<io::Result<Vec<_>>>()?;
        let handed = HandedListener {
            name: name.to_string(),
            bind,
            addr,
            sockets: copies.len(),
        };
        self.lock()
            .listeners
            .insert(name.to_string(), (handed, copies));
        Ok(())
    }

    pub fn remove_listener(&self, name: &str) {
        self.lock().listeners.remove(name);
    }

    pub fn set_admin(&self, socket: &StdListener) -> io::Result<()> {
        let addr = socket.local_addr()?;
        self.lock().admin = Some((addr, OwnedFd::from(socket.try_clone()?)));
        Ok(())
    }

    /// An active-passive HA instance's identity and heartbeat socket.
    pub fn set_ha(&self, handed: HandedHa, socket: &UdpSocket) -> io::Result<()> {
        self.lock().ha = Some((handed, OwnedFd::from(socket.try_clone()?)));
        Ok(())
    }

    fn has_ha(&self) -> bool {
        self.lock().ha.is_some()
    }

    /// Sends every socket over `stream`.
    fn send(&self, stream: &std::os::unix::net::UnixStream, generation: u64) -> io::Result<()> {
        let registered = self.lock();
        let header = Header {
            pid: std::process::id(),
            generation,
            listeners: registered
                .listeners
                .values()
                .map(|(h, _)| h.clone())
                .collect(),
            admin: registered.admin.as_ref().map(|(addr, _)| *addr),
            ha: registered.ha.as_ref().map(|(handed, _)| handed.clone()),
        };
        let fds: Vec<_> = registered
            .listeners
            .values()
            .flat_map(|(_, fds)| fds.iter().map(AsFd::as_fd))
            .chain(registered.admin.iter().map(|(_, fd)| fd.as_fd()))
            .chain(registered.ha.iter().map(|(_, fd)| fd.as_fd()))
            .collect();
        handover::send(stream, &header, &fds)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registered> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The upgrade socket's listener, bound: `path` replaced (a previous process's socket file is
/// its predecessor's, which no longer listens once this process serves).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Serves successors on `listener` until one is ready, then says so on `handed_over` and
/// ends. A successor that fails is logged and the next one is waited for. Only processes of
/// the same user (or root) get the sockets. An active-passive HA instance (`ha`) freezes its
/// role once the successor is ready and hands it over too (see `ha::succession`).
pub fn serve(
    listener: UnixListener,
    registry: Arc<SocketRegistry>,
    generation: u64,
    ha: Option<(Arc<HaShared>, Duration)>,
    handed_over: mpsc::UnboundedSender<u32>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fulcrum-upgrade".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade socket accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let peer = match nix::sys::socket::getsockopt(
                    &stream,
                    nix::sys::socket::sockopt::PeerCredentials,
                ) {
                    Ok(credentials) => credentials,
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade: cannot tell who connected; refused");
                        continue;
                    }
                };
                let me = nix::unistd::getuid().as_raw();
                if peer.uid() != me && peer.uid() != 0 {
                    tracing::warn!(uid = peer.uid(), "upgrade: refused a process of another user");
                    continue;
                }
                let pid = u32::try_from(peer.pid()).unwrap_or(0);
                tracing::info!(new_pid = pid, "upgrade: a new process takes the listening sockets over");
                if let Err(e) = registry.send(&stream, generation) {
                    tracing::error!(error = %e, "upgrade: handing the sockets over failed; still serving");
                    continue;
                }
                match handover::wait_ready(&stream, READY_WAIT) {
                    Ok(true) => {
                        tracing::info!(new_pid = pid, "upgrade: the new process is ready");
                        if let Some((ha, limit)) = ha.as_ref().filter(|_| registry.has_ha()) {
                            let role = ha.freeze(*limit);
                            if let Err(e) = handover::send_role(&stream, role.as_ref()) {
                                // The claim stays alive until it expires: the new process
                                // stands by, and the standby takes over.
                                tracing::error!(error = %e, "upgrade: cannot hand the HA role over");
                            }
                        }
                        let _ = handed_over.send(pid);
                        return;
                    }
                    Ok(false) => tracing::error!(
                        new_pid = pid,
                        "upgrade failed: the new process exited before it was ready; still serving"
                    ),
                    Err(e) => tracing::error!(
                        new_pid = pid, error = %e,
                        "upgrade failed; still serving"
                    ),
                }
            }
        })
}
