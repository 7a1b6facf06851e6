//! Job status and mode, with their Goop² string forms.

use serde::{Deserialize, Serialize};

/// Where a job is in its life. `completed`, `failed` and `cancelled` are terminal: only an
/// explicit user retry of a failed or cancelled job moves it out again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker (or for its backoff, `not_before` or `after` jobs).
    Pending,
    /// Sent to a worker, not yet acknowledged.
    Assigned,
    /// Acknowledged by the worker that holds the current attempt.
    Running,
    /// Finished with a result.
    Completed,
    /// Out of retries, or failed for a reason no retry can fix.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobStatus {
    /// Whether nothing but a user retry moves a job out of this status.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The status as Goop² writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a job runs: to one result, or streaming output until cancelled or ended by the executor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobMode {
    /// Runs once to a result.
    #[default]
    Oneshot,
    /// Runs until cancelled or until the executor ends it; streams `output` lines meanwhile.
    Continuous,
}
