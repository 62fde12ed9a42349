//! An HTTP/2 client that writes frames byte by byte (RFC 9113 §4, HPACK literals from RFC
//! 7541 §6.2.2), for what no well-behaved client library sends: streams past the limit,
//! reset floods, endless CONTINUATION frames, malformed requests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const ACK: u8 = 0x1;

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits `high`.
fn integer(out: &mut Vec<u8>, high: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing, names and values as given (so an
/// uppercase name stays uppercase).
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The fields of a GET of `path` (plus `extra`).
pub fn get_fields<'a>(path: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "h2.test"),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    fields
}

pub struct RawH2 {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, and acknowledges the server's
    /// SETTINGS (its limits apply from then on).
    pub async fn connect(addr: SocketAddr) -> RawH2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let mut raw = RawH2 {
            stream,
            buffer: Vec::new(),
        };
        loop {
            let f = raw.next_frame().await.expect("the server's SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                raw.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
                return raw;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, or `None` when the connection closed (or nothing came for 10 s).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buffer.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]])
                    as usize;
                if self.buffer.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buffer[3],
                        flags: self.buffer[4],
                        stream: u32::from_be_bytes(self.buffer[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buffer[9..9 + len].to_vec(),
                    };
                    self.buffer.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16384];
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.buffer.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Whether the server has closed the connection (waiting at most 10 ms to see); what
    /// arrives meanwhile is kept for `next_frame`.
    pub async fn closed_now(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(Duration::from_millis(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                false
            }
            Err(_) => false,
        }
    }

    /// Frames until the connection closes or `done` says enough.
    pub async fn frames_until(&mut self, mut done: impl FnMut(&[Frame]) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !done(&frames) {
            match self.next_frame().await {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        frames
    }
}
