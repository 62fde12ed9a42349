//! Helpers for tests of the `fulcrum` binary as an operator runs it.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub fn fulcrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 5 s) until something accepts connections on `port`.
pub fn wait_listening(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fulcrum run never listened on {port}");
}

/// Everything a child started with its stderr piped wrote there, until it closed it.
pub fn stderr_of(child: &mut std::process::Child) -> String {
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    log
}

/// Sends SIGTERM to a `fulcrum run` started with its stderr piped; its exit status and log.
pub fn terminate(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let log = stderr_of(child);
    (child.wait().unwrap(), log)
}

/// A TCP backend that writes its name to every connection and closes it.
pub fn named_tcp_backend(name: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, name.as_bytes());
        }
    });
    addr
}

/// What a connection to fulcrum's TCP listener on `port` reads.
pub fn served_by(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

pub fn sighup(child: &std::process::Child) {
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
}

/// A configuration in `dir` with one TCP listener (on the port returned) in front of a
/// backend socket that accepts but never answers; the socket must be kept open.
pub fn tcp_run_config(dir: &std::path::Path) -> (PathBuf, u16, std::net::TcpListener) {
    let path = dir.join("run.toml");
    let port = free_port();
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &path,
        format!(
            "[runtime]\nshutdown_grace = \"1s\"\n[[listeners]]\nname = \"t\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\npool = \"p\"\n[pools.p]\nbackends = [{{ addr = \"{}\" }}]\n",
            backend.local_addr().unwrap()
        ),
    )
    .unwrap();
    (path, port, backend)
}
