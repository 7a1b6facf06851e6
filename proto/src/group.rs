//! Group wire messages: what a group host and its members say to each other over the MQ bus,
//! the invitation, the discovery request, and the local event shown to the HTTP event stream.
//!
//! Every group message travels on the topic `group:<gid>:<type>`. Goop² uses two payload
//! styles and a Goop² peer expects exactly the one it uses for each type, so this module keeps
//! them: the *envelope* style `{"type","group","from"?,"payload"?}` for `join`, `leave`, `close`,
//! `ping`, `pong` and `error`, and the *bare* style (the payload object alone) for `welcome`,
//! `members`, `meta`, `msg` and `state`.
//!
//! Additions are optional fields a Goop² peer ignores: roles and admission in `welcome` and
//! `meta`, a `reason` in `close` (a kick is a `close` with reason `kicked`), a `features` list in
//! `join`, and `set-role`. A member that asks for the `author` feature in its `join` gets relayed
//! `msg`/`state` in envelope style with the original author in `from`; a Goop² member, which does
//! not ask, keeps getting bare payloads.
//!
//! Payloads are raw JSON ([`RawValue`]) so numbers pass through the host untouched.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::{GroupId, PeerId};

/// The topic prefix of group messages.
pub const GROUP_TOPIC_PREFIX: &str = "group:";
/// The topic of invitations (host → invitee, bare [`Invite`]).
pub const INVITE_TOPIC: &str = "group.invite";
/// The topic of a discovery request ([`DiscoverRequest`]).
pub const DISCOVER_TOPIC: &str = "group.discover";
/// The topic of a discovery answer ([`DiscoverReply`]).
pub const DISCOVER_REPLY_TOPIC: &str = "group.discover.reply";
/// The feature a joiner names in its `join` to get relays with their original author.
pub const FEATURE_AUTHOR: &str = "author";
/// The role the host has in its own group.
pub const OWNER_ROLE: &str = "owner";
/// The role given to joiners when a group has no default role.
pub const DEFAULT_ROLE: &str = "viewer";

/// Why a group message or topic could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum GroupWireError {
    /// The topic is not `group:<gid>:<type>` with a valid group id.
    #[error("invalid group topic {0:?}: expected group:<gid>:<type>")]
    Topic(String),
    /// The type in the topic is not one this peer knows.
    #[error("unknown group message type {0:?}")]
    UnknownKind(String),
    /// The payload is not the JSON this type carries.
    #[error("invalid {kind} payload: {source}")]
    Payload {
        /// The message type being decoded.
        kind: GroupMsgKind,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// An envelope names another type or group than its topic.
    #[error("envelope says type {found_kind:?} group {found_group:?}, topic says {kind} {group}")]
    Mismatch {
        /// The type in the topic.
        kind: GroupMsgKind,
        /// The group in the topic.
        group: GroupId,
        /// The type in the envelope.
        found_kind: String,
        /// The group in the envelope.
        found_group: String,
    },
    /// Encoding failed (only possible for payloads that are not valid JSON).
    #[error("cannot encode {kind}: {source}")]
    Encode {
        /// The message type being encoded.
        kind: GroupMsgKind,
        /// What serde found wrong.
        source: serde_json::Error,
    },
}

/// The type of a group message: the last part of its topic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GroupMsgKind {
    /// Member → host: asks to join (envelope).
    Join,
    /// Host → joiner: admitted, with the members and settings (bare).
    Welcome,
    /// Host → members: the member list changed (bare).
    Members,
    /// Member → host → other members: application message (bare, or envelope with author).
    Msg,
    /// Host → members: name, type, limit, roles changed (bare).
    Meta,
    /// Like `msg`, for state updates (bare, or envelope with author).
    State,
    /// Host → member: liveness probe (envelope).
    Ping,
    /// Member → host: answer to `ping` (envelope).
    Pong,
    /// Member → host: leaves the group (envelope).
    Leave,
    /// Host → member: the group is closed, or this member is kicked (envelope).
    Close,
    /// Host → peer: a refusal with a reason (envelope, payload [`ErrorBody`]).
    Error,
    /// Host → member: this member's role changed (bare, an addition).
    SetRole,
}

