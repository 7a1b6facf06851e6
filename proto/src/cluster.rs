//! Cluster records and the host ⇄ worker wire messages.
//!
//! Records (`Job`, `JobState`, `WorkerInfo`, `QueueStats`) keep Goop²'s JSON field names so its
//! HTTP clients keep working, with our additions (attempts, labels, dependencies) omitted when
//! empty. Messages travel on topic `cluster:<group id>:<message type>` with a bare JSON object
//! as payload; [`ClusterMessage::decode`] and [`ClusterMessage::encode_payload`] convert them.
//! Payloads and results stay raw JSON text end to end, so no number is ever rounded.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::{Attempt, GroupId, JobId, JobMode, JobStatus, PeerId, Timestamp};

mod batch;

/// Raw JSON text, carried without being parsed: payloads, results, output data. Shared, so a
/// payload held for retries is not copied for every attempt.
pub type Json = Arc<RawValue>;

/// The most messages one batch may carry; a larger batch is refused whole.
pub const MAX_BATCH: usize = 4096;

/// A job as submitted: Goop²'s `Job` object (found under `"job"` in a [`JobState`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The job type, matched exactly against a worker's types.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Oneshot or continuous. Goop² may store `""`, which means oneshot.
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: JobMode,
    /// What the executor gets, untouched. Absent and `null` are both `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
    /// Higher runs first; negatives allowed.
    #[serde(default)]
    pub priority: i32,
    /// Seconds an attempt may run; 0 means no limit (Goop²'s negatives read as 0).
    #[serde(default, deserialize_with = "de_non_negative")]
    pub timeout_s: u64,
    /// Failures tolerated before the job is `failed` (Goop²'s negatives read as 0).
    #[serde(default, deserialize_with = "de_non_negative")]
    pub max_retry: u32,
    /// Free-form labels to filter by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The job is not started before this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_time"
    )]
    pub not_before: Option<Timestamp>,
    /// Jobs that must complete before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<JobId>,
}

/// How an attempt ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The executor returned a result.
    Completed,
    /// The executor reported an error, or its process failed.
    Failed,
    /// The attempt outlived `timeout_s`.
    TimedOut,
    /// A user cancelled the job.
    Cancelled,
    /// The worker or its executor was lost; this costs no retry.
    Lost,
}

impl AttemptOutcome {
    /// The name on the wire and in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
        }
    }
}

/// One attempt at a job: who ran it, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's number.
    pub attempt: Attempt,
    /// The worker that held it.
    pub worker_id: PeerId,
    /// When it was assigned.
    pub started_at: Timestamp,
    /// When it ended, if it has.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_time"
    )]
    pub ended_at: Option<Timestamp>,
    /// How it ended, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    /// The error text of a failed, timed-out or lost attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job and where it is: Goop²'s `JobState`, plus the current attempt and the attempt history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    /// The job as submitted.
    pub job: Job,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The current or last worker.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_peer"
    )]
    pub worker_id: Option<PeerId>,
    /// The result of a completed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Json>,
    /// The last failure text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_string"
    )]
    pub error: Option<String>,
    /// The last reported percentage (may be fractional).
    #[serde(
        default,
        skip_serializing_if = "is_zero_f64",
        serialize_with = "ser_number"
    )]
    pub progress: f64,
    /// The last progress message.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_string"
    )]
    pub progress_msg: Option<String>,
    /// Failures counted against `max_retry`.
    #[serde(default, deserialize_with = "de_non_negative")]
    pub retries: u32,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When the current or last attempt was assigned.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_time"
    )]
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_time"
    )]
    pub done_at: Option<Timestamp>,
    /// `done_at − started_at` of a finished job.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_non_zero"
    )]
    pub elapsed_ms: Option<u64>,
    /// The current attempt's number (0 before the first assignment).
    #[serde(default, skip_serializing_if = "is_first_attempt")]
    pub attempt: Attempt,
    /// Times a worker or executor was lost while running this job (the poison-job count).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub losses: u32,
    /// Every attempt so far, oldest first (filled in the job detail view).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
}

