//! Reloading a running `fulcrum run` as an operator does: SIGHUP (and systemd around it),
//! `fulcrum reload`, and `POST /api/reload` with its counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cli::*;

#[test]
fn under_systemd_run_says_ready_once_it_listens_reloading_around_a_reload_and_stopping_on_sigterm()
{
    let dir = std::env::temp_dir().join(format!("fulcrum-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // systemd's side: a datagram socket whose path is in NOTIFY_SOCKET.
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (path, port, _backend) = tcp_run_config(&dir);
    let mut child = fulcrum()
        .args(["run", "-c"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut message = [0u8; 512];
    let n = notify.recv(&mut message).expect("READY=1 within 20 s");
    let ready = String::from_utf8_lossy(&message[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", child.id())),
        "{ready:?}"
    );
    // Ready means serving: the listener accepts at once.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "READY=1 before the listener was bound"
    );
    // A reload (SIGHUP, systemd's ExecReload=): RELOADING=1 with the time, then READY=1.
    sighup(&child);
    let n = notify.recv(&mut message).expect("RELOADING=1 within 20 s");
    let reloading = String::from_utf8_lossy(&message[..n]).into_owned();
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let n = notify.recv(&mut message).expect("READY=1 after the reload");
    let ready = String::from_utf8_lossy(&message[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let n = notify.recv(&mut message).expect("STOPPING=1 within 20 s");
    let stopping = String::from_utf8_lossy(&message[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let log = stderr_of(&mut child);
    assert!(child.wait().unwrap().success(), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sighup_applies_the_files_changes_and_refuses_a_file_it_cannot_apply_whole() {
    let dir = std::env::temp_dir().join(format!("fulcrum-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (named_tcp_backend("a"), named_tcp_backend("b"));
    let path = dir.join("run.toml");
    let port = free_port();
    let write_with = |runtime: &str, pool: &str| write_tcp_file(&path, "", runtime, port, pool);
    let write = |pool: &str| write_with("", pool);
    write(&format!("backends = [{{ addr = \"{a}\" }}]"));
    let mut child = run_fulcrum(&path);
    wait_listening(port);
    assert_eq!(served_by(port), "a");
    // A backend swapped in the file: the next connections go to the new one.
    write(&format!("backends = [{{ addr = \"{b}\" }}]"));
    sighup(&child);
    let mut switched = false;
    for _ in 0..100 {
        if served_by(port) == "b" {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(switched, "the reloaded backend never served");
    // A change this version cannot make in place, then a file with an error: both refused
    // whole (the algorithm and backend changes next to the worker count are not made either).
    write_with(
        "workers = 3",
        &format!("algorithm = \"least_conn\"\nbackends = [{{ addr = \"{a}\" }}]"),
    );
    sighup(&child);
    std::thread::sleep(Duration::from_millis(300));
    write(&format!(
        "colour = \"red\"\nbackends = [{{ addr = \"{a}\" }}]"
    ));
    sighup(&child);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(served_by(port), "b", "a refused reload changed the pool");
    }
    assert!(child.try_wait().unwrap().is_none(), "fulcrum exited");
    let (status, log) = terminate(&mut child);
    assert!(status.success(), "{log}");
    for expected in [
        format!("pool p: backend {b} added (weight 1)"),
        format!("pool p: backend {a} removed (drained)"),
        "reload refused; nothing changed".to_string(),
        "runtime.workers 0 -> 3 (needs a restart or a binary upgrade)".to_string(),
        "pools.p.colour: unknown key".to_string(),
    ] {
        assert!(log.contains(&expected), "`{expected}` missing from:\n{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A configuration file with one TCP listener `t` on `port` in front of pool `p`; `admin`
/// and `runtime` are lines for those tables, `pool` the pool's.
/// From the moment its listeners accept, a SIGHUP is a reload: it never ends the process
/// (before the fix the handlers were installed after the listeners started, and a reload
/// sent as soon as the port answered could kill fulcrum by SIGHUP's default action).
#[test]
fn a_sighup_as_soon_as_the_port_accepts_is_a_reload_not_the_end() {
    let dir = std::env::temp_dir().join(format!("fulcrum-early-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend = named_tcp_backend("a");
    let path = dir.join("run.toml");
    for round in 0..10 {
        let port = free_port();
        write_tcp_file(
            &path,
            "",
            "",
            port,
            &format!("backends = [{{ addr = \"{backend}\" }}]"),
        );
        let mut child = run_fulcrum(&path);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "round {round}: never listened"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        sighup(&child);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: a SIGHUP right after the port accepted ended fulcrum"
        );
        assert_eq!(served_by(port), "a");
        let (status, log) = terminate(&mut child);
        assert!(status.success(), "{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_tcp_file(path: &std::path::Path, admin: &str, runtime: &str, port: u16, pool: &str) {
    std::fs::write(
        path,
        format!(
            "{admin}[runtime]\nshutdown_grace = \"1s\"\n{runtime}\n[[listeners]]\nname = \"t\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\npool = \"p\"\n[pools.p]\n{pool}\n"
        ),
    )
    .unwrap();
}

/// `fulcrum run -c path`, its log piped (read it with `terminate`).
fn run_fulcrum(path: &std::path::Path) -> std::process::Child {
    fulcrum()
        .args(["run", "-c"])
        .arg(path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// GET `path` on the admin API at `port`, as JSON.
fn admin_get(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn fulcrum_reload_applies_the_file_through_the_admin_api_and_reports_changes_errors_and_counts() {
    let dir = std::env::temp_dir().join(format!("fulcrum-reload-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (named_tcp_backend("a"), named_tcp_backend("b"));
    let path = dir.join("run.toml");
    let (port, admin) = (free_port(), free_port());
    let admin_table = format!("[admin]\nbind = \"127.0.0.1:{admin}\"\n");
    let write = |pool: &str| write_tcp_file(&path, &admin_table, "", port, pool);
    write(&format!("backends = [{{ addr = \"{a}\" }}]"));
    let mut child = run_fulcrum(&path);
    wait_listening(port);
    wait_listening(admin);
    assert_eq!(served_by(port), "a");
    let fresh = admin_get(admin, "/api/reload");
    assert_eq!(fresh["reloads_ok"], 0);
    assert_eq!(fresh["upgrade_generation"], 0);
    assert_eq!(fresh["pid"], child.id());

    // Applied: the answer lists the changes, and they are in effect when it comes.
    write(&format!("backends = [{{ addr = \"{b}\" }}]"));
    let reload = fulcrum()
        .args(["reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert!(
        reload.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert!(stdout.contains("reloaded: 2 change(s)"), "{stdout}");
    assert!(
        stdout.contains(&format!("pool p: backend {b} added (weight 1)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("pool p: backend {a} removed (drained)")),
        "{stdout}"
    );
    assert_eq!(served_by(port), "b");

    // An error in the file: refused by the running fulcrum, which says why with the path.
    write(&format!(
        "colour = \"red\"\nbackends = [{{ addr = \"{a}\" }}]"
    ));
    let refused = fulcrum()
        .args(["reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("pools.p.colour: unknown key"), "{stderr}");
    assert!(
        stderr.contains("reload refused; nothing changed"),
        "{stderr}"
    );
    assert_eq!(served_by(port), "b", "the refused file changed nothing");

    // A file too broken to find the admin API in: nothing is asked, the errors are shown.
    std::fs::write(&path, "[admin\nbind = ").unwrap();
    let broken = fulcrum()
        .args(["reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success());
    assert!(
        stderr.contains("no admin address to ask; nothing was reloaded"),
        "{stderr}"
    );

    // SIGHUP is counted in the same place.
    sighup(&child);
    let mut counts = admin_get(admin, "/api/reload");
    for _ in 0..100 {
        if counts["reloads_failed"] == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        counts = admin_get(admin, "/api/reload");
    }
    assert_eq!(counts["reloads_ok"], 1, "{counts:#}");
    assert_eq!(counts["reloads_failed"], 2, "{counts:#}");
    assert_eq!(counts["last"]["trigger"], "signal", "{counts:#}");
    assert_eq!(counts["last"]["applied"], false, "{counts:#}");
    assert!(counts["last"]["at"].as_f64().unwrap() > 1.7e9, "{counts:#}");
    assert!(
        counts["last"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("expected"),
        "the syntax error, as the parser words it: {counts:#}"
    );
    assert_eq!(served_by(port), "b");
    let (status, log) = terminate(&mut child);
    assert!(status.success(), "{log}");
    assert!(log.contains("reload refused; nothing changed"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
