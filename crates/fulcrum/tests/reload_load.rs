//! Reloads under real load: a hundred of them, one every 200 ms, while fifty keep-alive
//! clients and a connection-per-request client keep fulcrum busy, with bad files in between.
//! Nothing may be refused, fail or come back short, no bad file may change anything, and the
//! traffic must follow each good file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::Backend;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each backend answers with this many copies of its letter: a cut body shows.
const BODY: usize = 16 * 1024;
const RELOADS: usize = 100;
const KEEP_ALIVE_CLIENTS: usize = 50;

async fn lettered(letter: u8) -> Backend {
    Backend::with_handler(Arc::new(move |_req| {
        Box::pin(async move { Response::new(Full::new(Bytes::from(vec![letter; BODY]))) })
    }))
    .await
}

/// The two files: A balances a and b round robin, B hashes paths over a and c.
fn file(variant: usize, a: SocketAddr, other: SocketAddr, port: u16) -> Config {
    let pool = if variant == 0 {
        format!("algorithm = \"round_robin\"\nbackends = [{{ addr = \"{a}\" }}, {{ addr = \"{other}\" }}]")
    } else {
        format!("algorithm = \"ring_hash\"\nhash_key = \"path\"\nbackends = [{{ addr = \"{a}\" }}, {{ addr = \"{other}\" }}]")
    };
    let text = format!(
        "[runtime]\nworkers = 2\nshutdown_grace = \"5s\"\n\
         [[listeners]]\nname = \"front\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\npool = \"app\"\n\
         [pools.app]\nslow_start = \"0s\"\n{pool}\n"
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Two files that cannot be applied, each otherwise like `good` (the next good file, so that
/// they would change something): one adds a listener on a port another process holds, one
/// gives the listener a certificate that does not exist.
fn bad_files(good: Config, taken: &std::net::TcpListener) -> [Config; 2] {
    let mut unbindable = good.clone();
    let mut extra = good.listeners[0].clone();
    extra.name = "extra".to_string();
    extra.bind = taken.local_addr().unwrap();
    unbindable.listeners.push(extra);
    let mut no_certificate = good;
    let text = "[[listeners]]\nname = \"x\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\npool = \"p\"\n\
                tls = { certificates = [{ cert = \"/nonexistent/c.pem\", key = \"/nonexistent/c.key\" }] }\n\
                [pools.p]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n";
    let with_tls = Config::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
    no_certificate.listeners[0].tls = with_tls.listeners[0].tls.clone();
    [unbindable, no_certificate]
}

/// What the clients saw, by reload phase (the number of reloads made when the answer came).
#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// (phase, backend letter) of every whole answer.
    answers: Mutex<Vec<(usize, u8)>>,
}

impl Seen {
    fn answer(&self, phase: &AtomicUsize, status: u16, body: &[u8]) {
        let letter = body.first().copied().unwrap_or(b'?');
        if status == 200 && body.len() == BODY && body.iter().all(|b| *b == letter) {
            self.ok.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .unwrap()
                .push((phase.load(Ordering::SeqCst), letter));
        } else {
            self.fail(format!("status {status}, {} body bytes", body.len()));
        }
    }

    fn fail(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }
}

async fn keep_alive_client(
    addr: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    seen: Arc<Seen>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let request = hyper::Request::get(format!("/k{n}-{i}"))
            .header("host", "test.local")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match answer.await {
            Ok((status, body)) => seen.answer(&phase, status, &body),
            Err(e) => {
                seen.fail(format!("keep-alive client {n}: {e}"));
                return;
            }
        }
    }
}

async fn connection_per_request_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    seen: Arc<Seen>,
) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(e) => {
                seen.fail(format!("connect refused: {e}"));
                continue;
            }
        };
        let request =
            format!("GET /c{i} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
        if let Err(e) = stream.write_all(request.as_bytes()).await {
            seen.fail(format!("send: {e}"));
            continue;
        }
        let mut response = Vec::new();
        if let Err(e) = stream.read_to_end(&mut response).await {
            seen.fail(format!("read: {e}"));
            continue;
        }
        let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            seen.fail(format!("no whole head in {} bytes", response.len()));
            continue;
        };
        let status = std::str::from_utf8(&response[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        seen.answer(&phase, status, &response[end + 4..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_refuse_fail_and_cut_nothing_and_the_traffic_follows_them() {
    let (a, b, c) = (
        lettered(b'a').await,
        lettered(b'b').await,
        lettered(b'c').await,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (a_addr, b_addr, c_addr) = (a.addr, b.addr, c.addr);
    let files = move |n: usize| {
        if n % 2 == 0 {
            file(0, a_addr, b_addr, port)
        } else {
            file(1, a_addr, c_addr, port)
        }
    };
    let mut app = RunningApp::start(&files(0)).unwrap();
    let addr = app.listener_addr("front").unwrap();
    let (stop, phase, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Seen::default()),
    );
    let mut clients = Vec::new();
    for n in 0..KEEP_ALIVE_CLIENTS {
        clients.push(tokio::spawn(keep_alive_client(
            addr,
            n,
            Arc::clone(&stop),
            Arc::clone(&phase),
            Arc::clone(&seen),
        )));
    }
    clients.push(tokio::spawn(connection_per_request_client(
        addr,
        Arc::clone(&stop),
        Arc::clone(&phase),
        Arc::clone(&seen),
    )));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A port someone else holds, for the bad files.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reloads = {
        let phase = Arc::clone(&phase);
        tokio::task::spawn_blocking(move || {
            let mut outcomes = Vec::new();
            let mut refusals = Vec::new();
            for n in 1..=RELOADS {
                outcomes.push(app.reload(files(n)).map(|changes| changes.len()));
                phase.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                // Every tenth, bad files too: nothing of them may be applied.
                if n % 10 == 0 {
                    let before = app.config().clone();
                    for bad in bad_files(files(n + 1), &taken) {
                        refusals.push(app.reload(bad).map(|_| ()).map_err(|e| e.to_string()));
                        assert_eq!(
                            *app.config(),
                            before,
                            "a refused reload changed the configuration"
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (app, outcomes, refusals)
        })
    };
    let (app, outcomes, refusals) = reloads.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    tokio::task::block_in_place(|| app.shutdown());

    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            // Algorithm, the hash key (a setting), one backend added and one removed.
            Ok(changes) => assert_eq!(*changes, 4, "reload {}", n + 1),
            Err(e) => panic!("reload {} refused: {e}", n + 1),
        }
    }
    assert_eq!(refusals.len(), 2 * RELOADS / 10);
    for refusal in &refusals {
        match refusal {
            Ok(()) => panic!("a bad file was applied"),
            Err(e) => assert!(
                e.contains("cannot listen on") || e.contains("listeners[0].tls"),
                "{e}"
            ),
        }
    }
    let failures = seen.failures.lock().unwrap().clone();
    let ok = seen.ok.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, refused or were cut, e.g. {:?}",
        failures.len(),
        failures.len() + ok,
        &failures[..failures.len().min(5)]
    );
    // The switch, seen in the traffic: b answers while A runs, c while B does.
    let answers = seen.answers.lock().unwrap();
    let phases_with = |letter: u8, parity: usize| {
        let mut phases: Vec<usize> = answers
            .iter()
            .filter(|(p, l)| *l == letter && p % 2 == parity)
            .map(|(p, _)| *p)
            .collect();
        phases.dedup();
        phases.sort_unstable();
        phases.dedup();
        phases.len()
    };
    let (b_in_a, c_in_b) = (phases_with(b'b', 0), phases_with(b'c', 1));
    assert!(
        b_in_a >= RELOADS / 2 - 5 && c_in_b >= RELOADS / 2 - 5,
        "b answered in {b_in_a} of the A phases, c in {c_in_b} of the B phases ({ok} answers)"
    );
    println!(
        "{RELOADS} reloads under load: {ok} answers, 0 failed; b served in {b_in_a} A phases, c in {c_in_b} B phases"
    );
}
