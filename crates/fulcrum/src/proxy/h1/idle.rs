//! Keep-alive client connections waiting for their next request, one registry per worker.
//!
//! Waiting is where client connections spend most of their life, so the wait is kept small
//! and cheap: a connection parks on its socket's readiness plus a slot here, and one ticker
//! per worker closes those idle past their timeout and, at shutdown, all of them. No timer
//! and no notification is registered per request; the price is that the idle timeout is
//! honoured to within one tick (100 ms).

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// How often idle deadlines are checked (and the registry's clock advances).
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct IdleRegistry {
    /// The time at the last tick: deadlines are computed from it without reading the clock.
    now: Cell<Instant>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    stopped: Cell<bool>,
    /// The listener was retired by a reload: every connection closes after its current
    /// exchange, but an idle HTTP/1.1 connection is not cut while it waits (closing it
    /// would race a request the client may be sending); its next response says close.
    closing: Cell<bool>,
}

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
}

/// How an idle wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The socket became readable: a request (or the end of the stream) arrived — or the
    /// readiness was left over from an earlier read, which a read returning `WouldBlock`
    /// shows (and clears).
    Readable,
    /// No request within the idle timeout, the socket failed, or the worker is stopping.
    Close,
}

impl Default for IdleRegistry {
    fn default() -> Self {
        Self {
            now: Cell::new(Instant::now()),
            slots: RefCell::default(),
            free: RefCell::default(),
            stopped: Cell::new(false),
            closing: Cell::new(false),
        }
    }
}

impl IdleRegistry {
    /// Waits until `stream` is readable, at most `timeout` (to within a tick).
    pub async fn wait(&self, stream: &TcpStream, timeout: Duration) -> Woke {
        self.wait_until(timeout, false, |cx| {
            stream.poll_read_ready(cx).map(|ready| {
                if ready.is_ok() {
                    Woke::Readable
                } else {
                    Woke::Close
                }
            })
        })
        .await
    }

