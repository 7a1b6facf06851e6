//! The `/api/groups/*` routes: Goop²'s paths, bodies and success answers (reference §5.1),
//! with JSON errors whose code says why (`full`, `not_invited`, `unknown_group`,
//! `not_member`...), the group event stream, and discovery of another peer's open and approval
//! groups as a typed request.
//!
//! Status codes follow Goop²: a missing field is 400; a failed operation is 500, except kick
//! and the role routes, which answer 400. A stopped manager is 503.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use groups::GroupError;
use groups::group::{GroupSpec, HostedGroup, MetaUpdate, Subscription};
use proto::{Admission, GroupEvent, GroupId, GroupRow, MemberInfo, PeerId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::api::{JsonBody, QueryParams, event_stream};
use super::{ApiError, AppState};

/// `{"status": "..."}`.
#[derive(Serialize)]
pub(crate) struct Status {
    pub(super) status: &'static str,
}

pub(super) fn ok(status: &'static str) -> Json<Status> {
    Json(Status { status })
}

pub(super) fn missing(message: &str) -> ApiError {
    ApiError::bad_request("bad_request", message)
}

/// A failed group operation: the host's reason when it refused, else the error's own code.
pub(super) fn failed(status: StatusCode, what: &str, error: &GroupError) -> ApiError {
    let status = match error {
        GroupError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        _ => status,
    };
    let code = match error {
        GroupError::Rejected { code, .. } => code.as_str(),
        other => other.code(),
    };
    ApiError::new(status, code, format!("{what}: {error}"))
}

/// The status of a failure that is not this peer's own (a group that does not exist or that
/// this peer is not in, a conflict with the group's state, a bad value, another peer that
/// refused or did not answer), on the routes whose other failures are 500 (Goop² answered
/// all of them 500).
fn caller_status(error: &GroupError) -> Option<StatusCode> {
    Some(match error {
        GroupError::UnknownGroup(_)
        | GroupError::NotJoined(_)
        | GroupError::NotMember { .. }
        | GroupError::NoRequest { .. } => StatusCode::NOT_FOUND,
        GroupError::AlreadyExists(_)
        | GroupError::HostAlreadyJoined(_)
        | GroupError::HostNotJoined(_)
        | GroupError::HostedHere(_)
        | GroupError::JoinInProgress(_)
        | GroupError::Full { .. }
        | GroupError::LimitBelowCount { .. }
        | GroupError::TooManyGroups(_) => StatusCode::CONFLICT,
        GroupError::EmptyName
        | GroupError::HostCannotJoin(_)
        | GroupError::UnknownRole { .. }
        | GroupError::EmptyRole
        | GroupError::OwnerRoleFixed
        | GroupError::SelfTarget
        | GroupError::InvalidField { .. }
        | GroupError::Encode(_) => StatusCode::BAD_REQUEST,
        // The other peer refused or could not be reached: the code says which.
        GroupError::Rejected { .. } | GroupError::Send { .. } | GroupError::HostLost { .. } => {
            StatusCode::BAD_GATEWAY
        }
        GroupError::JoinTimedOut { .. } | GroupError::DiscoverTimedOut(_) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => return None,
    })
}

/// For routes whose other failures are 500 (Goop²'s `Failed...` answers).
fn internal(what: &str) -> impl Fn(GroupError) -> ApiError + '_ {
    failing(what, StatusCode::INTERNAL_SERVER_ERROR)
}

/// For routes whose other failures are 400 (Goop²'s kick and role answers).
fn refused(what: &str) -> impl Fn(GroupError) -> ApiError + '_ {
    failing(what, StatusCode::BAD_REQUEST)
}

fn failing(what: &str, otherwise: StatusCode) -> impl Fn(GroupError) -> ApiError + '_ {
    move |e| failed(caller_status(&e).unwrap_or(otherwise), what, &e)
}

