//! The job pool: the bounded queue between the reader and the handler threads, and the set of
//! live jobs (queued or running) that cancel lines look up by id.
//!
//! Handler threads are started lazily, one more whenever a job arrives that no idle thread can
//! take, up to the executor's capacity; so at most `capacity` jobs run at once and the rest wait
//! in arrival order. One lock guards the queue and the live set together, so a job is findable
//! by its cancel line from the moment it is queued until its answer has been written.

use std::borrow::Borrow;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::job::Job;
use crate::output::Output;

/// The part of a job shared between the pool and its handler: identity and cancellation.
pub(crate) struct Task {
    pub(crate) id: Box<str>,
    pub(crate) attempt: Option<u64>,
    cancelled: AtomicBool,
    /// Pairs with `woken` so that handlers can sleep until cancelled; the flag itself is the
    /// atomic, read without a lock on every poll.
    lock: Mutex<()>,
    woken: Condvar,
}

impl Task {
    pub(crate) fn new(id: Box<str>, attempt: Option<u64>) -> Self {
        Self {
            id,
            attempt,
            cancelled: AtomicBool::new(false),
            lock: Mutex::new(()),
            woken: Condvar::new(),
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        // Taking the lock orders this store before the wake-up, so a waiter that checked the
        // flag under the lock cannot miss it.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.woken.notify_all();
    }

    /// Waits until the task is cancelled or `timeout` passes; returns whether it was cancelled.
    pub(crate) fn wait_cancelled(&self, timeout: Duration) -> bool {
        if self.is_cancelled() {
            return true;
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                // A timeout too large to add to the clock means "forever".
                None => Duration::from_secs(3600),
            };
            guard = self
                .woken
                .wait_timeout(guard, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A live task, hashed and compared by job id so the live set can be searched with a `&str`.
struct Live(Arc<Task>);

impl Hash for Live {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Live {}

impl Borrow<str> for Live {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// A job waiting for a handler thread, with the index of the handler that serves its type.
pub(crate) struct Queued {
    pub(crate) job: Job,
    pub(crate) handler: usize,
}

/// Why the pool refused a job.
pub(crate) struct Duplicate(pub(crate) Queued);

pub(crate) struct Pool {
    state: Mutex<State>,
    /// Wakes idle handler threads when a job is queued or the pool closes.
    work: Condvar,
    /// Wakes the reader when the queue has room again.
    room: Condvar,
    capacity: usize,
    queue_limit: usize,
}

struct State {
    queue: VecDeque<Queued>,
    live: HashSet<Live>,
    /// Handler threads asleep waiting for work.
    idle: usize,
    /// Handler threads started so far.
    started: usize,
    /// Whether an idle thread has been woken and has not yet taken a job. At most one is woken
    /// at a time; it wakes the next if it leaves jobs behind. Waking one thread per job instead
    /// costs a futex round trip per job when jobs are short.
    waking: bool,
    reader_waiting: bool,
    closed: bool,
}

impl Pool {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                live: HashSet::new(),
                idle: 0,
                started: 0,
                waking: false,
                reader_waiting: false,
                closed: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            capacity,
            // Enough for the reader to run ahead of the handlers, bounded so a flood of lines
            // turns into backpressure on the pipe.
            queue_limit: capacity.saturating_mul(4).max(1024),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Handlers run outside this lock, so a poisoned lock only means a bug elsewhere; the
        // state itself is always consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job. Returns whether a new handler thread should be started for it.
    pub(crate) fn submit(&self, queued: Queued) -> Result<bool, Duplicate> {
        let mut state = self.lock();
        if state.live.contains(&*queued.job.task.id) {
            return Err(Duplicate(queued));
        }
        while state.queue.len() >= self.queue_limit {
            state.reader_waiting = true;
            state = self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.live.insert(Live(Arc::clone(&queued.job.task)));
        state.queue.push_back(queued);
        self.wake_one(&mut state);
        // Woken threads still count as idle until they take a job, so compare against the queue:
        // every queued job beyond the idle threads needs a thread of its own.
        let start = state.queue.len() > state.idle && state.started < self.capacity;
        if start {
            state.started += 1;
        }
        Ok(start)
    }

    /// Called by a handler thread: writes the answer of the job it finished, if any, and waits
    /// for the next one. Returns `None` once the pool is closed and drained.
    ///
    /// The job leaves the live set and its answer is queued under one lock: once the answer can
    /// reach the worker, a new attempt of the same job id is no longer refused as a duplicate.
    pub(crate) fn next(&self, finished: Option<(&Task, &[u8])>, output: &Output) -> Option<Queued> {
        let mut state = self.lock();
        if let Some((task, answer)) = finished {
            state.live.remove(&*task.id);
            output.push(answer);
        }
        loop {
            if let Some(queued) = state.queue.pop_front() {
                if !state.queue.is_empty() {
                    self.wake_one(&mut state);
                }
                if state.reader_waiting {
                    state.reader_waiting = false;
                    self.room.notify_one();
                }
                return Some(queued);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
            state.waking = false;
        }
    }

    /// Wakes an idle thread for queued work unless one is already on its way.
    fn wake_one(&self, state: &mut State) {
        if state.idle > 0 && !state.waking {
            state.waking = true;
            self.work.notify_one();
        }
    }

    /// Cancels a live job; returns whether it was found.
    pub(crate) fn cancel(&self, job_id: &str) -> bool {
        let task = self.lock().live.get(job_id).map(|live| Arc::clone(&live.0));
        match task {
            Some(task) => {
                task.cancel();
                true
            }
            None => false,
        }
    }

    /// No more jobs will come: handler threads finish the queue and exit.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }
}
