//! The handover of listening sockets from a running fulcrum to its successor, over a Unix
//! stream socket. The old process sends one message: a length-prefixed JSON header naming
//! every listener (its configured and actual address, how many sockets it has) and the admin
//! API, with all those sockets attached as `SCM_RIGHTS`; the new process, once its whole app
//! is built on them, answers `ready`. The sockets are the same kernel sockets in both
//! processes (the same accept queues), so no connection is refused at any point: until the
//! new process accepts, the old one does, and what waits in a queue waits for whichever
//! accepts next.
//!
//! `SCM_RIGHTS` is written with `nix` (std has no stable API for ancillary data).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::ha::{HandedHa, Handover};

/// The kernel's limit on descriptors in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub const MAX_SOCKETS: usize = 253;

/// What the old process says about the sockets it attaches, in their order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub pid: u32,
    /// The old process's upgrade generation (the new one is one more).
    pub generation: u64,
    pub listeners: Vec<HandedListener>,
    /// The admin API's socket comes after the listeners' when set.
    pub admin: Option<SocketAddr>,
    /// An active-passive HA instance: its heartbeat socket comes last, and its role follows
    /// the new process's `ready` (see `ha::succession`).
    #[serde(default)]
    pub ha: Option<HandedHa>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HandedListener {
    pub name: String,
    /// As the configuration file said (`127.0.0.1:0` stays `…:0`), to match the new file's.
    pub bind: SocketAddr,
    /// Where it is bound.
    pub addr: SocketAddr,
    /// How many sockets (one per worker of the old process).
    pub sockets: usize,
}

/// Sends `header` and `fds` (in the header's order) over `stream`.
pub fn send(stream: &UnixStream, header: &Header, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_SOCKETS {
        return Err(io::Error::other(format!(
            "{} sockets to hand over; one message carries at most {MAX_SOCKETS}",
            fds.len()
        )));
    }
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    let mut message = (json.len() as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&json);
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&message)],
        if raw.is_empty() { &[] } else { &rights },
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    // The descriptors went with the first bytes; the rest of a long header follows as is.
    let mut writer = stream;
    writer.write_all(&message[sent..])?;
    Ok(())
}

/// What the new process received.
#[derive(Debug)]
pub struct Received {
    pub header: Header,
    /// Each listener's sockets, by name, with its configured address.
    pub listeners: HashMap<String, (HandedListener, Vec<StdListener>)>,
    pub admin: Option<StdListener>,
    /// The HA heartbeat socket, when the header names an HA instance.
    pub heartbeat: Option<UdpSocket>,
}

/// Receives the header and the sockets from `stream`.
pub fn receive(stream: &UnixStream) -> io::Result<Received> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    #[allow(unsafe_code)]
                    // SAFETY: the kernel installed this descriptor in our table for this
                    // message (SCM_RIGHTS); nothing else in the process knows or owns it, so
                    // taking ownership here is the only ownership there is.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    if got < 4 {
        return Err(io::Error::other("the running fulcrum sent no header"));
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let mut json = buf[4..got].to_vec();
    if json.len() < length {
        let mut more = vec![0u8; length - json.len()];
        let mut reader = stream;
        reader.read_exact(&mut more)?;
        json.extend_from_slice(&more);
    }
    let header: Header = serde_json::from_slice(&json[..length.min(json.len())])
        .map_err(|e| io::Error::other(format!("unreadable handover header: {e}")))?;
    let expected: usize = header.listeners.iter().map(|l| l.sockets).sum::<usize>()
        + usize::from(header.admin.is_some())
        + usize::from(header.ha.is_some());
    if fds.len() != expected {
        return Err(io::Error::other(format!(
            "the header names {expected} sockets, {} came with it",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut listeners = HashMap::new();
    for handed in &header.listeners {
        let sockets: Vec<StdListener> = fds
            .by_ref()
            .take(handed.sockets)
            .map(StdListener::from)
            .collect();
        listeners.insert(handed.name.clone(), (handed.clone(), sockets));
    }
    let admin = header.admin.and_then(|_| fds.next().map(StdListener::from));
    let heartbeat = header
        .ha
        .as_ref()
        .and_then(|_| fds.next().map(UdpSocket::from));
    Ok(Received {
        header,
        listeners,
        admin,
        heartbeat,
    })
}

/// The old process's side, after sending: waits for the new process to say it is ready.
/// `Ok(true)`: ready; `Ok(false)`: it went away first (it failed before being ready).
pub fn wait_ready(stream: &UnixStream, within: Duration) -> io::Result<bool> {
    stream.set_read_timeout(Some(within))?;
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(_) => Ok(line.trim() == "ready"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::other(format!(
                "the new process did not say it was ready within {within:?}"
            )))
        }
        Err(e) => Err(e),
    }
}

/// The new process's side: its app serves; the old one may stop accepting.
pub fn say_ready(stream: &UnixStream) -> io::Result<()> {
    let mut writer = stream;
    writer.write_all(b"ready\n")
}

/// How long the new process waits for the old one's HA role after saying it is ready (the
/// old one waits for its store task to stop: a round trip at most, bounded by the TTL).
pub const ROLE_WAIT: Duration = Duration::from_secs(60);

/// The old process's side, after `ready`, for an HA instance: the role it froze, one JSON
/// line (`null`: none to hand over; the new process then starts standing by).
pub fn send_role(stream: &UnixStream, handover: Option<&Handover>) -> io::Result<()> {
    let mut line = serde_json::to_vec(&handover).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut writer = stream;
    writer.write_all(&line)
}

/// The new process's side of [`send_role`].
pub fn receive_role(stream: &UnixStream) -> io::Result<Option<Handover>> {
    stream.set_read_timeout(Some(ROLE_WAIT))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::other(
            "the running fulcrum closed the upgrade socket before handing its HA role over",
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| io::Error::other(format!("unreadable HA handover: {e}")))
}

/// Connects to the running fulcrum's upgrade socket.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path)
}
