//! After a backend switched protocols (a `101` to WebSocket): the client's connection and the
//! backend's become one tunnel, bytes copied both ways with the L4 proxy's buffers until both
//! ends have closed (each half-close passed on) or the pool's `websocket.idle_timeout` passes
//! with nothing sent either way. The attempt lasts as long, and so does the backend's
//! in-flight count: `least_conn` sees a backend holding a thousand sockets as busy. While it
//! lasts, the listener's registry lists it (`GET /api/ws/connections`).

use std::cell::Cell;

use super::buffer::ReadBuf;
use super::downstream::Downstream;
use super::exchange::HttpContext;
use super::relay;
use crate::pool::LiveBackend;
use crate::proxy::pipeline;
use crate::proxy::tunnel::{self, Ends, Splice};
use crate::proxy::upstream_io::Upstream;

/// Runs the tunnel. `early`: what the backend sent right behind its `101` (its first frames).
pub async fn tunnel<D: Downstream>(
    ctx: &HttpContext,
    backend: &LiveBackend,
    client: &mut D,
    mut upstream: Upstream,
    early: &ReadBuf,
) {
    let idle = ctx.pool.settings().websocket.idle_timeout;
    let _listed = ctx.stats.websockets.register(
        client.request().connection_id,
        &ctx.listener,
        &ctx.pool.name,
        backend.addr,
        client.peer(),
    );
    let (client_read, input, mut client_write, _) = client.split();
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
    let ended = tunnel::splice(
        Ends {
            a_read: client_read,
            a_write: client_write,
            b_read: upstream_read,
            b_write: upstream_write,
        },
        idle,
        [None, None],
        [&to_backend, &to_client],
    )
    .await;
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
