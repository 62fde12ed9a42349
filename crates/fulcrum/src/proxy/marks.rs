//! When one request reached each phase of its life, for the metrics: its head received, its
//! head sent upstream (by the attempt that got through), the backend's response head
//! received, and the status the client was answered with. Cells: a request lives on one
//! worker thread, and the phases that mark it hold only shared references to it.

use std::cell::Cell;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Marks {
    pub received: Instant,
    sent: Cell<Option<Instant>>,
    answered: Cell<Option<Instant>>,
    status: Cell<u16>,
}

impl Marks {
    pub fn new(received: Instant) -> Self {
        Self {
            received,
            sent: Cell::new(None),
            answered: Cell::new(None),
            status: Cell::new(0),
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

    /// fulcrum answered itself with `status`.
    pub fn answered_by_fulcrum(&self, status: u16) {
        self.status.set(status);
    }

    pub fn sent(&self) -> Option<Instant> {
        self.sent.get()
    }

    pub fn answered(&self) -> Option<Instant> {
        self.answered.get()
    }

    /// The status the client got; 0 when no response began.
    pub fn status(&self) -> u16 {
        self.status.get()
    }
}
