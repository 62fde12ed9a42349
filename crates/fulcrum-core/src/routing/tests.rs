use super::*;

type Req = DescribedRequest<'static>;

/// `"GET /path?query"` for `host` ("": none).
fn req(line: &'static str, host: &'static str) -> Req {
    let (method, target) = line.split_once(' ').unwrap_or((line, "/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    DescribedRequest {
        method,
        path,
        query,
        host: (!host.is_empty()).then_some(host),
        headers: Vec::new(),
    }
}

fn with(mut request: Req, name: &str, value: &'static str) -> Req {
    request.headers.push((name.to_string(), value));
    request
}

fn host(pattern: &str) -> Option<ServerNamePattern> {
    Some(ServerNamePattern::parse(pattern).unwrap_or_else(|| panic!("{pattern}")))
}

fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::Prefix(p.to_string()))
}

fn field(name: &str, value: ValueMatch) -> FieldMatch {
    FieldMatch {
        name: name.to_string(),
        value,
    }
}

fn equals(v: &str) -> ValueMatch {
    ValueMatch::Equals(v.to_string())
}

fn regex(p: &str) -> ValueMatch {
    ValueMatch::Regex(Regex::new(p).unwrap_or_else(|e| panic!("{e}")))
}

fn route(name: &str, matches: RouteMatch, pool: &str) -> Route {
    Route {
        name: name.to_string(),
        matches,
        pool: pool.to_string(),
        rewrite_prefix: None,
        rewrite_host: None,
    }
}

/// The table the matching rows run against, in order.
fn table() -> RouteTable {
    RouteTable {
        routes: vec![
            route(
                "api-v2",
                RouteMatch {
                    host: host("api.example.com"),
                    path: prefix("/v2/"),
                    ..Default::default()
                },
                "api-v2",
            ),
            route(
                "api",
                RouteMatch {
                    host: host("api.example.com"),
                    ..Default::default()
                },
                "api",
            ),
            route(
                "canary",
                RouteMatch {
                    headers: vec![field("x-canary", equals("1"))],
                    ..Default::default()
                },
                "canary",
            ),
            route(
                "mobile",
                RouteMatch {
                    headers: vec![field("user-agent", regex(".*(Android|iPhone).*"))],
                    ..Default::default()
                },
                "mobile",
            ),
            route(
                "debug",
                RouteMatch {
                    headers: vec![field("x-debug", ValueMatch::Present)],
                    ..Default::default()
                },
                "debug",
            ),
            route(
                "apps",
                RouteMatch {
                    host: host("*.apps.example.com"),
                    ..Default::default()
                },
                "apps",
            ),
            route(
                "health",
                RouteMatch {
                    path: Some(PathMatch::Exact("/healthz".into())),
                    ..Default::default()
                },
                "health",
            ),
            route(
                "writes",
                RouteMatch {
                    path: prefix("/data/"),
                    methods: vec!["POST".into(), "PUT".into(), "DELETE".into()],
                    ..Default::default()
                },
                "writer",
            ),
            route(
                "reads",
                RouteMatch {
                    path: prefix("/data/"),
                    ..Default::default()
                },
                "reader",
            ),
            route(
                "beta",
                RouteMatch {
                    query: vec![field("beta", ValueMatch::Present)],
                    ..Default::default()
                },
                "beta",
            ),
            route(
                "v",
                RouteMatch {
                    query: vec![field("v", equals("3"))],
                    ..Default::default()
                },
                "v3",
            ),
            route(
                "static",
                RouteMatch {
                    path: prefix("/static"),
                    ..Default::default()
                },
                "static",
            ),
        ],
    }
}

