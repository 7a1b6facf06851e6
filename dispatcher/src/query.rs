//! Read-only views of the dispatcher's state, for the HTTP API and the CLI.
//!
//! These are not on the hot path: listing walks every live job. Terminal jobs are the store's:
//! the dispatcher only answers their status ([`Dispatcher::terminal_status`]), and the shell's
//! store serves their records, history and the paginated lists.

use proto::{Attempt, JobId, JobMode, JobStatus, PeerId};

use crate::dispatcher::Dispatcher;
use crate::io::AttemptRecord;
use crate::state::{Job, State};
use crate::time::Millis;

/// One live (not terminal) job.
#[derive(Debug)]
pub struct JobView<'a, P> {
    /// The job.
    pub id: JobId,
    /// Its type.
    pub job_type: &'a str,
    /// Oneshot or continuous.
    pub mode: JobMode,
    /// Where it is.
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: i32,
    /// Seconds an attempt may run; 0 means no limit.
    pub timeout_s: u32,
    /// Failures tolerated before `failed`.
    pub max_retry: u32,
    /// Failures counted.
    pub retries: u32,
    /// Worker losses counted.
    pub losses: u32,
    /// The current or last attempt.
    pub attempt: Attempt,
    /// The worker holding the current attempt.
    pub worker: Option<&'a PeerId>,
    /// The last error.
    pub error: Option<&'a str>,
    /// Submission order (smaller came first).
    pub seq: u64,
    /// When it was submitted.
    pub created_at: Millis,
    /// When the current or last attempt was assigned.
    pub started_at: Option<Millis>,
    /// When a job waiting for backoff or `not_before` becomes due.
    pub due_at: Option<Millis>,
    /// Not assigned before this time.
    pub not_before: Option<Millis>,
    /// How many of the jobs it waits for have not completed yet.
    pub waiting_on: u32,
    /// The jobs it waits for.
    pub after: &'a [JobId],
    /// Its labels.
    pub labels: &'a [Box<str>],
    /// Its payload.
    pub payload: &'a P,
    /// Its attempts since it was submitted, restored or retried, oldest first; the current one
    /// (if any) last, without an end.
    pub history: Vec<AttemptRecord>,
}

/// Which jobs to list; every field set must match.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs carrying this label.
    pub label: Option<String>,
    /// Only jobs whose current attempt this worker holds.
    pub worker: Option<PeerId>,
}

/// Counts of jobs and workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending jobs, in total.
    pub pending: usize,
    /// Pending jobs ready to be assigned.
    pub ready: usize,
    /// Pending jobs waiting for backoff or `not_before`.
    pub delayed: usize,
    /// Pending jobs waiting for other jobs.
    pub blocked: usize,
    /// Assigned, not yet acknowledged.
    pub assigned: usize,
    /// Running.
    pub running: usize,
    /// Completed (until forgotten).
    pub completed: usize,
    /// Failed (until forgotten).
    pub failed: usize,
    /// Cancelled (until forgotten).
    pub cancelled: usize,
    /// Known workers.
    pub workers: usize,
    /// Verified workers.
    pub verified_workers: usize,
    /// Paused workers.
    pub paused_workers: usize,
    /// Sum of the capacities of verified, unpaused workers.
    pub capacity: u64,
    /// Attempts held by workers.
    pub busy: u64,
}

/// One worker as the dispatcher knows it.
#[derive(Debug)]
pub struct WorkerView<'a> {
    /// The worker.
    pub peer: &'a PeerId,
    /// Whether its executor passed the check.
    pub verified: bool,
    /// Whether it is paused.
    pub paused: bool,
    /// Jobs it runs at once.
    pub capacity: u32,
    /// Attempts it holds.
    pub running: u32,
    /// The types it runs; `None` means every type.
    pub types: Option<Vec<&'a str>>,
    /// When its lease runs out, if leases are on.
    pub lease_until: Option<Millis>,
    /// The attempts it holds.
    pub attempts: Vec<(JobId, Attempt)>,
}

