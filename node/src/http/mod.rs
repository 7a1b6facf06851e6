//! The local HTTP API (axum): the peer itself, its connections, the MQ bus, the groups, the
//! cluster, the chat rooms, the shared files, the listening groups and the data tables with
//! their GraphQL engine.
//!
//! Every answer is JSON but `GET /metrics` (Prometheus text); errors are
//! `{"error":{"code","message"}}`. When an API token is set,
//! every route requires `Authorization: Bearer <token>` (the event stream included: it carries
//! message contents). A request whose `Origin` is not this API's own origin is refused, so a
//! web page the user visits cannot drive the peer. Bodies are limited on every route.

mod api;
mod chat;
mod cluster;
mod data;
mod datafed;
mod docs;
mod error;
mod groups;
mod hub;
mod listen;
mod metrics;
mod openapi;
pub(crate) mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use ::groups::{GroupHandle, Mq, NodeHandle};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use error::ApiError;
pub(crate) use hub::Hub;

/// The body limit of routes that carry no payload.
const SMALL_BODY: usize = 64 * 1024;
/// The largest batch-submit body: many jobs with their payloads.
const BATCH_BODY: usize = 64 * 1024 * 1024;
/// The largest upload body: a file at the limit, and the form around it.
const UPLOAD_BODY: usize = (::groups::files::MAX_FILE_BYTES as usize) + 64 * 1024;
/// What an MQ send body may hold beyond the message limit (the other fields, escaping).
const SEND_BODY_OVERHEAD: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node: NodeHandle,
    pub(crate) mq: Mq,
    pub(crate) groups: GroupHandle,
    pub(crate) cluster: crate::cluster::Cluster,
    pub(crate) chat: ::groups::chat::ChatHandle,
    pub(crate) files: ::groups::files::Files,
    pub(crate) listen: ::groups::listen::Listen,
    pub(crate) data: graphql::Data,
    pub(crate) federation: crate::federation::Federation,
    pub(crate) hub: Arc<Hub>,
    /// This peer's name (its label, cleaned) and other peers' names, as they give them.
    pub(crate) names: ::groups::names::Names,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) api_addr: SocketAddr,
    pub(crate) cancel: CancellationToken,
}

