//! The dispatcher's records of live jobs and of workers. Internal: the shell sees them through
//! the views in `query`. Terminal jobs are not kept here: the dispatcher hands them to the shell
//! (through `Output::JobChanged`) and remembers only their status.

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

    /// The state of index `index`, the inverse of [`State::index`].
    pub(crate) const fn from_index(index: usize) -> Option<Self> {
        Some(match index {
            0 => Self::Ready,
            1 => Self::Delayed,
            2 => Self::Blocked,
            3 => Self::Assigned,
            4 => Self::Running,
            5 => Self::Completed,
            6 => Self::Failed,
            7 => Self::Cancelled,
            _ => return None,
        })
    }

    /// The terminal state of a terminal status.
    pub(crate) const fn finished(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Completed => Some(Self::Completed),
            JobStatus::Failed => Some(Self::Failed),
            JobStatus::Cancelled => Some(Self::Cancelled),
            _ => None,
        }
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

/// What the dispatcher knows about a job id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Known {
    /// A live job, at this slab slot.
    Live(u32),
    /// A terminal job, handed to the shell.
    Finished(State),
    /// Taken by a batch being validated.
    Reserved,
}

/// One live job. Kept small, because the slab holds one per queued job: what most jobs never
/// use (dependencies, labels, an error, past attempts) lives behind one optional box.
///
/// `repr(C)` to fix the field order: what a worker's report reads (the attempt it holds, its
/// number, the state, the id) comes first and fills the first 64 bytes, so a report about a
/// job whose record fell out of the cache waits for one line, not two.
#[repr(C)]
pub(crate) struct Job<P> {
    pub(crate) run: Option<Run>,
    pub(crate) id: JobId,
    /// The current or last attempt; 0 before the first.
    pub(crate) attempt: Attempt,
    pub(crate) state: State,
    pub(crate) mode: JobMode,
    /// Submission order: the FIFO tie-break within a priority.
    pub(crate) seq: u64,
    pub(crate) created_at: Millis,
    /// A pending job is not assigned before this (backoff or `not_before`).
    pub(crate) due_at: Millis,
    pub(crate) cold: Option<Box<Cold>>,
    /// Interned type.
    pub(crate) ty: u32,
    pub(crate) priority: i32,
    pub(crate) timeout_s: u32,
    pub(crate) max_retry: u32,
    pub(crate) retries: u32,
    pub(crate) losses: u32,
    /// Dependencies not completed yet (while `Blocked`).
    pub(crate) unmet: u32,
    /// Bumped each time the job registers with its dependencies, so registrations left over
    /// from an earlier life of the same id are recognised and skipped.
    pub(crate) dep_epoch: u32,
    pub(crate) payload: P,
}

/// The rarely used parts of a job.
#[derive(Default)]
pub(crate) struct Cold {
    pub(crate) not_before: Option<Millis>,
    pub(crate) after: Box<[JobId]>,
    pub(crate) labels: Box<[Box<str>]>,
    pub(crate) error: Option<Arc<str>>,
    /// Attempts that ended while the job stayed live, oldest first.
    pub(crate) history: Vec<AttemptRecord>,
}

impl<P> Job<P> {
    pub(crate) fn after(&self) -> &[JobId] {
        self.cold.as_ref().map_or(&[], |c| &c.after)
    }

    pub(crate) fn labels(&self) -> &[Box<str>] {
        self.cold.as_ref().map_or(&[], |c| &c.labels)
    }

    pub(crate) fn error(&self) -> Option<&Arc<str>> {
        self.cold.as_ref().and_then(|c| c.error.as_ref())
    }

    pub(crate) fn history(&self) -> &[AttemptRecord] {
        self.cold.as_ref().map_or(&[], |c| &c.history)
    }

    pub(crate) fn not_before(&self) -> Option<Millis> {
        self.cold.as_ref().and_then(|c| c.not_before)
    }

    pub(crate) fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    pub(crate) fn set_error(&mut self, error: Option<Arc<str>>) {
        if error.is_some() || self.error().is_some() {
            self.cold_mut().error = error;
        }
    }

    /// When the current attempt, or else the last one, was assigned.
    pub(crate) fn started_at(&self) -> Option<Millis> {
        match &self.run {
            Some(run) => Some(run.assigned_at),
            None => self.history().last().map(|h| h.assigned_at),
        }
    }
}

/// The attempt a worker holds now.
pub(crate) struct Run {
    /// The worker's slot.
    pub(crate) worker: u32,
    /// Index of this job in the worker's `held` list, for O(1) removal.
    pub(crate) held_pos: u32,
    pub(crate) assigned_at: Millis,
    pub(crate) acked_at: Option<Millis>,
    pub(crate) deadline: Option<Millis>,
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
    /// While it is eligible, its entries in the worker heaps: one per type in `types`, in the
    /// same order, or the one in the heap of workers that run every type. Empty otherwise.
    pub(crate) links: Vec<u32>,
}

impl Worker {
    pub(crate) fn running(&self) -> u32 {
        u32::try_from(self.held.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn eligible(&self) -> bool {
        self.verified && !self.paused && self.running() < self.capacity
    }
}

#[cfg(test)]
mod tests {
    /// The slab holds one record per queued job: its size is the memory budget per job (the
    /// benchmark measures the total, maps and indexes included).
    #[test]
    fn records_stay_small() {
        assert!(std::mem::size_of::<super::Job<()>>() <= 128);
        assert!(std::mem::size_of::<Option<super::Job<()>>>() <= 128);
        // What a report reads sits in the first cache line.
        for offset in [
            std::mem::offset_of!(super::Job<()>, run),
            std::mem::offset_of!(super::Job<()>, id),
            std::mem::offset_of!(super::Job<()>, attempt),
            std::mem::offset_of!(super::Job<()>, state),
        ] {
            assert!(offset < 64, "{offset}");
        }
        assert!(std::mem::size_of::<crate::Output<(), ()>>() <= 112);
    }
}
