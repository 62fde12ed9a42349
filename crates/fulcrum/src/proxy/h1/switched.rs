//! After a backend switched protocols (a `101` to WebSocket): the client's connection and the
//! backend's become one tunnel, bytes copied both ways with the L4 proxy's buffers until both
//! ends have closed (each half-close passed on) or the pool's `websocket.idle_timeout` passes
//! with nothing sent either way. The attempt lasts as long, and so does the backend's
//! in-flight count: `least_conn` sees a backend holding a thousand sockets as busy. While it
//! lasts, the listener's registry lists it (`GET /api/ws/connections`), and so does Redis
//! when the pool has a `websocket.registry`.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::time::Duration;

use fulcrum_core::websocket::{close_frame, FrameCursor, GOING_AWAY};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::buffer::ReadBuf;
use super::downstream::Downstream;
use super::exchange::HttpContext;
use super::idle::IdleRegistry;
use super::relay;
use crate::pool::LiveBackend;
use crate::proxy::pipeline;
use crate::proxy::tunnel::{self, Ends, Splice};
use crate::proxy::upstream_io::Upstream;
use crate::proxy::websockets::WsConnection;

/// The backend's direction's copy buffer with `close_on_drain` (frames are found in it, so
/// it stays one size).
const FRAME_COPY_BUFFER: usize = 16 * 1024;

/// Runs the tunnel. `early`: what the backend sent right behind its `101` (its first frames).
pub async fn tunnel<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    client: &mut D,
    mut upstream: Upstream,
    early: &ReadBuf,
) {
    let idle = ctx.pool.settings().websocket.idle_timeout;
    let id = client.request().connection_id;
    let connection = WsConnection::new(
        id,
        &ctx.listener,
        &ctx.pool.name,
        backend.addr,
        client.peer(),
    );
    let _in_redis = ctx.pool.ws_registry().map(|r| r.register(id, &connection));
    let _listed = ctx.stats.websockets.register(id, connection);
    let (client_read, input, mut client_write, marks) = client.split();
    let (upstream_read, mut upstream_write) = upstream.halves();
    // Bytes already read on either side go first: the backend's behind its 101, the
    // client's behind its handshake (frames sent before it saw the answer).
    if relay::write_slice(&mut client_write, early.filled(), idle)
        .await
        .is_err()
    {
        return;
    }
    let pending = input.len();
    if relay::write_slice(&mut upstream_write, input.filled(), idle)
        .await
        .is_err()
    {
        return;
    }
    input.consume(pending);
    let (to_backend, to_client) = (Cell::new(0), Cell::new(0));
    let ends = Ends {
        a_read: client_read,
        a_write: client_write,
        b_read: upstream_read,
        b_write: upstream_write,
    };
    let ended = if ctx.pool.settings().websocket.close_on_drain {
        let going_away = async {
            tokio::select! {
                _ = backend.stats.going_away() => "the backend is draining",
                () = stopping(&ctx.idle) => "fulcrum is stopping",
            }
        };
        closing_on_drain(ends, idle, going_away, [&to_backend, &to_client]).await
    } else {
        tunnel::splice(ends, idle, [None, None], [&to_backend, &to_client]).await
    };
    // What the client wrote to the backend, for the access log's bytes in (bytes out were
    // counted as they went, the client's writer counts them).
    marks.tunnelled_in(to_backend.get());
    pipeline::record_outcome(backend, false);
    match ended {
        Ok(Splice::Finished) => {}
        Ok(Splice::Idle) => {
            tracing::debug!(listener = %ctx.listener, backend = %backend.addr, "closing an idle WebSocket");
        }
        Err(error) => {
            tracing::debug!(listener = %ctx.listener, backend = %backend.addr, %error, "WebSocket ended with an error");
        }
    }
}

/// Resolves when the worker stops or the listener is retired by a reload.
async fn stopping(idle: &IdleRegistry) {
    while !idle.sleep(Duration::from_secs(3600)).await {}
}

/// The tunnel with `close_on_drain`: as [`tunnel::splice`], but the backend's direction is
/// read frame by frame (headers only), so that when `going_away` resolves the client gets a
/// close frame (1001) between two of the backend's frames; what the backend sends after that
/// is dropped (a client takes no frame after a close), and the client's own close frame goes
/// on to the backend, which ends the connection.
async fn closing_on_drain<AR, AW, BR, BW>(
    ends: Ends<AR, AW, BR, BW>,
    idle: Duration,
    going_away: impl Future<Output = &'static str>,
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
            tunnel::copy_half(&mut a_read, &mut b_write, &last_activity, None, totals[0]),
            copy_frames(
                &mut b_read,
                &mut a_write,
                going_away,
                &last_activity,
                totals[1]
            ),
        )
        .map(|_| ())
    };
    tunnel::until_idle(both, &last_activity, idle).await
}

/// Copies the backend's frames to the client until the backend's end of stream; once
/// `going_away` resolves, a close frame goes out at the next frame boundary.
async fn copy_frames<R, W>(
    from: &mut R,
    to: &mut W,
    going_away: impl Future<Output = &'static str>,
    last_activity: &Cell<Instant>,
    total: &Cell<u64>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; FRAME_COPY_BUFFER];
    let mut cursor = FrameCursor::default();
    let mut going_away = std::pin::pin!(going_away);
    // Why the client is to be told, until it has been; then whether it was.
    let mut why: Option<&'static str> = None;
    let mut told = false;
    loop {
        let n = tokio::select! {
            biased;
            reason = &mut going_away, if why.is_none() && !told => {
                why = Some(reason);
                if cursor.at_boundary() {
                    tell(to, reason).await?;
                    told = true;
                }
                continue;
            }
            read = from.read(&mut buffer) => read?,
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        last_activity.set(Instant::now());
        if told {
            continue;
        }
        let chunk = &buffer[..n];
        let sent = match why {
            Some(reason) => {
                let (upto, boundary) = cursor.until_boundary(chunk);
                to.write_all(&chunk[..upto]).await?;
                if boundary {
                    tell(to, reason).await?;
                    told = true;
                } else {
                    cursor.skip(&chunk[upto..]);
                }
                upto
            }
            None => {
                cursor.skip(chunk);
                to.write_all(chunk).await?;
                n
            }
        };
        total.set(total.get() + sent as u64);
    }
}

/// Sends the client the going-away close frame.
async fn tell<W: AsyncWrite + Unpin>(to: &mut W, reason: &str) -> io::Result<()> {
    tracing::debug!(reason, "telling a WebSocket client to go away (1001)");
    to.write_all(&close_frame(GOING_AWAY, reason)).await?;
    to.flush().await
}