pub(super) fn group_id(value: Option<String>, message: &str) -> Result<GroupId, ApiError> {
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(message))?;
    value.parse().map_err(|_| {
        ApiError::bad_request("invalid_group_id", format!("invalid group id {value:?}"))
    })
}

/// A peer id, checked to be a real libp2p one (the wire form only checks the shape).
pub(super) fn peer_id(value: Option<String>, message: &str) -> Result<PeerId, ApiError> {
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(message))?;
    let peer: libp2p::PeerId = value.parse().map_err(|_| {
        ApiError::bad_request("invalid_peer_id", format!("invalid peer id {value:?}"))
    })?;
    Ok(groups::net::peer_to_proto(&peer))
}

#[derive(Deserialize)]
pub(crate) struct CreateBody {
    name: Option<String>,
    #[serde(default)]
    group_type: String,
    #[serde(default)]
    group_context: String,
    #[serde(default)]
    max_members: u32,
    #[serde(default)]
    volatile: bool,
    #[serde(default)]
    admission: Admission,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    default_role: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Created {
    status: &'static str,
    id: GroupId,
}

/// `POST /api/groups {name, group_type?, group_context?, max_members?, volatile?,
/// admission?, roles?, default_role?}`.
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Json<Created>, ApiError> {
    let name = body
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| missing("Missing name"))?;
    let spec = GroupSpec {
        id: None,
        name,
        group_type: body.group_type,
        group_context: body.group_context,
        max_members: body.max_members,
        volatile: body.volatile,
        admission: body.admission,
        roles: body.roles.unwrap_or_default(),
        default_role: body.default_role.filter(|r| !r.is_empty()),
    };
    let id = state
        .groups
        .create(spec)
        .await
        .map_err(internal("Failed to create group"))?;
    Ok(Json(Created {
        status: "created",
        id,
    }))
}

#[derive(Serialize)]
pub(crate) struct GroupJson {
    id: GroupId,
    name: String,
    owner: PeerId,
    group_type: String,
    group_context: String,
    max_members: u32,
    default_role: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    volatile: bool,
    admission: Admission,
    host_joined: bool,
    created_at: Timestamp,
    member_count: usize,
    members: Vec<MemberInfo>,
    host_in_group: bool,
    host_can_join: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    invited: Vec<PeerId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    banned: Vec<PeerId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    requests: Vec<PeerId>,
}

impl From<HostedGroup> for GroupJson {
    fn from(g: HostedGroup) -> Self {
        Self {
            id: g.id,
            name: g.name,
            owner: g.owner,
            group_type: g.group_type,
            group_context: g.group_context,
            max_members: g.max_members,
            default_role: g.default_role,
            roles: g.roles,
            volatile: g.volatile,
            admission: g.admission,
            host_joined: g.host_joined,
            created_at: Timestamp::from_unix_ms(g.created_at),
            member_count: g.members.len(),
            members: g.members,
            host_in_group: g.host_joined,
            host_can_join: g.host_can_join,
            invited: g.invited,
            banned: g.banned,
            requests: g.requests,
        }
    }
}

/// `GET /api/groups`: hosted groups, newest first.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<GroupJson>>, ApiError> {
    let mut hosted = state
        .groups
        .hosted_groups()
        .await
        .map_err(internal("Failed to list groups"))?;
    for group in &mut hosted {
        state.names.fill(&mut group.members);
    }
    Ok(Json(hosted.into_iter().map(GroupJson::from).collect()))
}

#[derive(Deserialize)]
pub(crate) struct GroupBody {
    group_id: Option<String>,
}

/// `POST /api/groups/join-own {group_id}`.
pub(crate) async fn join_own(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "Missing group_id")?;
    state
        .groups
        .join_own(group)
        .await
        .map_err(internal("Failed"))?;
    Ok(ok("joined"))
}

/// `POST /api/groups/leave-own {group_id}`.
pub(crate) async fn leave_own(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "Missing group_id")?;
    state
        .groups
        .leave_own(group)
        .await
        .map_err(internal("Failed"))?;
    Ok(ok("left"))
}

