//! What goes in and out of the runtime for one job: the job to run, the events it produces
//! while it runs, and how it ended.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use proto::{Attempt, JobId, JobMode};
use serde_json::value::RawValue;

/// One job to run through the executor.
#[derive(Debug)]
pub struct JobSpec {
    /// The job id, written as `job_id` on the job line.
    pub id: JobId,
    /// Which attempt this is, written as `attempt`.
    pub attempt: Attempt,
    /// The job type, written as `type`.
    pub job_type: String,
    /// Oneshot or continuous, written as `mode`.
    pub mode: JobMode,
    /// The input, raw JSON (`null` when there is none).
    pub payload: Arc<RawValue>,
    /// The time limit; `None` for none. The job line carries it rounded up to whole seconds.
    pub timeout: Option<Duration>,
}

impl JobSpec {
    /// The `timeout_s` field of the job line: whole seconds, rounded up; 0 for none.
    pub fn timeout_s(&self) -> u64 {
        self.timeout
            .map_or(0, |t| t.as_secs() + u64::from(t.subsec_nanos() > 0))
    }
}

/// Something that happened to a job, in order; `Finished` is always the last.
#[derive(Debug)]
pub struct Event {
    /// The job.
    pub job: JobId,
    /// The attempt the event is about.
    pub attempt: Attempt,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of job event.
#[derive(Debug)]
pub enum EventKind {
    /// The job reached the executor: its process started (oneshot) or its line was queued for
    /// the daemon. Only sent when `ExecutorConfig::started_events` is on; dropped rather than
    /// waited for when the receiver is full.
    Started,
    /// A `progress` line. Dropped rather than waited for when the receiver is full.
    Progress {
        /// Percent done, as the executor wrote it.
        pct: f64,
        /// Its message.
        msg: String,
    },
    /// An `output` line: partial output of a continuous job.
    Output(Box<RawValue>),
    /// A log line: a `log` line, a stdout line that is not protocol, or a stderr line. Dropped
    /// rather than waited for when the receiver is full.
    Log {
        /// Where it came from.
        stream: LogStream,
        /// The text, cut at the configured limit.
        line: String,
    },
    /// The job ended.
    Finished(Outcome),
}

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// stdout: a `log` line, or a line that is not part of the protocol.
    Stdout,
    /// stderr.
    Stderr,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// A `done` line, with its result.
    Completed {
        /// The result, raw JSON.
        result: Box<RawValue>,
    },
    /// The job failed: it counts against the job's retries.
    Failed(Failure),
    /// The job was cancelled as asked.
    Cancelled,
    /// The executor went away under the job (a daemon crash, or the runtime shutting down).
    /// This is not the job's fault: it may be run again without spending a retry.
    ExecutorLost(Failure),
}

impl Outcome {
    /// The failure, for `Failed` and `ExecutorLost`.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Failed(failure) | Self::ExecutorLost(failure) => Some(failure),
            Self::Completed { .. } | Self::Cancelled => None,
        }
    }
}

/// Why a job failed or was lost.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The cause.
    pub kind: FailureKind,
    /// What happened, in words: the verbatim text of an `error` line, or `timed out after 5s`,
    /// `exited with status 2`, `killed by signal 9 (SIGKILL)` and so on.
    pub message: String,
    /// The end of the executor's stderr, when it wrote any.
    pub stderr_tail: Option<String>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            stderr_tail: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The causes of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The executor printed an `error` line; the message is its text.
    ErrorLine,
    /// The job ran past its time limit and was stopped.
    TimedOut,
    /// The executor exited with a non-zero status without a result.
    Exited,
    /// The executor was killed by a signal without a result.
    Signaled,
    /// The executor exited cleanly without a result.
    NoResult,
    /// The executor printed a line longer than the limit.
    LineTooLong,
    /// The executor could not be started, or its pipes failed.
    Io,
    /// The runtime refused the job (its id is already running, or the executor is unusable).
    Rejected,
    /// The daemon died or stopped answering (for `ExecutorLost`).
    Crashed,
    /// The runtime is shutting down (for `ExecutorLost`).
    ShutDown,
}

/// Formats a time limit the way outcomes quote it: `5s`, or `1.5s` for a fraction.
pub(crate) fn format_limit(limit: Duration) -> String {
    if limit.subsec_nanos() == 0 {
        format!("{}s", limit.as_secs())
    } else {
        format!("{}s", limit.as_secs_f64())
    }
}