impl GroupMsgKind {
    /// Every kind, for tests and tables.
    pub const ALL: [Self; 12] = [
        Self::Join,
        Self::Welcome,
        Self::Members,
        Self::Msg,
        Self::Meta,
        Self::State,
        Self::Ping,
        Self::Pong,
        Self::Leave,
        Self::Close,
        Self::Error,
        Self::SetRole,
    ];

    /// The kind as written in topics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Welcome => "welcome",
            Self::Members => "members",
            Self::Msg => "msg",
            Self::Meta => "meta",
            Self::State => "state",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Leave => "leave",
            Self::Close => "close",
            Self::Error => "error",
            Self::SetRole => "set-role",
        }
    }

    /// Whether only a group's host may send this kind to its members.
    pub const fn is_host_only(self) -> bool {
        matches!(
            self,
            Self::Welcome
                | Self::Members
                | Self::Meta
                | Self::Ping
                | Self::Close
                | Self::Error
                | Self::SetRole
        )
    }
}

impl fmt::Display for GroupMsgKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupMsgKind {
    type Err = GroupWireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| GroupWireError::UnknownKind(s.to_owned()))
    }
}

/// A parsed group topic `group:<gid>:<type>`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct GroupTopic {
    /// The group.
    pub group: GroupId,
    /// The message type.
    pub kind: GroupMsgKind,
}

impl GroupTopic {
    /// The topic for `kind` in `group`.
    pub fn new(group: GroupId, kind: GroupMsgKind) -> Self {
        Self { group, kind }
    }

    /// Parses `group:<gid>:<type>`. The group id ends at the first `:` after the prefix
    /// (a group id never contains one).
    pub fn parse(topic: &str) -> Result<Self, GroupWireError> {
        let bad = || GroupWireError::Topic(topic.to_owned());
        let rest = topic.strip_prefix(GROUP_TOPIC_PREFIX).ok_or_else(bad)?;
        let (gid, kind) = rest.split_once(':').ok_or_else(bad)?;
        let group = gid.parse().map_err(|_| bad())?;
        Ok(Self {
            group,
            kind: kind.parse()?,
        })
    }
}

impl fmt::Display for GroupTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{GROUP_TOPIC_PREFIX}{}:{}", self.group, self.kind)
    }
}

/// A member as the host lists it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's peer id.
    pub peer_id: PeerId,
    /// A display name: the one the member gave when it joined (an addition on the wire; Goop²
    /// sent none), or the one it gives when asked (local API paths fill those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The member's role (`owner` for the host).
    #[serde(default)]
    pub role: String,
    /// When the member joined, Unix milliseconds.
    #[serde(default)]
    pub joined_at: i64,
}

/// Who may join a group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Anyone who knows the host and the group id.
    #[default]
    Open,
    /// Only peers the host invited (and current members).
    Invite,
    /// Peers the host invited, and others once the host approves their request: a join from
    /// anyone else is recorded as a request and answered `pending_approval`.
    Approval,
}

impl Admission {
    /// The admission as stored and sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Invite => "invite",
            Self::Approval => "approval",
        }
    }

    /// Whether discovery lists the group: anyone may join an open group and ask to join an
    /// approval group; an invite-only group is not shown to peers it did not invite.
    pub const fn listed(self) -> bool {
        !matches!(self, Self::Invite)
    }
}

