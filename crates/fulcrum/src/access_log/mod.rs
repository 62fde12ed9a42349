//! Access logs: one line per HTTP request or TCP connection, per listener, JSON or the
//! combined format, to standard output or a file.
//!
//! The request path only fills an [`Entry`] (a copy of the request head, a few numbers) and
//! offers it to a bounded queue; a writer thread of the listener's own formats and writes it.
//! A full queue drops the line and counts it: a slow disk never slows a request. The writer
//! reopens its file when asked (SIGUSR1 after logrotate moved it, or a reload), so rotation
//! needs no `copytruncate`.

mod format;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fulcrum_core::config::AccessLog as AccessLogConfig;
use tokio::time::Instant;

use crate::pool::Pool;
use crate::proxy::error::ErrorSide;
use crate::proxy::h1::downstream::Downstream;

pub use writer::Reopen;

/// A listener's access-log counters, kept across reloads with its other counters.
#[derive(Debug, Default)]
pub struct AccessLogCounters {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lines lost because their write failed.
    pub failed: AtomicU64,
}

/// What one line says.
#[derive(Debug)]
pub struct Entry {
    /// When the request or connection ended.
    pub time: SystemTime,
    pub client: SocketAddr,
    /// HTTP: the request head as sent upstream (method, path and headers are read from it
    /// by the writer, off the request path). `None` for a TCP connection or a request
    /// refused before its head was whole.
    pub head: Option<Box<[u8]>>,
    pub protocol: &'static str,
    /// 0: no response (TCP, or the client left first).
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pool: Option<Arc<Pool>>,
    pub backend: Option<SocketAddr>,
    /// From the request sent upstream to the backend's response head.
    pub upstream: Option<Duration>,
    pub total: Duration,
    pub retries: u32,
    pub error: Option<ErrorSide>,
}

/// A listener's access log, as the request path holds it (one clone per worker).
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<Entry>,
    counters: Arc<AccessLogCounters>,
}

impl AccessLog {
    /// Starts the writer thread of `listener`'s log; fails when its file cannot be opened.
    pub fn start(
        listener: &str,
        config: &AccessLogConfig,
        counters: Arc<AccessLogCounters>,
        reopen: &Reopen,
    ) -> Result<Self, String> {
        let queue = writer::spawn(listener, config, Arc::clone(&counters), reopen.clone())?;
        Ok(Self { queue, counters })
    }

    /// Offers `entry` to the writer; drops it (counted) when the queue is full.
    pub fn offer(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer stopped (it only does when the log is replaced): nothing to do.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The line of one HTTP request, once its response is over.
    pub fn request<D: Downstream>(&self, pool: &Arc<Pool>, client: &D, end: Instant) {
        let request = client.request();
        let marks = &request.marks;
        let (bytes_in, bytes_out) = client.bytes();
        self.offer(Entry {
            time: SystemTime::now(),
            client: client.peer(),
            head: Some(client.upstream_head().into()),
            protocol: client.protocol(),
            status: marks.status(),
            bytes_in,
            bytes_out,
            pool: Some(Arc::clone(pool)),
            backend: marks.backend(),
            upstream: marks
                .sent()
                .zip(marks.answered())
                .map(|(sent, answered)| answered.saturating_duration_since(sent)),
            total: end.saturating_duration_since(marks.received),
            retries: marks.retries(),
            error: marks.error(),
        });
    }

    /// The line of a request refused before its head was whole (malformed, too large, too
    /// slow): it has a status and a side, no method or path.
    pub fn refused(
        &self,
        client: SocketAddr,
        protocol: &'static str,
        status: u16,
        side: ErrorSide,
        pool: &Arc<Pool>,
    ) {
        self.offer(Entry {
            time: SystemTime::now(),
            client,
            head: None,
            protocol,
            status,
            bytes_in: 0,
            bytes_out: 0,
            pool: Some(Arc::clone(pool)),
            backend: None,
            upstream: None,
            total: Duration::ZERO,
            retries: 0,
            error: Some(side),
        });
    }
}