/// `POST /api/groups/close {group_id}`.
pub(crate) async fn close(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "Missing group_id")?;
    state
        .groups
        .close(group)
        .await
        .map_err(internal("Failed to close group"))?;
    Ok(ok("closed"))
}

/// `POST /api/groups/leave {group_id}`.
pub(crate) async fn leave(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "Missing group_id")?;
    state
        .groups
        .leave(group)
        .await
        .map_err(internal("Failed to leave group"))?;
    Ok(ok("left"))
}

#[derive(Serialize)]
pub(crate) struct SubscriptionJson {
    host_peer_id: PeerId,
    group_id: GroupId,
    group_name: String,
    group_type: String,
    group_context: String,
    max_members: u32,
    volatile: bool,
    role: String,
    subscribed_at: Timestamp,
    host_reachable: bool,
    member_count: usize,
    members: Vec<MemberInfo>,
}

#[derive(Serialize)]
pub(crate) struct ActiveGroup {
    host_peer_id: PeerId,
    group_id: GroupId,
    group_type: String,
}

#[derive(Serialize)]
pub(crate) struct Subscriptions {
    /// `[]` when empty (Goop² answered `null`).
    subscriptions: Vec<SubscriptionJson>,
    active_groups: Vec<ActiveGroup>,
}

/// `GET /api/groups/subscriptions`: joined groups (volatile ones only among the active).
pub(crate) async fn subscriptions(
    State(state): State<AppState>,
) -> Result<Json<Subscriptions>, ApiError> {
    let mut subs: Vec<Subscription> = state
        .groups
        .subscriptions()
        .await
        .map_err(internal("Failed to list subscriptions"))?;
    for sub in &mut subs {
        state.names.fill(&mut sub.members);
    }
    let active_groups = subs
        .iter()
        .filter(|s| s.connected)
        .map(|s| ActiveGroup {
            host_peer_id: s.host.clone(),
            group_id: s.group.clone(),
            group_type: s.group_type.clone(),
        })
        .collect();
    let list: Vec<SubscriptionJson> = subs
        .into_iter()
        .filter(|s| !s.volatile)
        .map(|s| SubscriptionJson {
            host_peer_id: s.host,
            group_id: s.group,
            group_name: s.group_name,
            group_type: s.group_type,
            group_context: s.group_context,
            max_members: s.max_members,
            volatile: s.volatile,
            role: s.role,
            subscribed_at: Timestamp::from_unix_ms(s.subscribed_at),
            host_reachable: s.connected,
            member_count: s.members.len(),
            members: s.members,
        })
        .collect();
    Ok(Json(Subscriptions {
        subscriptions: list,
        active_groups,
    }))
}

#[derive(Deserialize)]
pub(crate) struct HostGroupBody {
    host_peer_id: Option<String>,
    group_id: Option<String>,
}

pub(super) fn host_and_group(body: HostGroupBody) -> Result<(PeerId, GroupId), ApiError> {
    let message = "Missing host_peer_id or group_id";
    if body.host_peer_id.as_deref().is_none_or(str::is_empty)
        || body.group_id.as_deref().is_none_or(str::is_empty)
    {
        return Err(missing(message));
    }
    Ok((
        peer_id(body.host_peer_id, message)?,
        group_id(body.group_id, message)?,
    ))
}

/// `POST /api/groups/join {host_peer_id, group_id}`: answered on the host's welcome, its
/// refusal (with its reason as the code), or the join timeout.
pub(crate) async fn join(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HostGroupBody>,
) -> Result<Json<Status>, ApiError> {
    let (host, group) = host_and_group(body)?;
    state
        .groups
        .join(host, group)
        .await
        .map_err(internal("Failed to join group"))?;
    Ok(ok("joined"))
}

