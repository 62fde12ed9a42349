//! WebSocket peers on Python's `websockets` (Debian python3-websockets): the backend server
//! (`tests/ws/server.py`) and the client (`tests/ws/client.py`), as an application uses them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use super::cli::free_port;
use super::installed;

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ws")
        .join(name)
}

/// Python 3 with `websockets`; a missing one fails the test saying what to install.
pub fn python() -> &'static str {
    let python = installed(&["/usr/bin/python3"], "python3");
    let found = Command::new(python)
        .args(["-c", "import websockets"])
        .status()
        .unwrap();
    assert!(
        found.success(),
        "Python's websockets module is missing: install Debian's python3-websockets (scripts/test does)"
    );
    python
}

/// A Python WebSocket backend, stopped when dropped.
pub struct WsBackend {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ws_backend(name: &str) -> WsBackend {
    let port = free_port();
    let mut child = Command::new(python())
        .arg(script("server.py"))
        .arg(port.to_string())
        .arg(name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the WebSocket backend did not start");
    WsBackend {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Runs the Python client to its end; its JSON lines.
pub async fn client(proxy: SocketAddr, args: &[&str]) -> Vec<serde_json::Value> {
    let url = format!("ws://{proxy}/chat");
    let mut command = Command::new(python());
    command.arg(script("client.py")).arg(url).args(args);
    let run = tokio::task::spawn_blocking(move || command.output());
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the WebSocket client did not finish within 30 s")
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "client {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Reads the holding client's lines until it says it holds its connections.
fn read_until_holding(out: &mut BufReader<ChildStdout>) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "client ended early");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let holding = value.get("holding").is_some();
        lines.push(value);
        if holding {
            return lines;
        }
    }
}

/// `client.py hold N`, running: its greetings read; `echo()` checks every connection still
/// answers, dropping it closes them all.
pub struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
    pub lines: Vec<serde_json::Value>,
}

impl Holder {
    /// Opens `n` WebSockets through `proxy` and waits until all are greeted.
    pub async fn open(proxy: SocketAddr, n: usize) -> Holder {
        Self::open_in_batches(proxy, n, 1).await
    }

    /// As [`open`](Self::open), `batch` handshakes at a time.
    pub async fn open_in_batches(proxy: SocketAddr, n: usize, batch: usize) -> Holder {
        let mut child = Command::new(python())
            .arg(script("client.py"))
            .arg(format!("ws://{proxy}/chat"))
            .args(["hold", &n.to_string(), &batch.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let read = tokio::task::spawn_blocking(move || {
            let lines = read_until_holding(&mut out);
            (lines, out)
        });
        let (lines, out) = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the holding client did not open its WebSockets within 60 s")
            .unwrap();
        Holder { child, out, lines }
    }

    /// The ids fulcrum gave the connections, with the name of the backend each reached.
    pub fn ids(&self) -> Vec<(String, String)> {
        self.lines
            .iter()
            .filter_map(|l| {
                let greeting = l.get("greeting")?;
                let id = greeting["connection_id"][0].as_str()?.to_string();
                Some((id, greeting["backend"].as_str()?.to_string()))
            })
            .collect()
    }

    /// Every connection sends a message and reads its echo; how many did.
    pub fn echo(&mut self) -> u64 {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"echo\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        value["echoed"].as_u64().unwrap()
    }

    /// Closes every connection cleanly; how many the client closed.
    #[allow(clippy::wrong_self_convention)]
    pub fn close(mut self) -> u64 {
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(self.child.wait().unwrap().success());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        value["closed"].as_u64().unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