#[test]
fn the_first_route_that_matches_wins() {
    let table = table();
    let rows: Vec<(Req, Option<&str>)> = vec![
        (req("GET /v2/users", "api.example.com"), Some("api-v2")),
        (req("GET /v2/users", "API.Example.COM"), Some("api-v2")),
        (req("GET /v2/users", "api.example.com:8443"), Some("api-v2")),
        (req("GET /v1/users", "api.example.com"), Some("api")),
        (req("GET /v2", "api.example.com"), Some("api")),
        (req("GET /v2/users", "www.example.com"), None),
        (
            with(req("GET /", "www.example.com"), "x-canary", "1"),
            Some("canary"),
        ),
        (with(req("GET /", "www.example.com"), "x-canary", "0"), None),
        (
            with(req("GET /", "api.example.com"), "x-canary", "1"),
            Some("api"),
        ),
        (
            with(req("GET /", "a"), "user-agent", "Mozilla/5.0 (iPhone; CPU)"),
            Some("mobile"),
        ),
        (with(req("GET /", "a"), "user-agent", "curl/8.0"), None),
        (with(req("GET /", "a"), "x-debug", ""), Some("debug")),
        (req("GET /", "shop.apps.example.com"), Some("apps")),
        (req("GET /", "apps.example.com"), None),
        (req("GET /", "a.b.apps.example.com"), None),
        (req("GET /healthz", "a"), Some("health")),
        (req("GET /healthz/", "a"), None),
        (req("POST /data/1", "a"), Some("writes")),
        (req("DELETE /data/1", "a"), Some("writes")),
        (req("GET /data/1", "a"), Some("reads")),
        (req("post /data/1", "a"), Some("reads")),
        (req("GET /?beta", "a"), Some("beta")),
        (req("GET /?x=1&beta=", "a"), Some("beta")),
        (req("GET /?betax=1", "a"), None),
        (req("GET /?v=3", "a"), Some("v")),
        (req("GET /?v=30", "a"), None),
        (req("GET /static/app.js", "a"), Some("static")),
        (req("GET /staticfile", "a"), Some("static")),
        (req("GET /", ""), None),
    ];
    for (request, want) in rows {
        let got = table.route(&request).map(|r| r.name.as_str());
        assert_eq!(
            got, want,
            "{} {}?{} host {:?} {:?}",
            request.method, request.path, request.query, request.host, request.headers
        );
    }
}

#[test]
fn rewrites_replace_the_matched_prefix_without_doubling_or_losing_a_slash() {
    let rows = [
        ("/v2/", "/", "/v2/users", Some("a=1"), "/users?a=1"),
        ("/v2", "/", "/v2/users", None, "/users"),
        ("/v2", "/", "/v2", None, "/"),
        ("/v2/", "/", "/v2/", None, "/"),
        ("/api/", "/backend", "/api/x", None, "/backend/x"),
        ("/api/", "/backend/", "/api/x/y", None, "/backend/x/y"),
        ("/api", "/backend", "/api/x", Some(""), "/backend/x?"),
        ("/old", "/new", "/older", None, "/newer"),
    ];
    for (matched, rewrite, path, query, want) in rows {
        let mut r = route(
            "r",
            RouteMatch {
                path: prefix(matched),
                ..Default::default()
            },
            "p",
        );
        r.rewrite_prefix = Some(rewrite.to_string());
        let mut out = Vec::new();
        r.write_target(path.as_bytes(), query.map(str::as_bytes), &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            want,
            "{matched} → {rewrite}: {path}"
        );
    }
    let mut exact = route(
        "e",
        RouteMatch {
            path: Some(PathMatch::Exact("/login".into())),
            ..Default::default()
        },
        "p",
    );
    exact.rewrite_prefix = Some("/auth/login".into());
    let mut out = Vec::new();
    exact.write_target(b"/login", Some(b"next=/"), &mut out);
    assert_eq!(out, b"/auth/login?next=/");
    let plain = route("p", RouteMatch::default(), "p");
    let mut out = Vec::new();
    plain.write_target(b"/as/is", Some(b"q"), &mut out);
    assert_eq!(out, b"/as/is?q");
}

