//! The dashboard at `/ui` in a real browser: headless Chromium (Debian's chromium), driven
//! through chromedriver (chromium-driver) over WebDriver, against a running fulcrum whose
//! admin API needs a token. The page must load without a console error, ask for the token,
//! show every backend with its state, show a request rate that rises when load starts, and
//! drain a backend when its button is clicked. A screenshot is left under `target/` for a
//! person to look at.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::cli::{free_port, wait_listening};
use common::*;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{ClientBuilder, Locator};
use fulcrum::RunningApp;
use fulcrum_core::config::Config;
use serde_json::json;

const TOKEN: &str = "dashboard-test-token";

/// chromedriver, stopped when the test ends however it ends.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver and opens a headless Chromium session that records the console.
async fn browser() -> (Driver, fantoccini::Client) {
    let driver = installed(&["/usr/bin/chromedriver"], "chromium-driver");
    let chromium = installed(&["/usr/bin/chromium"], "chromium");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver { child, port };
    wait_listening(driver.port);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // --no-sandbox: the suite runs as root, where Chromium's sandbox cannot start.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,760"],
        }),
    );
    capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("chromedriver would not open a Chromium session: {e}"));
    (driver, client)
}

/// chromedriver's log endpoint (not in W3C WebDriver, so not in fantoccini): what the page
/// wrote to the console and what failed to load, since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

async fn console_errors(client: &fantoccini::Client) -> Vec<String> {
    let entries = client.issue_cmd(BrowserLog).await.unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// fulcrum over `backends`, its admin API behind [`TOKEN`].
fn start(dir: &std::path::Path, backends: &[SocketAddr]) -> RunningApp {
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[runtime]\nworkers = 2\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         [pools.app]\nalgorithm = \"round_robin\"\ndrain_timeout = \"30s\"\nbackends = [{}]\n",
        token.display(),
        list.join(", ")
    );
    RunningApp::start(&Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))).unwrap()
}

/// Polls the page until `ready` holds for what `read` returns (or fails after `within`).
async fn wait_page<T: std::fmt::Debug>(
    within: Duration,
    what: &str,
    mut read: impl AsyncFnMut() -> T,
    ready: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = read().await;
        if ready(&value) {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not shown within {within:?}; last seen: {value:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GET /api/pools/app` (with the token) until `ready` holds (or fails after 10 s).
async fn wait_api(
    admin: SocketAddr,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut api = Client::connect(admin).await;
    let mut read = async || {
        let request = http::Request::get("/api/pools/app")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let (status, body) = api.send(request).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    wait_page(Duration::from_secs(10), what, &mut read, |pool| ready(pool)).await
}

/// The request rate the page shows for `pool` (the chart's latest value), 0 while empty.
async fn shown_rate(client: &fantoccini::Client, pool: &str) -> f64 {
    let chart = client
        .find(Locator::Css(&format!(
            r#"section[data-pool="{pool}"] [data-series="rate"]"#
        )))
        .await
        .unwrap();
    let value = chart.attr("data-value").await.unwrap().unwrap_or_default();
    value.parse().unwrap_or(0.0)
}

/// Each backend row's address and shown state.
async fn shown_states(client: &fantoccini::Client) -> Vec<(String, String)> {
    let mut states = Vec::new();
    for row in client
        .find_all(Locator::Css("tr[data-backend]"))
        .await
        .unwrap()
    {
        let addr = row.attr("data-backend").await.unwrap().unwrap_or_default();
        let state = row.attr("data-state").await.unwrap().unwrap_or_default();
        states.push((addr, state));
    }
    states.sort();
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_state_and_drains_with_a_click() {
    let dir = std::env::temp_dir().join(format!("fulcrum-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backends = [
        Backend::named("b1", Duration::from_millis(2)).await,
        Backend::named("b2", Duration::from_millis(2)).await,
        Backend::named("b3", Duration::from_millis(2)).await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let app = start(&dir, &addrs);
    let admin = app.admin_addr().unwrap();
    let front = app.listener_addr("web").unwrap();
    let (_driver, client) = browser().await;

    client.goto(&format!("http://{admin}/ui")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "fulcrum");

    // The page knows a token is needed and asks for it before calling anything.
    let token_input = client
        .wait()
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    assert!(token_input.is_displayed().await.unwrap(), "no token prompt");
    assert!(shown_states(&client).await.is_empty());
    token_input.send_keys(TOKEN).await.unwrap();
    client
        .find(Locator::Css("#token-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Every backend, with its state.
    let mut expected: Vec<(String, String)> = addrs
        .iter()
        .map(|a| (a.to_string(), "active".to_string()))
        .collect();
    expected.sort();
    wait_page(
        Duration::from_secs(10),
        "the three backends as active",
        async || shown_states(&client).await,
        |states| *states == expected,
    )
    .await;

    // Idle, the rate is 0; under load it rises.
    let idle = wait_page(
        Duration::from_secs(10),
        "a rate from two polls",
        async || {
            let chart = client
                .find(Locator::Css(
                    r#"section[data-pool="app"] [data-series="rate"]"#,
                ))
                .await
                .unwrap();
            chart.attr("data-value").await.unwrap().unwrap_or_default()
        },
        |value| !value.is_empty(),
    )
    .await;
    assert_eq!(idle.parse::<f64>().unwrap(), 0.0, "rate before any load");
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(front, 4, Arc::clone(&stop));
    let busy = wait_page(
        Duration::from_secs(15),
        "a request rate above 50/s under load",
        async || shown_rate(&client, "app").await,
        |rate| *rate > 50.0,
    )
    .await;
    let summary = client
        .find(Locator::Id("summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.contains("3 backends"), "{summary}");

    // Drain b2 with a click: the API says draining (or drained, once its in-flight requests
    // ended), and so does the page.
    let target = addrs[1].to_string();
    client
        .find(Locator::Css(&format!(
            r#"tr[data-backend="{target}"] button[data-action="drain"]"#
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let pool = wait_api(admin, "the clicked backend draining in the API", |pool| {
        matches!(
            backend_state(pool, addrs[1]).as_str(),
            "draining" | "drained"
        )
    })
    .await;
    for other in [addrs[0], addrs[2]] {
        assert_eq!(backend_state(&pool, other), "active", "{other}");
    }
    wait_page(
        Duration::from_secs(10),
        "the drained backend on the page",
        async || shown_states(&client).await,
        |states| {
            states
                .iter()
                .any(|(a, s)| *a == target && (s == "draining" || s == "drained"))
        },
    )
    .await;
    let status_line = client
        .find(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status_line.contains("drain"), "{status_line}");

    let screenshot = client.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, screenshot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());

    let errors = console_errors(&client).await;
    assert!(errors.is_empty(), "the console reported: {errors:#?}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures) = load.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > 0 && busy > 50.0);
    client.close().await.unwrap();
    app.shutdown();
}