/// `POST /api/groups/rejoin {host_peer_id, group_id}`.
pub(crate) async fn rejoin(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HostGroupBody>,
) -> Result<Json<Status>, ApiError> {
    let (host, group) = host_and_group(body)?;
    state
        .groups
        .join(host, group)
        .await
        .map_err(internal("Failed to rejoin"))?;
    Ok(ok("rejoined"))
}

/// `POST /api/groups/subscriptions/remove {host_peer_id, group_id}`: leaves and forgets the
/// group; a subscription that does not exist is not an error.
pub(crate) async fn remove_subscription(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HostGroupBody>,
) -> Result<Json<Status>, ApiError> {
    let (_host, group) = host_and_group(body)?;
    match state.groups.leave(group).await {
        Ok(()) | Err(GroupError::NotJoined(_) | GroupError::UnknownGroup(_)) => Ok(ok("removed")),
        Err(e) => Err(internal("Failed to remove subscription")(e)),
    }
}

#[derive(Deserialize)]
pub(crate) struct GroupPeerBody {
    group_id: Option<String>,
    peer_id: Option<String>,
}

fn group_and_peer(body: GroupPeerBody, message: &str) -> Result<(GroupId, PeerId), ApiError> {
    if body.group_id.as_deref().is_none_or(str::is_empty)
        || body.peer_id.as_deref().is_none_or(str::is_empty)
    {
        return Err(missing(message));
    }
    Ok((
        group_id(body.group_id, message)?,
        peer_id(body.peer_id, message)?,
    ))
}

/// `POST /api/groups/invite {group_id, peer_id}`: answered once the peer received it.
pub(crate) async fn invite(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupPeerBody>,
) -> Result<Json<Status>, ApiError> {
    let (group, peer) = group_and_peer(body, "Missing group_id or peer_id")?;
    state
        .groups
        .invite(group, peer)
        .await
        .map_err(internal("Failed to invite peer"))?;
    Ok(ok("invited"))
}

/// `POST /api/groups/uninvite {group_id, peer_id}`: withdraws an invitation.
pub(crate) async fn uninvite(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupPeerBody>,
) -> Result<Json<Status>, ApiError> {
    let (group, peer) = group_and_peer(body, "Missing group_id or peer_id")?;
    state
        .groups
        .uninvite(group, peer)
        .await
        .map_err(internal("Failed to withdraw the invitation"))?;
    Ok(ok("uninvited"))
}

/// `POST /api/groups/unban {group_id, peer_id}`: lets a kicked peer join again; a 400
/// `not_banned` when it was not banned.
pub(crate) async fn unban(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupPeerBody>,
) -> Result<Json<Status>, ApiError> {
    let (group, peer) = group_and_peer(body, "missing group_id or peer_id")?;
    let was_banned = state
        .groups
        .unban(group.clone(), peer.clone())
        .await
        .map_err(refused("unban failed"))?;
    if !was_banned {
        return Err(ApiError::bad_request(
            "not_banned",
            format!("peer {peer} is not banned from group {group}"),
        ));
    }
    Ok(ok("unbanned"))
}

/// A host's decision about one peer of one of its groups (`{group_id, peer_id}`): `done`
/// when it went through, a 400 with the group error's code when it did not.
async fn decide<F: Future<Output = Result<(), GroupError>>>(
    body: GroupPeerBody,
    what: &str,
    done: &'static str,
    call: impl FnOnce(GroupId, PeerId) -> F,
) -> Result<Json<Status>, ApiError> {
    let (group, peer) = group_and_peer(body, "missing group_id or peer_id")?;
    call(group, peer).await.map_err(refused(what))?;
    Ok(ok(done))
}

/// `POST /api/groups/approve {group_id, peer_id}`: the peer that asked to join a group that
/// admits by approval is invited, so its next join gets in; a 400 `no_request` when it did
/// not ask.
pub(crate) async fn approve(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupPeerBody>,
) -> Result<Json<Status>, ApiError> {
    decide(body, "approve failed", "approved", |g, p| {
        state.groups.approve(g, p)
    })
    .await
}

