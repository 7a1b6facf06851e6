//! What goes into the dispatcher and what comes out of it.
//!
//! The shell turns HTTP requests and worker messages into [`Input`]s, feeds them to
//! [`Dispatcher::step`](crate::Dispatcher::step) with the current time, then drains the
//! [`Output`]s and carries them out: send assigns and cancels, persist job changes, notify
//! watchers, arm a timer for the next wake-up.
//!
//! The dispatcher never looks inside a payload (`P`) or a report (`R`): it moves them through.

use std::sync::Arc;

use proto::{Attempt, JobId, JobMode, JobStatus, PeerId};

use crate::time::Millis;

/// A job as submitted: its spec and its opaque payload.
#[derive(Clone, Debug)]
pub struct NewJob<P> {
    /// Chosen by the shell (random, or derived from an idempotency key); must be new.
    pub id: JobId,
    /// Exact-match type name; workers that list types only get jobs of those types.
    pub job_type: String,
    /// Oneshot or continuous.
    pub mode: JobMode,
    /// Handed to the worker untouched.
    pub payload: P,
    /// Higher runs first.
    pub priority: i32,
    /// Seconds an attempt may run; 0 means no limit.
    pub timeout_s: u32,
    /// Failures tolerated before the job is `failed`.
    pub max_retry: u32,
    /// Free-form tags to filter lists by.
    pub labels: Vec<String>,
    /// The job is not assigned before this time.
    pub not_before: Option<Millis>,
    /// Jobs that must complete before this one runs. Each must already be known, or come
    /// earlier in the same batch.
    pub after: Vec<JobId>,
}

impl<P> NewJob<P> {
    /// A oneshot job with default settings: priority 0, no timeout, no retries.
    pub fn new(id: JobId, job_type: impl Into<String>, payload: P) -> Self {
        Self {
            id,
            job_type: job_type.into(),
            mode: JobMode::Oneshot,
            payload,
            priority: 0,
            timeout_s: 0,
            max_retry: 0,
            labels: Vec::new(),
            not_before: None,
            after: Vec::new(),
        }
    }
}

/// A job reloaded from the store after a restart.
#[derive(Clone, Debug)]
pub struct RestoredJob<P> {
    /// The job's spec and payload.
    pub job: NewJob<P>,
    /// The status it was stored with. Assigned and running jobs come back as pending, at no
    /// retry cost, because their attempts died with the old host.
    pub status: JobStatus,
    /// The number of the last attempt stored; new attempts continue one past the next one (see
    /// [`Input::Restore`]), so reports from attempts of the old host are recognised as stale.
    pub attempt: Attempt,
    /// Failures counted so far.
    pub retries: u32,
    /// Worker losses counted so far.
    pub losses: u32,
    /// The last error, kept on failed jobs.
    pub error: Option<String>,
    /// When it was first submitted; restored jobs are queued in this order.
    pub created_at: Millis,
    /// When it reached its terminal status, if it did.
    pub done_at: Option<Millis>,
    /// Attempts the store kept.
    pub history: Vec<AttemptRecord>,
}

/// A failed or cancelled job to run again.
#[derive(Clone, Debug)]
pub struct RetryJob<P> {
    /// The job as it was submitted (same id).
    pub job: NewJob<P>,
    /// Its last attempt number; the next attempt continues after it, so late reports from old
    /// attempts stay stale.
    pub attempt: Attempt,
}

/// Why a worker left the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// It said goodbye.
    Left,
    /// The host removed it.
    Kicked,
    /// Its connection dropped.
    Disconnected,
    /// The liveness check of the group layer failed.
    HeartbeatLost,
    /// No heartbeat arrived within the lease (decided by the dispatcher itself).
    LeaseExpired,
}

impl LeaveReason {
    /// A short lowercase description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Left => "worker left",
            Self::Kicked => "worker kicked",
            Self::Disconnected => "worker disconnected",
            Self::HeartbeatLost => "worker heartbeat lost",
            Self::LeaseExpired => "worker lease expired",
        }
    }
}

/// How a worker says an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report<R> {
    /// It finished with this result (a continuous job: the executor ended it).
    Completed(R),
    /// It failed with this error.
    Failed(String),
    /// It ran past its time limit on the worker: a failure like `Failed`, recorded as a
    /// timeout.
    TimedOut(String),
    /// The worker's executor went away under the attempt (a daemon crash): not the job's
    /// fault, so it is requeued without spending a retry and counts against the crash limit.
    Lost(String),
    /// The worker could not start the attempt at all (its executor could not be started, or
    /// was given up on before the job ran): requeued without spending a retry or counting
    /// against the crash limit, since the job never ran. The worker is expected to take no
    /// jobs until its executor is checked again (it reports itself unverified).
    NotStarted(String),
}

