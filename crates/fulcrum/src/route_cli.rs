//! `fulcrum route`: which route and pool a request would take through a listener, and what
//! its backend would be sent — the proxy's own route phase (fulcrum-core's route table) run
//! on a request described on the command line, with no network.

use std::path::PathBuf;

use fulcrum_core::config::{Config, ListenerProtocol};
use fulcrum_core::routing::DescribedRequest;

#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The configuration file (TOML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The request line: method and target, e.g. 'GET /v2/users?page=2'.
    #[arg(long, value_name = "METHOD TARGET")]
    pub request: String,
    /// The Host the request names (port allowed).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// A request header, 'NAME: VALUE'; repeat for several.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The HTTP listener to route through (needed when the file has several).
    #[arg(long, value_name = "NAME")]
    pub listener: Option<String>,
}

/// What `fulcrum route` prints for `args` against `config`, or why it cannot say.
pub fn explain(config: &Config, args: &RouteArgs) -> Result<String, String> {
    let http: Vec<_> = config
        .listeners
        .iter()
        .filter(|l| matches!(l.protocol, ListenerProtocol::Http(_)))
        .collect();
    let listener = match &args.listener {
        Some(name) => http
            .iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| format!("no HTTP listener named `{name}`"))?,
        None => match http.as_slice() {
            [only] => only,
            [] => return Err("the configuration has no HTTP listener".into()),
            _ => {
                let names: Vec<&str> = http.iter().map(|l| l.name.as_str()).collect();
                return Err(format!(
                    "several HTTP listeners ({}); choose one with --listener",
                    names.join(", ")
                ));
            }
        },
    };
    let (method, target) = args
        .request
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("`{}` is not METHOD TARGET, e.g. 'GET /'", args.request))?;
    let target = target.trim();
    if !target.starts_with('/') {
        return Err(format!("the target `{target}` must start with `/`"));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("`{header}` is not 'NAME: VALUE'"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim()));
    }
    let request = DescribedRequest {
        method,
        path,
        query: query.unwrap_or_default(),
        host: args.host.as_deref(),
        headers,
    };
    let routes = &listener.routes.routes;
    let Some((index, route)) = listener.routes.find(&request) else {
        let pool = listener.pool.as_deref().unwrap_or_default();
        return Ok(format!(
            "listener `{}`: no route matches ({} checked) → the listener's pool `{pool}`\n\
             sent as: {method} {target}{}\n",
            listener.name,
            routes.len(),
            host_line(args.host.as_deref())
        ));
    };
    let mut sent = Vec::new();
    route.write_target(path.as_bytes(), query.map(str::as_bytes), &mut sent);
    let host = route.rewrite_host.as_deref().or(args.host.as_deref());
    Ok(format!(
        "listener `{}`: routes[{index}] `{}` → pool `{}`\nsent as: {method} {}{}\n",
        listener.name,
        route.name,
        route.pool,
        String::from_utf8_lossy(&sent),
        host_line(host)
    ))
}

fn host_line(host: Option<&str>) -> String {
    host.map(|h| format!(", host: {h}")).unwrap_or_default()
}
