//! The header timeout of HTTP/2 streams: a request head (HEADERS and its CONTINUATION frames)
//! must arrive whole within the listener's `header_timeout` of its first frame, as an
//! HTTP/1.1 head must within its first byte.
//!
//! The `h2` crate gathers a header block before it shows the stream, so a client that sends
//! HEADERS without END_HEADERS and then nothing would hold the connection (nothing else may
//! be sent on it meanwhile, RFC 9113 §6.10) with no stream fulcrum can see. Hence a watch on
//! the bytes the crate reads: frame headers are followed as they pass (payloads skipped,
//! nothing copied), and while a block is open past the deadline a read fails, which ends the
//! connection. Reading the clock only when a block stays open after a read keeps the common
//! case (a whole head in one HEADERS frame) free of timer work.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::PREFACE;

const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows the frames of a client's byte stream (from its connection preface on) and tells
/// whether a header block is open: a HEADERS frame without END_HEADERS, until the
/// CONTINUATION frame that carries it.
#[derive(Debug)]
pub struct BlockScanner {
    /// Bytes to pass over before the next frame header: the preface, then each payload.
    skip: usize,
    header: [u8; FRAME_HEADER],
    /// How much of `header` has arrived.
    have: usize,
    open: bool,
}

impl Default for BlockScanner {
    fn default() -> Self {
        Self {
            skip: PREFACE.len(),
            header: [0; FRAME_HEADER],
            have: 0,
            open: false,
        }
    }
}

impl BlockScanner {
    /// Takes the next bytes the connection read; returns whether a header block is open
    /// after them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER {
                self.have = 0;
                let h = &self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let (kind, flags) = (h[3], h[4]);
                match kind {
                    HEADERS | PUSH_PROMISE | CONTINUATION => self.open = flags & END_HEADERS == 0,
                    _ => {}
                }
            }
        }
        self.open
    }
}

/// A client connection's byte stream with its header blocks timed.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    scanner: BlockScanner,
    timeout: Duration,
    /// Armed while a header block is open.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            scanner: BlockScanner::default(),
            timeout,
            deadline: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let start = buf.filled().len();
        let read = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let open = me.scanner.feed(&buf.filled()[start..]);
            match (open, me.deadline.is_some()) {
                (true, false) => {
                    let at = Instant::now() + me.timeout;
                    me.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
                }
                (false, true) => me.deadline = None,
                _ => {}
            }
        }
        // Checked whatever the read gave: a client trickling a block byte by byte must not
        // keep it open either.
        if let Some(deadline) = me.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP/2 header block not finished within the header timeout",
                )));
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(FRAME_HEADER + payload, 0xAA);
        f
    }

    /// Fed whole, and one byte at a time: the scanner says the same after each frame.
    fn states_after_each_frame(frames: &[Vec<u8>]) -> Vec<bool> {
        let mut whole = BlockScanner::default();
        let mut bytewise = BlockScanner::default();
        assert!(!whole.feed(PREFACE));
        for b in PREFACE {
            assert!(!bytewise.feed(std::slice::from_ref(b)));
        }
        frames
            .iter()
            .map(|f| {
                let open = whole.feed(f);
                let mut last = false;
                for b in f {
                    last = bytewise.feed(std::slice::from_ref(b));
                }
                assert_eq!(open, last, "byte-by-byte feeding disagrees");
                open
            })
            .collect()
    }

    /// A name, frames, and whether a block is open after each.
    type Case = (&'static str, Vec<Vec<u8>>, Vec<bool>);

    #[test]
    fn a_block_is_open_from_headers_without_end_headers_to_the_continuation_that_ends_it() {
        let settings = frame(0x4, 0, 6);
        let data = frame(0x0, 0x1, 300);
        let cases: &[Case] = &[
            (
                "whole head in one frame",
                vec![settings.clone(), frame(HEADERS, END_HEADERS | 0x1, 40)],
                vec![false, false],
            ),
            (
                "head then body",
                vec![frame(HEADERS, END_HEADERS, 40), data.clone()],
                vec![false, false],
            ),
            (
                "head over two continuations",
                vec![
                    frame(HEADERS, 0, 16_384),
                    frame(CONTINUATION, 0, 16_384),
                    frame(CONTINUATION, END_HEADERS, 10),
                ],
                vec![true, true, false],
            ),
            (
                "a block left open",
                vec![settings, frame(HEADERS, 0x1, 100)],
                vec![false, true],
            ),
            (
                "empty payloads",
                vec![
                    frame(HEADERS, 0, 0),
                    frame(CONTINUATION, END_HEADERS, 0),
                    frame(0x6, 0, 8),
                ],
                vec![true, false, false],
            ),
        ];
        for (name, frames, expected) in cases {
            assert_eq!(&states_after_each_frame(frames), expected, "{name}");
        }
    }

    #[test]
    fn a_frame_header_split_across_reads_is_put_together() {
        let mut scanner = BlockScanner::default();
        scanner.feed(PREFACE);
        let headers = frame(HEADERS, 0, 5);
        assert!(!scanner.feed(&headers[..4]));
        assert!(scanner.feed(&headers[4..]));
        let end = frame(CONTINUATION, END_HEADERS, 3);
        assert!(
            scanner.feed(&end[..8]),
            "the block stays open until the frame header is whole"
        );
        assert!(!scanner.feed(&end[8..]));
    }
}