/// Something that happened, fed to [`Dispatcher::step`](crate::Dispatcher::step).
#[derive(Clone, Debug)]
pub enum Input<P, R> {
    /// Queue one job. Once `step` returns `Ok` it is pending; no `JobChanged` says so.
    Submit(NewJob<P>),
    /// Queue many jobs, all or none. Once `step` returns `Ok` they are pending; no
    /// `JobChanged` says so.
    SubmitBatch(Vec<NewJob<P>>),
    /// Cancel a job: terminal at once.
    Cancel(JobId),
    /// Run a failed or cancelled job again, with a fresh retry budget. The dispatcher keeps
    /// only the status of terminal jobs, so the shell brings the spec back from its store. The
    /// job queues behind what is already queued at its priority, like a new submission.
    Retry(RetryJob<P>),
    /// Drop a terminal job from memory (the shell keeps it in its store, or deletes it).
    Forget(JobId),
    /// Drop every terminal job from memory, evicted ones included: their counts go to zero.
    ForgetFinished,
    /// The shell deleted these finished jobs from its store (with the status each had there):
    /// those known are forgotten, those evicted leave the counts. Live ids are skipped.
    Deleted(Vec<(JobId, JobStatus)>),
    /// Know these finished jobs again: the dispatcher evicted them (see
    /// [`Config::max_finished`](crate::Config::max_finished)) or a restore left them out, and
    /// the shell is about to name them (in `after`, a retry, a forget). They are counted
    /// already, so the counts do not change; ids known already and statuses that are not
    /// terminal are skipped. Nothing is evicted at the end of this step, so the next input
    /// finds them whatever the limit.
    Recall(Vec<(JobId, JobStatus)>),
    /// The store holds finished jobs the dispatcher was not given (a restore left them out, or
    /// the shell stored jobs the dispatcher then refused and marked them failed), this many of
    /// each status: they count in the stats, and are recalled when named.
    Unloaded {
        /// Completed ones.
        completed: usize,
        /// Failed ones.
        failed: usize,
        /// Cancelled ones.
        cancelled: usize,
    },
    /// A peer joined the cluster group. It gets no jobs until it is verified.
    WorkerJoined(PeerId),
    /// A worker's executor passed its check.
    WorkerVerified {
        /// The worker.
        worker: PeerId,
        /// The types it runs; empty means every type.
        types: Vec<String>,
        /// Jobs it runs at once; 0 keeps the previous value (1 for a new worker).
        capacity: u32,
    },
    /// A worker's executor failed its check: no new jobs until it is verified again.
    WorkerUnverified(PeerId),
    /// A worker is gone; its attempts go back to the queue without spending a retry.
    WorkerLeft {
        /// The worker.
        worker: PeerId,
        /// Why it went.
        reason: LeaveReason,
    },
    /// A worker is alive and runs these attempts. Refreshes its lease; attempts it runs but
    /// does not hold are cancelled, attempts it holds but no longer runs are requeued.
    Heartbeat {
        /// The worker.
        worker: PeerId,
        /// Every attempt it is running.
        running: Vec<(JobId, Attempt)>,
    },
    /// Stop giving a worker new jobs; its running ones continue.
    Pause(PeerId),
    /// Give a paused worker jobs again.
    Resume(PeerId),
    /// A worker received an attempt.
    Ack {
        /// The reporting worker.
        worker: PeerId,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
    },
    /// A worker reports progress; passed through if it holds the attempt.
    Progress {
        /// The reporting worker.
        worker: PeerId,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
        /// The report, untouched.
        report: R,
    },
    /// A worker streams output; passed through if it holds the attempt.
    Output {
        /// The reporting worker.
        worker: PeerId,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
        /// The output, untouched.
        data: R,
    },
    /// An attempt ended.
    Result {
        /// The reporting worker.
        worker: PeerId,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
        /// How it ended.
        report: Report<R>,
    },
    /// Time passed; nothing else happened.
    Tick,
    /// Reload the queue after a restart. Assigned and running jobs come back as pending. A
    /// live job's next attempt skips one number past its stored attempt, which the shell may
    /// have handed out without storing it. Every live job comes out as a
    /// [`Output::JobChanged`] carrying the skipped number, for the shell to store before it
    /// hands out another.
    Restore(Vec<RestoredJob<P>>),
}