/// `POST /api/groups/deny {group_id, peer_id}`: the peer that asked to join is banned until
/// `unban` or `invite`; a 400 `no_request` when it did not ask.
pub(crate) async fn deny(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupPeerBody>,
) -> Result<Json<Status>, ApiError> {
    decide(body, "deny failed", "denied", |g, p| {
        state.groups.deny(g, p)
    })
    .await
}

/// `POST /api/groups/kick {group_id, peer_id}`: the member is removed and banned until
/// `unban` or `invite`.
pub(crate) async fn kick(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupPeerBody>,
) -> Result<Json<Status>, ApiError> {
    decide(body, "kick failed", "kicked", |g, p| {
        state.groups.kick(g, p)
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct MaxMembersBody {
    group_id: Option<String>,
    #[serde(default)]
    max_members: u32,
}

/// `POST /api/groups/max-members {group_id, max_members}`.
pub(crate) async fn max_members(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<MaxMembersBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "missing group_id")?;
    let update = MetaUpdate {
        max_members: Some(body.max_members),
        ..MetaUpdate::default()
    };
    state
        .groups
        .update_meta(group, update)
        .await
        .map_err(internal("failed"))?;
    Ok(ok("ok"))
}

#[derive(Deserialize)]
pub(crate) struct MetaBody {
    group_id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    max_members: Option<u32>,
    #[serde(default)]
    admission: Option<Admission>,
}

/// `POST /api/groups/meta {group_id, name, max_members?, admission?}`; a missing
/// `max_members` keeps the limit (Goop² took it as 0, so a rename lifted the limit).
pub(crate) async fn meta(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<MetaBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "missing group_id")?;
    let name = body
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| missing("missing name"))?;
    let update = MetaUpdate {
        name: Some(name),
        max_members: body.max_members,
        admission: body.admission,
        ..MetaUpdate::default()
    };
    state
        .groups
        .update_meta(group, update)
        .await
        .map_err(internal("failed"))?;
    Ok(ok("ok"))
}

#[derive(Deserialize)]
pub(crate) struct SendBody {
    group_id: Option<String>,
    payload: Option<Box<RawValue>>,
    /// Send as a `state` message instead of `msg`.
    #[serde(default)]
    state: bool,
}

/// `POST /api/groups/send {group_id, payload, state?}`: as host to every member, as member
/// to the host (answered once the host received it).
pub(crate) async fn send(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "Missing group_id")?;
    let payload = body.payload.unwrap_or_default();
    let sent = if body.state {
        state.groups.send_state(group, payload).await
    } else {
        state.groups.send(group, payload).await
    };
    sent.map_err(internal("Failed to send"))?;
    Ok(ok("sent"))
}

#[derive(Deserialize)]
pub(crate) struct SetRoleBody {
    group_id: Option<String>,
    peer_id: Option<String>,
    role: Option<String>,
}

/// `POST /api/groups/set-role {group_id, peer_id, role}`.
pub(crate) async fn set_role(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SetRoleBody>,
) -> Result<Json<Status>, ApiError> {
    let message = "missing group_id, peer_id or role";
    let role = body
        .role
        .filter(|r| !r.is_empty())
        .ok_or_else(|| missing(message))?;
    let (group, peer) = group_and_peer(
        GroupPeerBody {
            group_id: body.group_id,
            peer_id: body.peer_id,
        },
        message,
    )?;
    state
        .groups
        .set_role(group, peer, role)
        .await
        .map_err(refused("set role failed"))?;
    Ok(ok("ok"))
}

#[derive(Deserialize)]
pub(crate) struct DefaultRoleBody {
    group_id: Option<String>,
    default_role: Option<String>,
}

