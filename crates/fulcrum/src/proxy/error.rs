//! What can go wrong on the request path, and the status each failure maps to. The class
//! decides the status, the log level and whether a retry is allowed; every error response has
//! a one-line plain-text body that never names a backend.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Malformed request (missing or repeated Host, …): 400, connection closed.
    BadRequest(&'static str),
    /// Request line longer than the listener's limit: 414, connection closed.
    RequestLineTooLong,
    /// Request head larger than the listener's limit, or with too many headers: 431.
    HeadTooLarge,
    /// A WebSocket handshake for a version other than 13: 426, naming 13.
    WebSocketVersion,
    /// A well-formed request line of an HTTP version other than 1.0 and 1.1: 505.
    VersionNotSupported,
    /// A transfer coding other than chunked (`gzip, chunked`): 501 (RFC 9112 §6.1).
    CodingNotImplemented,
    /// The client address is over the listener's `rate_limit`: 429 with `Retry-After`.
    RateLimited,
    /// The request head did not arrive within the header timeout: 408.
    HeaderTimeout,
    /// The client stopped sending its request body for longer than the idle timeout, or
    /// sent it slower than `min_upload_rate`: 408.
    ClientBodyTimeout,
    /// The pool has no backend that can be picked: 503.
    NoBackend,
    /// The pool is at one of its circuit breakers' limits: 503 at once, naming it.
    Overloaded(Breaker),
    /// Every connect attempt failed: 502.
    ConnectFailed,
    /// The backend broke the exchange after the request was sent: 502.
    UpstreamFailed,
    /// No response headers within the response timeout: 504.
    UpstreamTimeout,
}

/// A pool's circuit breaker, by the config key that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    MaxRequests,
}

impl Breaker {
    pub fn key(self) -> &'static str {
        match self {
            Breaker::MaxRequests => "max_requests",
        }
    }
}

/// Whose fault a failed request was: the metric label of fulcrum's own error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The client sent something malformed, too large or too slowly (4xx).
    Client,
    /// A backend could not be reached, broke the exchange or did not answer in time (502,
    /// 504).
    Upstream,
    /// The pool had no backend to pick (503).
    NoneAvailable,
}

impl ErrorSide {
    pub const ALL: [ErrorSide; 3] = [
        ErrorSide::Client,
        ErrorSide::Upstream,
        ErrorSide::NoneAvailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorSide::Client => "client",
            ErrorSide::Upstream => "upstream",
            ErrorSide::NoneAvailable => "none_available",
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status(), self.message().trim_end())
    }
}

impl ProxyError {
    pub fn status(self) -> u16 {
        match self {
            ProxyError::BadRequest(_) => 400,
            ProxyError::WebSocketVersion => 426,
            ProxyError::VersionNotSupported => 505,
            ProxyError::CodingNotImplemented => 501,
            ProxyError::RateLimited => 429,
            ProxyError::RequestLineTooLong => 414,
            ProxyError::HeadTooLarge => 431,
            ProxyError::HeaderTimeout | ProxyError::ClientBodyTimeout => 408,
            ProxyError::NoBackend | ProxyError::Overloaded(_) => 503,
            ProxyError::ConnectFailed | ProxyError::UpstreamFailed => 502,
            ProxyError::UpstreamTimeout => 504,
        }
    }

