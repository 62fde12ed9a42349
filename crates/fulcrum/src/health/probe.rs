//! Active probes: a TCP connect, or an HTTP GET whose status must fall in the expected range,
//! in the protocol the pool's requests use (HTTP/1.1, HTTP/2, or the one the backend picks by
//! ALPN). Each probe uses a fresh connection (a probe must see what a new client would see)
//! and is bounded by the check's timeout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_core::config::{HttpCheck, UpstreamProtocol};
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
    protocol: UpstreamProtocol,
) -> Probed {
    match tokio::time::timeout(timeout, get(addr, check, tls, protocol)).await {
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
async fn get(
    addr: SocketAddr,
    check: &HttpCheck,
    tls: Option<&BackendTls>,
    protocol: UpstreamProtocol,
) -> Result<u16, String> {
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
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let h2 = match protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Auto => stream.alpn() == Some(b"h2"),
    };
    if h2 {
        return get_h2(stream, check, &host, tls.is_some()).await;
    }
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
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

/// The probe over HTTP/2 (`:authority` is the check's host).
async fn get_h2(stream: Upstream, check: &HttpCheck, host: &str, tls: bool) -> Result<u16, String> {
    let (sender, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let scheme = if tls { "https" } else { "http" };
    let request = http::Request::get(format!("{scheme}://{host}{}", check.path))
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .body(())
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    let status = async {
        let mut sender = sender
            .ready()
            .await
            .map_err(|e| format!("no stream: {e}"))?;
        let (response, _) = sender
            .send_request(request, true)
            .map_err(|e| format!("no stream: {e}"))?;
        response
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("no answer: {e}"))
    }
    .await;
    driver.abort();
    status
}
