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

pub async fn tcp(addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => ProbeOutcome::Pass,
        Ok(Err(_)) => ProbeOutcome::Fail,
        Err(_) => ProbeOutcome::Timeout,
    }
}

pub async fn http(addr: SocketAddr, check: &HttpCheck, timeout: Duration) -> ProbeOutcome {
    match tokio::time::timeout(timeout, get(addr, check)).await {
        Ok(Some(status)) if check.expect.contains(status) => ProbeOutcome::Pass,
        Ok(_) => ProbeOutcome::Fail,
        Err(_) => ProbeOutcome::Timeout,
    }
}

/// The response status, or `None` when the exchange failed.
async fn get(addr: SocketAddr, check: &HttpCheck) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let driver = tokio::spawn(connection);
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let request = Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let status = sender
        .send_request(request)
        .await
        .ok()
        .map(|r| r.status().as_u16());
    driver.abort();
    status
}