/// A worker's status as the host sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Joined the group; its executor is not verified yet.
    Joined,
    /// Verified (Goop² defines it and never uses it; we accept it on input).
    Verified,
    /// Verified, with no running job.
    Idle,
    /// Verified, running at least one job.
    Busy,
    /// Takes no new jobs until resumed.
    Paused,
    /// Not reachable.
    Offline,
}

/// A worker as the host sees it: Goop²'s `WorkerInfo`, plus the executor's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's peer id.
    pub peer_id: PeerId,
    /// Its status.
    pub status: WorkerStatus,
    /// The executor path it reported, for display.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_string"
    )]
    pub binary_path: Option<String>,
    /// The executor mode it reported, for display.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_string"
    )]
    pub binary_mode: Option<String>,
    /// Whether its executor passed the `__check__` handshake.
    pub verified: bool,
    /// The job types it serves; empty means all.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_types"
    )]
    pub job_types: Vec<String>,
    /// Jobs it may run at once.
    pub capacity: u32,
    /// Jobs it runs now.
    pub running_jobs: u32,
    /// When the host last heard from it.
    pub last_seen: Timestamp,
    /// The executor's version from the handshake.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_string"
    )]
    pub version: Option<String>,
}

/// Queue counters: Goop²'s `QueueStats` plus `assigned` and `cancelled`.
///
/// As in Goop², `pending` counts pending **and** assigned jobs; `assigned` is the assigned part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Jobs waiting for a worker or sent but not acknowledged.
    pub pending: u64,
    /// Jobs a worker acknowledged.
    pub running: u64,
    /// Completed jobs.
    pub completed: u64,
    /// Failed jobs.
    pub failed: u64,
    /// Worker records, verified or not.
    pub workers: u64,
    /// The part of `pending` that is assigned.
    #[serde(default)]
    pub assigned: u64,
    /// Cancelled jobs.
    #[serde(default)]
    pub cancelled: u64,
}

/// `job:assign`, host → worker: run this attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobAssign {
    /// The job.
    pub job_id: JobId,
    /// Its type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Its payload; `None` is sent as `null`, as Goop² does.
    #[serde(default)]
    pub payload: Option<Json>,
    /// Seconds the attempt may run; 0 means no limit.
    #[serde(default, deserialize_with = "de_non_negative")]
    pub timeout_s: u64,
    /// The attempt being assigned.
    #[serde(default)]
    pub attempt: Attempt,
    /// Oneshot or continuous.
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: JobMode,
    /// The job's priority, so a worker can order its own backlog.
    #[serde(default)]
    pub priority: i32,
}

/// `job:ack` (worker → host), `job:cancel` (host → worker): a reference to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// The job.
    pub job_id: JobId,
    /// The attempt (0 from a Goop² peer, which has no attempts).
    #[serde(default)]
    pub attempt: Attempt,
}

/// `job:progress`, worker → host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobProgress {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    #[serde(default)]
    pub attempt: Attempt,
    /// Percent done; fractions allowed.
    #[serde(default, serialize_with = "ser_number")]
    pub percent: f64,
    /// What is happening.
    #[serde(default)]
    pub message: String,
}

/// The result status of a `job:result`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// The executor returned a result.
    Completed,
    /// The attempt failed; the error says why.
    Failed,
    /// The attempt ran past its time limit on the worker (`timed_out`); a failure like
    /// `failed`, recorded as a timeout.
    #[serde(rename = "timed_out")]
    TimedOut,
    /// The executor was lost (a daemon crash); the host requeues without spending a retry.
    Lost,
    /// The worker could not start the attempt (its executor could not be started, or was
    /// given up on before the job ran; a message of our own): the host requeues without
    /// spending a retry or counting a loss.
    #[serde(rename = "not_started")]
    NotStarted,
}

/// `job:result`, worker → host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    #[serde(default)]
    pub attempt: Attempt,
    /// How it ended.
    pub status: ResultStatus,
    /// The result of a completed attempt (may be `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Json>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the executor ran, as the worker measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

/// `job:output`, worker → host: a piece of streamed output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobOutput {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    #[serde(default)]
    pub attempt: Attempt,
    /// The output, untouched.
    pub data: Json,
}

