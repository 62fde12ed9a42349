//! HTTP route tables in the configuration: what a valid table becomes, and every mistake
//! reported with its path.

use super::tests::assert_error_table;
use super::*;
use crate::routing::{PathMatch, ValueMatch};

const POOLS: &str = "[pools.web]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n\
                     [pools.api]\nbackends = [{ addr = \"127.0.0.1:2\" }]\n\
                     [pools.canary]\nbackends = [{ addr = \"127.0.0.1:3\" }]\n";

fn listener(routes: &str) -> String {
    format!(
        "[[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\npool = \"web\"\nroutes = [\n{routes}\n]\n{POOLS}"
    )
}

#[test]
fn a_route_table_becomes_ordered_routes_with_their_conditions_and_rewrites() {
    let text = listener(
        "{ name = \"v2\", host = \"API.example.com\", path_prefix = \"/v2/\", pool = \"api\", rewrite_prefix = \"/\", rewrite_host = \"api.internal:8080\" },\n\
         { header = { name = \"X-Canary\", value = \"1\" }, methods = [\"GET\", \"HEAD\"], pool = \"canary\" },\n\
         { headers = [{ name = \"x-a\" }, { name = \"x-b\", regex = \"[0-9]+\" }], query_param = { name = \"beta\" }, pool = \"canary\" },\n\
         { path = \"/login\", method = \"POST\", query_params = [{ name = \"v\", value = \"2\" }], pool = \"api\" },\n\
         { host = \"*.example.com\", pool = \"web\" },",
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let routes = &config.listeners[0].routes.routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["v2", "routes[1]", "routes[2]", "routes[3]", "routes[4]"]
    );
    let v2 = &routes[0];
    assert_eq!(v2.matches.host, ServerNamePattern::parse("api.example.com"));
    assert_eq!(v2.matches.path, Some(PathMatch::Prefix("/v2/".into())));
    assert_eq!(v2.rewrite_prefix.as_deref(), Some("/"));
    assert_eq!(v2.rewrite_host.as_deref(), Some("api.internal:8080"));
    assert_eq!(v2.pool, "api");
    let canary = &routes[1];
    assert_eq!(
        canary.matches.headers[0].name, "x-canary",
        "header names lower-cased"
    );
    assert_eq!(
        canary.matches.headers[0].value,
        ValueMatch::Equals("1".into())
    );
    assert_eq!(canary.matches.methods, ["GET", "HEAD"]);
    let both = &routes[2];
    assert_eq!(both.matches.headers.len(), 2);
    assert_eq!(both.matches.headers[0].value, ValueMatch::Present);
    assert!(
        matches!(&both.matches.headers[1].value, ValueMatch::Regex(re) if re.pattern == "[0-9]+")
    );
    assert_eq!(both.matches.query[0].name, "beta");
    let login = &routes[3];
    assert_eq!(login.matches.path, Some(PathMatch::Exact("/login".into())));
    assert_eq!(login.matches.methods, ["POST"]);
    assert_eq!(login.matches.query[0].value, ValueMatch::Equals("2".into()));
    // No routes: an empty table, the listener's pool serves everything.
    let plain = listener("").replace("routes = [\n\n]\n", "");
    let config = Config::from_toml(&plain).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.listeners[0].routes.routes.is_empty());
}

