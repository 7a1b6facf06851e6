//! What a group operation can fail with.

use proto::{ErrorCode, GroupId, PeerId};

use super::store::StoreError;
use super::transport::TransportError;

/// Why a group operation failed. [`GroupError::code`] gives a machine-readable code for the
/// HTTP layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// This peer neither hosts nor has joined the group.
    #[error("group not found: {0}")]
    UnknownGroup(GroupId),
    /// This peer is not connected to that remote group.
    #[error("not connected to group {0}")]
    NotJoined(GroupId),
    /// The peer is not a member of the group.
    #[error("peer {peer} is not a member of group {group}")]
    NotMember {
        /// The group.
        group: GroupId,
        /// The peer.
        peer: PeerId,
    },
    /// A group with this id already exists here.
    #[error("group {0} already exists")]
    AlreadyExists(GroupId),
    /// A group needs a name.
    /// A name, type or context the group does not take.
    #[error("group {field} {reason}")]
    InvalidField {
        /// Which: `name`, `type`, `context` or `role`.
        field: &'static str,
        /// Why, e.g. "must not contain control characters".
        reason: String,
    },
    #[error("group name must not be empty")]
    EmptyName,
    /// The group is at its member limit.
    #[error("group {group} is full ({max} members)")]
    Full {
        /// The group.
        group: GroupId,
        /// Its limit.
        max: u32,
    },
    /// A limit cannot go below the current member count.
    #[error("group {group} has {count} members, more than {max}")]
    LimitBelowCount {
        /// The group.
        group: GroupId,
        /// Members now.
        count: u32,
        /// The limit asked for.
        max: u32,
    },
    /// This peer hosts too many groups.
    #[error("maximum of {0} hosted groups reached")]
    TooManyGroups(usize),
    /// The group's type does not let the host join.
    #[error("group type {0:?} does not allow the host to join")]
    HostCannotJoin(String),
    /// The host is already a member of its own group.
    #[error("host already in group {0}")]
    HostAlreadyJoined(GroupId),
    /// The host is not a member of its own group.
    #[error("host not in group {0}")]
    HostNotJoined(GroupId),
    /// The role is not one of the group's roles.
    #[error("role {role:?} is not one of the roles of group {group}")]
    UnknownRole {
        /// The group.
        group: GroupId,
        /// The role asked for.
        role: String,
    },
    /// A role must not be empty.
    #[error("role must not be empty")]
    EmptyRole,
    /// The host's role is always `owner`.
    #[error("the host's role is fixed at owner")]
    OwnerRoleFixed,
    /// The operation needs a remote group, and this peer hosts that id.
    #[error("group {0} is hosted by this peer")]
    HostedHere(GroupId),
    /// A peer cannot join, kick or invite itself.
    #[error("this peer cannot do that to itself")]
    SelfTarget,
    /// A join to this group is already waiting for its answer.
    #[error("a join to group {0} is already in progress")]
    JoinInProgress(GroupId),
    /// The host refused the join, or the request, with a reason.
    #[error("host refused: {code}: {message}")]
    Rejected {
        /// The host's reason.
        code: ErrorCode,
        /// The host's words.
        message: String,
    },
    /// The host did not answer the join in time.
    #[error("timed out waiting for welcome from {host} for group {group}")]
    JoinTimedOut {
        /// The host.
        host: PeerId,
        /// The group.
        group: GroupId,
    },
    /// The peer did not answer a discovery request in time.
    #[error("timed out waiting for the group list of {0}")]
    DiscoverTimedOut(PeerId),
    /// The host of a joined group is lost; this peer is rejoining it.
    #[error("host {host} of group {group} is unreachable; rejoining")]
    HostLost {
        /// The host.
        host: PeerId,
        /// The group.
        group: GroupId,
    },
    /// The peer has no request to join the group waiting.
    #[error("peer {peer} has not asked to join group {group}")]
    NoRequest {
        /// The group.
        group: GroupId,
        /// The peer.
        peer: PeerId,
    },
    /// A join was cancelled by a leave.
    #[error("join to group {0} cancelled")]
    Cancelled(GroupId),
    /// A message could not be delivered.
    #[error("send to {peer} failed: {source}")]
    Send {
        /// The receiver.
        peer: PeerId,
        /// Why.
        source: TransportError,
    },
    /// A type handler refused to create the group.
    #[error("group type {group_type:?} refused the group: {reason}")]
    Handler {
        /// The group type.
        group_type: String,
        /// The handler's reason.
        reason: String,
    },
    /// The database failed.
    #[error("group store failed: {0}")]
    Store(#[from] StoreError),
    /// A message could not be encoded (a payload that is not JSON).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The group manager has stopped.
    #[error("group manager stopped")]
    Stopped,
}

impl GroupError {
    /// A stable machine-readable code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownGroup(_) => "unknown_group",
            Self::NotJoined(_) => "not_joined",
            Self::NotMember { .. } => "not_member",
            Self::NoRequest { .. } => "no_request",
            Self::AlreadyExists(_) => "already_exists",
            Self::EmptyName | Self::EmptyRole | Self::InvalidField { .. } => "invalid_request",
            Self::Full { .. } => "full",
            Self::LimitBelowCount { .. } => "limit_below_count",
            Self::TooManyGroups(_) => "too_many_groups",
            Self::HostCannotJoin(_) | Self::OwnerRoleFixed | Self::SelfTarget => "forbidden",
            Self::HostAlreadyJoined(_) => "host_already_joined",
            Self::HostNotJoined(_) => "host_not_joined",
            Self::UnknownRole { .. } => "unknown_role",
            Self::HostedHere(_) => "hosted_here",
            Self::JoinInProgress(_) => "join_in_progress",
            Self::Rejected { .. } => "rejected",
            Self::JoinTimedOut { .. } | Self::DiscoverTimedOut(_) => "timeout",
            Self::HostLost { .. } => "host_lost",
            Self::Cancelled(_) => "cancelled",
            Self::Send {
                source: TransportError::Refused(_),
                ..
            } => "refused",
            Self::Send { .. } => "unreachable",
            Self::Handler { .. } => "handler_refused",
            Self::Store(_) => "store",
            Self::Encode(_) => "invalid_payload",
            Self::Stopped => "stopped",
        }
    }

    /// Whether retrying later may succeed (a timeout or an unreachable peer), as opposed to a
    /// refusal that will stand.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::JoinTimedOut { .. }
            | Self::DiscoverTimedOut(_)
            | Self::HostLost { .. }
            | Self::Send { .. }
            | Self::Store(_) => true,
            Self::Rejected { code, .. } => {
                matches!(code, ErrorCode::Full | ErrorCode::PendingApproval)
            }
            _ => false,
        }
    }
}
