//! Binary upgrade under load, through the real binary: `fulcrum upgrade` starts the new
//! process, which takes the listening sockets over; nothing is refused, slow requests in the
//! old process finish whole, traffic moves to the new process, the old one exits within its
//! grace period — and a new process that fails before it is ready changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::{free_port, fulcrum, wait_listening};
use common::Backend;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: usize = 8 * 1024;
const SLOW: Duration = Duration::from_secs(2);
const SLOW_REQUESTS: usize = 200;
const GRACE: Duration = Duration::from_secs(10);

/// Answers `BODY` bytes; paths under `/slow` after two seconds.
async fn backend() -> Backend {
    Backend::with_handler(Arc::new(|req| {
        let slow = req.uri().path().starts_with("/slow");
        Box::pin(async move {
            if slow {
                tokio::time::sleep(SLOW).await;
            }
            Response::new(Full::new(Bytes::from(vec![b'x'; BODY])))
        })
    }))
    .await
}

/// A `fulcrum run` child, killed if the test ends without stopping it.
struct Running(Option<Child>);

impl Running {
    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits up to `within` for it to exit.
    fn exits_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut().unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Setup {
    dir: PathBuf,
    file: PathBuf,
    port: u16,
    admin: u16,
}

fn write_file(setup: &Setup, backend: SocketAddr, extra: &str) {
    std::fs::write(
        &setup.file,
        format!(
            "[admin]\nbind = \"127.0.0.1:{}\"\n[runtime]\nworkers = 2\nshutdown_grace = \"{}s\"\nupgrade_socket = \"{}\"\n\
             [[listeners]]\nname = \"front\"\nbind = \"127.0.0.1:{}\"\nprotocol = \"http\"\npool = \"app\"\n\
             [pools.app]\nbackends = [{{ addr = \"{backend}\" }}]\nresponse_timeout = \"10s\"\n{extra}\n",
            setup.admin,
            GRACE.as_secs(),
            setup.dir.join("upgrade.sock").display(),
            setup.port,
        ),
    )
    .unwrap();
}

fn setup(test: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("fulcrum-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Setup {
        file: dir.join("fulcrum.toml"),
        dir,
        port: free_port(),
        admin: free_port(),
    }
}

fn start(file: &Path) -> Running {
    let child = fulcrum()
        .args(["run", "-c"])
        .arg(file)
        .env_remove("RUST_LOG")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(Some(child))
}

/// `fulcrum upgrade -c file`: (success, stdout, stderr). Its stderr goes through a file: the
/// new process inherits it and keeps it open long after `fulcrum upgrade` is done.
fn upgrade(file: &Path) -> (bool, String, String) {
    let log = file.with_extension("upgrade.log");
    let child = fulcrum()
        .args(["upgrade", "-c"])
        .arg(file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// [`upgrade`] off the test's async threads (it waits for the new process to be ready).
async fn upgrade_off_thread(file: &Path) -> (bool, String, String) {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || upgrade(&file))
        .await
        .unwrap()
}

async fn admin_reload_status(admin: u16) -> serde_json::Value {
    let (status, body) = common::Client::connect(SocketAddr::from(([127, 0, 0, 1], admin)))
        .await
        .get("/api/reload")
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn answer(&self, status: u16, length: usize, who: &str) {
        if status == 200 && length == BODY {
            self.ok.fetch_add(1, Ordering::SeqCst);
        } else {
            self.fail(format!("{who}: status {status}, {length} body bytes"));
        }
    }
    fn fail(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }
    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// A keep-alive client: when the server closes its connection after a response (as an old
/// process does), it opens a new one — that is not a failure; a request without a whole
/// answer is.
async fn keep_alive_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    'connections: while !stop.load(Ordering::SeqCst) {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(e) => {
                tally.fail(format!("keep-alive connect: {e}"));
                continue;
            }
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            tally.fail("keep-alive handshake".to_string());
            continue;
        };
        tokio::spawn(connection);
        while !stop.load(Ordering::SeqCst) {
            if sender.ready().await.is_err() {
                continue 'connections;
            }
            let request = hyper::Request::get("/fast")
                .header("host", "test.local")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let answer = async {
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body.len()))
            };
            match answer.await {
                Ok((status, length)) => tally.answer(status, length, "keep-alive"),
                Err(e) => {
                    tally.fail(format!("keep-alive request: {e}"));
                    continue 'connections;
                }
            }
        }
    }
}

