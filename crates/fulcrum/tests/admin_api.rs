//! The admin API as an operator's tools meet it, over raw HTTP: the token (any case of
//! `Bearer`), `/healthz` open to external probes, `HEAD`, `405` with `Allow`, the endpoint
//! list, and percent-encoded backend addresses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::*;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;

const TOKEN: &str = "s3cret-admin-token";

/// fulcrum with a token-protected admin API over one pool of two backends.
fn start(dir: &std::path::Path, backends: [SocketAddr; 2]) -> RunningApp {
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[[listeners]]\nname = \"web\"\n\
         bind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n[pools.app]\n\
         backends = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
        token.display(),
        backends[0],
        backends[1]
    );
    RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap()
}

/// Sends one request (closing the connection) and returns the raw answer.
async fn ask(admin: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> String {
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n");
    raw_exchange(admin, request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_speaks_http_the_way_operators_tools_expect() {
    let dir = std::env::temp_dir().join(format!("fulcrum-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ipv4 = dead_addr().await;
    let ipv6: SocketAddr = "[::1]:1".parse().unwrap();
    let app = start(&dir, [ipv4, ipv6]);
    let admin = app.admin_addr().unwrap();
    let bearer = format!("Bearer {TOKEN}");

    // Probes need no token; everything else does, with the scheme in any case.
    assert!(ask(admin, "GET", "/healthz", None)
        .await
        .starts_with("HTTP/1.1 200"));
    let refused = ask(admin, "GET", "/api/pools", None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{refused}"
    );
    let wrong = ask(admin, "GET", "/api/pools", Some("Bearer nope")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let answer = ask(
            admin,
            "GET",
            "/api/pools",
            Some(&format!("{scheme} {TOKEN}")),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
    }

    // HEAD answers as GET, without the body. The pool's status may move between two
    // requests (a check's figures, a state's change), so HEAD's length is that of a GET just
    // before or after it, in one of a few tries while the status holds still.
    let length = |answer: &str| {
        answer
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length: ").map(str::to_string))
    };
    let mut tries = Vec::new();
    for _ in 0..10 {
        let get = ask(admin, "GET", "/api/pools/app", Some(&bearer)).await;
        let head = ask(admin, "HEAD", "/api/pools/app", Some(&bearer)).await;
        let get_after = ask(admin, "GET", "/api/pools/app", Some(&bearer)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
        let same = length(&head).is_some()
            && (length(&head) == length(&get) || length(&head) == length(&get_after));
        if same {
            tries.clear();
            break;
        }
        tries.push(format!("{head}\n{get}\n{get_after}"));
    }
    assert!(
        tries.is_empty(),
        "HEAD's length was never GET's:\n{}",
        tries.join("\n---\n")
    );

    // A known path with the wrong method: 405 naming the right ones.
    let not_allowed = ask(admin, "DELETE", "/api/pools/app", Some(&bearer)).await;
    assert!(not_allowed.starts_with("HTTP/1.1 405"), "{not_allowed}");
    assert!(
        not_allowed
            .to_ascii_lowercase()
            .contains("\r\nallow: get, head\r\n"),
        "{not_allowed}"
    );
    let unknown = ask(admin, "GET", "/api/nothing", Some(&bearer)).await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");

    // The root lists the endpoints.
    let index = ask(admin, "GET", "/", Some(&bearer)).await;
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(
        index.contains("/api/pools/{pool}/backends/{addr}/drain"),
        "{index}"
    );

    // Backend addresses in paths may be percent-encoded (IPv6 needs it with most clients).
    for (addr, encoded) in [
        (ipv4, ipv4.to_string().replace(':', "%3A")),
        (ipv6, "%5B%3A%3A1%5D%3A1".to_string()),
    ] {
        let path = format!("/api/pools/app/backends/{encoded}/disable");
        let answer = ask(admin, "POST", &path, Some(&bearer)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        let status = app.pools().get("app").unwrap().status();
        let state = status
            .backends
            .iter()
            .find(|b| b.addr == addr)
            .map(|b| b.state);
        assert_eq!(
            state,
            Some(fulcrum_core::health::BackendState::Disabled),
            "{path}"
        );
    }
    app.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One request with `headers` (each ending in CRLF) and the token; returns the raw answer.
async fn ask_with(admin: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {admin}\r\nauthorization: Bearer {TOKEN}\r\n{headers}\
         content-length: 0\r\nconnection: close\r\n\r\n"
    );
    raw_exchange(admin, request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_and_no_other_site_acts_through_a_browser() {
    let dir = std::env::temp_dir().join(format!("fulcrum-admin-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend = dead_addr().await;
    let app = start(&dir, [backend, "[::1]:1".parse().unwrap()]);
    let admin = app.admin_addr().unwrap();

    // The page and its files need no token (they hold no data); the page tells its script
    // that the API does, runs only its own script and may not be framed.
    let page = ask(admin, "GET", "/ui", None).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{page}");
    assert!(
        lower.contains("content-security-policy: default-src 'self';"),
        "{page}"
    );
    assert!(lower.contains("frame-ancestors 'none'"), "{page}");
    assert!(lower.contains("x-frame-options: deny"), "{page}");
    assert!(
        page.contains(r#"<meta name="fulcrum-token" content="required">"#),
        "{page}"
    );
    for (asset, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let answer = ask(admin, "GET", asset, None).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{asset}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("content-type: {kind}")),
            "{asset}: {answer}"
        );
    }
    let post = ask_with(admin, "POST", "/ui", "").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // The token is still needed for everything else.
    let refused = ask(admin, "GET", "/ui/../api/pools", None).await;
    assert!(!refused.starts_with("HTTP/1.1 200"), "{refused}");

    // An action a browser sends from another site is refused even with the token (a form on
    // any page could otherwise drain backends through a tokenless loopback API); the
    // dashboard's own calls (same origin) and tools without Origin (curl) are not.
    let drain = format!("/api/pools/app/backends/{backend}/drain");
    for headers in [
        "origin: http://evil.example\r\n".to_string(),
        "origin: null\r\n".to_string(),
        format!("origin: http://{admin}.evil.example\r\n"),
        "sec-fetch-site: cross-site\r\n".to_string(),
        format!("origin: http://{admin}\r\nsec-fetch-site: same-site\r\n"),
    ] {
        let answer = ask_with(admin, "POST", &drain, &headers).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{headers}: {answer}");
    }
    let status = ask_with(admin, "GET", "/api/pools/app", "").await;
    assert!(
        !status.contains("\"draining\"") && !status.contains("\"drained\""),
        "a refused drain changed nothing: {status}"
    );
    let same_origin = ask_with(
        admin,
        "POST",
        &drain,
        &format!("origin: http://{admin}\r\nsec-fetch-site: same-origin\r\n"),
    )
    .await;
    assert!(same_origin.starts_with("HTTP/1.1 200"), "{same_origin}");
    let enable = format!("/api/pools/app/backends/{backend}/enable");
    let tool = ask_with(admin, "POST", &enable, "").await;
    assert!(tool.starts_with("HTTP/1.1 200"), "{tool}");
    app.shutdown();
}
