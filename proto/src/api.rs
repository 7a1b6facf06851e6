//! The JSON bodies of the local HTTP API that the server and the command-line client share:
//! cluster requests and responses, the error body, and the live events of `/api/cluster/events`.
//!
//! Goop²'s routes keep their shapes (`/api/cluster/submit` stays lenient about unknown fields and
//! negative numbers); the new batch route is strict, so a typo in a field name is an error rather
//! than a silently ignored setting.

use serde::{Deserialize, Serialize};

use crate::cluster::{JobState, Json, QueueStats, WorkerInfo};
use crate::{Admission, Attempt, GroupId, JobId, JobMode, JobStatus, PeerId, Timestamp};

/// The most jobs one batch submit may carry.
pub const MAX_SUBMIT_BATCH: usize = 10_000;

/// The body of every error response: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code, e.g. `invalid_json`, `not_found`, `not_host`, `conflict`, `unauthorized`.
    pub code: String,
    /// What failed and why, in lowercase.
    pub message: String,
}

/// One job in a batch submit (`POST /api/cluster/jobs`). Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The job type (required, non-empty).
    #[serde(rename = "type")]
    pub job_type: String,
    /// `oneshot` (default) or `continuous`.
    #[serde(default)]
    pub mode: JobMode,
    /// What the executor gets, untouched; any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Seconds an attempt may run; 0 means no limit.
    #[serde(default)]
    pub timeout_s: u64,
    /// Failures tolerated before the job is `failed`.
    #[serde(default)]
    pub max_retry: u32,
    /// Labels to filter by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Not started before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Jobs that must complete first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<JobId>,
    /// A key of the client's: submitting it again returns the job stored the first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl SubmitJob {
    /// A job of `job_type` with every setting at its default.
    pub fn new(job_type: impl Into<String>) -> Self {
        Self {
            job_type: job_type.into(),
            mode: JobMode::Oneshot,
            payload: None,
            priority: 0,
            timeout_s: 0,
            max_retry: 0,
            labels: Vec::new(),
            not_before: None,
            after: Vec::new(),
            idempotency_key: None,
        }
    }
}

/// `POST /api/cluster/jobs` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    /// The jobs, stored all or none (each a JSON object).
    #[serde(deserialize_with = "crate::objects")]
    pub jobs: Vec<SubmitJob>,
}

/// `POST /api/cluster/jobs` response: the ids in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitBatchResponse {
    /// One id per submitted job.
    pub job_ids: Vec<JobId>,
}

/// `POST /api/cluster/cancel`, `/retry` and `/delete` request: `{"job_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdRequest {
    /// The job.
    pub job_id: JobId,
}

/// `POST /api/cluster/create` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCluster {
    /// A name for people; default `Cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host this existing cluster group, one this peer hosts but runs no cluster for (made
    /// with `POST /api/groups`), instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// The most workers; 0 means no limit.
    #[serde(default)]
    pub max_members: u32,
    /// Who may join as a worker: anyone (`open`, the default) or only the peers the host
    /// invited (`invite`). For a new group only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
}

/// `GET /api/cluster/status` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `host`, `worker`, or `""` when this peer is in no cluster.
    pub role: String,
    /// The cluster's group id (`""` when none).
    pub group_id: String,
    /// Queue counters, on a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<QueueStats>,
    /// The executor, on a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_path: Option<String>,
    /// The executor mode, on a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_mode: Option<String>,
    /// The worker's own status, on a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_status: Option<String>,
}

/// A live event of `GET /api/cluster/events`; the SSE event name is [`ClusterEvent::name`].
///
/// Serialized, it is the inner object alone; read it back with [`ClusterEvent::decode`] and the
/// event name.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ClusterEvent {
    /// A job changed status, attempt or worker (SSE `job`).
    Job(JobEvent),
    /// Progress of a running attempt (SSE `progress`).
    Progress(ProgressEvent),
    /// Streamed output of an attempt (SSE `output`).
    Output(OutputEvent),
    /// A log line from an attempt's executor (SSE `log`).
    Log(LogEvent),
    /// A worker joined, changed or left (SSE `worker`).
    Worker(WorkerEvent),
    /// The subscriber fell behind and missed events; it should re-read state (SSE `lagged`).
    Lagged {
        /// How many events it missed.
        missed: u64,
    },
}

impl ClusterEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Job(_) => "job",
            Self::Progress(_) => "progress",
            Self::Output(_) => "output",
            Self::Log(_) => "log",
            Self::Worker(_) => "worker",
            Self::Lagged { .. } => "lagged",
        }
    }

    /// Decodes the data of an SSE event called `name`.
    pub fn decode(name: &str, data: &str) -> Result<Self, serde_json::Error> {
        Ok(match name {
            "job" => Self::Job(serde_json::from_str(data)?),
            "progress" => Self::Progress(serde_json::from_str(data)?),
            "output" => Self::Output(serde_json::from_str(data)?),
            "log" => Self::Log(serde_json::from_str(data)?),
            "worker" => Self::Worker(serde_json::from_str(data)?),
            _ => {
                #[derive(Deserialize)]
                struct Lag {
                    missed: u64,
                }
                let lag: Lag = serde_json::from_str(data)?;
                Self::Lagged { missed: lag.missed }
            }
        })
    }
}

/// A job's status change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// Its status now.
    pub status: JobStatus,
    /// Its current attempt.
    #[serde(default)]
    pub attempt: Attempt,
    /// The worker holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<PeerId>,
    /// Failures counted so far.
    #[serde(default)]
    pub retries: u32,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from submit to the terminal status, when it just ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// Progress of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: Attempt,
    /// Percent done.
    pub percent: f64,
    /// What is happening.
    #[serde(default)]
    pub message: String,
}

/// Output of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputEvent {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: Attempt,
    /// The output, untouched.
    pub data: Json,
}

/// A log line of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEvent {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: Attempt,
    /// The line.
    pub msg: String,
    /// `stdout`, `stderr` or `executor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// A worker's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// The worker as it is now.
    pub worker: WorkerInfo,
    /// Whether it just left.
    #[serde(default)]
    pub left: bool,
}

/// `GET /api/cluster/jobs/{id}` response: the job with its attempt history.
pub type JobDetail = JobState;