/// One request on a new connection (`Connection: close`); `(status, body length)`.
async fn one_request(addr: SocketAddr, path: &str) -> Result<(u16, usize), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no whole head in {} bytes", response.len()))?;
    let status = std::str::from_utf8(response.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response.len() - end - 4))
}

async fn connection_per_request_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::SeqCst) {
        match one_request(addr, "/fast").await {
            Ok((status, length)) => tally.answer(status, length, "new connection"),
            Err(e) => tally.fail(format!("new connection: {e}")),
        }
    }
}

/// Starts 20 keep-alive clients and one connection-per-request client.
fn load(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut clients: Vec<_> = (0..20)
        .map(|_| tokio::spawn(keep_alive_client(addr, Arc::clone(stop), Arc::clone(tally))))
        .collect();
    clients.push(tokio::spawn(connection_per_request_client(
        addr,
        Arc::clone(stop),
        Arc::clone(tally),
    )));
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_refuses_nothing_finishes_slow_requests_and_the_old_process_exits() {
    let app = backend().await;
    let setup = setup("upgrade");
    write_file(&setup, app.addr, "");
    let mut old = start(&setup.file);
    wait_listening(setup.port);
    wait_listening(setup.admin);
    let addr = SocketAddr::from(([127, 0, 0, 1], setup.port));
    let before = admin_reload_status(setup.admin).await;
    assert_eq!(before["pid"], old.pid());
    assert_eq!(before["upgrade_generation"], 0);

    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(addr, &stop, &tally);
    // Two hundred slow requests in flight in the old process when it hands over.
    let slow: Vec<_> = (0..SLOW_REQUESTS)
        .map(|i| tokio::spawn(async move { one_request(addr, &format!("/slow/{i}")).await }))
        .collect();
    while app.requests() < SLOW_REQUESTS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (upgraded, stdout, stderr) = upgrade_off_thread(&setup.file).await;
    assert!(upgraded, "{stdout}{stderr}");
    let new_pid: u32 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {stdout}"));
    let _new = Running(None); // started by `fulcrum upgrade`; stopped by pid below
                              // The old process may take a few more connections in the moments after `ready`, and
                              // answers them; then everything is the new one's.
    let mut after = admin_reload_status(setup.admin).await;
    for _ in 0..100 {
        if after["pid"] == new_pid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = admin_reload_status(setup.admin).await;
    }
    assert_eq!(after["pid"], new_pid, "the admin API is the new process's");
    assert_eq!(after["upgrade_generation"], 1);

    for (i, request) in slow.into_iter().enumerate() {
        match request.await.unwrap() {
            Ok((status, length)) => assert!(
                status == 200 && length == BODY,
                "slow request {i}: status {status}, {length} bytes"
            ),
            Err(e) => panic!("slow request {i}: {e}"),
        }
    }
    let exited = tokio::task::spawn_blocking(move || {
        let status = old.exits_within(GRACE + Duration::from_secs(2));
        (old, status)
    })
    .await
    .unwrap();
    let (mut old, status) = exited;
    assert!(
        status.is_some_and(|s| s.success()),
        "the old process exits within its grace period: {status:?}"
    );
    // Traffic after the old one is gone: all on the new process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let failures = tally.failures();
    let ok = tally.ok.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed or were refused, e.g. {:?}",
        failures.len(),
        failures.len() + ok,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "the load ran ({ok} answers)");
    println!(
        "upgrade under load: {ok} answers and {SLOW_REQUESTS} slow requests, 0 failed or refused"
    );
    old.0.take();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::fs::remove_dir_all(&setup.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_fails_before_it_is_ready_leaves_the_old_one_serving() {
    let app = backend().await;
    let setup = setup("upgrade-fails");
    write_file(&setup, app.addr, "");
    let old = start(&setup.file);
    wait_listening(setup.port);
    wait_listening(setup.admin);
    let addr = SocketAddr::from(([127, 0, 0, 1], setup.port));
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(addr, &stop, &tally);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The new process reads a file it cannot use: it exits before taking anything.
    write_file(&setup, app.addr, "colour = \"red\"");
    let (upgraded, _, stderr) = upgrade_off_thread(&setup.file).await;
    assert!(!upgraded);
    assert!(stderr.contains("pools.app.colour: unknown key"), "{stderr}");
    assert!(
        stderr.contains("the running fulcrum keeps serving"),
        "{stderr}"
    );

    // A file that loads but whose app cannot be built (the admin address taken by someone
    // else): it fails after taking the sockets, before saying ready.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&setup.file)
        .unwrap()
        .replace("colour = \"red\"", "")
        .replace(
            &format!("bind = \"127.0.0.1:{}\"\n[runtime]", setup.admin),
            &format!("bind = \"127.0.0.1:{busy}\"\n[runtime]"),
        );
    std::fs::write(&setup.file, text).unwrap();
    let (upgraded, _, stderr) = upgrade_off_thread(&setup.file).await;
    assert!(!upgraded);
    assert!(stderr.contains("admin.bind: cannot listen on"), "{stderr}");
    drop(taken);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let failures = tally.failures();
    assert!(failures.is_empty(), "{failures:?}");
    let status = admin_reload_status(setup.admin).await;
    assert_eq!(status["pid"], old.pid(), "the old process still serves");
    assert_eq!(status["upgrade_generation"], 0);
    assert_eq!(one_request(addr, "/fast").await, Ok((200, BODY)));
    drop(old);
    std::fs::remove_dir_all(&setup.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_new_process_says_ready_with_its_pid_and_the_old_one_says_no_more() {
    let app = backend().await;
    let setup = setup("upgrade-notify");
    write_file(&setup, app.addr, "");
    let socket_path = setup.dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next_message = |what: &str| {
        let mut message = [0u8; 512];
        let n = notify
            .recv(&mut message)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        String::from_utf8_lossy(&message[..n]).into_owned()
    };
    let mut old = Running(Some(
        fulcrum()
            .args(["run", "-c"])
            .arg(&setup.file)
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let ready = next_message("READY=1 from the old process");
    assert!(
        ready.contains(&format!("MAINPID={}", old.pid())),
        "{ready:?}"
    );

    let file = setup.file.clone();
    let socket = socket_path.clone();
    let (upgraded, stdout) = tokio::task::spawn_blocking(move || {
        let log = file.with_extension("upgrade.log");
        let out = fulcrum()
            .args(["upgrade", "-c"])
            .arg(&file)
            .env("NOTIFY_SOCKET", &socket)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
            .wait_with_output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(upgraded, "{stdout}");
    let new_pid: u32 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {stdout}"));
    let ready = next_message("READY=1 from the new process");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={new_pid}")),
        "the new process names itself the main one: {ready:?}"
    );
    let status = old.exits_within(GRACE + Duration::from_secs(2));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The old one left without STOPPING=1, which would stop the unit the new one serves.
    notify
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut message = [0u8; 512];
    match notify.recv(&mut message) {
        Ok(n) => panic!(
            "the old process told systemd more: {:?}",
            String::from_utf8_lossy(&message[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = next_message("STOPPING=1 from the new process");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    std::fs::remove_dir_all(&setup.dir).unwrap();
}