/// `join` options (the optional envelope payload; a Goop² joiner sends none).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct JoinOptions {
    /// Features the joiner understands, e.g. [`FEATURE_AUTHOR`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// The joiner's display name (an addition; the host lists it with the member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `welcome` (bare): the joiner is admitted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Welcome {
    /// The group's name (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_name: String,
    /// The group's type (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_type: String,
    /// The group's context (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_context: String,
    /// The member limit, 0 for none.
    #[serde(default)]
    pub max_members: u32,
    /// Whether the group is volatile (not persisted).
    #[serde(default)]
    pub volatile: bool,
    /// The members, the joiner included.
    #[serde(default, deserialize_with = "null_as_default")]
    pub members: Vec<MemberInfo>,
    /// Group state, when the type keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<RawValue>>,
    /// The joiner's role (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The roles this group knows (an addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The role new joiners get (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// Who may join (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
    /// Features the host grants this joiner, among those it asked for (an addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// The group's epoch (an addition; see [`PingBody::epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `members` (bare): the member list after a change.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Members {
    /// Every member, the host first when it has joined.
    #[serde(default, deserialize_with = "null_as_default")]
    pub members: Vec<MemberInfo>,
    /// The group's epoch after this change (an addition; see [`PingBody::epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `ping` options (the optional envelope payload; a Goop² host sends none).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct PingBody {
    /// The group's epoch: it changes whenever the members, roles or settings change, and
    /// `welcome`, `members` and `meta` carry it. A member whose last epoch differs missed an
    /// update and rejoins to get the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `meta` (bare): the group's settings after a change.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    /// The group's name.
    #[serde(default)]
    pub group_name: String,
    /// The group's type.
    #[serde(default)]
    pub group_type: String,
    /// The member limit, 0 for none.
    #[serde(default)]
    pub max_members: u32,
    /// The roles this group knows (an addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The role new joiners get (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// Who may join (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
    /// The group's epoch after this change (an addition; see [`PingBody::epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// Why a host closes a member's connection to a group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseReason {
    /// The host closed the group.
    #[default]
    Closed,
    /// The host removed this member.
    Kicked,
}

/// `close` options (the optional envelope payload; a Goop² host sends none, which reads as
/// [`CloseReason::Closed`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct CloseBody {
    /// Why the connection ends.
    #[serde(default)]
    pub reason: CloseReason,
}

/// `set-role` (bare, an addition): a member's role changed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SetRole {
    /// The member whose role changed.
    pub peer_id: PeerId,
    /// Its new role.
    pub role: String,
}

/// The machine-readable reason of an `error`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum ErrorCode {
    /// The group is at its member limit.
    Full,
    /// The group is invite-only and the joiner was not invited.
    NotInvited,
    /// The host does not host this group (it never did, or it was closed).
    UnknownGroup,
    /// The sender is not a member of the group.
    NotMember,
    /// The sender may not do this.
    Forbidden,
    /// The join waits for the host's approval; asking again later may succeed.
    PendingApproval,
    /// The member sent more messages than the host relays; some were dropped.
    RateLimited,
    /// A code this peer does not know, kept as received.
    Other(String),
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Full => "full",
            Self::NotInvited => "not_invited",
            Self::UnknownGroup => "unknown_group",
            Self::NotMember => "not_member",
            Self::Forbidden => "forbidden",
            Self::PendingApproval => "pending_approval",
            Self::RateLimited => "rate_limited",
            Self::Other(code) => code,
        }
    }
}

impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        match s {
            "full" => Self::Full,
            "not_invited" => Self::NotInvited,
            "unknown_group" => Self::UnknownGroup,
            "not_member" => Self::NotMember,
            "forbidden" => Self::Forbidden,
            "pending_approval" => Self::PendingApproval,
            "rate_limited" => Self::RateLimited,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from(&*s))
    }
}

/// The payload of an `error`: `{"code","message"}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Why.
    pub code: ErrorCode,
    /// For people.
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// An error with the usual message for `code`.
    pub fn new(code: ErrorCode) -> Self {
        let message = match &code {
            ErrorCode::Full => "group is full".to_owned(),
            ErrorCode::NotInvited => "group is invite-only and you are not invited".to_owned(),
            ErrorCode::UnknownGroup => "no such group on this host".to_owned(),
            ErrorCode::NotMember => "you are not a member of this group".to_owned(),
            ErrorCode::Forbidden => "not allowed".to_owned(),
            ErrorCode::PendingApproval => {
                "waiting for the host's approval; ask again later".to_owned()
            }
            ErrorCode::RateLimited => "too many messages; some were dropped".to_owned(),
            ErrorCode::Other(code) => code.clone(),
        };
        Self { code, message }
    }
}

