//! The HTTP/1.1 conformance tables (`tests/conformance/*.rs`) run through the real proxy: every
//! request row from a client against a lenient recording backend, every response row from a
//! scripted backend to a client. All failing rows are reported together, each with its RFC
//! section.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "conformance/http2.rs"]
mod http2;
#[path = "conformance/requests.rs"]
mod requests;
#[path = "conformance/responses.rs"]
mod responses;

use std::time::Duration;

use common::h2raw::{
    block, frame, get_fields, Frame, RawH2, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM,
};
use common::recorder::{Recorded, Recorder};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off a client connection: its status and body.
async fn read_response(stream: &mut TcpStream, input: &mut Vec<u8>) -> Option<(u16, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(input) {
            let status = response.code.unwrap_or(0);
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            while input.len() < len + length {
                let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    return None;
                }
                input.extend_from_slice(&buf[..n]);
            }
            let body = input[len..len + length].to_vec();
            input.drain(..len + length);
            return Some((status, body));
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        input.extend_from_slice(&buf[..n]);
    }
}

/// What is wrong with one forwarded request, if anything.
fn check_seen(got: &Recorded, want: &requests::Seen) -> Option<String> {
    let head = &got.head;
    let line = head.lines().next().unwrap_or("");
    if line != want.line.to_ascii_lowercase() {
        return Some(format!("request line {line:?}, want {:?}", want.line));
    }
    if head.replace("\r\n", "").contains('\n') {
        return Some(format!("a bare LF reached the backend: {head:?}"));
    }
    if head.matches("\r\nx-forwarded-for: 127.0.0.1\r\n").count() != 1 {
        return Some(format!("not one x-forwarded-for of the peer: {head:?}"));
    }
    for has in want.has {
        if !head.contains(&format!("\r\n{has}")) {
            return Some(format!("head lacks {has:?}: {head:?}"));
        }
    }
    for lacks in want.lacks {
        if head.contains(&format!("\r\n{lacks}")) {
            return Some(format!("head has {lacks:?}: {head:?}"));
        }
    }
    if got.body != want.body {
        return Some(format!(
            "body {:?}, want {:?}",
            String::from_utf8_lossy(&got.body),
            String::from_utf8_lossy(want.body)
        ));
    }
    None
}

