//! Why an input was refused or ignored.

use proto::{Attempt, JobId, JobStatus, PeerId};

/// Why [`Dispatcher::step`](crate::Dispatcher::step) did not apply an input. The input changed
/// nothing (a refused batch is refused whole); timers due by the step's time still fired.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// No job has this id (or it was forgotten).
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// A submitted or restored id is already in use.
    #[error("job {0} already exists")]
    DuplicateJob(JobId),
    /// An `after` entry names a job that is not known yet.
    #[error("job {job} waits for unknown job {dependency}")]
    UnknownDependency {
        /// The job being submitted.
        job: JobId,
        /// The id it names.
        dependency: JobId,
    },
    /// A retried job waits for a job that failed or was cancelled: that one must be retried
    /// first.
    #[error(
        "job {job} waits for job {dependency}, which is {}: retry that one first",
        status.as_str()
    )]
    DependencyFailed {
        /// The job being retried.
        job: JobId,
        /// The job it waits for.
        dependency: JobId,
        /// That job's status.
        status: JobStatus,
    },
    /// The job type is empty.
    #[error("job {0} has an empty type")]
    EmptyType(JobId),
    /// The job type is too long.
    #[error("job {job} has a type of {len} bytes, more than the limit of {max}")]
    TypeTooLong {
        /// The job.
        job: JobId,
        /// Its type's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Accepting the jobs would exceed the limit on live jobs.
    #[error("queue full: {live} live jobs, limit {max}")]
    QueueFull {
        /// Jobs live now.
        live: usize,
        /// The limit.
        max: usize,
    },
    /// Only failed and cancelled jobs can be retried.
    #[error("job {job} is {}: only failed or cancelled jobs can be retried", status.as_str())]
    NotRetryable {
        /// The job.
        job: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// The job is already finished.
    #[error("job {job} already in terminal state {}", status.as_str())]
    AlreadyTerminal {
        /// The job.
        job: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// Only terminal jobs can be forgotten.
    #[error("job {job} is {}: cancel it first", status.as_str())]
    NotTerminal {
        /// The job.
        job: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// No worker has this id.
    #[error("unknown worker {0}")]
    UnknownWorker(PeerId),
    /// A report about an attempt the sender does not hold now; ignored.
    #[error("report on job {job} attempt {attempt} from {worker} ignored: {reason}")]
    Ignored {
        /// The job named in the report.
        job: JobId,
        /// The attempt named in the report.
        attempt: Attempt,
        /// The sender.
        worker: PeerId,
        /// Why it was ignored.
        reason: IgnoreReason,
    },
}

/// Why a worker's report was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreReason {
    /// The job is not known.
    #[error("unknown job")]
    UnknownJob,
    /// The job is finished (completed, failed or cancelled).
    #[error("job is {}", .0.as_str())]
    Finished(JobStatus),
    /// The job is waiting for an attempt.
    #[error("job is not assigned")]
    NotAssigned,
    /// The attempt is not the current one.
    #[error("attempt is not current (current is {0})")]
    Stale(Attempt),
    /// Another worker holds the attempt.
    #[error("sender does not hold the attempt")]
    Foreign,
    /// The report was already applied.
    #[error("duplicate report")]
    Duplicate,
}