/// A `msg` or `state` payload, with its original author when the host relays it.
#[derive(Clone, Debug)]
pub struct Relay {
    /// The original author; `None` in the bare style (member → host, or a Goop² host's relay).
    pub from: Option<PeerId>,
    /// The payload, untouched.
    pub payload: Box<RawValue>,
}

/// How a receiver reads `msg` and `state`: bare, or in envelope style with the author.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RelayForm {
    /// The payload alone (what a member sends, and what a Goop² host relays).
    Bare,
    /// `{"type","group","from","payload"}` (what a goop host relays to a member that asked for
    /// [`FEATURE_AUTHOR`]); anything else is read as bare.
    Authored,
}

/// One group message, decoded.
#[derive(Clone, Debug)]
pub enum GroupMessage {
    /// See [`GroupMsgKind::Join`].
    Join(JoinOptions),
    /// See [`GroupMsgKind::Welcome`].
    Welcome(Box<Welcome>),
    /// See [`GroupMsgKind::Members`].
    Members(Members),
    /// See [`GroupMsgKind::Msg`].
    Msg(Relay),
    /// See [`GroupMsgKind::Meta`].
    Meta(Meta),
    /// See [`GroupMsgKind::State`].
    State(Relay),
    /// See [`GroupMsgKind::Ping`].
    Ping(PingBody),
    /// See [`GroupMsgKind::Pong`].
    Pong,
    /// See [`GroupMsgKind::Leave`].
    Leave,
    /// See [`GroupMsgKind::Close`].
    Close(CloseBody),
    /// See [`GroupMsgKind::Error`].
    Error(ErrorBody),
    /// See [`GroupMsgKind::SetRole`].
    SetRole(SetRole),
}

/// The envelope style on the wire.
#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<PeerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<Box<RawValue>>,
}

impl GroupMessage {
    /// The message's type.
    pub fn kind(&self) -> GroupMsgKind {
        match self {
            Self::Join(_) => GroupMsgKind::Join,
            Self::Welcome(_) => GroupMsgKind::Welcome,
            Self::Members(_) => GroupMsgKind::Members,
            Self::Msg(_) => GroupMsgKind::Msg,
            Self::Meta(_) => GroupMsgKind::Meta,
            Self::State(_) => GroupMsgKind::State,
            Self::Ping(_) => GroupMsgKind::Ping,
            Self::Pong => GroupMsgKind::Pong,
            Self::Leave => GroupMsgKind::Leave,
            Self::Close(_) => GroupMsgKind::Close,
            Self::Error(_) => GroupMsgKind::Error,
            Self::SetRole(_) => GroupMsgKind::SetRole,
        }
    }

