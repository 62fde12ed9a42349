//! Configuration as a spec: good files and what they mean, bad files and every error path.

use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[admin]
bind = "127.0.0.1:9901"

[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
pool = "app"

[[listeners]]
name = "pg"
bind = "127.0.0.1:6432"
protocol = "tcp"
pool = "db"
idle_timeout = "5m"

[pools.app]
algorithm = "least_conn"
backends = [
  { addr = "127.0.0.1:9001" },
  { addr = "127.0.0.1:9002", weight = 2 },
]

[pools.db]
backends = [{ addr = "127.0.0.1:5432" }]
connect_timeout = "250ms"
"#;

#[test]
fn the_design_example_parses_with_defaults_filled_in() {
    let config = Config::from_toml(GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.admin.map(|a| a.bind.port()), Some(9901));
    assert_eq!(config.listeners.len(), 2);
    let web = &config.listeners[0];
    assert_eq!(web.idle_timeout, defaults::HTTP_IDLE_TIMEOUT);
    match &web.protocol {
        ListenerProtocol::Http(limits) => {
            assert_eq!(limits.header_timeout, Duration::from_secs(10));
            assert_eq!(limits.max_header_bytes, 64 * 1024);
            assert_eq!(limits.max_request_line_bytes, 8 * 1024);
        }
        other => panic!("web should be http, is {}", other.name()),
    }
    assert_eq!(config.listeners[1].idle_timeout, Duration::from_secs(300));
    let app = &config.pools["app"];
    assert_eq!(app.algorithm, Algorithm::LeastConn);
    assert_eq!(
        app.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let db = &config.pools["db"];
    assert_eq!(db.algorithm, Algorithm::RoundRobin);
    assert_eq!(db.connect_timeout, Duration::from_millis(250));
    assert_eq!(db.connect_attempts, 3);
    assert_eq!(db.response_timeout, Duration::from_secs(30));
    assert_eq!(config.runtime.shutdown_grace, Duration::from_secs(30));
}

fn error_paths(text: &str) -> Vec<String> {
    match Config::from_toml(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0.into_iter().map(|e| e.path).collect(),
    }
}

const ONE_LISTENER: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
pool = "app"
"#;

#[test]
fn bad_configs_report_every_error_with_its_path() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown pool",
            ONE_LISTENER.replace("pool = \"app\"", "pool = \"nope\"") + app,
            &["listeners[0].pool"],
        ),
        (
            "duplicate listener name and bind",
            format!("{ONE_LISTENER}{ONE_LISTENER}{app}"),
            &["listeners[1].name", "listeners[1].bind"],
        ),
        (
            "access logs: an unknown format, combined on TCP, an empty path, a zero queue",
            ONE_LISTENER.to_string()
                + "access_log = { format = \"apache\", path = \"\", queue = 0 }\n"
                + "[[listeners]]\nname = \"raw\"\nbind = \"127.0.0.1:8081\"\nprotocol = \"tcp\"\npool = \"app\"\n"
                + "access_log = { format = \"combined\" }\n"
                + app,
            &[
                "listeners[0].access_log.format",
                "listeners[0].access_log.path",
                "listeners[0].access_log.queue",
                "listeners[1].access_log.format",
            ],
        ),
        (
            "empty pool",
            format!("{ONE_LISTENER}[pools.app]\nbackends = []\n"),
            &["pools.app.backends"],
        ),
        (
            "weights out of range",
            format!(
                "{ONE_LISTENER}[pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\", weight = 0 }}, {{ addr = \"127.0.0.1:2\", weight = 10001 }}]\n"
            ),
            &["pools.app.backends[0].weight", "pools.app.backends[1].weight"],
        ),
        (
            "unparsable addresses",
            ONE_LISTENER.replace("127.0.0.1:8080", "localhost")
                + "[pools.app]\nbackends = [{ addr = \"10.0.0.1\" }, { weight = 2 }]\n",
            &[
                "pools.app.backends[0].addr",
                "pools.app.backends[1].addr",
                "listeners[0].bind",
            ],
        ),
        (
            "unparsable and too short durations",
            ONE_LISTENER.to_string()
                + "header_timeout = \"soon\"\nidle_timeout = \"0s\"\n"
                + app
                + "connect_timeout = \"2 fortnights\"\n",
            &[
                "pools.app.connect_timeout",
                "listeners[0].header_timeout",
                "listeners[0].idle_timeout",
            ],
        ),
        (
            // One bad key does not hide its neighbours.
            "a bad probe path and a bad expect; a too-short interval and a longer timeout",
            ONE_LISTENER.to_string()
                + app
                + "[pools.app.health]\ninterval = \"50ms\"\ntimeout = \"1s\"\n\
                   readiness = { path = \"health\", expect = \"fine\" }\n",
            &[
                "pools.app.health.interval",
                "pools.app.health.timeout",
                "pools.app.health.readiness.path",
                "pools.app.health.readiness.expect",
            ],
        ),
        (
            // Parses as a duration, but added to the clock it would overflow.
            "durations beyond the one-year ceiling",
            ONE_LISTENER.to_string()
                + "idle_timeout = \"300000000000y\"\n"
                + app
                + "response_timeout = \"366days\"\n",
            &["pools.app.response_timeout", "listeners[0].idle_timeout"],
        ),
        (
            "unknown algorithm",
            format!("{ONE_LISTENER}{app}algorithm = \"fastest\"\n"),
            &["pools.app.algorithm"],
        ),
        (
            "auto without tls: ALPN needs TLS",
            format!("{ONE_LISTENER}{app}protocol = \"auto\"\n"),
            &["pools.app.protocol"],
        ),
        (
            "unknown backend protocol, and HTTP/2 limits out of range or on tcp",
            ONE_LISTENER.to_string()
                + "http2 = { max_concurrent_streams = 0, initial_connection_window_bytes = 1000 }\n"
                + "[[listeners]]\nname = \"t\"\nbind = \"127.0.0.1:1\"\nprotocol = \"tcp\"\npool = \"app\"\nhttp2 = {}\n"
                + app
                + "protocol = \"http3\"\n",
            &[
                "pools.app.protocol",
                "listeners[0].http2.max_concurrent_streams",
                "listeners[0].http2.initial_connection_window_bytes",
                "listeners[1].http2",
            ],
        ),
        (
            "unknown protocol and http-only key on tcp",
            ONE_LISTENER.replace("\"http\"", "\"udp\"")
                + "[[listeners]]\nname = \"t\"\nbind = \"127.0.0.1:1\"\nprotocol = \"tcp\"\npool = \"app\"\nmax_header_bytes = 9000\n"
                + app,
            &["listeners[0].protocol", "listeners[1].max_header_bytes"],
        ),
        (
            "missing keys",
            "[[listeners]]\nname = \"web\"\n".to_string() + app,
            &["listeners[0].bind", "listeners[0].protocol", "listeners[0].pool"],
        ),
        ("no listeners", app.to_string(), &["listeners"]),
        (
            "duplicate backend",
            format!("{ONE_LISTENER}[pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\" }}, {{ addr = \"127.0.0.1:1\" }}]\n"),
            &["pools.app.backends[1].addr"],
        ),
        (
            "health and outlier values",
            format!(
                "{ONE_LISTENER}{app}slow_start_min_percent = 0\ndrain_timeout = \"soonish\"\n\
                 [pools.app.health]\ninterval = \"10ms\"\nrise = 0\nliveness = {{ tcp = true, path = \"/x\" }}\n\
                 readiness = {{ path = \"health\", expect = \"600\" }}\nmax_ejection_percent = 101\n\
                 [pools.app.outlier]\nbase_ejection = \"10s\"\nmax_ejection = \"5s\"\nfailure_statuses = \"5xx\"\n"
            ),
            &[
                "pools.app.slow_start_min_percent",
                "pools.app.drain_timeout",
                "pools.app.health.interval",
                "pools.app.health.liveness",
                "pools.app.health.readiness.path",
                "pools.app.health.readiness.expect",
                "pools.app.health.rise",
                "pools.app.health.max_ejection_percent",
                "pools.app.outlier.max_ejection",
                "pools.app.outlier.failure_statuses",
            ],
        ),
        (
            "readiness cannot be a TCP probe; timeout longer than interval",
            format!(
                "{ONE_LISTENER}{app}[pools.app.health]\ninterval = \"1s\"\ntimeout = \"2s\"\nreadiness = {{ tcp = true }}\n"
            ),
            &["pools.app.health.timeout", "pools.app.health.readiness"],
        ),
        (
            "admin on a public address without a token",
            format!("[admin]\nbind = \"0.0.0.0:9901\"\n{ONE_LISTENER}{app}"),
            &["admin.token_file"],
        ),
        (
            "hashing without a key, bad key, table size not prime, factor below 1",
            format!(
                "{ONE_LISTENER}[pools.app]\nalgorithm = \"maglev\"\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\nmaglev_table_size = 65536\n\
                 hash_balance_factor = 0.5\n[pools.b]\nalgorithm = \"ring_hash\"\nhash_key = \"body\"\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n\
                 sticky_cookie = {{ name = \"sid\" }}\n"
            ),
            &[
                "pools.app.hash_key",
                "pools.app.hash_balance_factor",
                "pools.app.maglev_table_size",
                "pools.b.hash_key",
                "pools.b.sticky_cookie",
            ],
        ),
        (
            "a TCP listener cannot hash on a cookie",
            "[[listeners]]\nname = \"t\"\nbind = \"127.0.0.1:1\"\nprotocol = \"tcp\"\npool = \"app\"\n[pools.app]\nalgorithm = \"ring_hash\"\nhash_key = \"cookie:sid\"\nbackends = [{ addr = \"127.0.0.1:2\" }]\n".to_string(),
            &["listeners[0].pool"],
        ),
        (
            "discovery without endpoints or prefix, and an unknown type",
            format!(
                "{ONE_LISTENER}[pools.app]\nbackends = []\n[pools.app.discovery]\ntype = \"etcd\"\nendpoints = [\"nowhere\"]\n\
                 [pools.b]\nbackends = []\n[pools.b.discovery]\ntype = \"consul\"\n"
            ),
            &[
                "pools.app.discovery.endpoints[0]",
                "pools.app.discovery.prefix",
                "pools.b.discovery.type",
            ],
        ),
        (
            "admin bind",
            format!("[admin]\nbind = \"nowhere\"\n{ONE_LISTENER}{app}"),
            &["admin.bind"],
        ),
        (
            "ha without node or election; bad vip and peer",
            format!("{ONE_LISTENER}{app}[ha]\nvip = {{ address = \"10.0.0.100\" }}\npeers = [\"nowhere\"]\n"),
            &["ha.node", "ha.election", "ha.peers[0]", "ha.vip.interface", "ha.vip.address"],
        ),
        (
            "ha etcd election: fractional ttl, slow heartbeat, zookeeper keys",
            format!("{ONE_LISTENER}{app}[ha]\nnode = \"lb1\"\nheartbeat = \"500ms\"\nelection = {{ type = \"etcd\", endpoints = [\"10.0.0.2:2379\"], key = \"/k\", ttl = \"1500ms\", path = \"/x\" }}\n"),
            &["ha.election.path", "ha.election.ttl", "ha.heartbeat"],
        ),
        (
            "ha active_active with election keys",
            format!("{ONE_LISTENER}{app}[ha]\nnode = \"lb1\"\nmode = \"active_active\"\npeers = [\"10.0.0.1:7946\"]\n"),
            &["ha.peers"],
        ),
        (
            "ha zookeeper election with a relative path and etcd's ttl",
            format!("{ONE_LISTENER}{app}[ha]\nnode = \"lb1\"\nelection = {{ type = \"zookeeper\", servers = \"10.0.0.2:2181\", path = \"ha\", ttl = \"2s\" }}\n"),
            &["ha.election.ttl", "ha.election.path"],
        ),
    ];
    for (what, text, want) in cases {
        let got = error_paths(text);
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{what}");
    }
}

