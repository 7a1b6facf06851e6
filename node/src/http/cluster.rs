//! The cluster routes: Goop²'s `/api/cluster/*` with their bodies and status codes, plus batch
//! submit, paged and filtered job lists, job detail with attempts, retry, and the live event
//! stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use proto::api::{
    ClusterEvent, ClusterStatus, CreateCluster, JobIdRequest, MAX_SUBMIT_BATCH, SubmitBatch,
    SubmitBatchResponse, SubmitJob,
};
use proto::cluster::{JobState, QueueStats, WorkerInfo};
use proto::{JobId, JobMode, JobStatus, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use store::ListFilter;
use tokio::sync::broadcast::error::RecvError;

use super::api::{JsonBody, QueryParams, SSE_KEEP_ALIVE};
use super::{ApiError, AppState};
use crate::cluster::host::{HostError, HostHandle};
use crate::cluster::service::{ClusterError, JoinTry, WorkerSettings};

#[derive(Serialize)]
pub(crate) struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_id: Option<PeerId>,
    /// Why a join is still under way (`joining`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn status(status: &'static str) -> Status {
    Status {
        status,
        job_id: None,
        group_id: None,
        peer_id: None,
        reason: None,
    }
}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> Self {
        use dispatcher::StepError;
        let (status, code) = match &error {
            HostError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            HostError::Refused(StepError::UnknownJob(_)) => (StatusCode::NOT_FOUND, "not_found"),
            HostError::Refused(StepError::UnknownDependency { .. }) => {
                (StatusCode::BAD_REQUEST, "unknown_dependency")
            }
            HostError::Refused(StepError::QueueFull { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "queue_full")
            }
            HostError::Refused(StepError::EmptyType(_) | StepError::TypeTooLong { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            HostError::Refused(_) => (StatusCode::CONFLICT, "conflict"),
            HostError::Store(e) if e.is_disk_full() => {
                (StatusCode::INSUFFICIENT_STORAGE, "storage_full")
            }
            HostError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            HostError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            HostError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Host(error) => error.into(),
            ClusterError::NotHost => {
                Self::new(StatusCode::CONFLICT, "not_host", "not a cluster host")
            }
            ClusterError::NotWorker => {
                Self::new(StatusCode::CONFLICT, "not_worker", "not a cluster worker")
            }
            ClusterError::Busy(_) | ClusterError::EndedWhileStarting => {
                Self::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            // Only `create` names a group: the field is wrong.
            ClusterError::NotHosted(_) | ClusterError::NotClusterGroup { .. } => {
                Self::bad_request("invalid_group_id", format!("group_id: {error}"))
            }
            ClusterError::Executor(_) => Self::bad_request("executor", error.to_string()),
            ClusterError::Group(_) | ClusterError::Settings { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cluster",
                error.to_string(),
            ),
        }
    }
}

fn host(state: &AppState) -> Result<HostHandle, ApiError> {
    state
        .cluster
        .host()
        .ok_or_else(|| ClusterError::NotHost.into())
}

/// `POST /api/cluster/create {name?, group_id?, max_members?, admission?}`: a new cluster
/// group, or with `group_id` a cluster group this peer hosts but runs no cluster for.
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateCluster>,
) -> Result<Json<Status>, ApiError> {
    if body.group_id.is_some() && body.admission.is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "admission applies to a new cluster only; change an existing group's with POST /api/groups/meta",
        ));
    }
    if let Some(host) = state.cluster.host()
        && body.group_id.as_ref().is_none_or(|g| g == host.group())
    {
        // Creating again while hosting answers with the cluster there is, unless it was asked
        // for with another admission: an operator asking for an invite-only cluster must not
        // be told yes about an open one.
        if let Some(wanted) = body.admission {
            let hosted = state.groups.hosted_groups().await.map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "group", e.to_string())
            })?;
            let admission = hosted
                .iter()
                .find(|g| &g.id == host.group())
                .map(|g| g.admission);
            if admission.is_some_and(|a| a != wanted) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "already hosting cluster {} with another admission; change it with POST /api/groups/meta",
                        host.group()
                    ),
                ));
            }
        }
        return Ok(Json(Status {
            group_id: Some(host.group().to_string()),
            ..status("created")
        }));
    }
    let group = match body.group_id {
        Some(group) => {
            state.cluster.host_existing(group.clone()).await?;
            group
        }
        None => {
            let name = body
                .name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "Cluster".into());
            let admission = body.admission.unwrap_or_default();
            state
                .cluster
                .create(name, body.max_members, admission)
                .await?
        }
    };
    Ok(Json(Status {
        group_id: Some(group.to_string()),
        ..status("created")
    }))
}

