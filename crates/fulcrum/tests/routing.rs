//! Content routing through the running proxy, as a table: a request (HTTP/1.1 bytes, or an
//! HTTP/2 stream), the pool whose backend must receive it, and the request line and Host
//! that backend must see (rewrites applied). Each pool has one recording backend, so the
//! table also proves no other pool saw the request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::h2raw::{block, frame, RawH2, END_HEADERS, END_STREAM, HEADERS};
use common::recorder::Recorder;
use common::*;
use fulcrum::app::RunningApp;
use fulcrum_core::config::Config;

const POOLS: &[&str] = &[
    "web", "api", "api-v2", "canary", "mobile", "apps", "shop", "health", "writer", "reader",
    "beta", "static", "legacy",
];

/// The route table under test, in order. Later entries overlap earlier ones on purpose.
const ROUTES: &str = r#"
routes = [
  { name = "api-v2", host = "api.example.com", path_prefix = "/v2/", pool = "api-v2", rewrite_prefix = "/" },
  { name = "api", host = "api.example.com", pool = "api", rewrite_host = "api.internal" },
  { name = "canary", header = { name = "x-canary", value = "1" }, pool = "canary" },
  { name = "mobile", header = { name = "user-agent", regex = ".*(Android|iPhone).*" }, pool = "mobile" },
  { name = "shop", host = "shop.apps.example.com", pool = "shop" },
  { name = "apps", host = "*.apps.example.com", pool = "apps" },
  { name = "health", path = "/healthz", pool = "health" },
  { name = "writes", path_prefix = "/data/", methods = ["POST", "PUT", "DELETE"], pool = "writer" },
  { name = "reads", path_prefix = "/data/", pool = "reader" },
  { name = "beta", query_param = { name = "beta" }, pool = "beta" },
  { name = "static-deep", path_prefix = "/static/v1/", pool = "legacy", rewrite_prefix = "/old/" },
  { name = "static", path_prefix = "/static/", pool = "static", rewrite_prefix = "/assets" },
]
"#;

struct Fleet {
    proxy: Proxy,
    backends: BTreeMap<&'static str, Recorder>,
}