#[test]
fn a_route_that_an_earlier_one_always_wins_over_is_found() {
    let m = |host_p: Option<&str>, path: Option<PathMatch>| RouteMatch {
        host: host_p.and_then(host),
        path,
        ..Default::default()
    };
    let exact = |p: &str| Some(PathMatch::Exact(p.to_string()));
    // (earlier, later, covers)
    let rows: Vec<(RouteMatch, RouteMatch, bool)> = vec![
        (m(None, None), m(Some("a.com"), prefix("/x")), true),
        (m(None, prefix("/")), m(None, prefix("/api")), true),
        (m(None, prefix("/api")), m(None, prefix("/")), false),
        (m(None, prefix("/api")), m(None, exact("/api/x")), true),
        (m(None, exact("/a")), m(None, exact("/a")), true),
        (m(None, exact("/a")), m(None, prefix("/a")), false),
        (
            m(Some("*.a.com"), None),
            m(Some("x.a.com"), prefix("/")),
            true,
        ),
        (m(Some("x.a.com"), None), m(Some("*.a.com"), None), false),
        (m(Some("a.com"), None), m(None, None), false),
        (
            RouteMatch {
                methods: vec!["GET".into(), "HEAD".into()],
                ..Default::default()
            },
            RouteMatch {
                methods: vec!["GET".into()],
                ..Default::default()
            },
            true,
        ),
        (
            RouteMatch {
                methods: vec!["GET".into()],
                ..Default::default()
            },
            RouteMatch {
                methods: vec!["GET".into(), "POST".into()],
                ..Default::default()
            },
            false,
        ),
        (
            RouteMatch {
                methods: vec!["GET".into()],
                ..Default::default()
            },
            RouteMatch::default(),
            false,
        ),
        (
            RouteMatch {
                headers: vec![field("x", ValueMatch::Present)],
                ..Default::default()
            },
            RouteMatch {
                headers: vec![field("x", equals("1"))],
                ..Default::default()
            },
            true,
        ),
        (
            RouteMatch {
                headers: vec![field("x", equals("1"))],
                ..Default::default()
            },
            RouteMatch {
                headers: vec![field("x", ValueMatch::Present)],
                ..Default::default()
            },
            false,
        ),
        (
            RouteMatch {
                headers: vec![field("x", regex("[0-9]+"))],
                ..Default::default()
            },
            RouteMatch {
                headers: vec![field("x", equals("42"))],
                ..Default::default()
            },
            true,
        ),
        (
            RouteMatch {
                headers: vec![field("x", regex("[0-9]+"))],
                ..Default::default()
            },
            RouteMatch {
                headers: vec![field("x", equals("4a"))],
                ..Default::default()
            },
            false,
        ),
        (
            RouteMatch {
                query: vec![field("q", ValueMatch::Present)],
                ..Default::default()
            },
            RouteMatch {
                headers: vec![field("q", ValueMatch::Present)],
                ..Default::default()
            },
            false,
        ),
        (
            RouteMatch::default(),
            RouteMatch {
                query: vec![field("q", equals("1"))],
                ..Default::default()
            },
            true,
        ),
    ];
    for (i, (earlier, later, want)) in rows.iter().enumerate() {
        assert_eq!(
            covers(earlier, later),
            *want,
            "row {i}: {earlier:?} vs {later:?}"
        );
    }
    let table = RouteTable {
        routes: vec![
            route(
                "all-api",
                RouteMatch {
                    path: prefix("/api"),
                    ..Default::default()
                },
                "a",
            ),
            route(
                "v2",
                RouteMatch {
                    path: prefix("/api/v2"),
                    ..Default::default()
                },
                "b",
            ),
            route(
                "web",
                RouteMatch {
                    path: prefix("/"),
                    ..Default::default()
                },
                "c",
            ),
            route(
                "static",
                RouteMatch {
                    path: prefix("/static"),
                    ..Default::default()
                },
                "d",
            ),
        ],
    };
    assert_eq!(table.unreachable(), vec![(1, 0), (3, 2)]);
    assert!(super::tests::table().unreachable().is_empty());
}

#[test]
fn hosts_lose_their_port_and_query_parameters_are_read_as_sent() {
    assert_eq!(host_without_port(b"example.com:8080"), b"example.com");
    assert_eq!(host_without_port(b"example.com"), b"example.com");
    assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
    assert_eq!(host_without_port(b"[::1]"), b"[::1]");
    assert_eq!(query_value(b"a=1&b&c=", "a"), Some(&b"1"[..]));
    assert_eq!(query_value(b"a=1&b&c=", "b"), Some(&b""[..]));
    assert_eq!(query_value(b"a=1&b&c=", "c"), Some(&b""[..]));
    assert_eq!(query_value(b"a=1&b&c=", "d"), None);
    assert_eq!(query_value(b"a=1&a=2", "a"), Some(&b"1"[..]));
    assert_eq!(query_value(b"x%20y=1", "x y"), None);
    assert_eq!(query_value(b"", "a"), None);
}

#[test]
fn a_regex_matches_whole_values_and_a_bad_one_says_why() {
    let re = Regex::new("ab|cd").unwrap_or_else(|e| panic!("{e}"));
    assert!(re.is_match(b"ab") && re.is_match(b"cd"));
    assert!(!re.is_match(b"abcd") && !re.is_match(b"xab"));
    assert!(Regex::new("(unclosed").is_err());
}
