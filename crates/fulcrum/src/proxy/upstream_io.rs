//! A connection to a backend, plain or TLS, as one type: the idle pool holds either, and the
//! exchange reads and writes it without caring which. An enum, not a generic, so one pool and
//! one copy of the exchange code serve both; the match per poll costs nothing next to the
//! system call behind it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug)]
pub enum Upstream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of an [`Upstream`].
#[derive(Debug)]
pub enum UpstreamRead<'a> {
    Plain(tokio::net::tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
}

/// The write half of an [`Upstream`].
#[derive(Debug)]
pub enum UpstreamWrite<'a> {
    Plain(tokio::net::tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
}

impl Upstream {
    /// The protocol agreed by ALPN, over TLS.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Upstream::Plain(_) => None,
            Upstream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    pub fn halves(&mut self) -> (UpstreamRead<'_>, UpstreamWrite<'_>) {
        match self {
            Upstream::Plain(s) => {
                let (r, w) = s.split();
                (UpstreamRead::Plain(r), UpstreamWrite::Plain(w))
            }
            Upstream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (UpstreamRead::Tls(r), UpstreamWrite::Tls(w))
            }
        }
    }

    /// An idle keep-alive connection has nothing to read: end of stream means the backend
    /// closed it, and bytes it was not asked for mean it cannot be trusted with a request. For
    /// plain TCP the check costs no system call while the socket has not become readable; over
    /// TLS, records that carry no data (session tickets) are taken in and do not count.
    pub fn still_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            Upstream::Plain(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Upstream::Tls(s) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut buf = ReadBuf::new(&mut probe);
                matches!(
                    Pin::new(&mut **s).poll_read(&mut cx, &mut buf),
                    Poll::Pending
                )
            }
        }
    }
}

macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                }
            }
        }
    };
}

delegate_read!(Upstream);
delegate_read!(UpstreamRead<'_>);
delegate_write!(Upstream);
delegate_write!(UpstreamWrite<'_>);