/// The configuration: the listener with `routes`, and a pool per backend.
fn config_of(routes: &str, backends: &BTreeMap<&'static str, Recorder>) -> Config {
    let mut pools = String::new();
    for (name, backend) in backends {
        pools.push_str(&format!(
            "[pools.{name}]\nbackends = [{{ addr = \"{}\" }}]\n",
            backend.addr
        ));
    }
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\nshutdown_grace = \"5s\"\n\
         [[listeners]]\nname = \"front\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"web\"\n{routes}\n{pools}"
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

async fn fleet() -> Fleet {
    let mut backends = BTreeMap::new();
    for name in POOLS {
        backends.insert(*name, Recorder::start().await);
    }
    let config = config_of(ROUTES, &backends);
    let app = RunningApp::start(&config).unwrap();
    Fleet {
        proxy: Proxy {
            addr: app.listener_addr("front").unwrap(),
            app: Some(app),
        },
        backends,
    }
}

/// One row: what the client sends, the pool that must get it, and the request line and
/// Host its backend must see.
struct Row {
    send: &'static str,
    pool: &'static str,
    line: &'static str,
    host: &'static str,
}

const fn row(
    send: &'static str,
    pool: &'static str,
    line: &'static str,
    host: &'static str,
) -> Row {
    Row {
        send,
        pool,
        line,
        host,
    }
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Host and path prefix, with the prefix rewritten; overlapping host rules in order.
    row("GET /v2/users HTTP/1.1\r\nhost: api.example.com\r\n\r\n", "api-v2", "GET /users HTTP/1.1", "api.example.com"),
    row("GET /v2/users?page=2 HTTP/1.1\r\nhost: API.example.com:8080\r\n\r\n", "api-v2", "GET /users?page=2 HTTP/1.1", "API.example.com:8080"),
    row("GET /v2/ HTTP/1.1\r\nhost: api.example.com\r\n\r\n", "api-v2", "GET / HTTP/1.1", "api.example.com"),
    row("GET http://api.example.com/v2/x HTTP/1.1\r\nhost: api.example.com\r\n\r\n", "api-v2", "GET /x HTTP/1.1", "api.example.com"),
    row("GET /v1/users HTTP/1.1\r\nhost: api.example.com\r\n\r\n", "api", "GET /v1/users HTTP/1.1", "api.internal"),
    row("GET /v2 HTTP/1.1\r\nhost: api.example.com\r\n\r\n", "api", "GET /v2 HTTP/1.1", "api.internal"),
    row("GET /v2/users HTTP/1.1\r\nhost: www.example.com\r\n\r\n", "web", "GET /v2/users HTTP/1.1", "www.example.com"),
    // Headers: equal, and a whole-value regex; a host route before them wins.
    row("GET / HTTP/1.1\r\nhost: www.example.com\r\nx-canary: 1\r\n\r\n", "canary", "GET / HTTP/1.1", "www.example.com"),
    row("GET / HTTP/1.1\r\nhost: www.example.com\r\nX-Canary: 1\r\n\r\n", "canary", "GET / HTTP/1.1", "www.example.com"),
    row("GET / HTTP/1.1\r\nhost: www.example.com\r\nx-canary: 0\r\n\r\n", "web", "GET / HTTP/1.1", "www.example.com"),
    row("GET /v9 HTTP/1.1\r\nhost: api.example.com\r\nx-canary: 1\r\n\r\n", "api", "GET /v9 HTTP/1.1", "api.internal"),
    row("GET / HTTP/1.1\r\nhost: a\r\nuser-agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)\r\n\r\n", "mobile", "GET / HTTP/1.1", "a"),
    row("GET / HTTP/1.1\r\nhost: a\r\nuser-agent: Mozilla/5.0 (Linux; Android 14)\r\n\r\n", "mobile", "GET / HTTP/1.1", "a"),
    row("GET / HTTP/1.1\r\nhost: a\r\nuser-agent: curl/8.0\r\n\r\n", "web", "GET / HTTP/1.1", "a"),
    // Exact host before a wildcard; a wildcard covers one label only.
    row("GET /cart HTTP/1.1\r\nhost: shop.apps.example.com\r\n\r\n", "shop", "GET /cart HTTP/1.1", "shop.apps.example.com"),
    row("GET / HTTP/1.1\r\nhost: blog.apps.example.com\r\n\r\n", "apps", "GET / HTTP/1.1", "blog.apps.example.com"),
    row("GET / HTTP/1.1\r\nhost: BLOG.Apps.Example.Com\r\n\r\n", "apps", "GET / HTTP/1.1", "BLOG.Apps.Example.Com"),
    row("GET / HTTP/1.1\r\nhost: apps.example.com\r\n\r\n", "web", "GET / HTTP/1.1", "apps.example.com"),
    row("GET / HTTP/1.1\r\nhost: a.b.apps.example.com\r\n\r\n", "web", "GET / HTTP/1.1", "a.b.apps.example.com"),
    // Exact path.
    row("GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n", "health", "GET /healthz HTTP/1.1", "a"),
    row("GET /healthz?full=1 HTTP/1.1\r\nhost: a\r\n\r\n", "health", "GET /healthz?full=1 HTTP/1.1", "a"),
    row("GET /healthz/ HTTP/1.1\r\nhost: a\r\n\r\n", "web", "GET /healthz/ HTTP/1.1", "a"),
    // Methods: the first route that lists the method, else the next one down.
    row("POST /data/1 HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n", "writer", "POST /data/1 HTTP/1.1", "a"),
    row("DELETE /data/1 HTTP/1.1\r\nhost: a\r\n\r\n", "writer", "DELETE /data/1 HTTP/1.1", "a"),
    row("GET /data/1 HTTP/1.1\r\nhost: a\r\n\r\n", "reader", "GET /data/1 HTTP/1.1", "a"),
    row("post /data/1 HTTP/1.1\r\nhost: a\r\n\r\n", "reader", "post /data/1 HTTP/1.1", "a"),
    // Query parameters, as sent.
    row("GET /?beta HTTP/1.1\r\nhost: a\r\n\r\n", "beta", "GET /?beta HTTP/1.1", "a"),
    row("GET /x?a=1&beta=yes HTTP/1.1\r\nhost: a\r\n\r\n", "beta", "GET /x?a=1&beta=yes HTTP/1.1", "a"),
    row("GET /?betamax=1 HTTP/1.1\r\nhost: a\r\n\r\n", "web", "GET /?betamax=1 HTTP/1.1", "a"),
    // Longest prefix first: the deeper route is written before the shorter one.
    row("GET /static/v1/app.js HTTP/1.1\r\nhost: a\r\n\r\n", "legacy", "GET /old/app.js HTTP/1.1", "a"),
    row("GET /static/v2/app.js HTTP/1.1\r\nhost: a\r\n\r\n", "static", "GET /assets/v2/app.js HTTP/1.1", "a"),
    row("GET /static/ HTTP/1.1\r\nhost: a\r\n\r\n", "static", "GET /assets/ HTTP/1.1", "a"),
    row("GET /static HTTP/1.1\r\nhost: a\r\n\r\n", "web", "GET /static HTTP/1.1", "a"),
    // Nothing matches: the listener's own pool.
    row("GET /anything HTTP/1.1\r\nhost: elsewhere.test\r\n\r\n", "web", "GET /anything HTTP/1.1", "elsewhere.test"),
    row("OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n", "web", "OPTIONS * HTTP/1.1", "a"),
];

/// The pool whose backend got a request since `before` (counts per pool), and that request.
fn who_got(fleet: &Fleet, before: &BTreeMap<&str, usize>) -> Vec<(&'static str, String)> {
    let mut got = Vec::new();
    for (name, backend) in &fleet.backends {
        for request in &backend.requests()[before[name]..] {
            got.push((*name, request.head.clone()));
        }
    }
    got
}

fn counts(fleet: &Fleet) -> BTreeMap<&'static str, usize> {
    fleet
        .backends
        .iter()
        .map(|(name, backend)| (*name, backend.requests().len()))
        .collect()
}

