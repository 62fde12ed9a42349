//! Writing a body into an HTTP/2 stream within its flow-control window: each write sends as
//! much as the window allows now, and waits for the peer's WINDOW_UPDATE when it allows
//! nothing. Memory held per stream is thereby bounded by the window, whatever the peer's
//! reading speed.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::SendStream;
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::proxy::h1::relay::{self, RelayError};

/// Sends what the window allows of `buf` on `send` (at least one byte), or waits for room.
pub fn poll_send(
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        return Poll::Ready(Ok(0));
    }
    loop {
        // What the window allows now; when nothing, ask for enough and wait for it. (The
        // `h2` crate reports a capacity *increase*, so what is already there is read first.)
        let n = send.capacity().min(buf.len());
        if n > 0 {
            send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
                .map_err(io::Error::other)?;
            return Poll::Ready(Ok(n));
        }
        send.reserve_capacity(buf.len());
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

/// Sends `data` on `send` as the window allows, without copying it; waits at most `timeout`
/// for the window to open each time it is shut.
pub async fn send_all(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    timeout: Duration,
) -> Result<(), RelayError> {
    let failed = |e: h2::Error| RelayError::Sink(io::Error::other(e));
    while !data.is_empty() {
        let n = send.capacity().min(data.len());
        if n > 0 {
            send.send_data(data.split_to(n), false).map_err(failed)?;
            continue;
        }
        send.reserve_capacity(data.len());
        match relay::timed(timeout, std::future::poll_fn(|cx| send.poll_capacity(cx))).await {
            Some(Some(Ok(_))) => {}
            Some(Some(Err(e))) => return Err(failed(e)),
            Some(None) => return Err(RelayError::Sink(io::ErrorKind::BrokenPipe.into())),
            None => {
                return Err(RelayError::Sink(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client's window stayed shut for the write timeout",
                )))
            }
        }
    }
    Ok(())
}

/// A stream's outgoing body as an `AsyncWrite`; [`DataSink::finish`] ends the stream.
#[derive(Debug)]
pub struct DataSink(pub SendStream<Bytes>);

impl DataSink {
    pub fn finish(&mut self) -> io::Result<()> {
        self.0
            .send_data(Bytes::new(), true)
            .map_err(io::Error::other)
    }
}

impl AsyncWrite for DataSink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_send(&mut self.get_mut().0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
