//! The single stdout writer. Every thread appends whole lines to one shared buffer; one writer
//! thread swaps it out and writes it with one `write_all` and one flush. A line is therefore never
//! split or interleaved with another, a lone line goes out at once, and lines that pile up while
//! a write is in progress leave together in the next one.
//!
//! The two buffers trade places on every batch, so a steady stream of lines allocates nothing.

use std::io::{self, Write};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// How many bytes may wait for the writer before producers block: the bound that turns a slow
/// reader of stdout into backpressure instead of memory growth.
const PENDING_LIMIT: usize = 8 << 20;

/// A buffer this large is dropped after use rather than kept, so one huge result does not pin
/// its memory for the life of the process.
const KEEP_LIMIT: usize = 1 << 20;

/// The shared side of the writer.
pub(crate) struct Output {
    state: Mutex<State>,
    /// Wakes the writer when lines arrive or the output closes.
    ready: Condvar,
    /// Wakes producers waiting for the pending bytes to drop under the limit.
    room: Condvar,
}

struct State {
    pending: Vec<u8>,
    writer_waiting: bool,
    producers_waiting: usize,
    closed: bool,
    /// Set once a write failed: stdout is gone, so further lines are dropped.
    failed: bool,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while holding this lock, but a poisoned lock must not stop the output.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Output {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                pending: Vec::with_capacity(64 << 10),
                writer_waiting: false,
                producers_waiting: 0,
                closed: false,
                failed: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
        }
    }

    /// Queues whole lines (each ending in `\n`).
    pub(crate) fn push(&self, lines: &[u8]) {
        self.push_with(|pending| pending.extend_from_slice(lines));
    }

    /// Queues the lines `write` appends, written straight into the shared buffer. `write` must
    /// only append whole lines and must not block.
    pub(crate) fn push_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut state = lock(&self.state);
        while state.pending.len() >= PENDING_LIMIT && !state.failed {
            state.producers_waiting += 1;
            state = self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.producers_waiting -= 1;
        }
        if state.failed {
            return;
        }
        write(&mut state.pending);
        if state.writer_waiting {
            state.writer_waiting = false;
            self.ready.notify_one();
        }
    }

    /// Tells the writer no more lines will come; it exits once the buffer is written.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        self.ready.notify_one();
    }

    /// The writer loop: runs on its own thread until [`Output::close`], then returns the first
    /// write error, if any.
    pub(crate) fn run_writer(&self, mut writer: impl Write) -> io::Result<()> {
        let mut batch = Vec::with_capacity(64 << 10);
        let mut result = Ok(());
        loop {
            {
                let mut state = lock(&self.state);
                while state.pending.is_empty() && !state.closed {
                    state.writer_waiting = true;
                    state = self
                        .ready
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.pending.is_empty() {
                    return result;
                }
                std::mem::swap(&mut state.pending, &mut batch);
                if state.producers_waiting > 0 {
                    self.room.notify_all();
                }
            }
            if result.is_ok() {
                result = writer.write_all(&batch).and_then(|()| writer.flush());
                if result.is_err() {
                    let mut state = lock(&self.state);
                    state.failed = true;
                    state.pending = Vec::new();
                    self.room.notify_all();
                }
            }
            batch.clear();
            if batch.capacity() > KEEP_LIMIT {
                batch = Vec::with_capacity(64 << 10);
            }
        }
    }
}