/// `job:log`, worker → host: a log line from the executor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobLog {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    #[serde(default)]
    pub attempt: Attempt,
    /// The line.
    pub msg: String,
    /// Where it came from: `stdout`, `stderr` or `executor` (a `log` line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// `worker:verified`, worker → host: the outcome of the `__check__` handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerVerified {
    /// Whether the executor passed.
    pub ok: bool,
    /// The types it serves; `null` or empty means all.
    #[serde(default, deserialize_with = "de_types")]
    pub types: Vec<String>,
    /// Jobs at once; 0 keeps the host's previous value (default 1).
    #[serde(default, deserialize_with = "de_non_negative")]
    pub capacity: u32,
    /// The executor's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `worker:binary`, worker → host: the executor it runs, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBinary {
    /// Path of the executor.
    #[serde(default)]
    pub path: String,
    /// `oneshot` or `daemon`.
    #[serde(default)]
    pub mode: String,
}

/// `worker:status`, worker → host: `paused` or `idle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatusUpdate {
    /// The new status.
    pub status: String,
}

/// `worker:pause` and `worker:resume`, host → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerAction {
    /// `pause` or `resume` (informational, as in Goop²).
    #[serde(default)]
    pub action: String,
}

/// `worker:heartbeat`, worker → host: the attempts it runs, which renews its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    /// The attempts it is running now.
    #[serde(default)]
    pub running: Vec<JobRef>,
}

/// `shutdown`, host → workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// One host ⇄ worker message. Its type travels in the topic, its fields in the payload.
#[derive(Debug, Clone)]
pub enum ClusterMessage {
    /// `job:assign`
    JobAssign(JobAssign),
    /// `job:ack`
    JobAck(JobRef),
    /// `job:progress`
    JobProgress(JobProgress),
    /// `job:result`
    JobResult(JobResult),
    /// `job:output`
    JobOutput(JobOutput),
    /// `job:log`
    JobLog(JobLog),
    /// `job:cancel`
    JobCancel(JobRef),
    /// `worker:verified`
    WorkerVerified(WorkerVerified),
    /// `worker:binary`
    WorkerBinary(WorkerBinary),
    /// `worker:status`
    WorkerStatus(WorkerStatusUpdate),
    /// `worker:pause`
    WorkerPause(WorkerAction),
    /// `worker:resume`
    WorkerResume(WorkerAction),
    /// `worker:verify` (an addition): the host asks the worker to tell its executor again, as
    /// after a join the host took for a restart.
    WorkerVerify(WorkerAction),
    /// `worker:heartbeat`
    WorkerHeartbeat(WorkerHeartbeat),
    /// `shutdown`
    Shutdown(Shutdown),
    /// `batch`: many messages in one, `{"messages":[{"type":..,"payload":..}]}`; never nested.
    Batch(Vec<ClusterMessage>),
}

/// Who may send a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sender {
    /// Only the cluster's host.
    Host,
    /// Only a worker (and for job reports, only the one holding the attempt).
    Worker,
    /// Either (a batch: its parts say).
    Either,
}

/// Why a cluster message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message type is not one we know.
    #[error("unknown cluster message type {0:?}")]
    UnknownType(String),
    /// The payload does not have the fields the type needs.
    #[error("malformed {msg_type} message: {source}")]
    Malformed {
        /// The message type.
        msg_type: String,
        /// What was wrong.
        source: serde_json::Error,
    },
    /// A batch inside a batch.
    #[error("a batch may not contain a batch")]
    NestedBatch,
    /// A batch over [`MAX_BATCH`] messages.
    #[error("batch of {0} messages is over the limit of {MAX_BATCH}")]
    BatchTooLarge(usize),
}

#[derive(Serialize)]
struct BatchItem<T, P> {
    #[serde(rename = "type")]
    msg_type: T,
    payload: P,
}

#[derive(Serialize)]
struct BatchOut<'a> {
    messages: Vec<BatchItem<&'a str, &'a RawValue>>,
}

