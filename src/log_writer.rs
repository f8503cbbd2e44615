//! Buffered log output on stderr: whole lines, in order, written in batches.
//!
//! One access-log line per request, written to stderr with a `write` call of its own,
//! cost the request path a system call (and, on a pipe, a wake-up of its reader) each
//! time. Here each line is appended to a shared buffer instead, and a flusher thread
//! writes the buffer out in one call once a short batching delay has passed or enough has
//! gathered, so under load hundreds of lines share one write. An idle proxy wakes nobody:
//! the flusher sleeps until a line arrives.
//!
//! What is kept:
//! - **Whole, ordered lines.** `tracing-subscriber` formats each event completely and
//!   hands it over in one `write_all`, which appends it in one piece under the buffer's
//!   lock. Batches are taken and written under a second lock, so they leave in the order
//!   they were filled.
//! - **Nothing dropped.** When the buffer is full (the reader of stderr is not keeping
//!   up), a thread that logs waits until it has been written out, as it would have waited
//!   on a blocking write before. The memory used stays bounded.
//! - **Warnings at once.** A line at `warn` or `error` is written out (with everything
//!   before it) before the call returns, so a failure is never held back.
//! - **Nothing left behind.** [`flush`] writes out what is pending; it runs when `main`
//!   returns, before the exit on a second signal, and in the panic hook.
//!
//! Known shortcoming: a process killed outright (`SIGKILL`, the OOM killer) loses the
//! lines of its last batching delay (at most [`BATCH_DELAY`]).

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long the flusher waits for more lines after the first of a batch arrives.
pub const BATCH_DELAY: Duration = Duration::from_millis(10);

/// A batch this large is written out without waiting for the delay to end.
const HIGH_WATER: usize = 32 * 1024;

/// A thread that logs waits while this much is pending (back-pressure, never a drop).
const HARD_CAP: usize = 1024 * 1024;

/// The [`MakeWriter`] for the `tracing` subscriber: every line goes to the shared buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedStderr;

/// The writer for one formatted event.
#[derive(Debug)]
pub struct LineWriter {
    urgent: bool,
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = shared();
        shared.append(line);
        if self.urgent {
            shared.write_out();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes out every pending line now.
pub fn flush() {
    if let Some(shared) = SHARED.get() {
        shared.write_out();
    }
}

/// Makes a panic write out the pending lines before its own message.
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        // Without the thread, lines are written when a batch reaches the high-water mark
        // or a warning comes; better than stopping the process for its logs.
        let _ = std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(|| loop {
                shared().wait_for_batch();
                shared().write_out();
            });
        Shared::default()
    })
}

#[derive(Default)]
struct Shared {
    /// Lines not yet taken for writing.
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is taken and written; holds the buffer it is written from, so
    /// the two buffers are reused and steady logging allocates nothing.
    output: Mutex<Vec<u8>>,
    /// Wakes the flusher: the first line of a batch, or the high-water mark reached.
    filled: Condvar,
    /// Wakes threads waiting for room.
    drained: Condvar,
}

impl Shared {
    fn append(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        while pending.len() >= HARD_CAP {
            self.filled.notify_one();
            pending = self
                .drained
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        let before = pending.len();
        pending.extend_from_slice(line);
        if before == 0 || (before < HIGH_WATER && pending.len() >= HIGH_WATER) {
            self.filled.notify_one();
        }
    }

    /// Returns once there is something to write and the batching delay has passed (or
    /// the batch is large enough already).
    fn wait_for_batch(&self) {
        let mut pending = lock(&self.pending);
        while pending.is_empty() {
            pending = self.filled.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        let deadline = Instant::now() + BATCH_DELAY;
        while pending.len() < HIGH_WATER {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            pending = self
                .filled
                .wait_timeout(pending, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Takes everything pending and writes it to stderr in one call.
    fn write_out(&self) {
        let mut batch = lock(&self.output);
        std::mem::swap(&mut *lock(&self.pending), &mut *batch);
        self.drained.notify_all();
        if batch.is_empty() {
            return;
        }
        // Nowhere to report a failure to write the log; the lines are dropped then, as
        // a failed write to stderr would drop them.
        let _ = std::io::stderr().lock().write_all(&batch);
        batch.clear();
    }
}

fn lock(mutex: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stay_whole_and_in_order_across_threads() {
        let shared = Shared::default();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let shared = &shared;
                scope.spawn(move || {
                    for i in 0..1000 {
                        shared.append(format!("thread {t} line {i:04}\n").as_bytes());
                    }
                });
            }
        });
        let text = String::from_utf8(lock(&shared.pending).clone()).expect("utf-8");
        let mut last = [None::<u32>; 4];
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 4, "torn line {line:?}");
            let t: usize = fields[1].parse().expect("thread");
            let i: u32 = fields[3].parse().expect("index");
            assert!(last[t].is_none_or(|prev| prev < i), "out of order: {line}");
            last[t] = Some(i);
        }
        assert_eq!(last, [Some(999); 4]);
    }

    #[test]
    fn a_full_buffer_makes_the_writer_wait_instead_of_dropping() {
        let shared = Shared::default();
        lock(&shared.pending).resize(HARD_CAP, b'x');
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| shared.append(b"last\n"));
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !writer.is_finished(),
                "the writer went on with the buffer full"
            );
            // What the flusher does: take the batch (here, without writing it anywhere).
            let mut batch = lock(&shared.output);
            std::mem::swap(&mut *lock(&shared.pending), &mut *batch);
            shared.drained.notify_all();
            drop(batch);
            writer.join().expect("writer");
        });
        assert_eq!(lock(&shared.pending).as_slice(), b"last\n");
    }
}