/// Starts the hub's feed and returns the router.
pub(crate) fn router(state: AppState, max_message_bytes: usize, tasks: &TaskTracker) -> Router {
    tasks.spawn(hub::feed(
        state.hub.clone(),
        state.mq.clone(),
        state.cancel.clone(),
    ));
    let send_limit = max_message_bytes.saturating_add(SEND_BODY_OVERHEAD);
    Router::new()
        .route("/api/openapi.json", get(openapi::get))
        .route("/metrics", get(metrics::get))
        .route("/api/self", get(api::get_self))
        .route("/api/peers", get(api::get_peers))
        .route("/api/peers/dial", post(api::dial))
        .route(
            "/api/mq/send",
            post(api::mq_send).layer(DefaultBodyLimit::max(send_limit)),
        )
        .route("/api/mq/ack", post(api::mq_ack))
        .route("/api/mq/events", get(api::mq_events))
        .route("/api/groups", get(groups::list).post(groups::create))
        .route("/api/groups/join-own", post(groups::join_own))
        .route("/api/groups/leave-own", post(groups::leave_own))
        .route("/api/groups/close", post(groups::close))
        .route("/api/groups/subscriptions", get(groups::subscriptions))
        .route(
            "/api/groups/subscriptions/remove",
            post(groups::remove_subscription),
        )
        .route("/api/groups/join", post(groups::join))
        .route("/api/groups/rejoin", post(groups::rejoin))
        .route("/api/groups/leave", post(groups::leave))
        .route("/api/groups/invite", post(groups::invite))
        .route("/api/groups/uninvite", post(groups::uninvite))
        .route("/api/groups/unban", post(groups::unban))
        .route("/api/groups/approve", post(groups::approve))
        .route("/api/groups/deny", post(groups::deny))
        .route("/api/groups/invitations", get(groups::invitations))
        .route("/api/groups/kick", post(groups::kick))
        .route("/api/groups/max-members", post(groups::max_members))
        .route("/api/groups/meta", post(groups::meta))
        .route(
            "/api/groups/send",
            post(groups::send).layer(DefaultBodyLimit::max(send_limit)),
        )
        .route("/api/groups/set-role", post(groups::set_role))
        .route(
            "/api/groups/set-default-role",
            post(groups::set_default_role),
        )
        .route("/api/groups/set-roles", post(groups::set_roles))
        .route("/api/groups/members", get(groups::members))
        .route("/api/groups/discover", get(groups::discover))
        .route("/api/groups/events", get(groups::events))
        .route("/api/cluster/create", post(cluster::create))
        .route("/api/cluster/join", post(cluster::join))
        .route("/api/cluster/leave", post(cluster::leave))
        .route("/api/cluster/binary", post(cluster::binary))
        .route("/api/cluster/pause", post(cluster::pause))
        .route("/api/cluster/resume", post(cluster::resume))
        .route("/api/cluster/delete", post(cluster::delete))
        .route("/api/cluster/clear", post(cluster::clear))
        .route("/api/cluster/status", get(cluster::get_status))
        .route("/api/cluster/stats", get(cluster::stats))
        .route("/api/cluster/workers", get(cluster::workers))
        .route("/api/cluster/types", get(cluster::types))
        .route(
            "/api/cluster/submit",
            post(cluster::submit).layer(DefaultBodyLimit::max(send_limit)),
        )
        .route(
            "/api/cluster/jobs",
            get(cluster::list)
                .post(cluster::submit_batch)
                .layer(DefaultBodyLimit::max(BATCH_BODY)),
        )
        .route("/api/cluster/jobs/{id}", get(cluster::job))
        .route("/api/cluster/cancel", post(cluster::cancel))
        .route("/api/cluster/retry", post(cluster::retry))
        .route("/api/cluster/worker/pause", post(cluster::worker_pause))
        .route("/api/cluster/worker/resume", post(cluster::worker_resume))
        .route("/api/cluster/events", get(cluster::events))
        .route("/api/docs/groups", get(docs::groups))
        .route("/api/docs/my", get(docs::my))
        .route(
            "/api/docs/upload",
            post(docs::upload).layer(DefaultBodyLimit::max(UPLOAD_BODY)),
        )
        .route("/api/docs/upload-local", post(docs::upload_local))
        .route("/api/docs/delete", post(docs::delete))
        .route("/api/docs/browse", get(docs::browse))
        .route("/api/docs/download", get(docs::download))
        .route("/api/listen/create", post(listen::create))
        .route("/api/listen/close", post(listen::close))
        .route("/api/listen/load", post(listen::load))
        .route("/api/listen/queue/add", post(listen::queue_add))
        .route("/api/listen/control", post(listen::control))
        .route("/api/listen/join", post(listen::join))
        .route("/api/listen/leave", post(listen::leave))
        .route("/api/listen/stream", get(listen::stream))
        .route("/api/listen/state", get(listen::listen_state))
        .route(
            "/api/data/tables",
            get(data::tables).post(data::create_table),
        )
        .route("/api/data/tables/delete", post(data::delete_table))
        .route("/api/data/tables/update", post(data::update_table))
        .route("/api/datafed/groups", get(datafed::groups))
        .route("/api/datafed/offer", post(datafed::offer))
        .route("/api/datafed/withdraw", post(datafed::withdraw))
        .route("/api/datafed/insert", post(datafed::insert))
        .route("/api/datafed/update", post(datafed::update))
        .route("/api/datafed/delete", post(datafed::delete))
        .route("/api/datafed/contributions", post(datafed::contributions))
        .route("/api/graphql", post(data::graphql))
        .route("/api/graphql/status", get(data::status))
        .route("/api/graphql/rebuild", post(data::rebuild))
        .route("/api/graphql/schema", post(data::schema))
        .route("/api/chat/rooms", get(chat::rooms))
        .route("/api/chat/events", get(chat::events))
        .route("/api/chat/rooms/create", post(chat::create))
        .route("/api/chat/rooms/close", post(chat::close))
        .route("/api/chat/rooms/join", post(chat::join))
        .route("/api/chat/rooms/leave", post(chat::leave))
        .route("/api/chat/rooms/send", post(chat::send))
        .route("/api/chat/rooms/state", get(chat::room_state))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(SMALL_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::map_request(serve::idle_body))
        .with_state(state)
}