/// Every error of a file in one run, as `check` prints them.
fn all_errors(text: &str) -> Vec<String> {
    match Config::from_toml(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Each case's file gives exactly its errors (as `check` prints them), in any order.
pub(super) fn assert_error_table(cases: &[(&str, String, &[&str])]) {
    for (what, text, want) in cases {
        let mut got = all_errors(text);
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_all_reported_with_paths_and_plain_words() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "an unknown key, with the key it was probably meant to be",
            format!("{ONE_LISTENER}{app}colour = \"blue\"\nalgoritm = \"p2c\"\n"),
            &[
                "pools.app.algoritm: unknown key; did you mean `algorithm`?",
                "pools.app.colour: unknown key; this table takes: algorithm, backends, \
                 connect_timeout, connect_attempts, response_timeout, upstream_idle_timeout, \
                 max_idle_per_backend, slow_start, slow_start_min_percent, drain_timeout, \
                 health, outlier, hash_key, hash_fallback, sticky_cookie, hash_balance_factor, \
                 ring_points, maglev_table_size, ewma_decay, ewma_default_rtt, discovery, tls, \
                 protocol, websocket, proxy_protocol, circuit_breakers",
            ],
        ),
        (
            "wrong types in several tables, with the semantic errors of the same file",
            format!(
                "{}[pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\", weight = \"2\" }}, {{ addr = \"nope\" }}]\n\
                 [pools.app.health]\nrise = 1.5\nliveness = {{ tcp = \"yes\" }}\n",
                ONE_LISTENER.replace("name = \"web\"", "name = 7")
            ),
            &[
                "listeners[0].name: expected a string, got the integer 7",
                "pools.app.backends[0].weight: expected an integer, got the string \"2\"",
                "pools.app.health.liveness.tcp: expected true or false, got the string \"yes\"",
                "pools.app.health.rise: expected an integer, got the number 1.5",
                "pools.app.backends[1].addr: `nope` is not an address; expected IP:PORT, e.g. \
                 127.0.0.1:8080",
            ],
        ),
        (
            "a wrong element in a list keeps the index of the ones after it",
            format!(
                "{ONE_LISTENER}{app}[ha]\nmode = \"active_passive\"\nnode = \"a\"\n\
                 peers = [3, \"127.0.0.1:7946\", true]\n\
                 election = {{ type = \"etcd\", endpoints = [\"127.0.0.1:2379\"], key = \"/fulcrum/ha/edge\" }}\n\
                 vip = {{ address = \"10.0.0.100/24\", interface = \"eth0\" }}\n"
            ),
            &[
                "ha.peers[0]: expected a string, got the integer 3",
                "ha.peers[2]: expected a string, got true",
            ],
        ),
        (
            "a value where a table belongs, and a table where a value belongs",
            format!("{ONE_LISTENER}[pools]\napp = 3\n[runtime.workers]\nn = 2\n"),
            &[
                "pools.app: expected a table, got the integer 3",
                "runtime.workers: expected an integer, got a table",
            ],
        ),
        (
            "an unknown table at the top and a key in a table that takes none of that name",
            format!("{ONE_LISTENER}{app}[pools.app.sticky_cookie]\nnmae = \"s\"\n[logging]\nlevel = 1\n"),
            &[
                "logging: unknown key; this table takes: admin, runtime, listeners, pools, ha",
                "pools.app.sticky_cookie.nmae: unknown key; did you mean `name`?",
            ],
        ),
        (
            "a syntax error stops at its line, as there is nothing to go on with",
            format!("{ONE_LISTENER}pool = = 1\n"),
            &["line 7, column 8: extra `=`, expected nothing"],
        ),
    ];
    assert_error_table(cases);
}

#[test]
fn unknown_algorithm_lists_the_valid_ones() {
    let text = format!(
        "{ONE_LISTENER}[pools.app]\nalgorithm = \"x\"\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n"
    );
    let message = Config::from_toml(&text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("round_robin, least_conn, random, p2c"),
        "{message}"
    );
}

#[test]
fn health_sections_parse_with_defaults() {
    let text = format!(
        "{ONE_LISTENER}[pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\nslow_start = \"0s\"\ndrain_timeout = \"45s\"\n\
         [pools.app.health]\nreadiness = {{ path = \"/health\", host = \"app.local\" }}\n[pools.app.outlier]\n"
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let pool = &config.pools["app"];
    assert_eq!(pool.slow_start, Duration::ZERO);
    assert_eq!(
        pool.drain_timeout,
        DrainTimeout::Fixed(Duration::from_secs(45))
    );
    let health = pool.health.clone().unwrap_or_else(|| panic!("health"));
    assert_eq!(health.interval, Duration::from_secs(2));
    assert_eq!(health.timeout, Duration::from_secs(1));
    assert_eq!((health.rise, health.fall), (2, 3));
    assert_eq!(health.liveness, Probe::Tcp);
    let readiness = health.readiness.unwrap_or_else(|| panic!("readiness"));
    assert_eq!(readiness.path, "/health");
    assert_eq!(
        readiness.expect,
        StatusRange {
            low: 200,
            high: 399
        }
    );
    assert_eq!(readiness.host.as_deref(), Some("app.local"));
    assert_eq!(
        (health.max_ejection_percent, health.panic_threshold_percent),
        (20, 50)
    );
    let outlier = pool.outlier.clone().unwrap_or_else(|| panic!("outlier"));
    assert_eq!(outlier.consecutive_failures, 5);
    assert_eq!(outlier.base_ejection, Duration::from_secs(30));
    assert_eq!(outlier.max_ejection, Duration::from_secs(300));
    assert!(outlier.failure_statuses.contains(503) && !outlier.failure_statuses.contains(404));
    assert_eq!(config.pools["app"].slow_start_min_percent, 10);
}

#[test]
fn the_ha_section_from_the_manual_parses_with_defaults() {
    let text = format!(
        "{ONE_LISTENER}[pools.app]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\n{}",
        r#"
[ha]
node = "lb1"
election = { type = "etcd", endpoints = ["10.0.0.2:2379"], key = "/fulcrum/ha/edge", ttl = "1s" }
vip = { address = "10.0.0.100/24", interface = "eth0" }
peers = ["10.0.0.11:7946", "10.0.0.12:7946"]
on_promote = ["/usr/local/bin/announce", "up"]
"#
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let ha = config.ha.unwrap_or_else(|| panic!("ha"));
    assert_eq!(ha.node, "lb1");
    let HaMode::ActivePassive(pair) = ha.mode else {
        panic!("active_passive is the default mode")
    };
    assert_eq!(pair.election.ttl, Duration::from_secs(1));
    assert_eq!(pair.heartbeat, Duration::from_millis(100));
    assert_eq!(pair.heartbeat_bind.port(), 7946);
    assert_eq!(pair.peers.len(), 2);
    let vip = pair.vip.unwrap_or_else(|| panic!("vip"));
    assert_eq!(
        (vip.address.to_string(), vip.prefix_len),
        ("10.0.0.100".into(), 24)
    );
    assert_eq!(vip.garp_count, defaults::GARP_COUNT);
    assert_eq!(pair.on_promote, ["/usr/local/bin/announce", "up"]);
    assert!(pair.on_demote.is_empty());
}

#[test]
fn messages_quote_the_value_written_and_name_every_accepted_form() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let cases: &[(String, &str, &str)] = &[
        (
            format!("{ONE_LISTENER}{app}drain_timeout = \"soonish\"\n"),
            "pools.app.drain_timeout",
            "`soonish` is neither \"auto\"",
        ),
        (
            format!("{ONE_LISTENER}{app}connect_timeout = \"0ms\"\n"),
            "pools.app.connect_timeout",
            "`0ms` is too short: must be at least",
        ),
        (
            format!("{ONE_LISTENER}idle_timeout = \"400days\"\n{app}"),
            "listeners[0].idle_timeout",
            "`400days` is too long: must be at most",
        ),
        (
            format!(
                "{ONE_LISTENER}[pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\", weight = 0 }}]\n"
            ),
            "pools.app.backends[0].weight",
            "`0` is out of range: must be between 1 and 10000",
        ),
        (
            format!("{ONE_LISTENER}{app}hash_balance_factor = 0.5\n"),
            "pools.app.hash_balance_factor",
            "`0.5` is out of range: must be between 1.0 and 100",
        ),
        (
            format!("{ONE_LISTENER}{app}[pools.app.health]\ninterval = \"5ms\"\ntimeout = \"3s\"\n"),
            "pools.app.health.timeout",
            "`3s` is longer than the interval (`5ms`)",
        ),
        (
            format!("{ONE_LISTENER}{app}[pools.app.health]\ninterval = \"2s\"\nreadiness = {{ path = \"ready\" }}\n"),
            "pools.app.health.readiness.path",
            "`ready` must start with /",
        ),
        (
            format!("{ONE_LISTENER}{app}[pools.app.outlier]\nbase_ejection = \"0ms\"\nmax_ejection = \"10s\"\n[pools.app.health]\n"),
            "pools.app.outlier.base_ejection",
            "`0ms` is too short",
        ),
        (
            format!("{ONE_LISTENER}{app}[pools.app.outlier]\nmax_ejection = \"5s\"\n"),
            "pools.app.outlier.max_ejection",
            "`5s` is shorter than base_ejection (30s by default)",
        ),
        (
            format!("{ONE_LISTENER}{app}algorithm = \"maglev\"\nhash_key = \"client_ip\"\nmaglev_table_size = 7\n"),
            "pools.app.maglev_table_size",
            "`7` is less than 100 × the 1 backend (100)",
        ),
        (
            format!(
                "{ONE_LISTENER}{app}[ha]\nmode = \"active_passive\"\nnode = \"a\"\npeers = [\"127.0.0.1:7946\"]\n\
                 election = {{ type = \"etcd\", endpoints = [\"127.0.0.1:2379\"], key = \"/k\", ttl = \"500ms\" }}\n\
                 vip = {{ address = \"10.0.0.100/24\", interface = \"eth0\" }}\n"
            ),
            "ha.heartbeat",
            "100ms by default is more than a tenth of the election's lease (`500ms`)",
        ),
    ];
    for (text, path, says) in cases {
        let errors = match Config::from_toml(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.0,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.path == *path && e.message.contains(says)),
            "{path}: {says:?} not in {errors:?}"
        );
    }
}

#[test]
fn passthrough_routes_are_checked_in_order_with_paths() {
    let pools = "[pools.db]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[pools.apps]\nbackends = [{ addr = \"127.0.0.1:2\" }]\n\
                 [pools.web]\nalgorithm = \"ring_hash\"\nhash_key = \"path\"\nbackends = [{ addr = \"127.0.0.1:3\" }]\n";
    let listener = |routes: &str| {
        format!(
            "[[listeners]]\nname = \"pass\"\nbind = \"127.0.0.1:8443\"\nprotocol = \"tls_passthrough\"\n{routes}\n{pools}"
        )
    };
    let good = listener(
        "routes = [{ server_name = \"DB.example.com\", pool = \"db\" }, { server_name = \"*.apps.example.com\", pool = \"apps\" }]",
    );
    let config = Config::from_toml(&good).unwrap_or_else(|e| panic!("{e}"));
    let ListenerProtocol::TlsPassthrough(routes) = &config.listeners[0].protocol else {
        panic!("not passthrough");
    };
    assert_eq!(config.listeners[0].pool, None);
    let route = |name| route_by_server_name(routes, Some(name)).map(|r| r.pool.as_str());
    assert_eq!(route("db.example.com"), Some("db"));
    assert_eq!(route("Db.Example.Com"), Some("db"));
    assert_eq!(route("shop.apps.example.com"), Some("apps"));
    assert_eq!(
        route("apps.example.com"),
        None,
        "a wildcard needs a label in front"
    );
    assert_eq!(route("a.b.apps.example.com"), None, "and only one");
    assert_eq!(route_by_server_name(routes, None), None);

    let cases: &[(&str, String, &[&str])] = &[
        (
            "a route shadowed by an earlier one, an unknown pool, a bad name",
            listener(
                "routes = [{ server_name = \"*.example.com\", pool = \"apps\" }, { server_name = \"db.example.com\", pool = \"db\" }, \
                 { server_name = \"x.test\", pool = \"nope\" }, { server_name = \"bad name\", pool = \"db\" }]",
            ),
            &[
                "listeners[0].routes[1].server_name: `db.example.com` is never reached: routes[0] (`*.example.com`) matches every name it does",
                "listeners[0].routes[2].pool: unknown pool `nope`; defined pools: apps, db, web",
                "listeners[0].routes[3].server_name: `bad name` is not a server name (DNS labels, optionally after `*.`)",
            ],
        ),
        (
            "neither routes nor a default pool; a TLS table; a pool hashing on requests",
            listener("tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }] }")
                .replace("protocol = \"tls_passthrough\"", "protocol = \"tls_passthrough\"\nheader_timeout = \"1s\""),
            &[
                "listeners[0].routes: a tls_passthrough listener needs routes, e.g. [{ server_name = \"db.example.com\", pool = \"db\" }], or a default `pool`",
                "listeners[0].header_timeout: applies only to protocol = \"http\"",
                "listeners[0].tls: a tls_passthrough listener does not terminate TLS; its backends do",
            ],
        ),
        (
            "a route pool hashing on a request detail",
            listener("routes = [{ server_name = \"w.test\", pool = \"web\" }]"),
            &["listeners[0].routes[0].pool: pool `web` hashes on a request detail; a tls_passthrough listener can only hash on \"client_ip\""],
        ),
        (
            "routes on a tcp listener; HTTP conditions on a passthrough route",
            listener("pool = \"db\"\nroutes = []").replace("tls_passthrough", "tcp")
                + listener("routes = [{ server_name = \"a.test\", path_prefix = \"/\", pool = \"db\" }]")
                    .replace("[[listeners]]\nname = \"pass\"\nbind = \"127.0.0.1:8443\"", "[[listeners]]\nname = \"pass2\"\nbind = \"127.0.0.1:8444\"")
                    .split("[pools.db]").next().unwrap_or_default(),
            &[
                "listeners[0].routes: applies to protocol = \"http\" (routes by request) and \"tls_passthrough\" (by server name), not \"tcp\"",
                "listeners[1].routes[0].path_prefix: applies only to routes of protocol = \"http\" listeners; a tls_passthrough route matches `server_name`",
            ],
        ),
    ];
    assert_error_table(cases);
}

#[test]
fn the_websocket_registry_section_takes_a_redis_url_a_prefix_and_a_ttl() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let with = |registry: &str| {
        format!("{ONE_LISTENER}{app}[pools.app.websocket]\nregistry = {registry}\n")
    };
    let config = Config::from_toml(&with("{ redis = \"redis://127.0.0.1:6379/2\" }"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.pools["app"].websocket.registry,
        Some(WsRegistry {
            redis: "redis://127.0.0.1:6379/2".into(),
            key_prefix: "fulcrum:ws:".into(),
            ttl: Duration::from_secs(30),
        })
    );
    let config = Config::from_toml(&with(
        "{ redis = \"redis+unix:///run/redis.sock\", key_prefix = \"chat:\", ttl = \"10s\" }",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let registry = config.pools["app"].websocket.registry.clone();
    assert_eq!(
        registry.map(|r| (r.key_prefix, r.ttl)),
        Some(("chat:".into(), Duration::from_secs(10)))
    );
    assert_eq!(
        Config::from_toml(&format!("{ONE_LISTENER}{app}"))
            .map(|c| c.pools["app"].websocket.registry.is_none())
            .ok(),
        Some(true)
    );

    let path = "pools.app.websocket.registry";
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ key_prefix = \"x:\" }",
            "redis",
            "is required: the Redis URL",
        ),
        (
            "{ redis = \"127.0.0.1:6379\" }",
            "redis",
            "`127.0.0.1:6379`: not a URL",
        ),
        ("{ redis = \"redis://:6379\" }", "redis", "names no host"),
        (
            "{ redis = \"rediss://cache:6380\" }",
            "redis",
            "TLS to Redis is not supported",
        ),
        (
            "{ redis = \"redis+unix://run/redis.sock\" }",
            "redis",
            "needs an absolute path",
        ),
        ("{ redis = \"http://cache\" }", "redis", "unknown scheme"),
        (
            "{ redis = \"redis://cache\", ttl = \"1s\" }",
            "ttl",
            "`1s` is too short: must be at least 3s",
        ),
        (
            "{ redis = \"redis://cache\", key_prefix = \"a b\" }",
            "key_prefix",
            "holds a space",
        ),
        (
            "{ redis = \"redis://cache\", url = \"x\" }",
            "url",
            "unknown key",
        ),
    ];
    for (registry, key, says) in cases {
        let errors = match Config::from_toml(&with(registry)) {
            Ok(_) => panic!("accepted {registry}"),
            Err(e) => e.0,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.path == format!("{path}.{key}") && e.message.contains(says)),
            "{path}.{key}: {says:?} not in {errors:?}"
        );
    }
}