    /// Decodes the payload of a message received on `topic`. `relay` says how `msg` and
    /// `state` are written (it is ignored for other types).
    pub fn decode(
        topic: &GroupTopic,
        payload: &RawValue,
        relay: RelayForm,
    ) -> Result<Self, GroupWireError> {
        let kind = topic.kind;
        let bad = |source| GroupWireError::Payload { kind, source };
        let envelope = || -> Result<Option<Box<RawValue>>, GroupWireError> {
            let env: Envelope = serde_json::from_str(payload.get()).map_err(bad)?;
            if env.kind != kind.as_str() || env.group != topic.group.as_str() {
                return Err(GroupWireError::Mismatch {
                    kind,
                    group: topic.group.clone(),
                    found_kind: env.kind,
                    found_group: env.group,
                });
            }
            Ok(env.payload.filter(|p| p.get() != "null"))
        };
        let relayed = || -> Result<Relay, GroupWireError> {
            match relay {
                RelayForm::Bare => Ok(Relay {
                    from: None,
                    payload: payload.to_owned(),
                }),
                RelayForm::Authored => {
                    // A host that lost track of this member's features (it restarted) relays
                    // bare; only the host can send here, so reading a non-envelope as bare
                    // gives no one a way to forge an author.
                    match serde_json::from_str::<Envelope>(payload.get()) {
                        Ok(env)
                            if env.kind == kind.as_str()
                                && env.group == topic.group.as_str()
                                && env.from.is_some() =>
                        {
                            Ok(Relay {
                                from: env.from,
                                payload: env.payload.unwrap_or_else(null_raw),
                            })
                        }
                        _ => Ok(Relay {
                            from: None,
                            payload: payload.to_owned(),
                        }),
                    }
                }
            }
        };
        fn body<T: for<'de> Deserialize<'de> + Default>(
            raw: Option<Box<RawValue>>,
        ) -> Result<T, serde_json::Error> {
            raw.map_or_else(|| Ok(T::default()), |raw| serde_json::from_str(raw.get()))
        }
        Ok(match kind {
            GroupMsgKind::Join => Self::Join(body(envelope()?).map_err(bad)?),
            GroupMsgKind::Leave => {
                envelope()?;
                Self::Leave
            }
            GroupMsgKind::Ping => Self::Ping(body(envelope()?).map_err(bad)?),
            GroupMsgKind::Pong => {
                envelope()?;
                Self::Pong
            }
            GroupMsgKind::Close => Self::Close(body(envelope()?).map_err(bad)?),
            GroupMsgKind::Error => {
                let raw = envelope()?
                    .ok_or_else(|| bad(serde::de::Error::custom("error without a payload")))?;
                Self::Error(serde_json::from_str(raw.get()).map_err(bad)?)
            }
            GroupMsgKind::Welcome => {
                Self::Welcome(Box::new(serde_json::from_str(payload.get()).map_err(bad)?))
            }
            GroupMsgKind::Members => {
                Self::Members(serde_json::from_str(payload.get()).map_err(bad)?)
            }
            GroupMsgKind::Meta => Self::Meta(serde_json::from_str(payload.get()).map_err(bad)?),
            GroupMsgKind::SetRole => {
                Self::SetRole(serde_json::from_str(payload.get()).map_err(bad)?)
            }
            GroupMsgKind::Msg => Self::Msg(relayed()?),
            GroupMsgKind::State => Self::State(relayed()?),
        })
    }

    /// Encodes this message for `group`: its topic and its payload. `msg` and `state` with an
    /// author go out in envelope style, without one bare.
    pub fn encode(&self, group: &GroupId) -> Result<(String, Box<RawValue>), GroupWireError> {
        let kind = self.kind();
        let bad = |source| GroupWireError::Encode { kind, source };
        let topic = GroupTopic::new(group.clone(), kind).to_string();
        let envelope = |from: Option<PeerId>, payload: Option<Box<RawValue>>| {
            to_raw(&Envelope {
                kind: kind.as_str().to_owned(),
                group: group.as_str().to_owned(),
                from,
                payload,
            })
        };
        let payload = match self {
            Self::Join(options) => {
                let body = (options != &JoinOptions::default())
                    .then(|| to_raw(options))
                    .transpose()
                    .map_err(bad)?;
                envelope(None, body)
            }
            Self::Leave | Self::Pong => envelope(None, None),
            Self::Ping(body) => {
                let body = (body != &PingBody::default())
                    .then(|| to_raw(body))
                    .transpose()
                    .map_err(bad)?;
                envelope(None, body)
            }
            Self::Close(body) => {
                // A plain close goes out exactly as Goop² writes it.
                let body = (body.reason != CloseReason::Closed)
                    .then(|| to_raw(body))
                    .transpose()
                    .map_err(bad)?;
                envelope(None, body)
            }
            Self::Error(body) => envelope(None, Some(to_raw(body).map_err(bad)?)),
            Self::Welcome(welcome) => to_raw(welcome),
            Self::Members(members) => to_raw(members),
            Self::Meta(meta) => to_raw(meta),
            Self::SetRole(set_role) => to_raw(set_role),
            Self::Msg(relay) | Self::State(relay) => match &relay.from {
                None => Ok(relay.payload.clone()),
                Some(from) => envelope(Some(from.clone()), Some(relay.payload.clone())),
            },
        }
        .map_err(bad)?;
        Ok((topic, payload))
    }
}

