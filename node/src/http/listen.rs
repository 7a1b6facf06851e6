//! The `/api/listen/*` routes: Goop²'s paths, bodies and success answers (reference
//! `goop2-handlers.md` §3.8), with JSON errors whose code says why.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use groups::listen::{GroupView, ListenError, Track};
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;

use super::api::JsonBody;
use super::groups::{HostGroupBody, Status, host_and_group, ok};
use super::{ApiError, AppState};

impl From<ListenError> for ApiError {
    fn from(error: ListenError) -> Self {
        let (status, code) = match &error {
            ListenError::Busy(_) => (StatusCode::CONFLICT, "busy"),
            ListenError::NotHosting => (StatusCode::CONFLICT, "not_hosting"),
            ListenError::NotListening => (StatusCode::CONFLICT, "not_listening"),
            ListenError::NoPaths
            | ListenError::NoTrack
            | ListenError::AtEnd
            | ListenError::BadIndex(_)
            | ListenError::BadPosition(_)
            | ListenError::BadAction(_)
            | ListenError::StreamUnsupported(_)
            | ListenError::Probe { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            ListenError::Audio { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ListenError::Group(e) => {
                return super::groups::failed(StatusCode::INTERNAL_SERVER_ERROR, "listen", e);
            }
        };
        Self::new(status, code, error.to_string())
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct CreateBody {
    #[serde(default)]
    name: String,
}

/// `POST /api/listen/create {name?}`: a listen group hosted by this peer.
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(state.listen.create(body.name).await?))
}

/// `POST /api/listen/close`: closes the group this peer hosts, or leaves the one it listens
/// to; fine when it is in none.
pub(crate) async fn close(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    state.listen.close().await?;
    Ok(ok("closed"))
}

#[derive(Deserialize)]
pub(crate) struct LoadBody {
    file_path: Option<String>,
    file_paths: Option<Vec<String>>,
}

impl LoadBody {
    /// The list wins over the single path.
    fn paths(self) -> Vec<String> {
        match (self.file_paths, self.file_path) {
            (Some(paths), _) if !paths.is_empty() => paths,
            (_, Some(path)) if !path.is_empty() => vec![path],
            _ => Vec::new(),
        }
    }
}

/// `POST /api/listen/load {file_path | file_paths}`: replaces the queue and loads its first
/// track (paused).
pub(crate) async fn load(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LoadBody>,
) -> Result<Json<Track>, ApiError> {
    let paths = body.paths();
    if paths.is_empty() {
        return Err(ApiError::bad_request(
            "bad_request",
            "missing file_path or file_paths",
        ));
    }
    Ok(Json(state.listen.load(paths)?))
}

/// `POST /api/listen/queue/add {file_paths}`.
pub(crate) async fn queue_add(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LoadBody>,
) -> Result<Json<Status>, ApiError> {
    let paths = body.paths();
    if paths.is_empty() {
        return Err(ApiError::bad_request("bad_request", "missing file_paths"));
    }
    state.listen.add(paths)?;
    Ok(ok("ok"))
}

#[derive(Deserialize)]
pub(crate) struct ControlBody {
    action: String,
    #[serde(default)]
    position: f64,
    #[serde(default)]
    index: usize,
}

/// `POST /api/listen/control {action, position?, index?}`: play, pause, seek, next, prev,
/// skip, remove.
pub(crate) async fn control(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ControlBody>,
) -> Result<Json<Status>, ApiError> {
    state
        .listen
        .control(&body.action, body.position, body.index)?;
    Ok(ok("ok"))
}

/// `POST /api/listen/join {host_peer_id, group_id}`.
pub(crate) async fn join(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HostGroupBody>,
) -> Result<Json<Status>, ApiError> {
    let (host, group) = host_and_group(body)?;
    state.listen.join(host, group).await?;
    Ok(ok("joined"))
}

/// `POST /api/listen/leave`.
pub(crate) async fn leave(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    state.listen.leave().await?;
    Ok(ok("left"))
}

/// `GET /api/listen/stream`: the audio from where the group plays now (`audio/mpeg`).
pub(crate) async fn stream(State(state): State<AppState>) -> Result<Response, ApiError> {
    let audio = state.listen.audio().await?;
    let mut response = Body::from_stream(ReaderStream::new(audio)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    Ok(response)
}

#[derive(Serialize)]
pub(crate) struct StateAnswer {
    group: Option<GroupView>,
    listener_names: serde_json::Map<String, serde_json::Value>,
}

/// `GET /api/listen/state`: `{"group": ... or null, "listener_names": {peer: name}}`, the
/// names of the listeners (on the host) whose name is known.
pub(crate) async fn listen_state(State(state): State<AppState>) -> Json<StateAnswer> {
    let group = state.listen.state();
    let listeners = group.iter().flat_map(|g| g.listeners.iter().flatten());
    let listener_names = state
        .names
        .resolve_all(listeners)
        .into_iter()
        .map(|(peer, name)| (peer.to_string(), serde_json::Value::String(name)))
        .collect();
    Json(StateAnswer {
        group,
        listener_names,
    })
}