#[test]
fn trusted_proxies_and_underscore_rules_parse_and_bad_ones_are_named() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let text = format!(
        "{ONE_LISTENER}trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n\
         headers_with_underscores = \"reject\"\n{app}"
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let ListenerProtocol::Http(limits) = &config.listeners[0].protocol else {
        panic!("http expected");
    };
    assert_eq!(limits.headers_with_underscores, UnderscoreHeaders::Reject);
    let trusts = |ip: &str| limits.trusted_proxies.contains(ip.parse().unwrap());
    assert!(trusts("10.200.0.1") && trusts("2001:db8::5") && trusts("192.0.2.7"));
    assert!(
        trusts("::ffff:10.0.0.1"),
        "an IPv4 peer on a dual-stack socket"
    );
    assert!(!trusts("11.0.0.1") && !trusts("192.0.2.8") && !trusts("2001:db9::1"));

    let defaults = Config::from_toml(&format!("{ONE_LISTENER}{app}")).unwrap();
    let ListenerProtocol::Http(limits) = &defaults.listeners[0].protocol else {
        panic!("http expected");
    };
    assert!(limits.trusted_proxies.is_empty());
    assert_eq!(limits.headers_with_underscores, UnderscoreHeaders::Drop);

    assert_error_table(&[
        (
            "networks that are not networks, host bits past the prefix, an unknown action",
            format!(
                "{ONE_LISTENER}trusted_proxies = [\"10.0.0/8\", \"10.1.2.3/8\", \"::1\", \"nope\"]\n\
                 headers_with_underscores = \"ignore\"\n{app}"
            ),
            &[
                "listeners[0].trusted_proxies[0]: `10.0.0/8` is not an address or network (such as `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7`)",
                "listeners[0].trusted_proxies[1]: `10.1.2.3/8` has bits set past its /8 prefix; did you mean `10.0.0.0/8`?",
                "listeners[0].trusted_proxies[3]: `nope` is not an address or network (such as `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7`)",
                "listeners[0].headers_with_underscores: unknown action `ignore`; valid: drop, reject, allow",
            ],
        ),
        (
            "HTTP rules on a TCP listener",
            format!(
                "{}trusted_proxies = [\"10.0.0.0/8\"]\nheaders_with_underscores = \"drop\"\n{app}",
                ONE_LISTENER.replace("\"http\"", "\"tcp\"")
            ),
            &[
                "listeners[0].trusted_proxies: applies only to protocol = \"http\"",
                "listeners[0].headers_with_underscores: applies only to protocol = \"http\"",
            ],
        ),
    ]);
}

