//! The `fulcrum` binary as an operator uses it: check, run, and the demo.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fulcrum_core::config::Config;

mod common;

use common::cli::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_example_config_parses_and_checks() {
    let dir = repo_root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::from_toml(&text) {
            panic!("{}:\n{e}", path.display());
        }
        let out = fulcrum()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(seen >= 2, "no examples found in {}", dir.display());
}

#[test]
fn check_reports_every_error_with_its_path_and_fails() {
    let dir = std::env::temp_dir().join(format!("fulcrum-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
pool = "missing"

[pools.app]
algorithm = "fastest"
colour = "blue"
backends = [{ addr = "127.0.0.1:1", weight = 0 }, { addr = "127.0.0.1:2", weight = "2" }]
"#,
    )
    .unwrap();
    let out = fulcrum().args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for error in [
        "pools.app.colour: unknown key",
        "pools.app.backends[1].weight: expected an integer, got the string \"2\"",
        "listeners[0].pool",
        "pools.app.algorithm",
        "pools.app.backends[0].weight",
    ] {
        assert!(stderr.contains(error), "{error} missing from:\n{stderr}");
    }
    // `run` refuses the same file before starting anything.
    let out = fulcrum().args(["run", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was started"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_and_run_refuse_a_missing_or_short_heartbeat_key_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("fulcrum-cli-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.key");
    std::fs::write(&short, "too short\n").unwrap();
    for (key, says) in [
        (dir.join("absent.key"), "cannot read"),
        (short, "at least 16"),
    ] {
        let path = dir.join("ha.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
pool = "app"

[pools.app]
backends = [{{ addr = "127.0.0.1:1" }}]

[ha]
node = "lb1"
election = {{ type = "etcd", endpoints = ["127.0.0.1:1"], key = "/k" }}
heartbeat_bind = "127.0.0.1:0"
heartbeat_key_file = "{}"
"#,
                key.display()
            ),
        )
        .unwrap();
        check_and_run_refuse(&path, "ha.heartbeat_key_file", says);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_refuses_a_missing_or_empty_admin_token_as_run_does() {
    let dir = std::env::temp_dir().join(format!("fulcrum-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    for (token, says) in [
        (dir.join("absent.token"), "cannot read"),
        (empty, "is empty"),
    ] {
        let path = dir.join("admin.toml");
        std::fs::write(
            &path,
            format!(
                "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[[listeners]]\nname = \"web\"\n\
                 bind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n[pools.app]\n\
                 backends = [{{ addr = \"127.0.0.1:1\" }}]\n",
                token.display()
            ),
        )
        .unwrap();
        check_and_run_refuse(&path, "admin.token_file", says);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Both `check` and `run` refuse the file at `path`, naming `key` and saying `says`.
fn check_and_run_refuse(path: &std::path::Path, key: &str, says: &str) {
    for command in ["check", "run"] {
        let out = fulcrum().args([command, "-c"]).arg(path).output().unwrap();
        assert!(
            !out.status.success(),
            "{command} accepted {}",
            path.display()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key) && stderr.contains(says),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn version_and_help() {
    // `version`, `-V` and `--version` agree: the version and the commit built from.
    let mut seen = Vec::new();
    for args in [&["version"][..], &["-V"], &["--version"]] {
        let out = fulcrum().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let expected = format!("fulcrum {} (", env!("CARGO_PKG_VERSION"));
        assert!(
            text.starts_with(&expected) && text.ends_with(')'),
            "{args:?}: {text}"
        );
        seen.push(text);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    let commit = seen[0].rsplit('(').next().unwrap().trim_end_matches(')');
    let hash = commit.trim_end_matches("-modified");
    assert!(
        commit == "unknown commit"
            || (hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    let out = fulcrum().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "check", "demo"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn demo_shows_traffic_on_all_three_backends_within_five_seconds() {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = fulcrum()
        .args(["demo", "--duration", "4s", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--admin")
        .arg(&admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("Stops after 4s."), "{out}");
    assert!(
        out.contains(&format!("curl -s http://{admin}/metrics")),
        "the demo says where its metrics are: {out}"
    );
    assert!(
        out.contains(&format!("open http://{admin}/ui in a browser")),
        "the demo says where its dashboard is: {out}"
    );
    assert!(
        !out.contains("Ctrl-C"),
        "with --duration, Ctrl-C is not the way out: {out}"
    );
    // Any per-second line in which every backend served requests.
    let busy_line = out.lines().filter(|l| l.starts_with('[')).find(|line| {
        line.split("backend-").skip(1).all(|part| {
            part.split(':')
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
        }) && line.matches("backend-").count() == 3
    });
    assert!(
        busy_line.is_some(),
        "no second with traffic on all three backends:\n{out}"
    );
}

#[test]
fn run_serves_survives_a_reload_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("fulcrum-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, port, _backend) = tcp_run_config(&dir);
    let mut child = fulcrum()
        .args(["run", "-c"])
        .arg(&path)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    // SIGHUP reloads (the file is unchanged: nothing to do); it does not end fulcrum.
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "fulcrum exited on SIGHUP"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let (status, log) = terminate(&mut child);
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}\n{log}"
    );
    // What an operator reads at start: version, file, each listener and pool, the workers;
    // and the reload that found nothing to change. Into a pipe, without colour codes.
    for expected in [
        env!("CARGO_PKG_VERSION"),
        path.to_str().unwrap(),
        "listener=t",
        "pool=p",
        "algorithm=\"round_robin\"",
        "workers=",
        "reloaded: nothing changed",
    ] {
        assert!(log.contains(expected), "`{expected}` missing from:\n{log}");
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe:\n{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_option_of_every_command_has_help_text() {
    for command in [
        &["run"][..],
        &["check"],
        &["demo"],
        &["register"],
        &["lab", "hashing"],
        &["lab", "latency"],
    ] {
        let out = fulcrum().args(command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let options = help.split("Options:").nth(1).unwrap_or("");
        for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
            // "  --flag <VALUE>   Description [default: …]": a description follows the flag.
            let described = line
                .trim_start()
                .split("  ")
                .skip(1)
                .any(|part| part.trim().chars().next().is_some_and(char::is_alphabetic));
            assert!(described, "{command:?}: no help for `{}`", line.trim());
        }
    }
}

#[test]
fn paths_in_the_file_are_relative_to_the_file_not_the_working_directory() {
    let dir = std::env::temp_dir().join(format!("fulcrum-cli-rel-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/admin.token"), "t0ken\n").unwrap();
    let path = dir.join("fulcrum.toml");
    std::fs::write(
        &path,
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"secrets/admin.token\"\n[[listeners]]\n\
         name = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         [pools.app]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n",
    )
    .unwrap();
    let out = fulcrum()
        .args(["check", "-c"])
        .arg(&path)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn register_does_not_report_losing_a_registration_it_never_had() {
    let dead = format!("127.0.0.1:{}", free_port());
    let mut child = fulcrum()
        .args([
            "register",
            "--etcd",
            &dead,
            "--prefix",
            "/fulcrum/pools/app/",
        ])
        .args(["--addr", "127.0.0.1:9"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    let log = stderr_of(&mut child);
    let _ = child.wait();
    assert!(log.contains("cannot register yet"), "{log}");
    assert!(!log.contains("registration lost"), "{log}");
}

#[test]
fn a_dead_backend_under_traffic_is_warned_about_once_per_ten_seconds() {
    // A TCP backend that accepts and closes: enough for a TCP listener's connects to succeed.
    let alive = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let alive_addr = alive.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in alive.incoming() {
            drop(stream);
        }
    });
    let dead = free_port();
    let log = log_of_tcp_connections(
        "warn",
        &format!("{{ addr = \"127.0.0.1:{dead}\" }}, {{ addr = \"{alive_addr}\" }}"),
        40,
    );
    let warnings = log
        .matches("connect failed; trying another backend")
        .count();
    assert_eq!(
        warnings, 1,
        "about 20 connects to the dead backend, one warning:\n{log}"
    );
}

#[test]
fn a_pool_with_no_reachable_backend_is_warned_about_once_per_ten_seconds_not_per_connection() {
    let dead = free_port();
    let log = log_of_tcp_connections(
        "unreachable",
        &format!("{{ addr = \"127.0.0.1:{dead}\" }}"),
        30,
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no backend could be reached"))
        .collect();
    assert_eq!(warnings.len(), 1, "30 refused clients, one warning:\n{log}");
}

/// Runs fulcrum with a TCP listener over `backends`, opens `connections` client connections
/// one after another, stops it, and returns its log.
fn log_of_tcp_connections(name: &str, backends: &str, connections: usize) -> String {
    let dir = std::env::temp_dir().join(format!("fulcrum-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warn.toml");
    let port = free_port();
    std::fs::write(
        &path,
        format!(
            "[runtime]\nshutdown_grace = \"1s\"\n[[listeners]]\nname = \"t\"\n\
             bind = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\npool = \"p\"\n[pools.p]\n\
             backends = [{backends}]\n"
        ),
    )
    .unwrap();
    let mut child = fulcrum()
        .args(["run", "-c"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut connected = 0;
    for _ in 0..200 {
        if connected >= connections {
            break;
        }
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                connected += 1;
                // Wait for fulcrum to be done with it (closed after the connects).
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.read(&mut [0u8; 1]);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    assert_eq!(connected, connections);
    std::thread::sleep(Duration::from_millis(200));
    let (_, log) = terminate(&mut child);
    std::fs::remove_dir_all(&dir).unwrap();
    log
}

#[test]
fn the_demo_serves_its_admin_api_beyond_loopback_only_with_a_token() {
    let admin_port = free_port();
    let admin = format!("0.0.0.0:{admin_port}");
    let listen = format!("127.0.0.1:{}", free_port());
    let refused = fulcrum()
        .args(["demo", "--duration", "1s", "--no-load", "--listen", &listen])
        .args(["--admin", &admin])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("fulcrum-demo-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("admin.token");
    std::fs::write(&token, "demo-token\n").unwrap();
    let mut child = fulcrum()
        .args(["demo", "--duration", "3s", "--no-load", "--listen", &listen])
        .args(["--admin", &admin, "--admin-token-file"])
        .arg(&token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ask = |auth: &str| -> Option<String> {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", admin_port)).ok()?;
        write!(
            stream,
            "GET /api/pools/demo HTTP/1.1\r\nhost: a\r\n{auth}connection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    };
    let mut without = None;
    for _ in 0..100 {
        without = ask("");
        if without.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let without = without.expect("the demo's admin API listened");
    assert!(without.starts_with("HTTP/1.1 401"), "{without}");
    let with = ask("authorization: Bearer demo-token\r\n").unwrap();
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn route_says_which_route_and_pool_a_request_takes_and_what_is_sent() {
    let everything = repo_root().join("examples/everything.toml");
    let route = |args: &[&str]| {
        let out = fulcrum()
            .arg("route")
            .arg("--config")
            .arg(&everything)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let rows: &[(&[&str], &str)] = &[
        (
            &["--listener", "shop", "--request", "GET /v2/users?page=2", "--host", "api.example.com"],
            "listener `shop`: routes[0] `api-v2` → pool `app`\nsent as: GET /users?page=2, host: api.internal\n",
        ),
        (
            &["--listener", "shop", "--request", "GET /", "--host", "a.shop.example.com:8081", "--header", "X-Canary: 1"],
            "listener `shop`: routes[1] `routes[1]` → pool `app`\nsent as: GET /, host: a.shop.example.com:8081\n",
        ),
        (
            &["--listener", "shop", "--request", "GET /login?v=2&lang=de"],
            "listener `shop`: routes[4] `routes[4]` → pool `app`\nsent as: GET /login?v=2&lang=de\n",
        ),
        (
            &["--listener", "shop", "--request", "POST /login?v=2&lang=fr", "--host", "x.test"],
            "listener `shop`: no route matches (6 checked) → the listener's pool `sessions`\nsent as: POST /login?v=2&lang=fr, host: x.test\n",
        ),
        (
            &["--listener", "web", "--request", "GET /"],
            "listener `web`: no route matches (0 checked) → the listener's pool `app`\nsent as: GET /\n",
        ),
    ];
    for (args, want) in rows {
        let (ok, stdout, stderr) = route(args);
        assert!(ok, "{args:?}: {stderr}");
        assert_eq!(stdout, *want, "{args:?}");
    }
    let (ok, _, stderr) = route(&["--request", "GET /"]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: several HTTP listeners (web, shop); choose one with --listener\n"
    );
    let (ok, _, stderr) = route(&["--listener", "shop", "--request", "GET"]);
    assert!(!ok);
    assert_eq!(stderr, "error: `GET` is not METHOD TARGET, e.g. 'GET /'\n");
    let (ok, _, stderr) = route(&["--listener", "nope", "--request", "GET /"]);
    assert!(!ok);
    assert_eq!(stderr, "error: no HTTP listener named `nope`\n");
}