/// `value` as JSON, without parsing it again: serializing these plain structs cannot fail
/// (every map key is a string and every value is representable).
fn raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl ClusterMessage {
    /// The message type, as it appears in the topic.
    pub fn msg_type(&self) -> &'static str {
        match self {
            Self::JobAssign(_) => "job:assign",
            Self::JobAck(_) => "job:ack",
            Self::JobProgress(_) => "job:progress",
            Self::JobResult(_) => "job:result",
            Self::JobOutput(_) => "job:output",
            Self::JobLog(_) => "job:log",
            Self::JobCancel(_) => "job:cancel",
            Self::WorkerVerified(_) => "worker:verified",
            Self::WorkerBinary(_) => "worker:binary",
            Self::WorkerStatus(_) => "worker:status",
            Self::WorkerPause(_) => "worker:pause",
            Self::WorkerResume(_) => "worker:resume",
            Self::WorkerVerify(_) => "worker:verify",
            Self::WorkerHeartbeat(_) => "worker:heartbeat",
            Self::Shutdown(_) => "shutdown",
            Self::Batch(_) => "batch",
        }
    }

    /// Who may send this message.
    pub fn sender(&self) -> Sender {
        match self {
            Self::JobAssign(_)
            | Self::JobCancel(_)
            | Self::WorkerPause(_)
            | Self::WorkerResume(_)
            | Self::WorkerVerify(_)
            | Self::Shutdown(_) => Sender::Host,
            Self::Batch(_) => Sender::Either,
            _ => Sender::Worker,
        }
    }

    /// Decodes the payload of a message whose topic named `msg_type`.
    pub fn decode(msg_type: &str, payload: &str) -> Result<Self, DecodeError> {
        if msg_type == "batch" {
            return batch::decode(payload);
        }
        let malformed = |source| DecodeError::Malformed {
            msg_type: msg_type.to_owned(),
            source,
        };
        let mut de = serde_json::Deserializer::from_str(payload);
        let message = Self::typed(msg_type, &mut de)
            .ok_or_else(|| DecodeError::UnknownType(msg_type.to_owned()))?
            .map_err(malformed)?;
        de.end().map_err(malformed)?;
        Ok(message)
    }

    /// The message of type `msg_type` read from `de`; `None` when the type is not one we know
    /// or is `batch` (which only [`ClusterMessage::decode`] takes, at the top).
    fn typed<'de, D: Deserializer<'de>>(msg_type: &str, de: D) -> Option<Result<Self, D::Error>> {
        Some(match msg_type {
            "job:assign" => Deserialize::deserialize(de).map(Self::JobAssign),
            "job:ack" => Deserialize::deserialize(de).map(Self::JobAck),
            "job:progress" => Deserialize::deserialize(de).map(Self::JobProgress),
            "job:result" => Deserialize::deserialize(de).map(Self::JobResult),
            "job:output" => Deserialize::deserialize(de).map(Self::JobOutput),
            "job:log" => Deserialize::deserialize(de).map(Self::JobLog),
            "job:cancel" => Deserialize::deserialize(de).map(Self::JobCancel),
            "worker:verified" => Deserialize::deserialize(de).map(Self::WorkerVerified),
            "worker:binary" => Deserialize::deserialize(de).map(Self::WorkerBinary),
            "worker:status" => Deserialize::deserialize(de).map(Self::WorkerStatus),
            "worker:pause" => Deserialize::deserialize(de).map(Self::WorkerPause),
            "worker:resume" => Deserialize::deserialize(de).map(Self::WorkerResume),
            "worker:verify" => Deserialize::deserialize(de).map(Self::WorkerVerify),
            "worker:heartbeat" => Deserialize::deserialize(de).map(Self::WorkerHeartbeat),
            "shutdown" => Deserialize::deserialize(de).map(Self::Shutdown),
            _ => return None,
        })
    }

    /// The payload of a `batch` of messages already encoded, each given as its type and its
    /// payload: a sender can size its batches by the bytes they will take.
    pub fn batch_payload<'a>(
        parts: impl IntoIterator<Item = (&'a str, &'a RawValue)>,
    ) -> Box<RawValue> {
        let messages = parts
            .into_iter()
            .map(|(msg_type, payload)| BatchItem { msg_type, payload })
            .collect();
        raw(&BatchOut { messages })
    }

    /// The payload as JSON.
    pub fn encode_payload(&self) -> Box<RawValue> {
        match self {
            Self::JobAssign(m) => raw(m),
            Self::JobAck(m) | Self::JobCancel(m) => raw(m),
            Self::JobProgress(m) => raw(m),
            Self::JobResult(m) => raw(m),
            Self::JobOutput(m) => raw(m),
            Self::JobLog(m) => raw(m),
            Self::WorkerVerified(m) => raw(m),
            Self::WorkerBinary(m) => raw(m),
            Self::WorkerStatus(m) => raw(m),
            Self::WorkerPause(m) | Self::WorkerResume(m) | Self::WorkerVerify(m) => raw(m),
            Self::WorkerHeartbeat(m) => raw(m),
            Self::Shutdown(m) => raw(m),
            Self::Batch(messages) => {
                let parts: Vec<(&str, Box<RawValue>)> = messages
                    .iter()
                    .map(|m| (m.msg_type(), m.encode_payload()))
                    .collect();
                Self::batch_payload(parts.iter().map(|(t, p)| (*t, &**p)))
            }
        }
    }
}

