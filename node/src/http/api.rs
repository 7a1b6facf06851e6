//! The route handlers.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use groups::MqError;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::hub::Read;
use super::{ApiError, AppState};

/// How long `POST /api/mq/send` waits for the acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle event stream gets a keep-alive comment.
pub(crate) const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A JSON body, with errors in the API's shape (Goop² answered `invalid json: ...` as 400).
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "bad_body"
            };
            ApiError::new(status, code, lowercase_first(rejection.body_text()))
        })?;
        // Every body is an object: a struct read from an array would take its items as the
        // fields in order.
        serde_json::from_slice(&bytes)
            .map(|proto::Object(body)| Self(body))
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid json: {e}")))
    }
}

/// A query string, with errors in the API's shape rather than axum's plain text.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e| ApiError::bad_request("invalid_query", lowercase_first(e.body_text())))
    }
}

/// axum's rejection texts begin with a capital ("Failed to deserialize query string: ..."); the
/// API's error messages do not.
pub(super) fn lowercase_first(text: String) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_uppercase() => first.to_lowercase().chain(chars).collect(),
        _ => text,
    }
}

fn with_p2p(addr: &Multiaddr, peer: PeerId) -> String {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr.to_string(),
        _ => addr.clone().with(Protocol::P2p(peer)).to_string(),
    }
}

