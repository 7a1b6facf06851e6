//! Read-only views of the dispatcher's state, for the HTTP API and the CLI.
//!
//! These are not on the hot path: listing walks every job the dispatcher holds. The shell's
//! store serves paginated history; the dispatcher answers for what is live in memory.

use proto::{Attempt, JobId, JobMode, JobStatus, PeerId};

use crate::dispatcher::Dispatcher;
use crate::io::AttemptRecord;
use crate::state::{Job, State};
use crate::time::Millis;

/// One job as the dispatcher knows it.
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
    /// When it reached a terminal status.
    pub done_at: Option<Millis>,
    /// When a job waiting for backoff or `not_before` becomes due.
    pub due_at: Option<Millis>,
    /// How many of the jobs it waits for have not completed yet.
    pub waiting_on: u32,
    /// The jobs it waits for.
    pub after: &'a [JobId],
    /// Its labels.
    pub labels: &'a [Box<str>],
    /// Its payload.
    pub payload: &'a P,
    /// Every attempt, oldest first; the current one (if any) last, without an end.
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
    /// Completed (and not forgotten).
    pub completed: usize,
    /// Failed (and not forgotten).
    pub failed: usize,
    /// Cancelled (and not forgotten).
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
    /// One job, live or terminal (until forgotten).
    pub fn job_view(&self, id: JobId) -> Option<JobView<'_, P>> {
        match self.live.get(&id) {
            Some(&slot) => Some(self.view(self.job(slot))),
            None => self.finished.get(&id).map(|job| self.view(job)),
        }
    }

    /// Every job matching `filter`, in submission order.
    pub fn jobs(&self, filter: &JobFilter) -> Vec<JobView<'_, P>> {
        let type_id = match &filter.job_type {
            Some(name) => match self.types.iter().position(|t| &*t.name == name.as_str()) {
                Some(ty) => Some(ty),
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
                    .is_none_or(|l| job.labels.iter().any(|x| &**x == l))
                && filter
                    .worker
                    .as_ref()
                    .is_none_or(|w| job.run.as_ref().is_some_and(|r| *r.peer == *w))
        };
        let live = self.slots.iter().filter_map(|s| s.job.as_ref());
        let mut found: Vec<&Job<P>> = live
            .chain(self.finished.values())
            .filter(|j| matches(j))
            .collect();
        found.sort_unstable_by_key(|j| j.seq);
        found.into_iter().map(|job| self.view(job)).collect()
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

    fn view<'a>(&'a self, job: &'a Job<P>) -> JobView<'a, P> {
        let mut history = job.history.clone();
        if let Some(run) = &job.run {
            history.push(AttemptRecord {
                attempt: job.attempt,
                worker: run.peer.clone(),
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
            worker: job.run.as_ref().map(|r| &*r.peer),
            error: job.error.as_deref(),
            seq: job.seq,
            created_at: job.created_at,
            started_at: job.started_at,
            done_at: job.done_at,
            due_at: (job.state == State::Delayed).then_some(job.due_at),
            waiting_on: if job.state == State::Blocked {
                job.unmet
            } else {
                0
            },
            after: &job.after,
            labels: &job.labels,
            payload: &job.payload,
            history,
        }
    }
}