/// What is wrong with where a request went, if anything.
fn check(got: &[(&str, String)], want: &Row) -> Option<String> {
    let [(pool, head)] = got else {
        return Some(format!("{} backends got it: {got:?}", got.len()));
    };
    if *pool != want.pool {
        return Some(format!("went to {pool}, want {}", want.pool));
    }
    let line = head.lines().next().unwrap_or_default();
    if line != want.line.to_ascii_lowercase() {
        return Some(format!("request line {line:?}, want {:?}", want.line));
    }
    let host = format!("\r\nhost: {}\r\n", want.host.to_ascii_lowercase());
    if !head.contains(&host) || head.matches("\r\nhost: ").count() != 1 {
        return Some(format!("want one Host {:?}: {head:?}", want.host));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_in_the_table_reaches_its_routes_pool_rewritten() {
    let fleet = fleet().await;
    assert!(ROWS.len() >= 30, "{} rows", ROWS.len());
    let mut failures = Vec::new();
    for want in ROWS {
        let before = counts(&fleet);
        // One request per connection, closed after its answer.
        let send = want
            .send
            .replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
        let answer = raw_exchange(fleet.proxy.addr, send.as_bytes()).await;
        if !answer.starts_with("HTTP/1.1 200 ") {
            failures.push(format!("{:?}: answered {answer:?}", want.send));
            continue;
        }
        if let Some(why) = check(&who_got(&fleet, &before), want) {
            failures.push(format!("{:?}: {why}", want.send));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_routed_by_the_same_table() {
    let fleet = fleet().await;
    // (fields, pool, request line, host)
    type H2Row<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, &'a str);
    let rows: &[H2Row] = &[
        (
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.example.com"),
                (":path", "/v2/users"),
            ],
            "api-v2",
            "GET /users HTTP/1.1",
            "api.example.com",
        ),
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
                ("x-canary", "1"),
            ],
            "canary",
            "GET / HTTP/1.1",
            "x.test",
        ),
        (
            &[
                (":method", "PUT"),
                (":scheme", "http"),
                (":authority", "x.test"),
                (":path", "/data/7"),
            ],
            "writer",
            "PUT /data/7 HTTP/1.1",
            "x.test",
        ),
        (
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "x.test"),
                (":path", "/nowhere"),
            ],
            "web",
            "GET /nowhere HTTP/1.1",
            "x.test",
        ),
    ];
    let mut raw = RawH2::connect(fleet.proxy.addr).await;
    for (i, (fields, pool, line, host)) in rows.iter().enumerate() {
        let before = counts(&fleet);
        let stream = 1 + 2 * i as u32;
        raw.send(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &block(fields),
        ))
        .await
        .unwrap();
        let frames = raw
            .frames_until(|seen| seen.iter().any(|f| f.stream == stream && f.kind == HEADERS))
            .await;
        assert!(
            frames.iter().any(|f| f.stream == stream
                && f.kind == HEADERS
                && f.payload.first() == Some(&0x88)),
            "stream {stream}: no 200 in {frames:?}"
        );
        let want = Row {
            send: "",
            pool,
            line,
            host,
        };
        if let Some(why) = check(&who_got(&fleet, &before), &want) {
            panic!("{fields:?}: {why}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_table_for_new_connections() {
    let mut fleet = fleet().await;
    let send = "GET /static/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let before = counts(&fleet);
    raw_exchange(fleet.proxy.addr, send.as_bytes()).await;
    let want = row(send, "static", "GET /assets/x HTTP/1.1", "a");
    assert_eq!(check(&who_got(&fleet, &before), &want), None);
    // The new table sends /static/ to a pool added by the same reload, unrewritten.
    fleet.backends.insert("cdn", Recorder::start().await);
    let new = config_of(
        "routes = [{ path_prefix = \"/static/\", pool = \"cdn\" }]",
        &fleet.backends,
    );
    let app = fleet.proxy.app_mut();
    tokio::task::block_in_place(|| app.reload(new)).unwrap();
    let before = counts(&fleet);
    raw_exchange(fleet.proxy.addr, send.as_bytes()).await;
    let want = row(send, "cdn", "GET /static/x HTTP/1.1", "a");
    assert_eq!(check(&who_got(&fleet, &before), &want), None);
    // Routes removed: everything to the listener's pool.
    let new = config_of("", &fleet.backends);
    let app = fleet.proxy.app_mut();
    tokio::task::block_in_place(|| app.reload(new)).unwrap();
    let before = counts(&fleet);
    raw_exchange(fleet.proxy.addr, send.as_bytes()).await;
    let want = row(send, "web", "GET /static/x HTTP/1.1", "a");
    assert_eq!(check(&who_got(&fleet, &before), &want), None);
}