#[derive(Deserialize)]
pub(crate) struct JoinBody {
    host_peer_id: Option<String>,
    group_id: Option<String>,
    executor: Option<std::path::PathBuf>,
    mode: Option<String>,
    capacity: Option<u32>,
}

/// How long a join route waits for the first try of the join, beyond the group layer's own
/// join timeout (5 s) which bounds it.
const FIRST_JOIN_WAIT: Duration = Duration::from_secs(10);

/// `POST /api/cluster/join {host_peer_id, group_id, executor, mode?, capacity?}`: answered
/// once the first try of the join is over. `200 joined`: the host welcomed this peer. `202
/// joining` (with a `reason`): the host is not reachable yet, or its group is full, and the
/// worker keeps trying in the background. `502` with the host's reason as the code
/// (`forbidden`, `not_invited`, `unknown_group`): refused for good, and the role has ended.
pub(crate) async fn join(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<JoinBody>,
) -> Result<(StatusCode, Json<Status>), ApiError> {
    let (Some(host), Some(group)) = (body.host_peer_id, body.group_id) else {
        return Err(ApiError::bad_request(
            "missing_field",
            "missing host_peer_id or group_id",
        ));
    };
    // A libp2p peer id, as every route that names a peer takes it: a worker of a host it can
    // never reach would try for ever.
    let host = super::groups::peer_id(Some(host), "missing host_peer_id")?;
    let group: proto::GroupId = group
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_group_id", format!("{e}")))?;
    let (executor, mode) = match (body.executor, state.cluster.binary()) {
        (Some(executor), _) => (executor, parse_mode(body.mode.as_deref())?),
        (None, Some(binary)) => binary,
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_field",
                "missing executor: give one, or POST /api/cluster/binary first",
            ));
        }
    };
    let first = state
        .cluster
        .start_worker(WorkerSettings {
            group: group.clone(),
            host,
            executor,
            mode,
            capacity: body.capacity,
        })
        .await?;
    let joining = |reason: String| {
        let answer = Status {
            group_id: Some(group.to_string()),
            reason: Some(reason),
            ..status("joining")
        };
        Ok((StatusCode::ACCEPTED, Json(answer)))
    };
    match tokio::time::timeout(FIRST_JOIN_WAIT, first.outcome()).await {
        Ok(JoinTry::Joined) => Ok((
            StatusCode::OK,
            Json(Status {
                group_id: Some(group.to_string()),
                ..status("joined")
            }),
        )),
        Ok(JoinTry::NotYet(error)) => joining(format!("join group: {error}")),
        Err(_) => joining(format!(
            "join group: no answer from the host within {} s",
            FIRST_JOIN_WAIT.as_secs()
        )),
        Ok(JoinTry::Refused(error)) => Err(super::groups::failed(
            StatusCode::BAD_GATEWAY,
            "join group",
            &error,
        )),
        Ok(JoinTry::Ended) => Err(ClusterError::EndedWhileStarting.into()),
    }
}

