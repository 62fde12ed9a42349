//! When one request reached each phase of its life, for the metrics and the access log: its
//! head received, its head sent upstream (by the attempt that got through), the backend's
//! response head received, the status the client was answered with — and who served it: the
//! last backend tried, how many were, the bytes written to the client, the side of an error.
//! Cells: a request lives on one worker thread, and the phases that mark it hold only shared
//! references to it.

use std::cell::Cell;
use std::net::SocketAddr;

use crate::proxy::error::ErrorSide;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Marks {
    pub received: Instant,
    sent: Cell<Option<Instant>>,
    answered: Cell<Option<Instant>>,
    status: Cell<u16>,
    backend: Cell<Option<SocketAddr>>,
    attempts: Cell<u32>,
    written: Cell<u64>,
    /// Bytes a switched connection's tunnel read from the client (past its input buffer).
    tunnelled_in: Cell<u64>,
    error: Cell<Option<ErrorSide>>,
}

impl Marks {
    pub fn new(received: Instant) -> Self {
        Self {
            received,
            sent: Cell::new(None),
            answered: Cell::new(None),
            status: Cell::new(0),
            backend: Cell::new(None),
            attempts: Cell::new(0),
            written: Cell::new(0),
            tunnelled_in: Cell::new(0),
            error: Cell::new(None),
        }
    }

    /// The request head went upstream (again, after a failed attempt: the last one counts,
    /// so the routing latency includes the attempts before it).
    pub fn sent_now(&self) {
        self.sent.set(Some(Instant::now()));
        self.answered.set(None);
    }

    /// The backend's response head arrived with `status`.
    pub fn answered_now(&self, status: u16) {
        self.answered.set(Some(Instant::now()));
        self.status.set(status);
    }

    /// fulcrum answered itself with `status`, for an error on `side`.
    pub fn answered_by_fulcrum(&self, status: u16, side: ErrorSide) {
        self.status.set(status);
        self.error.set(Some(side));
    }

    /// An attempt on `backend` begins.
    pub fn attempting(&self, backend: SocketAddr) {
        self.backend.set(Some(backend));
        self.attempts.set(self.attempts.get() + 1);
    }

    /// `n` more bytes of the response were written to the client.
    pub fn wrote(&self, n: usize) {
        self.written.set(self.written.get() + n as u64);
    }

    /// The last backend tried.
    pub fn backend(&self) -> Option<SocketAddr> {
        self.backend.get()
    }

    /// Attempts after the first.
    pub fn retries(&self) -> u32 {
        self.attempts.get().saturating_sub(1)
    }

    pub fn written(&self) -> u64 {
        self.written.get()
    }

    /// `n` bytes more came from the client through the tunnel after a `101`.
    pub fn tunnelled_in(&self, n: u64) {
        self.tunnelled_in.set(self.tunnelled_in.get() + n);
    }

    pub fn read_through_tunnel(&self) -> u64 {
        self.tunnelled_in.get()
    }

    pub fn error(&self) -> Option<ErrorSide> {
        self.error.get()
    }

    pub fn sent(&self) -> Option<Instant> {
        self.sent.get()
    }

    pub fn answered(&self) -> Option<Instant> {
        self.answered.get()
    }

    /// When the HTTP exchange ended, given that everything ended at `end`: for a switched
    /// connection (a `101`), when the `101` was relayed — the tunnel's life is not request
    /// latency, and must not weigh on the latency histograms, p2c_ewma or the drain timeout
    /// (2 × p99) of a pool whose backends hold WebSockets.
    pub fn exchange_end(&self, end: Instant) -> Instant {
        match self.answered.get() {
            Some(answered) if self.status.get() == 101 => answered,
            _ => end,
        }
    }

    /// The status the client got; 0 when no response began.
    pub fn status(&self) -> u16 {
        self.status.get()
    }
}
