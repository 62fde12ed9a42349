//! Bytes copied both ways between two connections until both are done: the L4 proxy's whole
//! job, and what an HTTP/1.1 connection becomes after a backend switches protocols (`101`,
//! a WebSocket). Each half-close is passed on; both sides are closed when neither has sent
//! anything for the idle timeout.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::h1::relay::poll_once;
use crate::metrics::cell::OwnedCounter;

/// Per direction, two per proxied connection: a chatty connection keeps the small buffer, a
/// bulk transfer (reads that fill the buffer) grows it by doubling up to the large one, so a
/// megabyte moves in few system calls without every connection paying for it.
const COPY_BUFFER_MIN: usize = 16 * 1024;
const COPY_BUFFER_MAX: usize = 256 * 1024;

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Splice {
    /// Both directions reached their end of stream.
    Finished,
    /// Neither side sent anything for the idle timeout.
    Idle,
}

/// The two connections' halves: `a` is the client's side, `b` the backend's.
#[derive(Debug)]
pub struct Ends<AR, AW, BR, BW> {
    pub a_read: AR,
    pub a_write: AW,
    pub b_read: BR,
    pub b_write: BW,
}

/// Copies a → b and b → a until both ends have finished, or until nothing has moved either
/// way for `idle`. `counters` and `totals`: what each direction adds its bytes to (a → b
/// first).
pub async fn splice<AR, AW, BR, BW>(
    ends: Ends<AR, AW, BR, BW>,
    idle: Duration,
    counters: [Option<&OwnedCounter>; 2],
    totals: [&Cell<u64>; 2],
) -> io::Result<Splice>
where
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    let Ends {
        mut a_read,
        mut a_write,
        mut b_read,
        mut b_write,
    } = ends;
    let last_activity = Cell::new(Instant::now());
    let both = async {
        tokio::try_join!(
            copy_half(
                &mut a_read,
                &mut b_write,
                &last_activity,
                counters[0],
                totals[0]
            ),
            copy_half(
                &mut b_read,
                &mut a_write,
                &last_activity,
                counters[1],
                totals[1]
            ),
        )
        .map(|_| ())
    };
    until_idle(both, &last_activity, idle).await
}

/// Runs `both` (the two directions' copies, which set `last_activity` as they move bytes)
/// until it ends, or until nothing has moved for `idle`.
pub async fn until_idle(
    both: impl Future<Output = io::Result<()>>,
    last_activity: &Cell<Instant>,
    idle: Duration,
) -> io::Result<Splice> {
    let watchdog = async {
        loop {
            let deadline = crate::proxy::deadline(last_activity.get(), idle);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        result = both => result.map(|()| Splice::Finished),
        () = watchdog => Ok(Splice::Idle),
    }
}

/// Copies one direction until end of stream, then half-closes the other side's write end;
/// each write is added to `copied` when there is one, and to `total`.
pub async fn copy_half<R, W>(
    from: &mut R,
    to: &mut W,
    last_activity: &Cell<Instant>,
    copied: Option<&OwnedCounter>,
    total: &Cell<u64>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = CopyBuffer::default();
    loop {
        let ready = {
            let mut read = std::pin::pin!(from.read(buffer.space()));
            poll_once(read.as_mut()).await
        };
        let n = match ready {
            Poll::Ready(n) => n?,
            Poll::Pending => {
                // The first read was dropped with its block; a read loses nothing when
                // dropped before completing, so it is simply started again.
                buffer.waiting();
                from.read(buffer.space()).await?
            }
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        to.write_all(&buffer.space()[..n]).await?;
        if let Some(copied) = copied {
            copied.add(n as u64);
        }
        total.set(total.get() + n as u64);
        last_activity.set(Instant::now());
        buffer.filled(n);
    }
}

/// One direction's copy buffer: it grows while reads fill it (a bulk transfer) and goes back
/// to the small size whenever the connection has to wait, so thousands of quiet connections
/// that each once moved a bulk transfer do not hold 256 KiB apiece.
#[derive(Debug)]
struct CopyBuffer(Vec<u8>);

impl Default for CopyBuffer {
    fn default() -> Self {
        Self(vec![0u8; COPY_BUFFER_MIN])
    }
}

impl CopyBuffer {
    fn space(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// A read returned `n` bytes: a full buffer doubles (up to the maximum).
    fn filled(&mut self, n: usize) {
        if n == self.0.len() && self.0.len() < COPY_BUFFER_MAX {
            self.0.resize(self.0.len() * 2, 0);
        }
    }

    /// Nothing to read now: give back a grown buffer before waiting.
    fn waiting(&mut self) {
        if self.0.len() > COPY_BUFFER_MIN {
            self.0 = vec![0u8; COPY_BUFFER_MIN];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_buffer_grows_for_bulk_and_shrinks_when_the_connection_waits() {
        let mut buffer = CopyBuffer::default();
        for _ in 0..10 {
            let n = buffer.space().len();
            buffer.filled(n);
        }
        assert_eq!(buffer.space().len(), COPY_BUFFER_MAX);
        buffer.filled(10);
        assert_eq!(
            buffer.space().len(),
            COPY_BUFFER_MAX,
            "a short read alone keeps it"
        );
        buffer.waiting();
        assert_eq!(buffer.space().len(), COPY_BUFFER_MIN);
    }
}