#[test]
fn proxy_protocol_settings_parse_and_bad_ones_are_named() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\nproxy_protocol = \"v1\"\n";
    let text = format!("{ONE_LISTENER}proxy_protocol = {{ allow = [\"10.0.0.0/8\"] }}\n{app}");
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let inbound = config.listeners[0].proxy_protocol.as_ref().unwrap();
    assert!(inbound.allow.contains("10.1.1.1".parse().unwrap()));
    assert_eq!(inbound.timeout, Duration::from_secs(5));
    assert_eq!(
        config.pools["app"].proxy_protocol,
        Some(crate::proxy_protocol::Version::V1)
    );
    assert_error_table(&[(
        "no allow list, a bad timeout, an unknown version, a PROXY header to HTTP/2 backends",
        format!(
            "{ONE_LISTENER}proxy_protocol = {{ timeout = \"soon\" }}\n\
             [pools.app]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\nproxy_protocol = \"v3\"\n\
             [pools.h2]\nbackends = [{{ addr = \"127.0.0.1:9002\" }}]\nprotocol = \"http2\"\nproxy_protocol = \"v2\"\n"
        ),
        &[
            "listeners[0].proxy_protocol.allow: is required: the networks of the proxies that may send the header (a header from anyone else would let them choose their own address)",
            "listeners[0].proxy_protocol.timeout: `soon` is not a duration (expected number at 0); write e.g. \"250ms\" or \"30s\"",
            "pools.app.proxy_protocol: unknown version `v3`; valid: v1, v2",
            "pools.h2.proxy_protocol: a PROXY header names one client, and an HTTP/2 connection carries many clients' streams; use it with protocol = \"http1\" (or TCP listeners)",
        ],
    )]);
}