#[test]
fn every_mistake_in_a_route_table_is_reported_with_its_path() {
    let r = |n: usize| format!("listeners[0].routes[{n}]");
    let cases: &[(&str, String, &[&str])] = &[
        (
            "an unknown pool, a missing pool, an unreachable route",
            listener(
                "{ path_prefix = \"/\", pool = \"web\" },\n{ path_prefix = \"/api/\", pool = \"api\" },\n\
                 { host = \"a.test\", pool = \"nope\" },\n{ host = \"b.test\" },",
            ),
            &[
                &format!("{}: is never reached: routes[0] (`routes[0]`) matches every request it does; put the more specific route first", r(1)),
                &format!("{}.pool: unknown pool `nope`; defined pools: api, canary, web", r(2)),
                &format!("{}.pool: is required", r(3)),
            ],
        ),
        (
            "a named route shadowing one with the same conditions, a duplicate name",
            listener(
                "{ name = \"a\", header = { name = \"x\" }, pool = \"web\" },\n\
                 { name = \"b\", header = { name = \"x\", value = \"1\" }, pool = \"api\" },\n\
                 { name = \"a\", host = \"c.test\", pool = \"api\" },",
            ),
            &[
                &format!("{}: is never reached: routes[0] (`a`) matches every request it does; put the more specific route first", r(1)),
                &format!("{}.name: `a` is already the name of routes[0]", r(2)),
            ],
        ),
        (
            "bad hosts, paths, methods, header and parameter conditions",
            listener(
                "{ host = \"bad host\", pool = \"web\" },\n\
                 { host = \"a.test:80\", pool = \"web\" },\n\
                 { path_prefix = \"no-slash\", pool = \"web\" },\n\
                 { path = \"/a?b\", pool = \"web\" },\n\
                 { path = \"/a\", path_prefix = \"/a\", pool = \"web\" },\n\
                 { method = \"G T\", pool = \"web\" },\n\
                 { methods = [\"GET\", \"P(ST\"], pool = \"web\" },\n\
                 { method = \"GET\", methods = [\"GET\"], pool = \"web\" },\n\
                 { methods = [], pool = \"web\" },\n\
                 { header = { name = \"x y\" }, pool = \"web\" },\n\
                 { header = { value = \"1\" }, pool = \"web\" },\n\
                 { headers = [{ name = \"x\", value = \"1\", regex = \"1\" }], pool = \"web\" },\n\
                 { query_params = [{ name = \"q\", regex = \"(unclosed\" }], pool = \"web\" },\n\
                 { query_param = { name = \"\" }, pool = \"web\" },",
            ),
            &[
                &format!("{}.host: `bad host` is not a host name (DNS labels, optionally after `*.`; no port)", r(0)),
                &format!("{}.host: `a.test:80` is not a host name (DNS labels, optionally after `*.`; no port)", r(1)),
                &format!("{}.path_prefix: `no-slash` is not a path: it starts with `/` and holds only URI characters, without `?` or `#`", r(2)),
                &format!("{}.path: `/a?b` is not a path: it starts with `/` and holds only URI characters, without `?` or `#`", r(3)),
                &format!("{}.path: give `path` (exact) or `path_prefix`, not both", r(4)),
                &format!("{}.method: `G T` is not a method (a token, such as GET)", r(5)),
                &format!("{}.methods[1]: `P(ST` is not a method (a token, such as GET)", r(6)),
                &format!("{}.method: give `method` (one) or `methods` (any of several), not both", r(7)),
                &format!("{}.methods: must not be empty (leave it out to match any method)", r(8)),
                &format!("{}.header.name: `x y` is not a header name (a token)", r(9)),
                &format!("{}.header.name: is required", r(10)),
                &format!("{}.headers[0].value: give `value` (exact) or `regex`, not both (neither: present with any value)", r(11)),
                &format!("{}.query_params[0].regex: `(unclosed` is not a regular expression: error: unclosed group", r(12)),
                &format!("{}.query_param.name: `` is not a parameter name", r(13)),
            ],
        ),
        (
            "rewrites without a path, or not a path or host; server_name on an HTTP route",
            listener(
                "{ host = \"a.test\", rewrite_prefix = \"/x\", pool = \"web\" },\n\
                 { path_prefix = \"/b/\", rewrite_prefix = \"b/\", pool = \"web\" },\n\
                 { path_prefix = \"/c/\", rewrite_host = \"not a host\", pool = \"web\" },\n\
                 { path_prefix = \"/d/\", rewrite_host = \"d.internal:99999\", pool = \"web\" },\n\
                 { server_name = \"e.test\", pool = \"web\" },",
            ),
            &[
                &format!("{}.rewrite_prefix: needs `path_prefix` (or `path`): it replaces the part of the path that matched", r(0)),
                &format!("{}.rewrite_prefix: `b/` is not a path: it starts with `/` and holds only URI characters, without `?` or `#`", r(1)),
                &format!("{}.rewrite_host: `not a host` is not a host (a DNS name or IP address, optionally with `:PORT`)", r(2)),
                &format!("{}.rewrite_host: `d.internal:99999` is not a host (a DNS name or IP address, optionally with `:PORT`)", r(3)),
                &format!("{}.server_name: applies only to tls_passthrough routes; an HTTP route matches `host` (and more)", r(4)),
            ],
        ),
        (
            "unknown keys and wrong types in a route",
            listener("{ path_prefx = \"/\", pool = \"web\" },\n{ methods = \"GET\", pool = \"web\" },"),
            &[
                &format!("{}.path_prefx: unknown key; did you mean `path_prefix`?", r(0)),
                &format!("{}.methods: expected a list, got the string \"GET\"", r(1)),
            ],
        ),
    ];
    assert_error_table(cases);
}