/// Refuses foreign origins, foreign host names on a loopback API and, with a token
/// configured, requests without it.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(e) = check_origin(request.headers(), state.api_addr)
        .and_then(|()| check_host(request.headers(), state.api_addr))
    {
        return e.into_response();
    }
    if let Some(token) = &state.token
        && !bearer_matches(request.headers(), token)
    {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let Some(given) = value.strip_prefix("Bearer ") else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The origins a browser may call this API from (also the host names it may be called by).
fn own_origins(api: SocketAddr) -> Vec<String> {
    let port = api.port();
    let mut allowed = vec![format!("http://{api}")];
    if api.ip().is_loopback() || api.ip().is_unspecified() {
        allowed.push(format!("http://127.0.0.1:{port}"));
        allowed.push(format!("http://localhost:{port}"));
        allowed.push(format!("http://[::1]:{port}"));
    }
    allowed
}

/// On a loopback API, allows only loopback host names: a web page whose name an attacker
/// points at 127.0.0.1 (DNS rebinding) is same-origin to the browser, which then sends no
/// `Origin` on a GET, but its `Host` is still the page's name. An API bound elsewhere needs
/// a token, which such a page does not have.
fn check_host(headers: &HeaderMap, api: SocketAddr) -> Result<(), ApiError> {
    if !api.ip().is_loopback() {
        return Ok(());
    }
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("");
    let allowed = own_origins(api);
    let own = allowed
        .iter()
        .filter_map(|origin| origin.strip_prefix("http://"))
        .any(|name| name.eq_ignore_ascii_case(host));
    // Without a port, the default one: only a name that is loopback anyway.
    let bare = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    if own || bare {
        Ok(())
    } else {
        Err(ApiError::forbidden_host(host))
    }
}

/// Allows requests without an `Origin` (tools, scripts) and those from this API's own origin.
fn check_origin(headers: &HeaderMap, api: SocketAddr) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site == "cross-site"
    {
        return Err(ApiError::forbidden_origin(site));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if own_origins(api).iter().any(|a| a == origin) {
        Ok(())
    } else {
        Err(ApiError::forbidden_origin(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_other_than_the_api_are_refused() {
        let api: SocketAddr = "127.0.0.1:8787".parse().unwrap();
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, origin.parse().unwrap());
            check_origin(&h, api)
        };
        assert!(check_origin(&HeaderMap::new(), api).is_ok());
        assert!(with("http://127.0.0.1:8787").is_ok());
        assert!(with("http://localhost:8787").is_ok());
        assert!(with("http://evil.example").is_err());
        assert!(with("http://localhost:9999").is_err());
        assert!(with("null").is_err());
    }

    #[test]
    fn a_loopback_api_answers_only_loopback_host_names() {
        let api: SocketAddr = "127.0.0.1:8787".parse().unwrap();
        let with = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            check_host(&h, api)
        };
        assert!(check_host(&HeaderMap::new(), api).is_ok());
        assert!(with("127.0.0.1:8787").is_ok());
        assert!(with("localhost:8787").is_ok());
        assert!(with("LOCALHOST:8787").is_ok());
        assert!(with("[::1]:8787").is_ok());
        assert!(with("localhost").is_ok());
        let refused = with("rebound.example:8787").expect_err("a foreign name is refused");
        assert_eq!(refused.code, "forbidden_host");
        assert!(with("127.0.0.1.rebound.example:8787").is_err());
        // Off loopback the token guards the API, and the machine has names of its own.
        let open: SocketAddr = "0.0.0.0:8787".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "build-box.lan:8787".parse().unwrap());
        assert!(check_host(&h, open).is_ok());
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "secret-token-123456"));
        h.insert(
            header::AUTHORIZATION,
            "Bearer secret-token-123456".parse().unwrap(),
        );
        assert!(bearer_matches(&h, "secret-token-123456"));
        assert!(!bearer_matches(&h, "secret-token-1234567"));
        h.insert(
            header::AUTHORIZATION,
            "Basic secret-token-123456".parse().unwrap(),
        );
        assert!(!bearer_matches(&h, "secret-token-123456"));
    }
}