fn parse_mode(mode: Option<&str>) -> Result<proto::BinaryMode, ApiError> {
    match mode.unwrap_or("") {
        "" | "oneshot" => Ok(proto::BinaryMode::Oneshot),
        "daemon" => Ok(proto::BinaryMode::Daemon),
        other => Err(ApiError::bad_request(
            "invalid_mode",
            format!("invalid mode {other:?} (must be oneshot or daemon)"),
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct BinaryBody {
    path: Option<std::path::PathBuf>,
    mode: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct BinaryAnswer {
    status: &'static str,
    path: std::path::PathBuf,
    mode: String,
}

/// `POST /api/cluster/binary {path, mode}`: the executor a later `join` uses.
pub(crate) async fn binary(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BinaryBody>,
) -> Result<Json<BinaryAnswer>, ApiError> {
    let path = body
        .path
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "missing binary path"))?;
    let mode = parse_mode(body.mode.as_deref())?;
    state.cluster.set_binary(path.clone(), mode)?;
    Ok(Json(BinaryAnswer {
        status: "ok",
        path,
        mode: body.mode.unwrap_or_default(),
    }))
}

/// `POST /api/cluster/leave`: a host closes its cluster, a worker leaves it. Always `ok`.
pub(crate) async fn leave(State(state): State<AppState>) -> Json<Status> {
    if let Err(error) = state.cluster.leave().await {
        tracing::warn!(%error, "leaving the cluster");
    }
    Json(status("ok"))
}

/// `POST /api/cluster/pause` and `/resume`: this worker asks its host to stop or start giving
/// it jobs.
async fn pause_self(state: AppState, pause: bool) -> Result<Json<Status>, ApiError> {
    state.cluster.pause_self(pause)?;
    Ok(Json(status(if pause { "paused" } else { "resumed" })))
}

/// `POST /api/cluster/pause`.
pub(crate) async fn pause(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    pause_self(state, true).await
}

/// `POST /api/cluster/resume`.
pub(crate) async fn resume(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    pause_self(state, false).await
}

/// `POST /api/cluster/delete {"job_id"}`: a finished job only.
pub(crate) async fn delete(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<JobIdRequest>,
) -> Result<Json<Status>, ApiError> {
    host(&state)?.delete(body.job_id).await?;
    Ok(Json(Status {
        job_id: Some(body.job_id),
        ..status("deleted")
    }))
}

/// `POST /api/cluster/clear`: every job, once none is live.
pub(crate) async fn clear(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    host(&state)?.clear().await?;
    Ok(Json(status("cleared")))
}

/// `GET /api/cluster/status`.
pub(crate) async fn get_status(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json(state.cluster.status().await)
}

/// `GET /api/cluster/stats`: all zeros on a peer that hosts no cluster, as in Goop².
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<QueueStats>, ApiError> {
    match state.cluster.host() {
        Some(host) => Ok(Json(host.stats().await?)),
        None => Ok(Json(QueueStats::default())),
    }
}

/// `GET /api/cluster/workers`: `[]` on a peer that hosts no cluster.
pub(crate) async fn workers(
    State(state): State<AppState>,
) -> Result<Json<Vec<WorkerInfo>>, ApiError> {
    match state.cluster.host() {
        Some(host) => Ok(Json(host.workers().await?)),
        None => Ok(Json(Vec::new())),
    }
}

/// Goop²'s single submit: lenient like Goop² (unknown fields ignored, `mode` other than
/// `continuous` is oneshot), but a negative timeout or retry count is refused.
#[derive(Deserialize)]
pub(crate) struct SubmitBody {
    #[serde(rename = "type", default)]
    job_type: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    timeout_s: u64,
    #[serde(default)]
    max_retry: u32,
}

/// `POST /api/cluster/submit`.
pub(crate) async fn submit(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Json<Status>, ApiError> {
    let host = host(&state)?;
    if body.job_type.trim().is_empty() {
        return Err(ApiError::bad_request("missing_field", "missing job type"));
    }
    let mut job = SubmitJob::new(body.job_type);
    job.mode = if body.mode == "continuous" {
        JobMode::Continuous
    } else {
        JobMode::Oneshot
    };
    job.payload = body.payload.map(Into::into);
    job.priority = body.priority;
    job.timeout_s = body.timeout_s;
    job.max_retry = body.max_retry;
    let ids = host.submit(vec![job]).await?;
    Ok(Json(Status {
        job_id: ids.first().copied(),
        ..status("submitted")
    }))
}

/// `POST /api/cluster/jobs {"jobs":[...]}`: all or none, answered once durable.
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SubmitBatch>,
) -> Result<Json<SubmitBatchResponse>, ApiError> {
    let host = host(&state)?;
    if body.jobs.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "no jobs to submit",
        ));
    }
    if body.jobs.len() > MAX_SUBMIT_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} jobs is over the limit of {MAX_SUBMIT_BATCH} per request",
                body.jobs.len()
            ),
        ));
    }
    let job_ids = host.submit(body.jobs).await?;
    Ok(Json(SubmitBatchResponse { job_ids }))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    label: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
    /// A comma-separated list of job ids (at most 1000).
    ids: Option<String>,
}

/// `GET /api/cluster/jobs?status=&type=&label=&ids=&limit=&cursor=`: an array of jobs in
/// submission order; the cursor of the next page is in the `x-next-cursor` header.
pub(crate) async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let Some(host) = state.cluster.host() else {
        return Ok(Json(Vec::<JobState>::new()).into_response());
    };
    let status = match &query.status {
        Some(s) => Some(
            serde_json::from_value::<JobStatus>(s.as_str().into()).map_err(|_| {
                ApiError::bad_request("invalid_query", format!("invalid status {s:?}"))
            })?,
        ),
        None => None,
    };
    let ids = match &query.ids {
        Some(list) => {
            let ids = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse::<JobId>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
            if ids.len() > 1000 {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("{} ids is over the limit of 1000", ids.len()),
                ));
            }
            Some(ids)
        }
        None => None,
    };
    let filter = ListFilter {
        ids,
        group: Some(host.group().clone()),
        status,
        job_type: query.job_type,
        label: query.label,
        cursor: query.cursor,
        limit: query.limit.unwrap_or(100),
    };
    host.flush().await?;
    let reader = host.store().reader().map_err(HostError::from)?;
    let page = tokio::task::spawn_blocking(move || reader.list(&filter))
        .await
        .map_err(|_| HostError::Stopped)?
        .map_err(HostError::from)?;
    let jobs: Vec<JobState> = page.jobs.into_iter().map(|j| j.state).collect();
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next_cursor
        && let Ok(value) = HeaderValue::from_str(&next.to_string())
    {
        headers.insert("x-next-cursor", value);
    }
    Ok((headers, Json(jobs)).into_response())
}