/// `group.invite` (bare): the host invites a peer. The invitee replaces `host_peer_id` with the
/// authenticated sender.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Invite {
    /// The group.
    pub group_id: GroupId,
    /// Its name.
    #[serde(default)]
    pub group_name: String,
    /// The host, as the sender claims (not trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_peer_id: Option<PeerId>,
    /// Its type.
    #[serde(default)]
    pub group_type: String,
    /// Its context (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_context: String,
    /// Whether it is volatile.
    #[serde(default)]
    pub volatile: bool,
}

/// `group.discover`: which open or approval groups does this peer host? The typed replacement of Goop²'s
/// remote `{"op":"query","table":"_groups"}`; no SQL travels.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DiscoverRequest {
    /// Echoed in the reply so the asker can match it.
    pub request_id: u64,
    /// At most this many rows (the host also caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Rows to skip, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

/// `group.discover.reply`: the host's open and approval groups, as rows shaped like Goop²'s `_groups` query
/// answer (`{"ok":true,"data":[row]}`).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DiscoverReply {
    /// The request this answers.
    pub request_id: u64,
    /// Whether the query succeeded.
    pub ok: bool,
    /// The rows, newest first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: Vec<GroupRow>,
}

/// One `_groups` row as Goop² returns it from a query: integers 0/1 for flags, roles as JSON
/// text. `member_count` and `admission` are additions.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupRow {
    /// The group id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// The host's peer id.
    pub owner: PeerId,
    /// Its type.
    #[serde(default)]
    pub group_type: String,
    /// Its context.
    #[serde(default)]
    pub group_context: String,
    /// The member limit, 0 for none.
    #[serde(default)]
    pub max_members: u32,
    /// When it was created, RFC 3339 UTC.
    #[serde(default)]
    pub created_at: String,
    /// 1 when the host is a member of its own group.
    #[serde(default)]
    pub host_joined: u8,
    /// 1 when the group is volatile.
    #[serde(default)]
    pub volatile: u8,
    /// The role new joiners get.
    #[serde(default)]
    pub default_role: String,
    /// The roles, as a JSON array in text.
    #[serde(default)]
    pub roles: String,
    /// How many members it has now, the host included when joined (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u32>,
    /// Who may join (an addition; discovery lists open and approval groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
}

/// The type of a local group event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupEventKind {
    /// This peer joined a remote group (or rejoined it).
    Welcome,
    /// The member list changed.
    Members,
    /// A message.
    Msg,
    /// A state update.
    State,
    /// The group's settings changed.
    Meta,
    /// A peer joined a hosted group.
    Join,
    /// A peer left (or was kicked from, or was lost by) a group.
    Leave,
    /// The group was closed (or this peer was kicked).
    Close,
    /// Something failed; the payload is `{"code","message"}`.
    Error,
    /// This peer was invited.
    Invite,
    /// The host of a joined group stopped answering; this peer rejoins it by itself.
    HostLost,
    /// A peer asked to join a hosted group that admits by approval; `from` is the peer.
    JoinRequest,
}

/// A local event for the HTTP event stream: `{type, group, from?, payload?}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: GroupEventKind,
    /// In which group.
    pub group: GroupId,
    /// The peer it is about or from, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PeerId>,
    /// Details, depending on the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
}

fn to_raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(value)
}

fn null_raw() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is valid JSON")
}

/// Reads `null` as the type's default (Goop² writes an empty Go slice as `null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests;