/// Runs one request row; the reason it failed, if it did.
async fn run_request_case(
    proxy: std::net::SocketAddr,
    backend: &Recorder,
    case: &requests::Case,
) -> Option<String> {
    let (requests_before, closed_before) = {
        let log = backend.log.lock().unwrap();
        (log.requests.len(), log.closed)
    };
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(case.send).await.unwrap();
    let mut input = Vec::new();
    match &case.expect {
        requests::Expect::Forwards(want) => {
            for (i, _) in want.iter().enumerate() {
                match read_response(&mut stream, &mut input).await {
                    Some((200, _)) => {}
                    Some((status, body)) => {
                        return Some(format!(
                            "response {i}: {status} {}",
                            String::from_utf8_lossy(&body)
                        ))
                    }
                    None => return Some(format!("response {i}: none")),
                }
            }
            let got = backend.requests()[requests_before..].to_vec();
            if got.len() != want.len() {
                return Some(format!("the backend got {} requests: {got:?}", got.len()));
            }
            got.iter()
                .zip(want.iter())
                .find_map(|(got, want)| check_seen(got, want))
        }
        requests::Expect::Refused(status) | requests::Expect::CutOff(status) => {
            let answer = read_to_close(&mut stream).await;
            if !answer.starts_with(&format!("HTTP/1.1 {status} ")) {
                return Some(format!("answered {answer:?}"));
            }
            if answer.matches("HTTP/1.1 ").count() != 1 {
                return Some(format!("more than one answer: {answer:?}"));
            }
            if matches!(case.expect, requests::Expect::CutOff(_)) {
                backend.wait_closed(closed_before + 1).await;
            }
            let got = backend.requests()[requests_before..].to_vec();
            if !got.is_empty() {
                return Some(format!("the backend got {got:?}"));
            }
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_rule_in_the_table_holds_through_the_proxy() {
    let backend = Recorder::start().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let cases = requests::cases();
    assert!(cases.len() >= 80, "the table has {} rows", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(why) = run_request_case(proxy.addr, &backend, case).await {
            failures.push(format!("{} — {}: {why}", case.rfc, case.rule));
        }
    }
    assert_no_failures(&failures, cases.len());
}

/// A backend that answers `/case/N` with row N's bytes and `/next` normally, and records
/// which of its connections served each request.
struct Scripted {
    addr: std::net::SocketAddr,
    served: std::sync::Arc<std::sync::Mutex<Vec<(String, usize)>>>,
}

impl Scripted {
    async fn start(cases: &'static [responses::Case]) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&served);
        tokio::spawn(async move {
            let mut connections = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                connections += 1;
                let connection = connections;
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    let mut input = Vec::new();
                    while let Some(request) =
                        common::recorder::read_request(&mut stream, &mut input).await
                    {
                        log.lock().unwrap().push((request.path.clone(), connection));
                        let row = request
                            .path
                            .strip_prefix("/case/")
                            .and_then(|n| n.parse::<usize>().ok())
                            .and_then(|n| cases.get(n));
                        let (answer, later, close) = match row {
                            Some(row) => (row.answer, row.later, row.close_after),
                            None => (
                                &b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext"[..],
                                &b""[..],
                                false,
                            ),
                        };
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if !later.is_empty() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if stream.write_all(later).await.is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, served }
    }

    /// The connection that served `path`, if any did.
    fn connection_of(&self, path: &str) -> Option<usize> {
        self.served
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| *c)
    }
}

/// A response off the front of `bytes`: (head, body, the rest), framed as a client reads it.
fn split_response(bytes: &[u8], request_is_head: bool) -> (String, Vec<u8>, &[u8]) {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (String::from_utf8_lossy(bytes).into_owned(), Vec::new(), &[]);
    };
    let head = String::from_utf8_lossy(&bytes[..end + 4]).to_ascii_lowercase();
    let mut rest = &bytes[end + 4..];
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    if request_is_head || status == 204 || status == 304 || status < 200 {
        return (head, Vec::new(), rest);
    }
    if head.contains("\r\ntransfer-encoding: chunked\r\n") {
        let mut body = Vec::new();
        loop {
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                return (head, body, &[]);
            };
            let size = std::str::from_utf8(&rest[..eol])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
            let Some(size) = size else {
                return (head, body, &[]);
            };
            rest = &rest[eol + 2..];
            if size == 0 {
                let end = rest.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
                return (head, body, &rest[(end + 2).min(rest.len())..]);
            }
            let take = size.min(rest.len());
            body.extend_from_slice(&rest[..take]);
            rest = &rest[(take + 2).min(rest.len())..];
        }
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => {
            let n = n.min(rest.len());
            (head, rest[..n].to_vec(), &rest[n..])
        }
        None => (head, rest.to_vec(), &[]),
    }
}

/// Runs one response row; the reason it failed, if it did.
async fn run_response_case(
    proxy: std::net::SocketAddr,
    backend: &Scripted,
    i: usize,
    case: &responses::Case,
) -> Option<String> {
    let request = format!(
        "{} /case/{i} HTTP/1.1\r\nhost: a\r\n\r\nGET /next HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        case.method
    );
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut transcript = Vec::new();
    let mut buf = [0u8; 16384];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        transcript.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&transcript).into_owned();
    if text.contains(responses::never_relayed()) {
        return Some(format!("a smuggled response reached the client: {text:?}"));
    }
    let (head, body, rest) = split_response(&transcript, case.method == "HEAD");
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let same_connection = match (
        backend.connection_of(&format!("/case/{i}")),
        backend.connection_of("/next"),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    backend.served.lock().unwrap().clear();
    let (want_status, reused) = match &case.expect {
        responses::Expect::Relayed {
            status,
            has,
            lacks,
            body: want_body,
            reused,
        } => {
            if head.replace("\r\n", "").contains('\n') {
                return Some(format!("a bare LF reached the client: {head:?}"));
            }
            if let Some(missing) = has.iter().find(|h| !head.contains(&format!("\r\n{h}\r\n"))) {
                return Some(format!("head lacks {missing:?}: {head:?}"));
            }
            if let Some(found) = lacks.iter().find(|l| head.contains(&format!("\r\n{l}"))) {
                return Some(format!("head has {found:?}: {head:?}"));
            }
            if body != *want_body {
                return Some(format!(
                    "body {:?}: {text:?}",
                    String::from_utf8_lossy(&body)
                ));
            }
            (*status, *reused)
        }
        responses::Expect::BadGateway => (502, false),
        responses::Expect::Truncated { status } => {
            if !rest.is_empty() {
                return Some(format!(
                    "the client connection went on after a broken body: {text:?}"
                ));
            }
            (*status, false)
        }
    };
    if status != want_status {
        return Some(format!("status {status}, want {want_status}: {text:?}"));
    }
    if same_connection != reused {
        return Some(format!(
            "the next request {} the row's upstream connection",
            if same_connection {
                "reused"
            } else {
                "did not reuse"
            }
        ));
    }
    if !rest.is_empty() {
        let (next_head, next_body, after) = split_response(rest, false);
        if !next_head.starts_with("http/1.1 200 ") || next_body != b"next" || !after.is_empty() {
            return Some(format!(
                "the next request's answer is not the backend's: {text:?}"
            ));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_rule_in_the_table_holds_through_the_proxy() {
    let cases: &'static [responses::Case] = Box::leak(responses::cases().into_boxed_slice());
    let backend = Scripted::start(cases).await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if let Some(why) = run_response_case(proxy.addr, &backend, i, case).await {
            failures.push(format!("{} — {}: {why}", case.rfc, case.rule));
        }
    }
    assert_no_failures(&failures, cases.len());
}

/// The status of a response HEADERS frame when HPACK's static table has it (200, 204, 206,
/// 304, 400, 404, 500: the first field, fully indexed); `None` for any other.
fn status_of(f: &Frame) -> Option<u16> {
    let statuses = [200, 204, 206, 304, 400, 404, 500];
    let index = f.payload.first()?.checked_sub(0x88)?;
    statuses.get(usize::from(index)).copied()
}

/// What ended stream `id` (its response HEADERS or RST_STREAM), or the connection (GOAWAY).
fn ending(frames: &[Frame], id: u32) -> Option<&Frame> {
    frames.iter().find(|f| {
        f.kind == GOAWAY || (f.stream == id && (f.kind == HEADERS || f.kind == RST_STREAM))
    })
}

/// Runs one HTTP/2 row on a fresh connection; the reason it failed, if it did.
async fn run_h2_case(
    proxy: std::net::SocketAddr,
    backend: &Recorder,
    case: &http2::Case,
) -> Option<String> {
    let before = backend.requests().len();
    let mut raw = RawH2::connect(proxy).await;
    raw.send(&case.send).await.unwrap();
    let frames = raw.frames_until(|seen| ending(seen, 1).is_some()).await;
    let end = ending(&frames, 1).cloned();
    let reached = || backend.requests()[before..].to_vec();
    match &case.expect {
        http2::Expect::Forwards(want) => {
            let Some(end) = end.filter(|f| f.kind == HEADERS) else {
                return Some(format!("no response on stream 1: {frames:?}"));
            };
            if status_of(&end) != Some(200) {
                return Some(format!("answered {end:?}"));
            }
            let got = reached();
            if got.len() != 1 {
                return Some(format!("the backend got {} requests: {got:?}", got.len()));
            }
            check_seen(&got[0], want)
        }
        http2::Expect::Malformed => {
            match &end {
                Some(f) if f.kind == RST_STREAM && f.error_code() != 0 => {}
                Some(f) if f.kind == HEADERS && status_of(f) != Some(200) => {}
                other => return Some(format!("stream 1 not refused: {other:?} in {frames:?}")),
            }
            if !reached().is_empty() {
                return Some(format!("the backend got {:?}", reached()));
            }
            // A stream error leaves the connection serving (§5.4.2).
            let next = frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                3,
                &block(&get_fields("/after", &[])),
            );
            if raw.send(&next).await.is_err() {
                return Some("the connection closed after a stream error".into());
            }
            let frames = raw.frames_until(|seen| ending(seen, 3).is_some()).await;
            match ending(&frames, 3) {
                Some(f) if f.kind == HEADERS && status_of(f) == Some(200) => None,
                other => Some(format!("stream 3 after the stream error: {other:?}")),
            }
        }
        http2::Expect::ConnectionError(code) => {
            let Some(goaway) = frames.iter().find(|f| f.kind == GOAWAY) else {
                return Some(format!("no GOAWAY: {frames:?}"));
            };
            if goaway.error_code() != *code {
                return Some(format!(
                    "GOAWAY with code {:#x}, want {code:#x}",
                    goaway.error_code()
                ));
            }
            if !raw.closed_now().await && raw.next_frame().await.is_some() {
                return Some("the connection went on after GOAWAY".into());
            }
            let got = reached();
            (!got.is_empty()).then(|| format!("the backend got {got:?}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http2_rule_in_the_table_holds_through_the_proxy() {
    let backend = Recorder::start().await;
    let proxy = start_proxy("http", "round_robin", &[(backend.addr, 1)], "", "");
    let cases = http2::cases();
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(why) = run_h2_case(proxy.addr, &backend, case).await {
            failures.push(format!("{} — {}: {why}", case.rfc, case.rule));
        }
    }
    assert_no_failures(&failures, cases.len());
}

/// Fails with every failing row, each with its RFC section and rule.
fn assert_no_failures(failures: &[String], rows: usize) {
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