/// `GET /api/cluster/jobs/{id}`: the job with its result, error, progress and attempts.
pub(crate) async fn job(
    State(state): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobState>, ApiError> {
    // A path that is not UTF-8 gets the API's JSON error, not axum's plain text.
    let Path(id) = id.map_err(|e| {
        ApiError::bad_request("invalid_job_id", super::api::lowercase_first(e.body_text()))
    })?;
    let id: JobId = id
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_job_id", format!("{e}")))?;
    let host = host(&state)?;
    host.flush().await?;
    let reader = host.store().reader().map_err(HostError::from)?;
    let stored = tokio::task::spawn_blocking(move || reader.get(id))
        .await
        .map_err(|_| HostError::Stopped)?
        .map_err(HostError::from)?;
    match stored {
        Some(job) if job.group == *host.group() => Ok(Json(job.state)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} not found"),
        )),
    }
}

/// `POST /api/cluster/cancel {"job_id"}`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<JobIdRequest>,
) -> Result<Json<Status>, ApiError> {
    host(&state)?.cancel(body.job_id).await?;
    Ok(Json(Status {
        job_id: Some(body.job_id),
        ..status("cancelled")
    }))
}

/// `POST /api/cluster/retry {"job_id"}`.
pub(crate) async fn retry(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<JobIdRequest>,
) -> Result<Json<Status>, ApiError> {
    host(&state)?.retry(body.job_id).await?;
    Ok(Json(Status {
        job_id: Some(body.job_id),
        ..status("retried")
    }))
}

#[derive(Deserialize)]
pub(crate) struct PeerBody {
    peer_id: Option<String>,
}

async fn pause_worker(
    state: AppState,
    body: PeerBody,
    pause: bool,
) -> Result<Json<Status>, ApiError> {
    let peer = body
        .peer_id
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "missing peer_id"))?;
    let peer: PeerId = peer
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_peer_id", format!("{e}")))?;
    host(&state)?.pause(peer.clone(), pause).await?;
    Ok(Json(Status {
        peer_id: Some(peer),
        ..status(if pause { "paused" } else { "resumed" })
    }))
}

/// `POST /api/cluster/worker/pause {"peer_id"}`.
pub(crate) async fn worker_pause(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PeerBody>,
) -> Result<Json<Status>, ApiError> {
    pause_worker(state, body, true).await
}

/// `POST /api/cluster/worker/resume {"peer_id"}`.
pub(crate) async fn worker_resume(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PeerBody>,
) -> Result<Json<Status>, ApiError> {
    pause_worker(state, body, false).await
}

#[derive(Serialize)]
pub(crate) struct JobType {
    name: &'static str,
    description: &'static str,
    template: &'static str,
    help: &'static str,
}

/// `GET /api/cluster/types`: Goop²'s predefined job types (templates for a UI; not enforced).
pub(crate) async fn types() -> Json<Vec<JobType>> {
    Json(vec![
        JobType {
            name: "calculate",
            description: "evaluate an arithmetic expression",
            template: "{\n  \"expression\": \"\",\n  \"parameters\": {}\n}",
            help: "expression: the formula; parameters: named values used in it",
        },
        JobType {
            name: "transform",
            description: "convert data between formats",
            template: "{\n  \"input\": \"\",\n  \"output\": \"\",\n  \"format\": \"\",\n  \"options\": {}\n}",
            help: "input: the data; format: the conversion",
        },
        JobType {
            name: "custom",
            description: "anything your executor understands",
            template: "{\n  \"type_name\": \"\",\n  \"payload\": {}\n}",
            help: "the payload goes to the executor untouched",
        },
    ])
}

/// `GET /api/cluster/events`: `job`, `progress`, `output`, `log`, `worker` and `lagged` events.
pub(crate) async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let receiver = host(&state)?.subscribe();
    let cancel = state.cancel.clone();
    let stream = futures::stream::unfold((receiver, cancel), |(mut receiver, cancel)| async move {
        let next = tokio::select! {
            () = cancel.cancelled() => return None,
            next = receiver.recv() => next,
        };
        let event = match next {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => ClusterEvent::Lagged { missed },
            Err(RecvError::Closed) => return None,
        };
        let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
        Some((
            Ok(Event::default().event(event.name()).data(data)),
            (receiver, cancel),
        ))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)))
}