#[test]
fn connection_and_rate_limits_parse_with_defaults_and_bad_ones_are_named() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let defaults = Config::from_toml(&format!("{ONE_LISTENER}{app}")).unwrap();
    let web = &defaults.listeners[0];
    assert_eq!(
        (web.max_connections, web.max_connections_per_ip),
        (10_000, 0)
    );
    let ListenerProtocol::Http(limits) = &web.protocol else {
        panic!("http expected");
    };
    assert_eq!((limits.rate_limit, limits.min_upload_rate), (None, None));

    let text = format!(
        "{ONE_LISTENER}max_connections = 50\nmax_connections_per_ip = 5\n\
         rate_limit = {{ requests_per_second = 10 }}\nmin_upload_rate = {{ bytes_per_second = 512 }}\n{app}"
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let web = &config.listeners[0];
    assert_eq!((web.max_connections, web.max_connections_per_ip), (50, 5));
    let ListenerProtocol::Http(limits) = &web.protocol else {
        panic!("http expected");
    };
    assert_eq!(
        limits.rate_limit,
        Some(RateLimit {
            requests_per_second: 10,
            burst: 10,
            action: RateLimitAction::Status429
        })
    );
    assert_eq!(
        limits.min_upload_rate,
        Some(MinUploadRate {
            bytes_per_second: 512,
            grace: Duration::from_secs(5)
        })
    );
    assert_error_table(&[
        (
            "limits out of range and missing rates",
            format!(
                "{ONE_LISTENER}max_connections = 0\nmax_connections_per_ip = -1\n\
                 rate_limit = {{ burst = 0, action = \"drop\" }}\nmin_upload_rate = {{ grace = \"1s\" }}\n{app}"
            ),
            &[
                "listeners[0].max_connections: `0` is out of range: must be between 1 and 10000000",
                "listeners[0].max_connections_per_ip: `-1` is out of range: must be between 0 and 10000000",
                "listeners[0].rate_limit.requests_per_second: is required",
                "listeners[0].rate_limit.burst: `0` is out of range: must be between 1 and 1073741824",
                "listeners[0].rate_limit.action: unknown action `drop`; valid: \"429\", \"close\"",
                "listeners[0].min_upload_rate.bytes_per_second: is required",
            ],
        ),
        (
            "HTTP limits on a TCP listener",
            format!(
                "{}rate_limit = {{ requests_per_second = 1 }}\nmin_upload_rate = {{ bytes_per_second = 1 }}\n{app}",
                ONE_LISTENER.replace("\"http\"", "\"tcp\"")
            ),
            &[
                "listeners[0].rate_limit: applies only to protocol = \"http\"",
                "listeners[0].min_upload_rate: applies only to protocol = \"http\"",
            ],
        ),
    ]);
}

#[test]
fn circuit_breakers_are_optional_limits_in_range() {
    let app = "[pools.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let config =
        Config::from_toml(&format!("{ONE_LISTENER}{app}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.pools["app"].circuit_breakers,
        CircuitBreakers::default()
    );
    let config = Config::from_toml(&format!(
        "{ONE_LISTENER}{app}circuit_breakers = {{ max_requests = 250 }}\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pools["app"].circuit_breakers.max_requests, Some(250));
    assert_error_table(&[(
        "a limit out of range and an unknown one",
        format!("{ONE_LISTENER}{app}circuit_breakers = {{ max_requests = 0, max_retries = 3 }}\n"),
        &[
            "pools.app.circuit_breakers.max_requests: `0` is out of range: must be between 1 and 10000000",
            "pools.app.circuit_breakers.max_retries: unknown key; this table takes: max_requests",
        ],
    )]);
}