    /// Waits until `timeout` passes (to within a tick) or the worker stops; returns whether
    /// it stopped. An HTTP/2 connection's idle timer: its socket is never idle to wait on,
    /// the `h2` crate reads it all the time.
    pub async fn sleep(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, true, |_| Poll::Pending).await;
        self.is_stopped()
    }

    /// Waits until `ready` is, at most `timeout`; `Close` when the time passed or the worker
    /// is stopping (or, with `end_on_closing`, the listener is retired).
    async fn wait_until(
        &self,
        timeout: Duration,
        end_on_closing: bool,
        mut ready: impl FnMut(&mut std::task::Context<'_>) -> Poll<Woke>,
    ) -> Woke {
        let ends = || self.stopped.get() || (end_on_closing && self.closing.get());
        if ends() {
            return Woke::Close;
        }
        let slot = self.register(crate::proxy::deadline(self.now.get(), timeout));
        let _release = Release {
            registry: self,
            slot,
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(woke) = ready(cx) {
                return Poll::Ready(woke);
            }
            let mut slots = self.slots.borrow_mut();
            let entry = &mut slots[slot];
            if ends() || entry.deadline <= self.now.get() {
                return Poll::Ready(Woke::Close);
            }
            if !entry
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                entry.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Advances the clock to `now` and wakes the connections whose idle time is over.
    pub fn tick(&self, now: Instant) {
        self.now.set(now);
        let due: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter(|s| s.deadline <= now)
            .filter_map(|s| s.waker.take())
            .collect();
        // Woken outside the borrow: waking only schedules the task, but keep it obvious.
        due.into_iter().for_each(Waker::wake);
    }

    /// The time at the last tick (within [`TICK`] of the clock).
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Whether connections are to close after their current exchange (shutdown, or the
    /// listener retired by a reload).
    pub fn is_stopped(&self) -> bool {
        self.stopped.get() || self.closing.get()
    }

    /// Shutdown: every waiting connection closes, and no new wait begins.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake_all();
    }

    /// A reload retired the listener: HTTP/2 connections are sent GOAWAY at once, HTTP/1.1
    /// ones answer their next request with `Connection: close` (or reach their idle
    /// timeout), and every exchange in progress finishes.
    pub fn close_gracefully(&self) {
        self.closing.set(true);
        self.wake_all();
    }

    fn wake_all(&self) {
        let all: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|s| s.waker.take())
            .collect();
        all.into_iter().for_each(Waker::wake);
    }

    fn register(&self, deadline: Instant) -> usize {
        let mut slots = self.slots.borrow_mut();
        let slot = Slot {
            deadline,
            waker: None,
        };
        match self.free.borrow_mut().pop() {
            Some(index) => {
                slots[index] = slot;
                index
            }
            None => {
                slots.push(slot);
                slots.len() - 1
            }
        }
    }
}

/// Frees the slot when the wait ends, however it ends.
struct Release<'a> {
    registry: &'a IdleRegistry,
    slot: usize,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let registry = self.registry;
        if let Some(entry) = registry.slots.borrow_mut().get_mut(self.slot) {
            // A free slot never expires: the ticker skips it until it is reused.
            entry.waker = None;
            entry.deadline = far_future(registry.now.get());
        }
        registry.free.borrow_mut().push(self.slot);
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (server, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        (client, server)
    }

    /// Waits as a connection does: a `WouldBlock` after a wake-up means wait again.
    async fn outcome(registry: &IdleRegistry, stream: &TcpStream, timeout: Duration) -> Woke {
        loop {
            let woke = registry.wait(stream, timeout).await;
            if woke == Woke::Close {
                return woke;
            }
            match stream.try_read(&mut [0u8; 16]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => return woke,
            }
        }
    }

    #[tokio::test]
    async fn a_wait_ends_with_data_at_the_timeout_tick_or_at_stop() {
        let registry = std::rc::Rc::new(IdleRegistry::default());
        let (client, server) = pair().await;
        // Data: readable at once.
        client.try_write(b"x").unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            outcome(&registry, &server, Duration::from_secs(5)).await,
            Woke::Readable
        );

        // No data: closed by the first tick at or after the deadline.
        let (_client, server) = pair().await;
        let waiting = {
            let registry = std::rc::Rc::clone(&registry);
            async move { outcome(&registry, &server, Duration::from_millis(250)).await }
        };
        let ticker = async {
            let start = Instant::now();
            for n in 1..=5 {
                tokio::time::sleep(TICK).await;
                registry.tick(start + TICK * n);
            }
        };
        let (woke, ()) = tokio::join!(waiting, ticker);
        assert_eq!(woke, Woke::Close);
        assert_eq!(registry.slots.borrow().len(), 1, "the slot was reused");
        assert_eq!(registry.free.borrow().len(), 1, "and released again");

        // Stop: every waiter closes.
        let (_client, server) = pair().await;
        let waiting = outcome(&registry, &server, Duration::from_secs(60));
        let stopper = async { registry.stop() };
        let (woke, ()) = tokio::join!(waiting, stopper);
        assert_eq!(woke, Woke::Close);
    }

    #[tokio::test]
    async fn closing_gracefully_ends_http2_sleeps_but_lets_an_idle_http1_wait_see_its_request() {
        let registry = std::rc::Rc::new(IdleRegistry::default());
        let (client, server) = pair().await;
        let waiting = outcome(&registry, &server, Duration::from_secs(60));
        let sleeping = registry.sleep(Duration::from_secs(60));
        let closer = async {
            registry.close_gracefully();
            // The request comes after the listener was retired: the wait still sees it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.try_write(b"GET").unwrap_or_else(|e| panic!("{e}"));
        };
        let (woke, slept_to_stop, ()) = tokio::join!(waiting, sleeping, closer);
        assert_eq!(woke, Woke::Readable);
        assert!(
            slept_to_stop,
            "an HTTP/2 connection's timer ends at once (GOAWAY)"
        );
        assert!(registry.is_stopped(), "responses from now on say close");
    }
}
