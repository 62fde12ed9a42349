//! `fulcrum demo`: the load balancer doing its main job on a built-in fleet. Three backends on
//! loopback answer with different service times (1, 5 and 20 ms); one HTTP listener spreads
//! requests over them with least connections; a bounded built-in load makes the spread
//! visible, and one line per second shows who served what.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_core::config::Config;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::RunningApp;
use crate::telemetry;

/// Service time of each demo backend.
const BACKEND_DELAYS_MS: [u64; 3] = [1, 5, 20];
/// Concurrent load connections; each pauses between requests, so the load stays bounded
/// (well under 2 000 requests/s) whatever the machine.
const LOAD_CONNECTIONS: usize = 16;
const LOAD_PAUSE: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address of the demo's HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// A file holding the admin API's bearer token; required when --admin is not a loopback
    /// address.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Do not generate load; only serve what you send.
    #[arg(long)]
    pub no_load: bool,
    /// Stop after this long (e.g. "10s") instead of waiting for Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

pub fn run(args: &DemoArgs) -> Result<(), String> {
    if !args.admin.ip().is_loopback() && args.admin_token_file.is_none() {
        return Err(format!(
            "--admin {}: an admin API on a non-loopback address needs a token; write one to a file (e.g. `head -c 24 /dev/urandom | base64 > admin.token`) and add --admin-token-file admin.token",
            args.admin
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the demo runtime: {e}"))?;
    let backends = runtime.block_on(async {
        let mut addrs = Vec::new();
        for (i, delay) in BACKEND_DELAYS_MS.iter().enumerate() {
            addrs.push(start_backend(i + 1, Duration::from_millis(*delay)).await?);
        }
        Ok::<_, String>(addrs)
    })?;
    let config = Config::from_toml(&demo_config(args, &backends)).map_err(|e| e.to_string())?;
    let app = RunningApp::start(&config).map_err(|e| e.to_string())?;

    println!("fulcrum demo: least_conn over three backends on loopback");
    for (i, (addr, delay)) in backends.iter().zip(BACKEND_DELAYS_MS).enumerate() {
        println!("  backend-{} {addr}  answers in {delay} ms", i + 1);
    }
    println!("  try:   curl -s http://{}/", args.listen);
    // The admin API's curl prefix, with the token when there is one.
    let curl = match &args.admin_token_file {
        Some(file) => format!(
            "curl -s -H \"Authorization: Bearer $(cat {})\"",
            file.display()
        ),
        None => "curl -s".to_string(),
    };
    println!("  state:   {curl} http://{}/api/pools/demo", args.admin);
    println!("  metrics: {curl} http://{}/metrics", args.admin);
    println!("  dashboard: open http://{}/ui in a browser", args.admin);
    if args.no_load {
        println!("  no built-in load (--no-load): send your own requests");
    } else {
        println!(
            "  built-in load: {LOAD_CONNECTIONS} connections, {} ms pause between requests",
            LOAD_PAUSE.as_millis()
        );
    }
    match args.duration {
        Some(d) => println!("Stops after {}.\n", humantime::format_duration(d)),
        None => println!("Ctrl-C stops.\n"),
    }

    let (stop_load, stop_rx) = watch::channel(false);
    runtime.block_on(async {
        if !args.no_load {
            for _ in 0..LOAD_CONNECTIONS {
                tokio::spawn(load(args.listen, stop_rx.clone()));
            }
        }
        let report = report(&app);
        match args.duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = telemetry::shutdown_signal() => {}
                    _ = report => {}
                }
            }
            None => {
                tokio::select! {
                    _ = telemetry::shutdown_signal() => {}
                    _ = report => {}
                }
            }
        }
    });
    let _ = stop_load.send(true);
    println!("\nstopping");
    app.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn demo_config(args: &DemoArgs, backends: &[SocketAddr]) -> String {
    let token = args
        .admin_token_file
        .as_ref()
        .map_or(String::new(), |path| {
            format!("token_file = {:?}\n", path.display().to_string())
        });
    let mut text = format!(
        "[admin]\nbind = \"{}\"\n{token}\n[runtime]\nshutdown_grace = \"2s\"\n\n[[listeners]]\nname = \"demo\"\nbind = \"{}\"\nprotocol = \"http\"\npool = \"demo\"\n\n[pools.demo]\nalgorithm = \"least_conn\"\nbackends = [\n",
        args.admin, args.listen
    );
    for addr in backends {
        let _ = writeln!(text, "  {{ addr = \"{addr}\" }},");
    }
    text.push_str("]\n");
    text
}

async fn start_backend(number: usize, delay: Duration) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start demo backend {number}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("demo backend {number}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(move |_request: Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let body =
                            format!("hello from backend-{number} ({} ms)\n", delay.as_millis());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One keep-alive client connection sending requests until told to stop.
async fn load(target: SocketAddr, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let Ok(stream) = TcpStream::connect(target).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(connection);
        loop {
            let request = Request::get("/")
                .header("host", "demo.local")
                .body(Empty::<Bytes>::new());
            let Ok(request) = request else { return };
            let response = tokio::select! {
                r = sender.send_request(request) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(response) = response else { break };
            if response.into_body().collect().await.is_err() {
                break;
            }
            tokio::time::sleep(LOAD_PAUSE).await;
        }
    }
}

/// Prints, once a second, how many requests each backend served in the last second.
async fn report(app: &RunningApp) {
    let Some(pool) = app.pools().get("demo") else {
        return;
    };
    let mut last: Vec<u64> = pool.status().backends.iter().map(|b| b.requests).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut seconds = 0u64;
    loop {
        tick.tick().await;
        seconds += 1;
        let status = pool.status();
        let mut line = format!("[{seconds:>4}s]");
        for (i, b) in status.backends.iter().enumerate() {
            let served = b.requests - last.get(i).copied().unwrap_or(0);
            let _ = write!(
                line,
                "  backend-{} ({:>2} ms): {served:>4} req/s, {} in flight",
                i + 1,
                BACKEND_DELAYS_MS.get(i).copied().unwrap_or(0),
                b.in_flight
            );
        }
        println!("{line}");
        last = status.backends.iter().map(|b| b.requests).collect();
    }
}
