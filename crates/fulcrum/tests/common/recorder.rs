//! A recording backend for the conformance and smuggling tests: it reads requests as
//! leniently as real servers do (bare LF line ends in chunked coding, as nginx accepts them),
//! answers each with `200` and the length of the body it read, and records what it read, so a
//! test can assert exactly which requests reached a backend.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the recording backend read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The head as received, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Recorded>,
    /// Connections that have ended.
    pub closed: usize,
    /// Connections accepted.
    pub accepted: usize,
}

/// A backend that answers every request it reads with `200` and the body's length, keeping
/// the connection open, and records what it read.
pub struct Recorder {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().accepted += 1;
                tokio::spawn(serve_recorded(stream, Arc::clone(&shared)));
            }
        });
        Recorder { addr, log }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().requests.clone()
    }

    /// Waits until `n` of the backend's connections have ended (so it has read all it got).
    pub async fn wait_closed(&self, n: usize) {
        for _ in 0..250 {
            if self.log.lock().unwrap().closed >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the backend's connections did not end: {:?}",
            self.requests()
        );
    }
}

async fn serve_recorded(mut stream: TcpStream, log: Arc<Mutex<Log>>) {
    let mut input = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut input).await {
        let answer = request.body.len().to_string();
        log.lock().unwrap().requests.push(request);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            break;
        }
    }
    log.lock().unwrap().closed += 1;
}

/// Reads more bytes into `input`; false at end of stream.
pub async fn fill(stream: &mut TcpStream, input: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            input.extend_from_slice(&buf[..n]);
            true
        }
    }
}

/// Takes one line (up to a bare or CRLF line end) off the front of `input`.
pub async fn line(stream: &mut TcpStream, input: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = input.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            return Some(text.trim_end_matches(['\r', '\n']).to_string());
        }
        if !fill(stream, input).await {
            return None;
        }
    }
}

/// Reads one request as a lenient server would: any line end, chunked or sized body.
pub async fn read_request(stream: &mut TcpStream, input: &mut Vec<u8>) -> Option<Recorded> {
    let (method, path, head, headers) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = request.parse(input) {
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).to_ascii_lowercase(),
                    )
                })
                .collect();
            let method = request.method.unwrap_or_default().to_string();
            let path = request.path.unwrap_or_default().to_string();
            let head = String::from_utf8_lossy(&input[..len]).to_ascii_lowercase();
            input.drain(..len);
            break (method, path, head, headers);
        }
        if !fill(stream, input).await {
            return None;
        }
    };
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let size_line = line(stream, input).await?;
            let digits = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(digits, 16).ok()?;
            if size == 0 {
                // Trailers up to an empty line, whatever ends the lines.
                while !line(stream, input).await?.is_empty() {}
                break;
            }
            while input.len() < size {
                if !fill(stream, input).await {
                    return None;
                }
            }
            body.extend(input.drain(..size));
            line(stream, input).await?;
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.trim().parse().ok()?;
        while input.len() < length {
            if !fill(stream, input).await {
                return None;
            }
        }
        body.extend(input.drain(..length));
    }
    Some(Recorded {
        method,
        path,
        head,
        body,
    })
}
