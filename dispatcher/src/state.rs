//! The dispatcher's records of jobs and workers. Internal: the shell sees them through the views
//! in `query`.

use std::sync::Arc;

use proto::{Attempt, JobId, JobMode, JobStatus, PeerId};

use crate::io::AttemptRecord;
use crate::time::Millis;

/// Where a job is. The three pending states are told apart because each lives in a different
/// structure: `Ready` in its type's ready heap, `Delayed` in the timer heap, `Blocked` nowhere
/// but the dependents map of the jobs it waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    Ready,
    Delayed,
    Blocked,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    pub(crate) const COUNT: usize = 8;

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) const fn status(self) -> JobStatus {
        match self {
            Self::Ready | Self::Delayed | Self::Blocked => JobStatus::Pending,
            Self::Assigned => JobStatus::Assigned,
            Self::Running => JobStatus::Running,
            Self::Completed => JobStatus::Completed,
            Self::Failed => JobStatus::Failed,
            Self::Cancelled => JobStatus::Cancelled,
        }
    }
}

/// One job, live or finished.
pub(crate) struct Job<P> {
    pub(crate) id: JobId,
    /// Interned type.
    pub(crate) ty: u32,
    pub(crate) state: State,
    pub(crate) mode: JobMode,
    pub(crate) priority: i32,
    pub(crate) timeout_s: u32,
    pub(crate) max_retry: u32,
    pub(crate) retries: u32,
    pub(crate) losses: u32,
    /// The current or last attempt; 0 before the first.
    pub(crate) attempt: Attempt,
    /// Dependencies not completed yet (while `Blocked`).
    pub(crate) unmet: u32,
    /// Bumped each time the job registers with its dependencies, so registrations left over
    /// from before a cancel and a user retry are recognised and skipped.
    pub(crate) dep_epoch: u32,
    /// Submission order: the FIFO tie-break within a priority.
    pub(crate) seq: u64,
    pub(crate) created_at: Millis,
    /// A pending job is not assigned before this (backoff or `not_before`).
    pub(crate) due_at: Millis,
    pub(crate) not_before: Option<Millis>,
    pub(crate) started_at: Option<Millis>,
    pub(crate) done_at: Option<Millis>,
    pub(crate) payload: P,
    pub(crate) after: Box<[JobId]>,
    pub(crate) labels: Box<[Box<str>]>,
    pub(crate) error: Option<Arc<str>>,
    pub(crate) run: Option<Run>,
    /// Attempts that ended, oldest first.
    pub(crate) history: Vec<AttemptRecord>,
}

/// The attempt a worker holds now.
pub(crate) struct Run {
    /// The worker's slot.
    pub(crate) worker: u32,
    pub(crate) peer: Arc<PeerId>,
    pub(crate) assigned_at: Millis,
    pub(crate) acked_at: Option<Millis>,
    pub(crate) deadline: Option<Millis>,
    /// Index of this job in the worker's `held` list, for O(1) removal.
    pub(crate) held_pos: u32,
}

/// A slot of the live-job slab. `generation` grows on every state change of the job in the
/// slot and on every reuse, so heap entries that remember it can be checked for staleness.
pub(crate) struct Slot<P> {
    pub(crate) generation: u32,
    pub(crate) job: Option<Job<P>>,
}

/// A worker known to the host.
pub(crate) struct Worker {
    pub(crate) peer: Arc<PeerId>,
    /// Distinguishes this worker from an earlier one that used the same slot.
    pub(crate) incarnation: u64,
    pub(crate) verified: bool,
    pub(crate) paused: bool,
    pub(crate) capacity: u32,
    /// Interned types it runs; `None` means every type.
    pub(crate) types: Option<Box<[u32]>>,
    /// When it last got a job: the round-robin tie-break among equally loaded workers.
    pub(crate) stamp: u64,
    pub(crate) lease_until: Millis,
    /// Slots of the jobs whose current attempt it holds.
    pub(crate) held: Vec<u32>,
}

impl Worker {
    pub(crate) fn running(&self) -> u32 {
        u32::try_from(self.held.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn eligible(&self) -> bool {
        self.verified && !self.paused && self.running() < self.capacity
    }
}
