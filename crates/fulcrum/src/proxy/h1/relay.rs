//! Moves one message body from one socket to the other through a fixed buffer, stopping
//! exactly where its framing says the body ends; never holds more than one buffer of it.

use std::future::Future;
use std::io;
use std::task::Poll;
use std::time::Duration;

use fulcrum_core::config::MinUploadRate;
use fulcrum_core::limits::upload_deadline;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::buffer::{ReadBuf, READ_BUFFER};
use super::framing::{ChunkScanner, Framing};

/// Why a body could not be moved whole.
#[derive(Debug)]
pub enum RelayError {
    /// The sender closed before the body ended.
    SourceClosed,
    Source(io::Error),
    /// The sender sent nothing for the read timeout, or fell behind the minimum rate.
    Stalled,
    /// The receiver failed, or took nothing for the write timeout.
    Sink(io::Error),
    /// Invalid chunked coding.
    BadChunk,
}

/// The limits of a relay: two inactivity timeouts, and for uploads the least average rate
/// (`min_upload_rate`), below which the sender counts as stalled.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read: Duration,
    pub write: Duration,
    pub min_rate: Option<MinUploadRate>,
}

/// When a body held to a minimum rate must have received what it has so far.
#[derive(Debug)]
struct RateDeadline {
    rate: MinUploadRate,
    started: Instant,
    received: u64,
}

impl RateDeadline {
    /// How long the next read may wait: the idle timeout, or less when the body is due.
    fn read_limit(&self, idle: Duration) -> Duration {
        let due = self.started
            + upload_deadline(self.rate.grace, self.received, self.rate.bytes_per_second);
        idle.min(due.saturating_duration_since(Instant::now()))
    }
}

/// Relays the body framed by `framing` from `source` (after what `buffer` already holds) to
/// `sink`. `prefix` (a message head, usually) goes out with the first bytes of the body, in
/// one write. With `decode`, chunk framing is removed. Bytes after the body stay in `buffer`.
pub async fn body<R, W>(
    source: &mut R,
    buffer: &mut ReadBuf,
    sink: &mut W,
    framing: Framing,
    decode: bool,
    timeouts: Timeouts,
    prefix: &mut Vec<u8>,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = match framing {
        Framing::Empty => return write(sink, prefix, timeouts.write).await,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut scanner = ChunkScanner::default();
    // Read only when the relay is held to a rate: the common case reads no clock.
    let mut rate = timeouts.min_rate.map(|rate| RateDeadline {
        rate,
        started: Instant::now(),
        received: 0,
    });
    loop {
        if buffer.is_empty() {
            if !prefix.is_empty() {
                write(sink, prefix, timeouts.write).await?;
            }
            let limit = rate
                .as_ref()
                .map_or(timeouts.read, |r| r.read_limit(timeouts.read));
            match timed(limit, buffer.read_from(source, READ_BUFFER)).await {
                None => return Err(RelayError::Stalled),
                Some(Err(e)) => return Err(RelayError::Source(e)),
                Some(Ok(0)) if framing == Framing::UntilClose => return Ok(()),
                Some(Ok(0)) => return Err(RelayError::SourceClosed),
                Some(Ok(n)) => {
                    if let Some(rate) = &mut rate {
                        rate.received += n as u64;
                    }
                }
            }
        }
        let (send, consumed, done) = match framing {
            Framing::Chunked => {
                let scanned = scanner
                    .scan(buffer.filled_mut(), decode)
                    .map_err(|_| RelayError::BadChunk)?;
                (scanned.output, scanned.consumed, scanned.done)
            }
            Framing::UntilClose => (buffer.len(), buffer.len(), false),
            _ => {
                let take = remaining.min(buffer.len() as u64);
                remaining -= take;
                (take as usize, take as usize, remaining == 0)
            }
        };
        let data = &buffer.filled()[..send];
        if prefix.is_empty() {
            write_slice(sink, data, timeouts.write).await?;
        } else {
            prefix.extend_from_slice(data);
            write(sink, prefix, timeouts.write).await?;
        }
        buffer.consume(consumed);
        if done {
            return Ok(());
        }
    }
}

/// Writes and empties `bytes`.
async fn write<W: AsyncWrite + Unpin>(
    sink: &mut W,
    bytes: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), RelayError> {
    let result = write_slice(sink, bytes, timeout).await;
    bytes.clear();
    result
}

pub async fn write_slice<W: AsyncWrite + Unpin>(
    sink: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), RelayError> {
    if bytes.is_empty() {
        return Ok(());
    }
    match timed(timeout, sink.write_all(bytes)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(RelayError::Sink(e)),
        None => Err(RelayError::Sink(io::Error::new(
            io::ErrorKind::TimedOut,
            "the receiver took nothing for the write timeout",
        ))),
    }
}

/// Runs `future` under an inactivity limit, arming the timer only when the future cannot
/// finish at once: on a busy proxy most reads and writes complete on their first poll, and
/// skipping the clock read and timer registration for them is a measurable share of the
/// per-request cost. `None` when the limit passed.
pub async fn timed<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = poll_once(future.as_mut()).await {
        return Some(output);
    }
    tokio::time::timeout(limit, future).await.ok()
}

/// Polls `future` once: its output if it was ready, `Pending` (and the waker registered)
/// if not.
pub async fn poll_once<F: Future>(mut future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}
