//! The writer thread of one listener's access log: takes entries off the bounded queue,
//! formats them and writes them in batches, and reopens its file when [`Reopen`] says so.
//! A thread, not a task: file writes block, and a worker thread must never wait on a disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use fulcrum_core::config::{AccessLog as AccessLogConfig, AccessLogFormat, LogDestination};

use super::{format, AccessLogCounters, Entry};

/// Most lines written in one write.
const BATCH: usize = 256;
/// How often an idle writer looks for a reopen request (a rotated file is let go of within
/// this, even when no request comes).
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Asks every access-log writer to reopen its file: a generation each writer compares with
/// the one it opened at.
#[derive(Debug, Clone, Default)]
pub struct Reopen(Arc<AtomicU64>);

impl Reopen {
    pub fn request(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn generation(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

enum Output {
    Stdout,
    File(File),
}

impl Output {
    fn open(destination: &LogDestination) -> io::Result<Self> {
        match destination {
            LogDestination::Stdout => Ok(Self::Stdout),
            LogDestination::File(path) => open_file(path).map(Self::File),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Self::File(file) => file.write_all(bytes),
        }
    }
}

/// Appends: several processes (an old and a new one during an upgrade) or writers (two
/// listeners) may share a file, and each batch is one `write` of whole lines.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    listener: String,
    format: AccessLogFormat,
    destination: LogDestination,
    output: Output,
    counters: Arc<AccessLogCounters>,
    reopen: Reopen,
    generation: u64,
}

/// Opens the log and starts its writer; the queue's sender is what the request path holds.
/// The thread ends when every sender is gone (the listener was replaced by a reload, or
/// fulcrum stopped), after writing what was queued.
pub fn spawn(
    listener: &str,
    config: &AccessLogConfig,
    counters: Arc<AccessLogCounters>,
    reopen: Reopen,
) -> Result<SyncSender<Entry>, String> {
    let output = Output::open(&config.destination).map_err(|e| {
        let path = match &config.destination {
            LogDestination::File(path) => path.display().to_string(),
            LogDestination::Stdout => "-".to_string(),
        };
        format!("listener {listener}: cannot open the access log {path}: {e}")
    })?;
    let (sender, receiver) = mpsc::sync_channel(config.queue);
    let writer = Writer {
        listener: listener.to_string(),
        format: config.format,
        destination: config.destination.clone(),
        output,
        counters,
        generation: reopen.generation(),
        reopen,
    };
    std::thread::Builder::new()
        .name(format!("access-log-{listener}"))
        .spawn(move || writer.run(receiver))
        .map_err(|e| format!("listener {listener}: cannot start the access-log writer: {e}"))?;
    Ok(sender)
}

impl Writer {
    fn run(mut self, queue: Receiver<Entry>) {
        let mut text = String::with_capacity(BATCH * 256);
        loop {
            let first = match queue.recv_timeout(IDLE_CHECK) {
                Ok(entry) => entry,
                Err(RecvTimeoutError::Timeout) => {
                    self.reopen_if_asked();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.reopen_if_asked();
            text.clear();
            let mut lines = 0u64;
            for entry in std::iter::once(first).chain(queue.try_iter().take(BATCH - 1)) {
                format::render(&entry, &self.listener, self.format, &mut text);
                lines += 1;
            }
            match self.output.write(text.as_bytes()) {
                Ok(()) => {
                    self.counters.written.fetch_add(lines, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.failed.fetch_add(lines, Ordering::Relaxed);
                    tracing::warn!(listener = %self.listener, error = %e, lines, "access log write failed; lines lost");
                }
            }
        }
    }

    fn reopen_if_asked(&mut self) {
        let generation = self.reopen.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        match Output::open(&self.destination) {
            Ok(output) => self.output = output,
            Err(e) => {
                // The old file stays open: its lines still land somewhere an operator can
                // find them.
                tracing::warn!(listener = %self.listener, error = %e, "cannot reopen the access log; writing on to the file open before");
            }
        }
    }
}
