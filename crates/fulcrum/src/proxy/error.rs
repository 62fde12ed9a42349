//! What can go wrong on the request path, and the status each failure maps to. The class
//! decides the status, the log level and whether a retry is allowed; every error response has
//! a one-line plain-text body that never names a backend.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Malformed request (missing or repeated Host, …): 400, connection closed.
    BadRequest(&'static str),
    /// Request line longer than the listener's limit: 414, connection closed.
    RequestLineTooLong,
    /// The client stopped sending its request body for longer than the idle timeout: 408.
    ClientBodyTimeout,
    /// The pool has no backend that can be picked: 503.
    NoBackend,
    /// Every connect attempt failed: 502.
    ConnectFailed,
    /// The backend broke the exchange after the request was sent: 502.
    UpstreamFailed,
    /// No response headers within the response timeout: 504.
    UpstreamTimeout,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.status().as_u16(),
            self.message().trim_end()
        )
    }
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed | ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn message(self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::RequestLineTooLong => "request line too long\n",
            ProxyError::ClientBodyTimeout => "the request body stopped arriving\n",
            ProxyError::NoBackend => "no backend available\n",
            ProxyError::ConnectFailed => "could not connect to a backend\n",
            ProxyError::UpstreamFailed => "the backend failed to answer\n",
            ProxyError::UpstreamTimeout => "the backend did not answer in time\n",
        }
    }

    /// Client errors end the connection: the stream may no longer be in sync.
    fn closes_connection(self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::RequestLineTooLong
                | ProxyError::ClientBodyTimeout
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::message(self.message()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