/// Why the dispatcher asks a worker to stop an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// A user cancelled the job.
    Cancelled,
    /// The attempt outlived its timeout and grace.
    TimedOut,
    /// The worker runs an attempt it does not hold (stale, or from before a restart).
    NotHeld,
}

/// What the shell sends a worker to start an attempt.
#[derive(Clone, Debug)]
pub struct Assignment<P> {
    /// The worker to send it to.
    pub worker: Arc<PeerId>,
    /// The job.
    pub job: JobId,
    /// The attempt the worker must quote in its reports.
    pub attempt: Attempt,
    /// The job type.
    pub job_type: Arc<str>,
    /// Oneshot or continuous.
    pub mode: JobMode,
    /// The payload, untouched.
    pub payload: P,
    /// The job's priority.
    pub priority: i32,
    /// Seconds the attempt may run; 0 means no limit.
    pub timeout_s: u32,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The worker reported a result.
    Completed,
    /// The worker reported an error.
    Failed(Arc<str>),
    /// The host gave up waiting.
    TimedOut,
    /// The worker went away, or stopped running it.
    Lost(Arc<str>),
    /// A user cancelled the job.
    Cancelled,
    /// The host restarted while it ran.
    Interrupted,
}

/// One attempt at a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Its number.
    pub attempt: Attempt,
    /// The worker that held it.
    pub worker: Arc<PeerId>,
    /// When it was assigned.
    pub assigned_at: Millis,
    /// When the worker acknowledged it.
    pub acked_at: Option<Millis>,
    /// When it ended; `None` while it runs.
    pub ended_at: Option<Millis>,
    /// How it ended; `None` while it runs.
    pub end: Option<AttemptEnd>,
}

/// A job's new state, for the shell to persist and to notify watchers of.
#[derive(Clone, Debug)]
pub struct JobUpdate<R> {
    /// The job.
    pub id: JobId,
    /// Its status now.
    pub status: JobStatus,
    /// Its current or last attempt (0 before the first).
    pub attempt: Attempt,
    /// The worker holding the current attempt.
    pub worker: Option<Arc<PeerId>>,
    /// The last error; cleared on success and on user retry.
    pub error: Option<Arc<str>>,
    /// Failures counted against `max_retry`.
    pub retries: u32,
    /// Worker losses counted against the crash limit.
    pub losses: u32,
    /// When it was submitted.
    pub created_at: Millis,
    /// When the current or last attempt was assigned.
    pub started_at: Option<Millis>,
    /// When it reached a terminal status.
    pub done_at: Option<Millis>,
    /// A pending job waiting for backoff or `not_before`: when it becomes due.
    pub due_at: Option<Millis>,
    /// The result, when the job just completed.
    pub result: Option<R>,
}

/// Something for the shell to do.
#[derive(Clone, Debug)]
pub enum Output<P, R> {
    /// Send this attempt to its worker.
    Assign(Assignment<P>),
    /// Tell a worker to stop an attempt. Whatever it reports about it afterwards is ignored.
    Cancel {
        /// The worker.
        worker: Arc<PeerId>,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
        /// Why.
        reason: CancelReason,
    },
    /// A job changed: persist it and notify watchers. A terminal status is the last word on
    /// the job: the dispatcher keeps only that status afterwards.
    ///
    /// A submitted job is not announced as pending: the submit's `Ok` says that every job in
    /// it is pending now, except one announced as failed because a job it waits for failed.
    JobChanged(JobUpdate<R>),
    /// An attempt ended: append it to the job's stored history. Comes before the
    /// `JobChanged` it causes.
    AttemptEnded {
        /// The job.
        job: JobId,
        /// The attempt, with its end.
        record: AttemptRecord,
    },
    /// Progress from the worker holding the attempt.
    Progress {
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
        /// The report, untouched.
        report: R,
    },
    /// Output streamed by the worker holding the attempt.
    JobOutput {
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: Attempt,
        /// The output, untouched.
        data: R,
    },
    /// The dispatcher dropped a worker by itself (its lease expired).
    WorkerLost {
        /// The worker.
        worker: Arc<PeerId>,
        /// Why.
        reason: LeaveReason,
    },
    /// Call `step` with `Input::Tick` at this time (or earlier) even if nothing happens.
    /// Only the latest one counts.
    WakeAt(Millis),
}
