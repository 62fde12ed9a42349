//! Access logs as an operator reads them: JSON lines for HTTP/1.1, HTTP/2, a failed upstream,
//! a malformed request and a TCP connection, each parsed and checked field by field; the
//! combined format line by line; a log whose reader stalls drops and counts lines while
//! every request still succeeds; and `fulcrum run` reopening its file on SIGUSR1 after the
//! file was moved, as logrotate does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::{free_port, fulcrum, wait_listening};
use common::*;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fulcrum-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file's lines, once it holds at least `n` (waits up to 5 s: the writer is a thread).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {} lines, expected {n}:\n{text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_describe_each_request_and_connection() {
    let dir = test_dir("access-json");
    let log = dir.join("access.log");
    let backend = Backend::named("b1", Duration::ZERO).await;
    let gone = dead_addr().await;
    let echo = echo_backend().await;
    let text = format!(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         access_log = {{ format = \"json\", path = \"{log}\" }}\n\
         [[listeners]]\nname = \"broken\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"gone\"\n\
         access_log = {{ path = \"{log}\" }}\n\
         [[listeners]]\nname = \"raw\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\npool = \"echo\"\n\
         access_log = {{ path = \"{log}\" }}\n\
         [pools.app]\nbackends = [{{ addr = \"{}\" }}]\n\
         [pools.gone]\nbackends = [{{ addr = \"{gone}\" }}]\n\
         [pools.echo]\nbackends = [{{ addr = \"{echo}\" }}]\n",
        backend.addr,
        log = log.display()
    );
    let app = RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap();
    let web = app.listener_addr("web").unwrap();

    // HTTP/1.1, with the two headers the log reads back.
    let answer = raw_exchange(
        web,
        b"GET /hello?x=1 HTTP/1.1\r\nhost: a\r\nuser-agent: test-agent\r\nreferer: http://ref/\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let first = lines(&log, 1).await;
    let line = json(&first[0]);
    let client_port = line["client"].as_str().unwrap().to_string();
    assert!(client_port.starts_with("127.0.0.1:"), "{line}");
    assert_eq!(line["listener"], "web");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/hello?x=1");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["pool"], "app");
    assert_eq!(line["backend"], backend.addr.to_string());
    assert_eq!(line["retries"], 0);
    assert_eq!(line["error"], serde_json::Value::Null);
    assert_eq!(line["user_agent"], "test-agent");
    assert_eq!(line["referer"], "http://ref/");
    let request_len = "GET /hello?x=1 HTTP/1.1\r\nhost: a\r\nuser-agent: test-agent\r\nreferer: http://ref/\r\nconnection: close\r\n\r\n".len();
    assert_eq!(
        line["bytes_in"], request_len as u64,
        "the head, as the client sent it"
    );
    assert_eq!(
        line["bytes_out"],
        answer.len() as u64,
        "what the client read"
    );
    let upstream = line["upstream_seconds"].as_f64().unwrap();
    let total = line["total_seconds"].as_f64().unwrap();
    assert!(upstream > 0.0 && upstream <= total, "{line}");
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");

    // A body counts in.
    let answer = raw_exchange(
        web,
        b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let line = json(&lines(&log, 2).await[1]);
    assert_eq!(line["method"], "POST");
    assert_eq!(
        line["bytes_in"],
        "POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".len()
            as u64
    );

    // A malformed request: refused by fulcrum, the client's fault, no method or path.
    let answer = raw_exchange(web, b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let line = json(&lines(&log, 3).await[2]);
    assert_eq!(line["status"], 400);
    assert_eq!(line["error"], "client");
    assert_eq!(line["method"], serde_json::Value::Null);

    // A failed upstream: 502, the upstream's fault, the backend tried named.
    let mut broken = Client::connect(app.listener_addr("broken").unwrap()).await;
    assert_eq!(broken.get("/x").await.0, 502);
    let line = json(&lines(&log, 4).await[3]);
    assert_eq!(line["listener"], "broken");
    assert_eq!(line["status"], 502);
    assert_eq!(line["error"], "upstream");
    assert_eq!(line["backend"], gone.to_string());
    assert_eq!(line["upstream_seconds"], serde_json::Value::Null);

    // HTTP/2 (prior knowledge): its protocol and its body bytes.
    let stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("http://{web}/two"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let line = json(&lines(&log, 5).await[4]);
    assert_eq!(line["protocol"], "HTTP/2.0");
    assert_eq!(line["path"], "/two");
    assert_eq!(line["bytes_out"], body.len() as u64);

    // TCP: one line per connection, bytes both ways.
    let mut tcp = tokio::net::TcpStream::connect(app.listener_addr("raw").unwrap())
        .await
        .unwrap();
    tcp.write_all(b"hello world").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tcp.read_to_end(&mut echoed).await.unwrap();
    drop(tcp);
    let line = json(&lines(&log, 6).await[5]);
    assert_eq!(line["listener"], "raw");
    assert_eq!(line["protocol"], "tcp");
    assert_eq!(line["status"], serde_json::Value::Null);
    assert_eq!(line["bytes_in"], 11);
    assert_eq!(line["bytes_out"], 11);
    assert_eq!(line["backend"], echo.to_string());
    assert_eq!(line["pool"], "echo");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_are_what_log_tools_parse() {
    let dir = test_dir("access-combined");
    let log = dir.join("access.log");
    let backend = Backend::named("b1", Duration::ZERO).await;
    let text = format!(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         access_log = {{ format = \"combined\", path = \"{}\" }}\n\
         [pools.app]\nbackends = [{{ addr = \"{}\" }}]\n",
        log.display(),
        backend.addr
    );
    let app = RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap();
    let answer = raw_exchange(
        app.listener_addr("web").unwrap(),
        b"GET /p HTTP/1.1\r\nhost: a\r\nuser-agent: say \"hi\"\r\nconnection: close\r\n\r\n",
    )
    .await;
    let line = &lines(&log, 1).await[0];
    // 127.0.0.1 - - [03/Dec/2026:08:15:30 +0000] "GET /p HTTP/1.1" 200 123 "-" "say \"hi\""
    let (prefix, rest) = line.split_once(" [").unwrap();
    assert_eq!(prefix, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), "03/Dec/2026:08:15:30 +0000".len(), "{time}");
    assert!(time.ends_with(" +0000"), "{time}");
    assert_eq!(
        rest,
        format!(
            "\"GET /p HTTP/1.1\" 200 {} \"-\" \"say \\\"hi\\\"\"",
            answer.len()
        )
    );
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_drops_and_counts_lines_and_requests_still_succeed() {
    let dir = test_dir("access-stalled");
    let fifo = dir.join("stalled.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Held open (read and write: opening a FIFO so never blocks) and never read until the
    // end: once the pipe's buffer is full the writer blocks, like a log on a stuck disk.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let backend = Backend::named("b1", Duration::ZERO).await;
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         access_log = {{ path = \"{}\", queue = 8 }}\n\
         [pools.app]\nbackends = [{{ addr = \"{}\" }}]\n",
        fifo.display(),
        backend.addr
    );
    let app = RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap();
    let mut client = Client::connect(app.listener_addr("web").unwrap()).await;
    const REQUESTS: u64 = 1500;
    for _ in 0..REQUESTS {
        assert_eq!(
            client
                .get("/a/fairly/long/path/to/fill/the/pipe/sooner")
                .await
                .0,
            200
        );
    }
    let admin = app.admin_addr().unwrap();
    let counter = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{listener=\"web\"}}")))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let (_, scrape) = Client::connect(admin).await.get("/metrics").await;
    let dropped = counter(&scrape, "fulcrum_access_log_dropped_total");
    assert!(
        dropped > 0,
        "a 64 KiB pipe cannot hold {REQUESTS} lines:\n{scrape}"
    );

    // Reading the pipe unblocks the writer: every line is then written or was dropped.
    let read_all = std::thread::spawn(move || {
        use std::io::Read;
        let mut lines = 0u64;
        let mut buf = [0u8; 65536];
        while let Ok(n) = reader.read(&mut buf) {
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            if lines >= REQUESTS - dropped {
                break;
            }
        }
        lines
    });
    let read = read_all.join().unwrap();
    let (_, scrape) = Client::connect(admin).await.get("/metrics").await;
    let written = counter(&scrape, "fulcrum_access_log_lines_total");
    assert_eq!(written + dropped, REQUESTS, "{scrape}");
    assert_eq!(read, written);
    app.shutdown();
}

#[test]
fn fulcrum_run_reopens_its_log_on_sigusr1() {
    let dir = test_dir("access-reopen");
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let backend = common::cli::named_tcp_backend("hi");
    let port = free_port();
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nshutdown_grace = \"1s\"\n[[listeners]]\nname = \"t\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\npool = \"p\"\n\
             access_log = {{ path = \"{}\" }}\n[pools.p]\nbackends = [{{ addr = \"{backend}\" }}]\n",
            log.display()
        ),
    )
    .unwrap();
    let mut child = fulcrum()
        .args(["run", "-c"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    let connect_once = || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hi");
    };
    let count_lines = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let wait_lines = |path: &Path, n: usize| {
        for _ in 0..250 {
            if count_lines(path) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} never had {n} lines", path.display());
    };
    // The probe of wait_listening was a connection too.
    connect_once();
    wait_lines(&log, 2);
    // logrotate: move the file, then tell fulcrum.
    std::fs::rename(&log, &rotated).unwrap();
    let usr1 = std::process::Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(usr1.success());
    // The writer reopens within its idle check; then new lines go to the new file.
    for _ in 0..250 {
        if log.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.exists(), "the log was not reopened by its path");
    connect_once();
    wait_lines(&log, 1);
    assert_eq!(count_lines(&rotated), 2, "the moved file keeps its lines");
    assert_eq!(count_lines(&log), 1);
    let line = json(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    );
    assert_eq!(line["bytes_out"], 2);
    let (status, stderr) = common::cli::terminate(&mut child);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("reopening the access logs"), "{stderr}");
}
