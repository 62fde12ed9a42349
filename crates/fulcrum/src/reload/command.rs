//! `fulcrum reload -c FILE`: asks the fulcrum running with FILE to reload, through the admin
//! API the file configures (`POST /api/reload`, with the file's admin token), and prints the
//! answer: what changed, or every error with its path (and then nothing changed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fulcrum_core::config::Config;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Longer than the admin API's own wait, so its answer always arrives.
const TIMEOUT: Duration = Duration::from_secs(40);

/// Where the file says the admin API is, and its token file.
struct AdminAccess {
    bind: SocketAddr,
    token_file: Option<PathBuf>,
}

/// The admin API of the fulcrum running with `path`. A file with errors is still sent to the
/// running fulcrum when its `[admin]` table can be read, so that the refusal is logged and
/// counted there and its errors come back from it; `Err`: the errors of a file whose admin
/// address cannot be read at all (the running fulcrum is not asked).
fn admin_of(path: &Path) -> Result<Option<AdminAccess>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let errors = match Config::from_toml(&text) {
        Ok(config) => {
            return Ok(config.relative_to(dir).admin.map(|a| AdminAccess {
                bind: a.bind,
                token_file: a.token_file,
            }))
        }
        Err(errors) => errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let table: toml::Table = text.parse().map_err(|_| errors.clone())?;
    let admin = table.get("admin").and_then(|a| a.as_table());
    let bind = admin
        .and_then(|a| a.get("bind"))
        .and_then(|b| b.as_str())
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| errors.clone())?;
    let token_file = admin
        .and_then(|a| a.get("token_file"))
        .and_then(|t| t.as_str())
        .map(|t| dir.join(t));
    Ok(Some(AdminAccess { bind, token_file }))
}

/// Whether the reload was applied; `Err`: it could not be asked for.
pub fn run(path: &Path) -> Result<bool, String> {
    let admin = match admin_of(path) {
        Ok(Some(admin)) => admin,
        Ok(None) => {
            return Err(
                "the file has no [admin] section, so there is no API to ask; send SIGHUP \
                        instead (systemctl reload fulcrum, or kill -HUP PID)"
                    .to_string(),
            )
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return Err(format!(
                "{}: {} error(s), and no admin address to ask; nothing was reloaded",
                path.display(),
                errors.len()
            ));
        }
    };
    let token = match &admin.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("admin.token_file: cannot read {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let addr = reachable(admin.bind);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let (status, body) = runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, post(addr, token.as_deref())).await })
        .map_err(|_| format!("no answer from the admin API at {addr} within {TIMEOUT:?}"))??;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "the admin API at {addr} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )
    })?;
    let lines = |key: &str| -> Vec<String> {
        answer[key]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if answer["applied"] == true {
        let changes = lines("changes");
        if changes.is_empty() {
            println!("reloaded: nothing changed");
        } else {
            println!("reloaded: {} change(s)", changes.len());
            for change in changes {
                println!("  {change}");
            }
        }
        return Ok(true);
    }
    if answer["applied"] == false {
        for error in lines("errors") {
            eprintln!("error: {error}");
        }
        eprintln!("reload refused; nothing changed");
        return Ok(false);
    }
    Err(format!(
        "the admin API at {addr} answered {status}: {}",
        answer["error"].as_str().unwrap_or("(no reason given)")
    ))
}

/// Where to reach an admin API bound to `bind` from this host.
fn reachable(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bind.port())
        }
        _ => bind,
    }
}

async fn post(addr: SocketAddr, token: Option<&str>) -> Result<(u16, Bytes), String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("cannot reach the admin API at {addr} (is fulcrum running with this file?): {e}")
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let mut request = http::Request::post("/api/reload")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_LENGTH, "0");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the admin API's answer broke off: {e}"))?
        .to_bytes();
    Ok((status, body))
}