    pub fn side(self) -> ErrorSide {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::WebSocketVersion
            | ProxyError::VersionNotSupported
            | ProxyError::CodingNotImplemented
            | ProxyError::RateLimited
            | ProxyError::RequestLineTooLong
            | ProxyError::HeadTooLarge
            | ProxyError::HeaderTimeout
            | ProxyError::ClientBodyTimeout => ErrorSide::Client,
            ProxyError::NoBackend | ProxyError::Overloaded(_) => ErrorSide::NoneAvailable,
            ProxyError::ConnectFailed
            | ProxyError::UpstreamFailed
            | ProxyError::UpstreamTimeout => ErrorSide::Upstream,
        }
    }

    fn status_line(self) -> &'static str {
        match self.status() {
            400 => "400 Bad Request",
            408 => "408 Request Timeout",
            414 => "414 URI Too Long",
            426 => "426 Upgrade Required",
            429 => "429 Too Many Requests",
            431 => "431 Request Header Fields Too Large",
            501 => "501 Not Implemented",
            502 => "502 Bad Gateway",
            503 => "503 Service Unavailable",
            505 => "505 HTTP Version Not Supported",
            _ => "504 Gateway Timeout",
        }
    }

    /// The one-line plain-text body of fulcrum's answer.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::WebSocketVersion => "this WebSocket version is not supported; use 13\n",
            ProxyError::VersionNotSupported => "this HTTP version is not supported; use HTTP/1.1\n",
            ProxyError::CodingNotImplemented => "only the chunked transfer coding is supported\n",
            ProxyError::RateLimited => "too many requests\n",
            ProxyError::RequestLineTooLong => "request line too long\n",
            ProxyError::HeadTooLarge => "request head too large\n",
            ProxyError::HeaderTimeout => "the request head did not arrive in time\n",
            ProxyError::ClientBodyTimeout => "the request body did not arrive in time\n",
            ProxyError::NoBackend => "no backend available\n",
            ProxyError::Overloaded(Breaker::MaxRequests) => {
                "the pool is at its limit of requests in flight\n"
            }
            ProxyError::ConnectFailed => "could not connect to a backend\n",
            ProxyError::UpstreamFailed => "the backend failed to answer\n",
            ProxyError::UpstreamTimeout => "the backend did not answer in time\n",
        }
    }

    /// Client errors end the connection: the stream may no longer be in sync.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::WebSocketVersion
                | ProxyError::VersionNotSupported
                | ProxyError::CodingNotImplemented
                | ProxyError::RequestLineTooLong
                | ProxyError::HeadTooLarge
                | ProxyError::HeaderTimeout
                | ProxyError::ClientBodyTimeout
        )
    }

    /// The headers an answer for this error carries besides its framing, for HTTP/1.1 and
    /// HTTP/2 alike.
    pub fn extra_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // RFC 6455 §4.2.2 and RFC 9110 §15.5.22: say what would be accepted.
            ProxyError::WebSocketVersion => {
                &[("sec-websocket-version", "13"), ("upgrade", "websocket")]
            }
            // RFC 6585 §4: when to try again; a bucket refills a token within a second.
            ProxyError::RateLimited => &[("retry-after", "1")],
            ProxyError::Overloaded(Breaker::MaxRequests) => {
                &[("x-fulcrum-circuit-breaker", "max_requests")]
            }
            _ => &[],
        }
    }

    /// Appends the complete response; with `close` (or for a client error) it says
    /// `connection: close`. The answer to a HEAD request has no body (its length is the one
    /// a GET would get): a kept-alive client would read the body as the next response.
    pub fn write_response(self, out: &mut Vec<u8>, close: bool, head_request: bool) {
        let message = self.message();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status_line().as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
        out.extend_from_slice(message.len().to_string().as_bytes());
        for (name, value) in self.extra_headers() {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
        }
        if close || self.closes_connection() {
            out.extend_from_slice(b"\r\nconnection: close");
        }
        out.extend_from_slice(b"\r\n\r\n");
        if !head_request {
            out.extend_from_slice(message.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_complete_and_close_after_client_errors() {
        let mut out = Vec::new();
        ProxyError::NoBackend.write_response(&mut out, false, false);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 21\r\n\r\nno backend available\n"
        );
        out.clear();
        ProxyError::NoBackend.write_response(&mut out, false, true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 21\r\n\r\n",
            "a HEAD answer has the length but not the body"
        );
        out.clear();
        ProxyError::HeadTooLarge.write_response(&mut out, false, false);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    }
}
