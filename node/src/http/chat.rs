//! The `/api/chat/rooms/*` routes: Goop²'s paths, bodies and success answers (reference
//! `goop2-handlers.md` §1.4), with JSON errors whose code says why, `[]` rather than `null`
//! for a room without messages, `GET /api/chat/rooms`, the rooms this peer is in, and
//! `GET /api/chat/events`, the messages as they arrive.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures::Stream;
use groups::chat::{ChatError, ChatEvent, ChatMessage, NewRoom, Room, RoomState};
use serde::{Deserialize, Serialize};

use super::api::{JsonBody, QueryParams, event_stream};
use super::groups::{HostGroupBody, Status, failed, group_id, host_and_group, ok};
use super::{ApiError, AppState};

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        let (status, code) = match &error {
            ChatError::EmptyName | ChatError::EmptyText => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            ChatError::DescriptionTooLong { .. } | ChatError::TextTooLong { .. } => {
                (StatusCode::BAD_REQUEST, "too_long")
            }
            ChatError::UnknownRoom(_) => (StatusCode::NOT_FOUND, "not_found"),
            ChatError::NotHost(_) => (StatusCode::CONFLICT, "not_host"),
            ChatError::IsHost(_) => (StatusCode::CONFLICT, "is_host"),
            ChatError::NotChat { .. } => (StatusCode::BAD_REQUEST, "not_chat"),
            ChatError::Group(e) => return failed(StatusCode::INTERNAL_SERVER_ERROR, "chat", e),
            ChatError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            ChatError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        };
        Self::new(status, code, error.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    context: String,
    #[serde(default)]
    max_members: u32,
}

/// `POST /api/chat/rooms/create {name, description?, context?, max_members?}`: a room hosted
/// by this peer.
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Json<Room>, ApiError> {
    let room = state
        .chat
        .create(NewRoom {
            name: body.name.unwrap_or_default(),
            description: body.description,
            context: body.context,
            max_members: body.max_members,
        })
        .await?;
    Ok(Json(room))
}

#[derive(Deserialize)]
pub(crate) struct GroupBody {
    group_id: Option<String>,
}

/// `POST /api/chat/rooms/close {group_id}`: closes a room this peer hosts.
pub(crate) async fn close(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "group_id required")?;
    state.chat.close(group).await?;
    Ok(ok("closed"))
}

/// `POST /api/chat/rooms/join {host_peer_id, group_id}`: answered once the host welcomed
/// this peer.
pub(crate) async fn join(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HostGroupBody>,
) -> Result<Json<Status>, ApiError> {
    let (host, group) = host_and_group(body)?;
    state.chat.join(host, group).await?;
    Ok(ok("joined"))
}

/// `POST /api/chat/rooms/leave {group_id}`: leaves a joined room and forgets it.
pub(crate) async fn leave(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "group_id required")?;
    state.chat.leave(group).await?;
    Ok(ok("left"))
}

#[derive(Deserialize)]
pub(crate) struct SendBody {
    group_id: Option<String>,
    #[serde(default)]
    text: String,
}

/// `{"status":"sent","message":{...}}`.
#[derive(Serialize)]
pub(crate) struct Sent {
    status: &'static str,
    message: ChatMessage,
}

/// `POST /api/chat/rooms/send {group_id, text}`: answered once the host has the message.
pub(crate) async fn send(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<Json<Sent>, ApiError> {
    let group = group_id(body.group_id, "group_id and text required")?;
    let message = state.chat.send(group, body.text).await?;
    Ok(Json(Sent {
        status: "sent",
        message,
    }))
}

#[derive(Deserialize)]
pub(crate) struct StateQuery {
    group_id: Option<String>,
}

/// `GET /api/chat/rooms/state?group_id=`: the room, its members and its messages.
pub(crate) async fn room_state(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<StateQuery>,
) -> Result<Json<RoomState>, ApiError> {
    let group = group_id(query.group_id, "group_id required")?;
    Ok(Json(state.chat.state(group).await?))
}

/// `GET /api/chat/rooms`: the rooms this peer hosts or has joined.
pub(crate) async fn rooms(State(state): State<AppState>) -> Result<Json<Vec<Room>>, ApiError> {
    Ok(Json(state.chat.rooms().await?))
}

/// `GET /api/chat/events`: `event: connected`, then `event: message` with
/// `{"group_id","message"}` for each message new to this peer (its own included), and
/// `event: lagged` with `{"missed":N}` for a listener that fell behind.
pub(crate) async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    event_stream(
        state.chat.events(),
        state.cancel.clone(),
        |event: &ChatEvent| match serde_json::to_string(event) {
            Ok(json) => Event::default().event("message").data(json),
            Err(error) => {
                tracing::warn!(%error, "cannot encode a chat event");
                Event::default().event("error").data(r#"{"type":"error"}"#)
            }
        },
    )
}
