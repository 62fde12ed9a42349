//! The TCP proxy: accept → pick → connect (the next backend when a connect fails) → copy
//! bytes both ways with fixed buffers until both sides are done, propagating each half-close,
//! and closing both sides when neither has sent anything for the idle timeout.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use fulcrum_core::config::Algorithm;

use super::hash_key;
use super::upstream::connect_tcp;
use crate::pool::{InFlight, Pool, Tried};

/// Per direction, two per proxied connection: a chatty connection keeps the small buffer, a
/// bulk transfer (reads that fill the buffer) grows it by doubling up to the large one, so a
/// megabyte moves in few system calls without every connection paying for it.
const COPY_BUFFER_MIN: usize = 16 * 1024;
const COPY_BUFFER_MAX: usize = 256 * 1024;

#[derive(Debug)]
pub struct TcpRoute {
    pub listener: String,
    pub pool: Arc<Pool>,
    pub idle_timeout: Duration,
}

pub async fn serve(route: &TcpRoute, mut client: TcpStream, peer: std::net::SocketAddr) {
    // Over TCP only the client address can be a hash key (validated with the config).
    let key = route
        .pool
        .settings
        .hash_key
        .as_ref()
        .map(|_| hash_key::ip_key(peer.ip()));
    let Some((mut upstream, in_flight)) = connect_any(&route.pool, key).await else {
        // Nothing to tell a TCP client: closing is the only answer.
        return;
    };
    let started = Instant::now();
    let aborted = in_flight.stats().aborted();
    tokio::select! {
        result = splice(&mut client, &mut upstream, route.idle_timeout) => match result {
            Ok(Splice::Finished) => {}
            Ok(Splice::Idle) => {
                tracing::debug!(listener = %route.listener, "closing idle TCP connection");
            }
            Err(e) => {
                tracing::debug!(listener = %route.listener, error = %e, "TCP connection ended with an error");
            }
        },
        () = aborted => {
            tracing::debug!(listener = %route.listener, "closing TCP connection: the backend's drain timed out");
        }
    }
    in_flight.stats().latency.record(started.elapsed());
    drop(in_flight);
}

/// Connects to a picked backend, trying others (up to the pool's attempts) when it fails.
async fn connect_any(pool: &Pool, key: Option<u64>) -> Option<(TcpStream, InFlight)> {
    let snapshot = pool.snapshot_full();
    let mut tried = Tried::default();
    for _ in 0..pool.settings.connect_attempts {
        let index = snapshot.pick(&tried, key)?;
        tried.push(index);
        let backend = &snapshot.backends[index];
        let in_flight = InFlight::start(&backend.stats);
        let started = Instant::now();
        match connect_tcp(backend.addr, pool.settings.connect_timeout).await {
            Ok(stream) => {
                backend.stats.record_request();
                backend.stats.record_success();
                if pool.settings.algorithm == Algorithm::P2cEwma {
                    backend
                        .stats
                        .ewma
                        .observe(pool.clock().now(), started.elapsed());
                }
                return Some((stream, in_flight));
            }
            Err(e) => {
                backend.stats.record_failure();
                tracing::warn!(pool = %pool.name, backend = %backend.addr, error = %e, "connect failed; trying another backend");
            }
        }
    }
    tracing::warn!(pool = %pool.name, "no backend could be reached; closing the client connection");
    None
}

#[derive(Debug, PartialEq, Eq)]
enum Splice {
    Finished,
    Idle,
}

async fn splice(a: &mut TcpStream, b: &mut TcpStream, idle: Duration) -> io::Result<Splice> {
    let last_activity = Cell::new(Instant::now());
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    let both = async {
        tokio::try_join!(
            copy_half(&mut a_read, &mut b_write, &last_activity),
            copy_half(&mut b_read, &mut a_write, &last_activity),
        )
    };
    let watchdog = async {
        loop {
            let deadline = last_activity.get() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        result = both => result.map(|_| Splice::Finished),
        () = watchdog => Ok(Splice::Idle),
    }
}

/// Copies one direction until end of stream, then half-closes the other side's write end.
async fn copy_half<R, W>(from: &mut R, to: &mut W, last_activity: &Cell<Instant>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; COPY_BUFFER_MIN];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        to.write_all(&buffer[..n]).await?;
        last_activity.set(Instant::now());
        if n == buffer.len() && buffer.len() < COPY_BUFFER_MAX {
            buffer.resize(buffer.len() * 2, 0);
        }
    }
}