/// `POST /api/groups/set-default-role {group_id, default_role}`.
pub(crate) async fn set_default_role(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DefaultRoleBody>,
) -> Result<Json<Status>, ApiError> {
    let message = "missing group_id or default_role";
    let group = group_id(body.group_id, message)?;
    let role = body
        .default_role
        .filter(|r| !r.is_empty())
        .ok_or_else(|| missing(message))?;
    let update = MetaUpdate {
        default_role: Some(role),
        ..MetaUpdate::default()
    };
    state
        .groups
        .update_meta(group, update)
        .await
        .map_err(refused("set default role failed"))?;
    Ok(ok("ok"))
}

#[derive(Deserialize)]
pub(crate) struct RolesBody {
    group_id: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// `POST /api/groups/set-roles {group_id, roles}` (empty or null clears them).
pub(crate) async fn set_roles(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Json<Status>, ApiError> {
    let group = group_id(body.group_id, "missing group_id")?;
    let update = MetaUpdate {
        roles: Some(body.roles.unwrap_or_default()),
        ..MetaUpdate::default()
    };
    state
        .groups
        .update_meta(group, update)
        .await
        .map_err(refused("set roles failed"))?;
    Ok(ok("ok"))
}

#[derive(Deserialize)]
pub(crate) struct MembersQuery {
    group_id: Option<String>,
}

/// `GET /api/groups/members?group_id=`: members of a hosted or joined group.
pub(crate) async fn members(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<MembersQuery>,
) -> Result<Json<Vec<MemberInfo>>, ApiError> {
    let group = group_id(query.group_id, "missing group_id")?;
    let mut members = state.groups.members(group).await.map_err(|e| {
        let status = match e {
            GroupError::UnknownGroup(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        failed(status, "cannot list members", &e)
    })?;
    state.names.fill(&mut members);
    Ok(Json(members))
}

#[derive(Serialize)]
pub(crate) struct InvitationJson {
    host_peer_id: PeerId,
    group_id: GroupId,
    group_name: String,
    group_type: String,
    group_context: String,
    received_at: Timestamp,
}

/// `GET /api/groups/invitations`: invitations this peer received.
pub(crate) async fn invitations(
    State(state): State<AppState>,
) -> Result<Json<Vec<InvitationJson>>, ApiError> {
    let invites = state
        .groups
        .invitations()
        .await
        .map_err(internal("cannot list invitations"))?;
    Ok(Json(
        invites
            .into_iter()
            .map(|i| InvitationJson {
                host_peer_id: i.host,
                group_id: i.group,
                group_name: i.group_name,
                group_type: i.group_type,
                group_context: i.group_context,
                received_at: Timestamp::from_unix_ms(i.received_at),
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct DiscoverQuery {
    peer: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/groups/discover?peer=<id>&limit=<n>`: the peer's open and approval groups (rows of
/// Goop²'s `_groups` shape), asked over the network as a typed request, never as SQL.
pub(crate) async fn discover(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<DiscoverQuery>,
) -> Result<Json<Vec<GroupRow>>, ApiError> {
    let peer = peer_id(query.peer, "missing peer")?;
    let rows = if &peer == state.groups.peer_id() {
        state
            .groups
            .listed_group_rows(query.limit.unwrap_or(100), 0)
            .await
    } else {
        state.groups.discover(peer, query.limit).await
    };
    rows.map(Json).map_err(|e| {
        let status = match e {
            GroupError::DiscoverTimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            GroupError::Send { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        failed(status, "discovery failed", &e)
    })
}

/// `GET /api/groups/events`: `event: connected`, then one `event: <type>` per group event
/// with data `{type, group, from?, payload?}`. A listener that fell behind gets
/// `event: lagged` with `{"missed":N}`.
pub(crate) async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    event_stream(state.groups.events(), state.cancel.clone(), sse_event)
}

fn sse_event(event: &GroupEvent) -> Event {
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "event".to_owned());
    match serde_json::to_string(event) {
        Ok(json) => Event::default().event(kind).data(json),
        Err(error) => {
            tracing::warn!(%error, "cannot encode a group event");
            Event::default().event("error").data(r#"{"type":"error"}"#)
        }
    }
}