impl<P: Clone, R> Dispatcher<P, R> {
    /// One live job.
    pub fn job_view(&self, id: JobId) -> Option<JobView<'_, P>> {
        Some(self.view(self.live_slot(id)?))
    }

    /// The status of any job the dispatcher knows: live, or terminal until forgotten.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        match self.live_slot(id) {
            Some(slot) => Some(self.job(slot).state.status()),
            None => self.terminal_status(id),
        }
    }

    /// The status of a terminal job, until the shell forgets it.
    pub fn terminal_status(&self, id: JobId) -> Option<JobStatus> {
        self.finished_state(id).map(|state| state.status())
    }

    /// Every live job matching `filter`, in submission order.
    pub fn jobs(&self, filter: &JobFilter) -> Vec<JobView<'_, P>> {
        let type_id = match &filter.job_type {
            Some(name) => match self.types.iter().position(|t| &*t.name == name.as_str()) {
                Some(ty) => Some(ty),
                None => return Vec::new(),
            },
            None => None,
        };
        let worker = match &filter.worker {
            Some(peer) => match self.worker_ids.get(peer) {
                Some(&w) => Some(w),
                None => return Vec::new(),
            },
            None => None,
        };
        let matches = |job: &Job<P>| {
            filter.status.is_none_or(|s| job.state.status() == s)
                && type_id.is_none_or(|ty| job.ty as usize == ty)
                && filter
                    .label
                    .as_deref()
                    .is_none_or(|l| job.labels().iter().any(|x| &**x == l))
                && worker.is_none_or(|w| job.run.as_ref().is_some_and(|r| r.worker == w))
        };
        let mut found: Vec<(u64, u32)> = (0u32..)
            .zip(&self.slots)
            .filter_map(|(slot, entry)| entry.as_ref().map(|job| (job, slot)))
            .filter(|(job, _)| matches(job))
            .map(|(job, slot)| (job.seq, slot))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, slot)| self.view(slot)).collect()
    }

    /// The number of live (not terminal) jobs, which `max_live_jobs` bounds.
    pub fn live_jobs(&self) -> usize {
        self.live_count
    }

    /// The number of finished jobs counted: known, evicted or unloaded.
    pub fn finished_jobs(&self) -> usize {
        [State::Completed, State::Failed, State::Cancelled]
            .iter()
            .map(|state| self.counts[state.index()])
            .sum()
    }

    /// Counts of jobs by status and of workers.
    pub fn stats(&self) -> QueueStats {
        let count = |state: State| self.counts[state.index()];
        let mut stats = QueueStats {
            ready: count(State::Ready),
            delayed: count(State::Delayed),
            blocked: count(State::Blocked),
            assigned: count(State::Assigned),
            running: count(State::Running),
            completed: count(State::Completed),
            failed: count(State::Failed),
            cancelled: count(State::Cancelled),
            ..QueueStats::default()
        };
        stats.pending = stats.ready + stats.delayed + stats.blocked;
        for worker in self.workers.iter().flatten() {
            stats.workers += 1;
            stats.verified_workers += usize::from(worker.verified);
            stats.paused_workers += usize::from(worker.paused);
            if worker.verified && !worker.paused {
                stats.capacity += u64::from(worker.capacity);
            }
            stats.busy += u64::from(worker.running());
        }
        stats
    }

    /// Every known worker, in join order of their slots.
    pub fn workers(&self) -> Vec<WorkerView<'_>> {
        self.workers
            .iter()
            .flatten()
            .map(|worker| WorkerView {
                peer: &worker.peer,
                verified: worker.verified,
                paused: worker.paused,
                capacity: worker.capacity,
                running: worker.running(),
                types: worker.types.as_ref().map(|types| {
                    types
                        .iter()
                        .map(|&ty| &*self.types[ty as usize].name)
                        .collect()
                }),
                lease_until: self.config.lease.map(|_| worker.lease_until),
                attempts: worker
                    .held
                    .iter()
                    .map(|&slot| {
                        let job = self.job(slot);
                        (job.id, job.attempt)
                    })
                    .collect(),
            })
            .collect()
    }

    /// The time of the last step.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The settings it runs with.
    pub fn config(&self) -> &crate::Config {
        &self.config
    }

    fn view(&self, slot: u32) -> JobView<'_, P> {
        let job = self.job(slot);
        let holder = job
            .run
            .as_ref()
            .and_then(|run| self.workers[run.worker as usize].as_ref().map(|w| (run, w)));
        let mut history = job.history().to_vec();
        if let Some((run, worker)) = holder {
            history.push(AttemptRecord {
                attempt: job.attempt,
                worker: worker.peer.clone(),
                assigned_at: run.assigned_at,
                acked_at: run.acked_at,
                ended_at: None,
                end: None,
            });
        }
        JobView {
            id: job.id,
            job_type: &self.types[job.ty as usize].name,
            mode: job.mode,
            status: job.state.status(),
            priority: job.priority,
            timeout_s: job.timeout_s,
            max_retry: job.max_retry,
            retries: job.retries,
            losses: job.losses,
            attempt: job.attempt,
            worker: holder.map(|(_, w)| &*w.peer),
            error: job.error().map(|e| &**e),
            seq: job.seq,
            created_at: job.created_at,
            started_at: job.started_at(),
            due_at: (job.state == State::Delayed).then_some(job.due_at),
            waiting_on: if job.state == State::Blocked {
                job.unmet
            } else {
                0
            },
            not_before: job.not_before(),
            after: job.after(),
            labels: job.labels(),
            payload: &job.payload,
            history,
        }
    }
}
