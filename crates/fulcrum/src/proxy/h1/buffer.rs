//! Read and write buffers for the HTTP/1 codec, lent by a per-worker pool.
//!
//! A keep-alive connection that waits for its next request holds no buffer at all: it waits
//! for readability first and borrows a buffer only when bytes are there. Under load the
//! buffers move between connections of the same worker without touching the allocator, and
//! an idle connection costs only its socket and task.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use crate::proxy::client_io::ClientIo;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of a read buffer; heads larger than this grow it up to the listener's header limit.
pub const READ_BUFFER: usize = 16 * 1024;
/// Initial capacity of a buffer a message head is written into.
const WRITE_BUFFER: usize = 4 * 1024;
/// Spare buffers a worker keeps; beyond that, returned buffers are freed.
const SPARE: usize = 256;

/// One worker's spare buffers. Single-threaded: plain `RefCell`.
#[derive(Debug, Default)]
pub struct BufferPool {
    read: RefCell<Vec<Vec<u8>>>,
    write: RefCell<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn take_read(&self) -> Vec<u8> {
        self.read
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; READ_BUFFER])
    }

    fn give_read(&self, buffer: Vec<u8>) {
        let mut spare = self.read.borrow_mut();
        if spare.len() < SPARE && buffer.len() == READ_BUFFER {
            spare.push(buffer);
        }
    }

    /// An empty buffer to write a message head into; give it back with [`Self::give_write`].
    pub fn take_write(&self) -> Vec<u8> {
        self.write
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
    }

    pub fn give_write(&self, mut buffer: Vec<u8>) {
        let mut spare = self.write.borrow_mut();
        if spare.len() < SPARE && buffer.capacity() <= 4 * WRITE_BUFFER {
            buffer.clear();
            spare.push(buffer);
        }
    }
}

/// Bytes read from a socket and not yet used: `data[start..end]`.
#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes consumed since the buffer was made: a request's share is the difference
    /// between its start and its end (the access log's bytes in).
    consumed: u64,
    pool: Rc<BufferPool>,
}

impl ReadBuf {
    /// An empty buffer that has not borrowed any memory yet.
    pub fn new(pool: Rc<BufferPool>) -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            end: 0,
            consumed: 0,
            pool,
        }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks the first `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        let start = (self.start + n).min(self.end);
        self.consumed += (start - self.start) as u64;
        self.start = start;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes consumed since the buffer was made.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Gives the memory back to the pool when nothing is buffered (the connection is about
    /// to wait).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && !self.data.is_empty() {
            self.pool.give_read(std::mem::take(&mut self.data));
        }
    }

    /// Free space at the end, making room first: borrow a buffer, move unread bytes to the
    /// front, or grow up to `limit` bytes. Empty when the buffer holds `limit` bytes already.
    fn spare(&mut self, limit: usize) -> &mut [u8] {
        if self.data.is_empty() {
            self.data = self.pool.take_read();
        }
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.data.len() < limit {
            let grown = (self.data.len() * 2).clamp(READ_BUFFER, limit);
            self.data.resize(grown, 0);
        }
        let stop = self.data.len().min(self.start + limit.max(1));
        &mut self.data[self.end..stop.max(self.end)]
    }

    /// Reads once from `source` into the free space; `Ok(0)` means end of stream, or a full
    /// buffer (`len() == limit`) that the caller must treat as "too large".
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut R,
        limit: usize,
    ) -> io::Result<usize> {
        let spare = self.spare(limit);
        if spare.is_empty() {
            return Ok(0);
        }
        let n = source.read(spare).await?;
        self.end += n;
        Ok(n)
    }

    /// Reads without waiting: `WouldBlock` when the client has sent nothing more.
    pub fn try_read_from<S: ClientIo>(&mut self, source: &mut S) -> io::Result<usize> {
        let spare = self.spare(READ_BUFFER);
        let n = source.try_read(spare)?;
        self.end += n;
        Ok(n)
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if !self.data.is_empty() {
            self.pool.give_read(std::mem::take(&mut self.data));
        }
    }
}
