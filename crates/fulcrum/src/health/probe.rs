//! Active probes: a TCP connect, or an HTTP/1.1 GET whose status must fall in the expected
//! range. Each probe uses a fresh connection (a probe must see what a new client would see)
//! and is bounded by the check's timeout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_core::config::HttpCheck;
use fulcrum_core::health::ProbeOutcome;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::upstream_io::Upstream;
use crate::tls::upstream::BackendTls;

/// A probe's outcome and what was seen, for the logs and the pool view ("status 503",
/// "connect refused", "timed out after 1s").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub outcome: ProbeOutcome,
    pub detail: String,
}

impl Probed {
    fn new(outcome: ProbeOutcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
        }
    }

    fn timed_out(timeout: Duration) -> Self {
        Self::new(
            ProbeOutcome::Timeout,
            format!("timed out after {}", humantime::format_duration(timeout)),
        )
    }
}

pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Probed {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probed::new(ProbeOutcome::Pass, "connected"),
        Ok(Err(e)) => Probed::new(ProbeOutcome::Fail, connect_error(&e)),
        Err(_) => Probed::timed_out(timeout),
    }
}

/// An HTTP GET; over TLS (verified as the pool's requests are) when the pool speaks TLS.
pub async fn http(
    addr: SocketAddr,
    check: &HttpCheck,
    timeout: Duration,
    tls: Option<&BackendTls>,
) -> Probed {
    match tokio::time::timeout(timeout, get(addr, check, tls)).await {
        Ok(Ok(status)) if check.expect.contains(status) => {
            Probed::new(ProbeOutcome::Pass, format!("status {status}"))
        }
        Ok(Ok(status)) => Probed::new(ProbeOutcome::Fail, format!("status {status}")),
        Ok(Err(why)) => Probed::new(ProbeOutcome::Fail, why),
        Err(_) => Probed::timed_out(timeout),
    }
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused".into(),
        _ => format!("connect failed: {e}"),
    }
}

/// The response status, or what went wrong before one arrived.
async fn get(addr: SocketAddr, check: &HttpCheck, tls: Option<&BackendTls>) -> Result<u16, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(&e))?;
    let stream = match tls {
        None => Upstream::Plain(stream),
        Some(tls) => Upstream::Tls(Box::new(
            tls.connector()
                .connect(tls.name_for(addr), stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?,
        )),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let request = Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    let status = sender
        .send_request(request)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("no answer: {e}"));
    driver.abort();
    status
}