/// The MQ topic of a cluster message: `cluster:<group id>:<message type>`.
pub fn cluster_topic(group: &GroupId, msg_type: &str) -> String {
    format!("cluster:{group}:{msg_type}")
}

/// Splits a cluster topic into its group id and message type (which may itself hold `:`).
pub fn parse_cluster_topic(topic: &str) -> Option<(GroupId, &str)> {
    let rest = topic.strip_prefix("cluster:")?;
    let (group, msg_type) = rest.split_once(':')?;
    if msg_type.is_empty() {
        return None;
    }
    Some((group.parse().ok()?, msg_type))
}

fn is_zero_f64(value: &f64) -> bool {
    *value == 0.0
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

fn is_first_attempt(value: &Attempt) -> bool {
    value.0 == 0
}

/// Writes a whole number without a fraction (`50`, not `50.0`), so Goop²'s integer readers
/// still parse it; a fraction is written as is.
fn ser_number<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "whole and within i64 range, checked above"
        )]
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// Reads any JSON number as a non-negative integer: Goop² sent numbers through float64, and
/// uses negatives to mean "none", which is 0 here.
fn de_non_negative<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Default,
{
    let value = serde_json::Number::deserialize(deserializer)?;
    let whole = if let Some(u) = value.as_u64() {
        u
    } else if value.as_i64().is_some() {
        0
    } else {
        let f = value.as_f64().unwrap_or(0.0);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "Goop² truncates, and negatives mean none"
        )]
        let truncated = if f > 0.0 { f as u64 } else { 0 };
        truncated
    };
    T::try_from(whole).map_err(|_| de::Error::custom(format!("number {whole} is out of range")))
}

fn de_opt_non_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value: u64 = de_non_negative(deserializer)?;
    Ok((value != 0).then_some(value))
}

/// Goop² writes `""` for a mode it did not set; anything but `continuous` is oneshot there.
fn de_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JobMode, D::Error> {
    let mode = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    match &*mode {
        "continuous" => Ok(JobMode::Continuous),
        "oneshot" | "" => Ok(JobMode::Oneshot),
        other => Err(de::Error::custom(format!(
            "unknown job mode {other:?}: expected oneshot or continuous"
        ))),
    }
}

/// Goop² writes `""` (or the zero time) for a time that is not set.
fn de_opt_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    let time = Option::<Timestamp>::deserialize(deserializer)?;
    Ok(time.filter(|t| !t.is_zero() && t.as_unix_ms() != GO_ZERO_TIME_MS))
}

/// Go's zero `time.Time`, 0001-01-01T00:00:00Z, in Unix milliseconds.
const GO_ZERO_TIME_MS: i64 = -62_135_596_800_000;

/// Goop² omits empty strings or writes `""`; both mean none.
fn de_opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.is_empty()))
}

fn de_opt_peer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PeerId>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(de::Error::custom),
    }
}

/// Types as Goop² reads them: `null` or a non-array means all; non-string and empty entries are
/// dropped.
fn de_types<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                serde_json::Value::String(s) if !s.is_empty() => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}