pub(super) fn stopped(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

#[derive(Serialize)]
pub(crate) struct SelfInfo {
    id: String,
    label: String,
    /// Listen addresses ending in `/p2p/<id>`, ready to dial.
    addrs: Vec<String>,
}

/// `GET /api/self`.
pub(crate) async fn get_self(State(state): State<AppState>) -> Result<Json<SelfInfo>, ApiError> {
    let local = state.node.local_peer_id();
    let addrs = state.node.listen_addrs().await.map_err(stopped)?;
    Ok(Json(SelfInfo {
        id: local.to_base58(),
        label: state.names.label().to_owned(),
        addrs: addrs.iter().map(|a| with_p2p(a, local)).collect(),
    }))
}

#[derive(Serialize)]
pub(crate) struct PeerEntry {
    id: String,
    /// The name the peer gave when asked (absent while unknown or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    addrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_ms: Option<f64>,
}

/// `GET /api/peers`: the connected peers.
pub(crate) async fn get_peers(
    State(state): State<AppState>,
) -> Result<Json<Vec<PeerEntry>>, ApiError> {
    let peers = state.node.peers().await.map_err(stopped)?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| PeerEntry {
                name: state.names.resolve(&::groups::net::peer_to_proto(&p.peer)),
                id: p.peer.to_base58(),
                addrs: p.addrs.iter().map(ToString::to_string).collect(),
                agent_version: p.agent_version,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct DialBody {
    addr: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Dialled {
    status: &'static str,
    peer_id: String,
}

/// `POST /api/peers/dial {"addr"}`: resolves once connected.
pub(crate) async fn dial(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DialBody>,
) -> Result<Json<Dialled>, ApiError> {
    let text = body
        .addr
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::bad_request("bad_request", "missing addr"))?;
    let addr: Multiaddr = text.parse().map_err(|e| {
        ApiError::bad_request("invalid_addr", format!("invalid multiaddr {text:?}: {e}"))
    })?;
    match state.node.dial(addr).await {
        Ok(peer) => Ok(Json(Dialled {
            status: "connected",
            peer_id: peer.to_base58(),
        })),
        Err(e @ groups::NodeError::DialTimeout { .. }) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "dial_timeout",
            e.to_string(),
        )),
        Err(groups::NodeError::Stopped) => Err(stopped("the node is stopping")),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "dial_failed",
            e.to_string(),
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct SendBody {
    peer_id: Option<String>,
    topic: Option<String>,
    payload: Option<Box<RawValue>>,
    // `msg_id` is accepted for Goop² clients and ignored, as Goop² does: unknown fields are
    // skipped and the server makes the id.
}

#[derive(Serialize)]
pub(crate) struct Sent {
    msg_id: String,
    status: &'static str,
}

/// `POST /api/mq/send {peer_id, topic, payload}`: resolves once the peer acknowledged.
pub(crate) async fn mq_send(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<Json<Sent>, ApiError> {
    let (Some(peer), Some(topic)) = (
        body.peer_id.filter(|p| !p.is_empty()),
        body.topic.filter(|t| !t.is_empty()),
    ) else {
        return Err(ApiError::bad_request(
            "bad_request",
            "missing peer_id or topic",
        ));
    };
    let peer: PeerId = peer.parse().map_err(|_| {
        ApiError::bad_request("invalid_peer_id", format!("invalid peer id {peer:?}"))
    })?;
    // A JSON `null` payload deserializes as `None`; it is sent as `null`.
    let payload = body.payload.unwrap_or_default();
    let sent = tokio::time::timeout(SEND_TIMEOUT, state.mq.send(peer, &topic, payload)).await;
    match sent {
        Ok(Ok(id)) => Ok(Json(Sent {
            msg_id: id.to_string(),
            status: "delivered",
        })),
        Ok(Err(e)) => Err(send_error(&e)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "send_timeout",
            format!("send failed: no acknowledgement within {SEND_TIMEOUT:?}"),
        )),
    }
}

fn send_error(e: &MqError) -> ApiError {
    let status = match e {
        MqError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        MqError::Rejected { code, .. } if code == proto::NACK_TOO_LARGE => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        MqError::SelfSend | MqError::Payload(_) => StatusCode::BAD_REQUEST,
        MqError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        // Goop² answers every delivery failure with 504.
        MqError::Rejected { .. } | MqError::Undeliverable { .. } => StatusCode::GATEWAY_TIMEOUT,
    };
    ApiError::new(status, e.code(), format!("send failed: {e}"))
}

#[derive(Deserialize)]
pub(crate) struct AckBody {
    msg_id: Option<String>,
    from_peer_id: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct StatusOk {
    status: &'static str,
}

/// `POST /api/mq/ack {msg_id, from_peer_id?}`: tells the original sender (topic `mq.ack`)
/// and raises a local `delivered` event.
pub(crate) async fn mq_ack(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<Json<StatusOk>, ApiError> {
    let msg_id = body
        .msg_id
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("bad_request", "missing msg_id"))?;
    if let Some(from) = body.from_peer_id.filter(|p| !p.is_empty()) {
        let peer: PeerId = from.parse().map_err(|_| {
            ApiError::bad_request("invalid_peer_id", format!("invalid peer id {from:?}"))
        })?;
        #[derive(Serialize)]
        struct AckPayload<'a> {
            msg_id: &'a str,
        }
        let sent = tokio::time::timeout(
            Duration::from_secs(3),
            state
                .mq
                .send_json(peer, "mq.ack", &AckPayload { msg_id: &msg_id }),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%peer, %error, "cannot relay mq.ack"),
            Err(_) => tracing::warn!(%peer, "relaying mq.ack timed out"),
        }
    }
    state.hub.delivered(&msg_id);
    Ok(Json(StatusOk { status: "ok" }))
}

/// `GET /api/mq/events`: `event: connected` first, then `event: message` frames with
/// increasing `id:`s; `Last-Event-ID` resumes after a given id. A listener that fell behind
/// gets `event: lagged` with `{"missed":N}`.
pub(crate) async fn mq_events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (cursor, guard, latest) = state.hub.listen(last_event_id);
    let first = Event::default()
        .event("connected")
        .data(r#"{"status":"ok"}"#);
    struct Listener {
        cursor: u64,
        pending: std::collections::VecDeque<Event>,
        latest: tokio::sync::watch::Receiver<u64>,
        state: AppState,
        _guard: super::hub::ListenerGuard,
    }
    let listener = Listener {
        cursor,
        pending: std::collections::VecDeque::from([first]),
        latest,
        state,
        _guard: guard,
    };
    let stream = futures::stream::unfold(listener, |mut l| async move {
        loop {
            if let Some(event) = l.pending.pop_front() {
                return Some((Ok(event), l));
            }
            match l.state.hub.read(l.cursor) {
                Read::Lagged { missed } => {
                    l.cursor += missed;
                    l.pending.push_back(
                        Event::default()
                            .event("lagged")
                            .data(format!(r#"{{"missed":{missed}}}"#)),
                    );
                    continue;
                }
                Read::Events(events) if !events.is_empty() => {
                    for (id, json) in events {
                        l.cursor = id;
                        l.pending.push_back(
                            Event::default()
                                .id(id.to_string())
                                .event("message")
                                .data(&*json),
                        );
                    }
                    continue;
                }
                Read::Events(_) => {}
            }
            tokio::select! {
                changed = l.latest.changed() => if changed.is_err() { return None },
                () = l.state.cancel.cancelled() => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
}

/// Unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The answer to a known route asked with a method it does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not serve that method",
    )
}

/// An SSE stream of a broadcast channel: `event: connected` first, then `to_event` of each
/// item, and `event: lagged` with `{"missed":N}` when the listener fell behind; it ends when
/// the node stops.
pub(crate) fn event_stream<T: Clone + Send + 'static>(
    receiver: tokio::sync::broadcast::Receiver<T>,
    cancel: CancellationToken,
    to_event: fn(&T) -> Event,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use tokio::sync::broadcast::error::RecvError;
    let first = Event::default()
        .event("connected")
        .data(r#"{"status":"ok"}"#);
    let stream = futures::stream::unfold(
        (Some(first), receiver, cancel),
        move |(first, mut receiver, cancel)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (None, receiver, cancel)));
            }
            let next = tokio::select! {
                () = cancel.cancelled() => return None,
                next = receiver.recv() => next,
            };
            let event = match next {
                Ok(item) => to_event(&item),
                Err(RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(format!(r#"{{"missed":{missed}}}"#)),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (None, receiver, cancel)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
}
