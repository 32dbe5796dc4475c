//! A log writer for a busy server: lines are appended to a shared buffer and
//! a thread of its own writes them out in batches.
//!
//! Why not `tracing_appender::non_blocking` alone: it hands each line to its
//! thread through a channel and writes as soon as the channel is empty, so
//! under load (the decision log writes a line per warned review) every line
//! meant a wake-up of that thread and a `write(2)` — ~10 µs of a ~80 µs
//! request on two cores (docs/performance.md). Here the first line into an
//! empty buffer wakes the thread, which waits a few milliseconds for more
//! and writes them all at once: a line is out within `LINGER`, and under
//! load a write carries hundreds of lines.
//!
//! Never lossy: past `HIGH_WATER` bytes waiting, a logging call waits for the
//! thread to catch up. Dropping the guard writes what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread waits after a first line for others to join it.
const LINGER: Duration = Duration::from_millis(5);
/// Bytes waiting past which a logging call waits for the write.
const HIGH_WATER: usize = 4 << 20;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signals the thread: lines arrived, or the buffer is full, or closing.
    more: Condvar,
    /// Signals waiting loggers: the buffer was taken.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave the buffer half-made
        // (an append is one `extend`), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer handed to `tracing_subscriber` (cheap to clone: one `Arc`).
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the thread when dropped.
pub struct BatchGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer batching into `out` from a thread named `name`.
pub fn batched<W: Write + Send + 'static>(
    mut out: W,
    name: &str,
) -> std::io::Result<(BatchWriter, BatchGuard)> {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    let mut p = shared.lock();
                    while p.bytes.is_empty() && !p.closed {
                        p = shared.more.wait(p).unwrap_or_else(|e| e.into_inner());
                    }
                    if !p.closed && p.bytes.len() < HIGH_WATER / 2 {
                        // Let the lines of the next few milliseconds join.
                        p = shared
                            .more
                            .wait_timeout(p, LINGER)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    std::mem::swap(&mut p.bytes, &mut spare);
                    let closed = p.closed;
                    drop(p);
                    shared.taken.notify_all();
                    // Nowhere to report a failed log write: stderr is where
                    // the report would go.
                    let _ = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                    if closed && shared.lock().bytes.is_empty() {
                        return;
                    }
                }
            })?
    };
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        BatchGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl BatchWriter {
    /// Appends `buf` whole (a line stays one piece); waits only when
    /// `HIGH_WATER` bytes are already waiting.
    pub fn append(&self, buf: &[u8]) {
        let mut p = self.shared.lock();
        while p.bytes.len() >= HIGH_WATER && !p.closed {
            self.shared.more.notify_one();
            p = self.shared.taken.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = p.bytes.is_empty();
        p.bytes.extend_from_slice(buf);
        drop(p);
        if was_empty {
            self.shared.more.notify_one();
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.more.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `Write` a test can read back (also the log_line tests').
    #[derive(Clone, Default)]
    pub(crate) struct Sink(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_arrives_whole_and_in_order_per_thread() {
        let sink = Sink::default();
        let (w, guard) = batched(sink.clone(), "test-log").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..5000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, want);
        }
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_the_guard() {
        let sink = Sink::default();
        let (mut w, _guard) = batched(sink.clone(), "test-log").unwrap();
        w.write_all(b"one line\n").unwrap();
        // The thread writes it after LINGER; poll for it rather than sleep a
        // fixed time (a loaded machine may take longer).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"one line\n");
    }
}
