//! Running out of file descriptors: `fulcrum run` under a low `ulimit -n` (prlimit) is
//! flooded with connections until `accept` fails with EMFILE. It must pause accepting rather
//! than spin, warn about once a second rather than once per connection, and serve again as
//! soon as descriptors free up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::{free_port, wait_listening};
use common::*;

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state: utime and stime
    // are fields 14 and 15, so the 12th and 13th after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let per_second = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let per_second: f64 = String::from_utf8_lossy(&per_second.stdout)
        .trim()
        .parse()
        .unwrap();
    ticks / per_second
}

fn get(port: u16) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_accepting_pauses_without_spinning_and_recovers() {
    let backend = Backend::named("served", Duration::ZERO).await;
    let dir = std::env::temp_dir().join(format!("fulcrum-descriptors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nworkers = 1\nshutdown_grace = \"1s\"\n\
             [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\npool = \"app\"\n\
             header_timeout = \"60s\"\n\
             [pools.app]\nbackends = [{{ addr = \"{}\" }}]\n",
            backend.addr
        ),
    )
    .unwrap();
    let prlimit = installed(&["/usr/bin/prlimit"], "util-linux");
    let mut child = Command::new(prlimit)
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let lines = BufReader::new(child.stderr.take().unwrap());
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    wait_listening(port);
    assert!(
        get(port).unwrap().contains("served"),
        "served before the flood"
    );

    // Far more idle connections than descriptors: the rest wait in the kernel's queue.
    let held: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let starved = |log: &[(Instant, String)]| {
        log.iter()
            .any(|(_, l)| l.contains("out of file descriptors"))
    };
    while !starved(&log.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "no EMFILE warning: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    let (cpu_before, started) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_seconds(pid) - cpu_before;
    let watched = started.elapsed();
    assert!(
        cpu < 0.3 * watched.as_secs_f64(),
        "fulcrum used {cpu:.2} s of CPU in {watched:?} while out of descriptors: a busy loop"
    );
    let warnings = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, line)| *at >= started && line.contains("out of file descriptors"))
        .count();
    assert!(
        (1..=5).contains(&warnings),
        "{warnings} warnings in {watched:?}; one a second is the rule"
    );

    // Descriptors free up: served again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(port) {
            Ok(answer) if answer.contains("served") => break,
            other => {
                assert!(Instant::now() < deadline, "not served again: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
