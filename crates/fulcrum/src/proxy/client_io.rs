//! The client side of a connection, plain or TLS, as the proxies use it: read and write,
//! split into halves for full duplex, the socket underneath for readiness (an idle keep-alive
//! connection waits on the socket and holds no buffer), and a read that never waits.
//!
//! Static dispatch: the plain-TCP path compiles to exactly what it was before TLS existed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub trait ClientIo: AsyncRead + AsyncWrite + Unpin {
    type ReadHalf<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    type WriteHalf<'a>: AsyncWrite + Unpin
    where
        Self: 'a;

    /// True when bytes the client sent can sit decoded inside the stream while the socket has
    /// nothing more to read (TLS decrypts whole records): before waiting on the socket's
    /// readiness, such a stream must be read without waiting first.
    const HOLDS_INPUT: bool;

    /// The socket underneath.
    fn socket(&self) -> &TcpStream;

    /// Reads what is there without waiting: `WouldBlock` when nothing is.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    fn halves(&mut self) -> (Self::ReadHalf<'_>, Self::WriteHalf<'_>);
}

impl ClientIo for TcpStream {
    type ReadHalf<'a> = tokio::net::tcp::ReadHalf<'a>;
    type WriteHalf<'a> = tokio::net::tcp::WriteHalf<'a>;
    const HOLDS_INPUT: bool = false;

    fn socket(&self) -> &TcpStream {
        self
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn halves(&mut self) -> (Self::ReadHalf<'_>, Self::WriteHalf<'_>) {
        self.split()
    }
}

impl ClientIo for TlsStream<TcpStream> {
    type ReadHalf<'a> = tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>;
    type WriteHalf<'a> = tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>;
    const HOLDS_INPUT: bool = true;

    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One poll with a waker that does nothing: whatever is decoded or readable now comes
        // back, and `Pending` means the socket is drained. The caller then waits on the
        // socket's readiness with its own waker, which replaces this one.
        let mut cx = Context::from_waker(Waker::noop());
        let mut read = ReadBuf::new(buf);
        match Pin::new(self).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) => Ok(read.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn halves(&mut self) -> (Self::ReadHalf<'_>, Self::WriteHalf<'_>) {
        tokio::io::split(self)
    }
}
