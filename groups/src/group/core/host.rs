//! The host side: creating and closing groups, admitting, relaying, roles, invitations,
//! liveness of members, and the discovery answer.

use proto::{
    Admission, CloseBody, CloseReason, DISCOVER_REPLY_TOPIC, DiscoverReply, DiscoverRequest,
    ErrorBody, ErrorCode, FEATURE_AUTHOR, GroupEventKind, GroupId, GroupMessage, GroupRow,
    INVITE_TOPIC, Invite, JoinOptions, Members, Meta, PeerId, PingBody, Relay, SetRole, Welcome,
};
use serde_json::value::RawValue;

use super::budget::Verdict;
use super::{
    GroupCore, GroupError, GroupSpec, HookCall, Hosted, LeaveReason, Member, MetaUpdate, Output,
    SendToken, default_role, make_room, members_payload, ms, next_epoch, raw, wall,
};
use crate::group::store::{GroupRecord, MemberRecord, StoreOp};

/// The longest group name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The longest group type, in bytes.
pub const MAX_TYPE_BYTES: usize = 64;
/// The longest group context, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 4096;

/// A group name, type or context as the host takes it: at most `max` bytes and no control
/// characters (they would end up raw in logs and in other peers' interfaces).
fn check_field(field: &'static str, value: &str, max: usize) -> Result<(), GroupError> {
    let reason = if value.len() > max {
        format!("is {} bytes, more than {max}", value.len())
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(GroupError::InvalidField { field, reason })
}

impl GroupCore {
    /// Creates a hosted group and returns its id. Creating a volatile group closes the other
    /// hosted groups of its type first (one per type per peer).
    pub fn create(&mut self, now: u64, spec: GroupSpec) -> Result<GroupId, GroupError> {
        let name = spec.name.trim();
        if name.is_empty() {
            return Err(GroupError::EmptyName);
        }
        check_field("name", name, MAX_NAME_BYTES)?;
        check_field("type", &spec.group_type, MAX_TYPE_BYTES)?;
        check_field("context", &spec.group_context, MAX_CONTEXT_BYTES)?;
        let id = match spec.id {
            Some(id) => id,
            None => loop {
                let candidate: GroupId = format!("{:016x}", self.random())
                    .parse()
                    .map_err(|_| GroupError::EmptyName)?;
                if !self.hosted.contains_key(&candidate) && !self.joined.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        if self.hosted.contains_key(&id) || self.joined.contains_key(&id) {
            return Err(GroupError::AlreadyExists(id));
        }
        let default_role = default_role(spec.default_role.as_deref().unwrap_or(""));
        if !spec.roles.is_empty() && !spec.roles.contains(&default_role) {
            return Err(GroupError::UnknownRole {
                group: id,
                role: default_role,
            });
        }
        let volatile = spec.volatile || self.registry.volatile(&spec.group_type);
        if volatile {
            let same_type: Vec<GroupId> = self
                .hosted
                .iter()
                .filter(|(_, h)| h.record.group_type == spec.group_type)
                .map(|(g, _)| g.clone())
                .collect();
            for group in same_type {
                tracing::info!(%group, group_type = %spec.group_type, "closing the previous volatile group of this type");
                self.close(now, &group)?;
            }
        } else {
            let persistent = self.hosted.values().filter(|h| !h.volatile).count();
            if persistent >= self.config.max_hosted_groups {
                return Err(GroupError::TooManyGroups(self.config.max_hosted_groups));
            }
        }
        let record = GroupRecord {
            id: id.clone(),
            name: name.to_owned(),
            owner: self.me.clone(),
            group_type: spec.group_type,
            group_context: spec.group_context,
            max_members: spec.max_members,
            admission: spec.admission,
            default_role,
            roles: spec.roles,
            host_joined_at: None,
            created_at: wall(now),
        };
        if !volatile {
            self.persist(StoreOp::PutGroup(record.clone()));
        }
        self.hook(HookCall::Create {
            group_type: record.group_type.clone(),
            group: id.clone(),
            name: record.name.clone(),
            max_members: record.max_members,
            restored: false,
        });
        tracing::info!(group = %id, group_type = %record.group_type, volatile, "created group");
        let epoch = self.new_epoch();
        self.hosted.insert(
            id.clone(),
            Hosted {
                record,
                volatile,
                members: Default::default(),
                remembered: Default::default(),
                invited: Default::default(),
                banned: Default::default(),
                refused: Default::default(),
                requests: Default::default(),
                next_ping: now.saturating_add(ms(self.config.ping_interval)),
                epoch,
            },
        );
        Ok(id)
    }

    /// Closes a hosted group: every member gets `close`, the group is forgotten.
    pub fn close(&mut self, _now: u64, group: &GroupId) -> Result<(), GroupError> {
        let hosted = self
            .hosted
            .remove(group)
            .ok_or_else(|| GroupError::UnknownGroup(group.clone()))?;
        let close = GroupMessage::Close(CloseBody {
            reason: CloseReason::Closed,
        });
        for peer in hosted.members.keys() {
            self.send(peer, group, &close);
        }
        if !hosted.volatile {
            self.persist(StoreOp::DeleteGroup(group.clone()));
        }
        let group_type = hosted.record.group_type;
        self.event(&group_type, GroupEventKind::Close, group, None, None);
        self.hook(HookCall::Close {
            group_type,
            group: group.clone(),
        });
        tracing::info!(%group, "closed group");
        Ok(())
    }

    /// The host joins its own group (listed first, as `owner`).
    pub fn join_own(&mut self, now: u64, group: &GroupId) -> Result<(), GroupError> {
        let me = self.me.clone();
        let hosted = self.hosted_mut(group)?;
        let group_type = hosted.record.group_type.clone();
        if hosted.record.host_joined_at.is_some() {
            return Err(GroupError::HostAlreadyJoined(group.clone()));
        }
        if !self.registry.host_can_join(&group_type) {
            return Err(GroupError::HostCannotJoin(group_type));
        }
        let hosted = self.hosted_mut(group)?;
        if hosted.is_full() {
            return Err(GroupError::Full {
                group: group.clone(),
                max: hosted.record.max_members,
            });
        }
        hosted.record.host_joined_at = Some(wall(now));
        self.save_group(group);
        self.broadcast_members(group, None, None);
        self.hook(HookCall::Join {
            group_type,
            group: group.clone(),
            peer: me,
            is_host: true,
        });
        Ok(())
    }

    /// The host leaves its own group (it stays the host and keeps relaying).
    pub fn leave_own(&mut self, _now: u64, group: &GroupId) -> Result<(), GroupError> {
        let me = self.me.clone();
        let hosted = self.hosted_mut(group)?;
        if hosted.record.host_joined_at.take().is_none() {
            return Err(GroupError::HostNotJoined(group.clone()));
        }
        let group_type = hosted.record.group_type.clone();
        self.save_group(group);
        self.broadcast_members(group, None, None);
        self.hook(HookCall::Leave {
            group_type,
            group: group.clone(),
            peer: me,
            is_host: true,
            reason: LeaveReason::Left,
        });
        Ok(())
    }

    /// Removes a member: it gets `close` with reason `kicked`, loses its invitation and its
    /// role, and is banned: its joins are refused with `forbidden` until the host lifts the
    /// ban ([`GroupCore::unban`]) or invites it again. (Goop² let a kicked peer straight
    /// back in.) A member lost for now (its role kept for its return) can be kicked too: it
    /// learns of it when it tries to come back. A full ban list loses its oldest ban.
    pub fn kick(&mut self, now: u64, group: &GroupId, peer: &PeerId) -> Result<(), GroupError> {
        if peer == &self.me {
            return Err(GroupError::SelfTarget);
        }
        let max_bans = self.config.max_bans;
        let hosted = self.hosted_mut(group)?;
        let present = hosted.members.contains_key(peer);
        if !present && !hosted.remembered.contains_key(peer) {
            return Err(GroupError::NotMember {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        let volatile = hosted.volatile;
        let mut ops = Vec::new();
        if hosted.remembered.remove(peer).is_some() {
            ops.push(StoreOp::DeleteMember {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        if hosted.invited.remove(peer) {
            ops.push(StoreOp::DeleteInvite {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        ban(hosted, group, peer, wall(now), max_bans, &mut ops);
        self.persist_all(volatile, ops);
        tracing::info!(%group, %peer, present, "member kicked and banned");
        if !present {
            return Ok(());
        }
        self.send(
            peer,
            group,
            &GroupMessage::Close(CloseBody {
                reason: CloseReason::Kicked,
            }),
        );
        self.remove_member(now, group, peer, LeaveReason::Kicked);
        Ok(())
    }

    /// Records an invitation and sends it. The token's send result says whether it arrived.
    /// An invitation admits the peer to an invite-only group; it never joins anyone.
    pub fn invite(
        &mut self,
        now: u64,
        group: &GroupId,
        peer: &PeerId,
    ) -> Result<SendToken, GroupError> {
        if peer == &self.me {
            return Err(GroupError::SelfTarget);
        }
        let me = self.me.clone();
        let hosted = self.hosted_mut(group)?;
        let newly = hosted.invited.insert(peer.clone());
        let volatile = hosted.volatile;
        // An invitation answers a request to join, if there was one.
        let mut ops = Vec::new();
        hosted.forget_request(group, peer, &mut ops);
        // Inviting a banned peer is the host changing its mind: the ban goes.
        let was_banned = hosted.banned.remove(peer).is_some();
        let invite = Invite {
            group_id: group.clone(),
            group_name: hosted.record.name.clone(),
            host_peer_id: Some(me),
            group_type: hosted.record.group_type.clone(),
            group_context: hosted.record.group_context.clone(),
            volatile,
        };
        if was_banned {
            tracing::info!(%group, %peer, "invitation lifts the ban");
            ops.push(StoreOp::DeleteBan {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        if newly {
            ops.push(StoreOp::PutInvite {
                group: group.clone(),
                peer: peer.clone(),
                invited_at: wall(now),
            });
        }
        self.persist_all(volatile, ops);
        let token = SendToken(self.next_id());
        self.outputs.push(Output::Send {
            to: peer.clone(),
            topic: INVITE_TOPIC.to_owned(),
            payload: raw(&invite),
            token: Some(token),
        });
        Ok(token)
    }

    /// Approves the request of `peer` to join a group that admits by approval: the peer is
    /// invited ([`GroupCore::invite`]), so its next join gets in. Refused when the peer did
    /// not ask (invite it instead).
    pub fn approve(
        &mut self,
        now: u64,
        group: &GroupId,
        peer: &PeerId,
    ) -> Result<SendToken, GroupError> {
        self.take_request(group, peer)?;
        tracing::info!(%group, %peer, "join request approved");
        self.invite(now, group, peer)
    }

    /// Denies the request of `peer` to join: it is banned, as a kicked member is, so its
    /// joins are refused with `forbidden` (and a cluster worker's role ends) until the host
    /// unbans or invites it. Refused when the peer did not ask.
    pub fn deny(&mut self, now: u64, group: &GroupId, peer: &PeerId) -> Result<(), GroupError> {
        self.take_request(group, peer)?;
        let max_bans = self.config.max_bans;
        let hosted = self.hosted_mut(group)?;
        let mut ops = Vec::new();
        ban(hosted, group, peer, wall(now), max_bans, &mut ops);
        let volatile = hosted.volatile;
        self.persist_all(volatile, ops);
        tracing::info!(%group, %peer, "join request denied; peer banned");
        Ok(())
    }

    /// Removes the join request of `peer`, which must be there.
    fn take_request(&mut self, group: &GroupId, peer: &PeerId) -> Result<(), GroupError> {
        let hosted = self.hosted_mut(group)?;
        let mut ops = Vec::new();
        if !hosted.forget_request(group, peer, &mut ops) {
            return Err(GroupError::NoRequest {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        let volatile = hosted.volatile;
        self.persist_all(volatile, ops);
        Ok(())
    }

    /// Lets a kicked peer join again. Returns whether it was banned.
    pub fn unban(&mut self, group: &GroupId, peer: &PeerId) -> Result<bool, GroupError> {
        let hosted = self.hosted_mut(group)?;
        let was = hosted.banned.remove(peer).is_some();
        if was {
            tracing::info!(%group, %peer, "ban lifted");
            if !hosted.volatile {
                self.persist(StoreOp::DeleteBan {
                    group: group.clone(),
                    peer: peer.clone(),
                });
            }
        }
        Ok(was)
    }

    /// Withdraws an invitation (a member stays a member).
    pub fn uninvite(&mut self, group: &GroupId, peer: &PeerId) -> Result<(), GroupError> {
        let hosted = self.hosted_mut(group)?;
        if hosted.invited.remove(peer) && !hosted.volatile {
            self.persist(StoreOp::DeleteInvite {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        Ok(())
    }

    /// Sets a member's role. With a roles list, the role must be in it; the host stays
    /// `owner`. The member gets `set-role`, everyone gets `members`.
    pub fn set_role(
        &mut self,
        _now: u64,
        group: &GroupId,
        peer: &PeerId,
        role: &str,
    ) -> Result<(), GroupError> {
        let role = role.trim();
        if role.is_empty() {
            return Err(GroupError::EmptyRole);
        }
        if peer == &self.me {
            return Err(GroupError::OwnerRoleFixed);
        }
        let hosted = self.hosted_mut(group)?;
        if !hosted.record.roles.is_empty() && !hosted.record.roles.iter().any(|r| r == role) {
            return Err(GroupError::UnknownRole {
                group: group.clone(),
                role: role.to_owned(),
            });
        }
        let member = hosted
            .members
            .get_mut(peer)
            .ok_or_else(|| GroupError::NotMember {
                group: group.clone(),
                peer: peer.clone(),
            })?;
        member.role = role.to_owned();
        let record = MemberRecord {
            peer: peer.clone(),
            role: member.role.clone(),
            joined_at: member.joined_at,
            present: true,
            authored: member.authored,
        };
        if !hosted.volatile {
            self.persist(StoreOp::PutMember {
                group: group.clone(),
                member: record,
            });
        }
        self.send(
            peer,
            group,
            &GroupMessage::SetRole(SetRole {
                peer_id: peer.clone(),
                role: role.to_owned(),
            }),
        );
        self.broadcast_members(group, None, None);
        Ok(())
    }

    /// Changes a hosted group's settings; members get `meta`. Omitted fields keep their value
    /// (a rename does not reset the limit). A limit below the current count is refused.
    pub fn update_meta(
        &mut self,
        _now: u64,
        group: &GroupId,
        update: MetaUpdate,
    ) -> Result<(), GroupError> {
        let hosted = self.hosted_mut(group)?;
        let mut record = hosted.record.clone();
        if let Some(name) = update.name {
            let name = name.trim();
            if name.is_empty() {
                return Err(GroupError::EmptyName);
            }
            check_field("name", name, MAX_NAME_BYTES)?;
            name.clone_into(&mut record.name);
        }
        if let Some(max) = update.max_members {
            if max > 0 && max < hosted.count() {
                return Err(GroupError::LimitBelowCount {
                    group: group.clone(),
                    count: hosted.count(),
                    max,
                });
            }
            record.max_members = max;
        }
        if let Some(roles) = update.roles {
            if roles.iter().any(|r| r.trim().is_empty()) {
                return Err(GroupError::EmptyRole);
            }
            for role in &roles {
                check_field("role", role, MAX_TYPE_BYTES)?;
            }
            record.roles = roles;
        }
        if let Some(role) = update.default_role {
            record.default_role = default_role(role.trim());
        }
        if let Some(admission) = update.admission {
            record.admission = admission;
        }
        if !record.roles.is_empty() && !record.roles.contains(&record.default_role) {
            return Err(GroupError::UnknownRole {
                group: group.clone(),
                role: record.default_role,
            });
        }
        let mut ops = Vec::new();
        if record.admission != Admission::Approval {
            for peer in std::mem::take(&mut hosted.requests).into_keys() {
                ops.push(StoreOp::DeleteRequest {
                    group: group.clone(),
                    peer,
                });
            }
        }
        hosted.record = record;
        let volatile = hosted.volatile;
        self.persist_all(volatile, ops);
        self.save_group(group);
        self.broadcast_meta(group);
        Ok(())
    }

    /// Sends a message as the host to every member.
    pub fn send_as_host(&mut self, group: &GroupId, payload: Box<RawValue>, state: bool) {
        let me = self.me.clone();
        self.relay(group, &me, payload, state, None);
    }

    /// Sends `payload` to one member of a hosted group only (what only that member needs,
    /// such as the state a joiner catches up with).
    pub fn send_as_host_to(
        &mut self,
        group: &GroupId,
        peer: &PeerId,
        payload: Box<RawValue>,
    ) -> Result<(), GroupError> {
        let hosted = self
            .hosted
            .get(group)
            .ok_or_else(|| GroupError::UnknownGroup(group.clone()))?;
        if !hosted.members.contains_key(peer) {
            return Err(GroupError::NotMember {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        let me = self.me.clone();
        self.relay(group, &me, payload, false, Some(peer));
        Ok(())
    }

    // ---- receiving ----

    pub(super) fn host_receive(
        &mut self,
        now: u64,
        from: PeerId,
        group: GroupId,
        message: GroupMessage,
    ) {
        let Some(hosted) = self.hosted.get_mut(&group) else {
            return;
        };
        let mut confirmed_now = false;
        if let Some(member) = hosted.members.get_mut(&from) {
            member.last_heard = now;
            confirmed_now = !member.confirmed;
            member.confirmed = true;
        }
        let is_member = hosted.members.contains_key(&from);
        if confirmed_now {
            // A member restored from the store came back.
            let group_type = hosted.record.group_type.clone();
            tracing::info!(%group, peer = %from, "restored member is back");
            self.event(&group_type, GroupEventKind::Join, &group, Some(&from), None);
            self.hook(HookCall::Join {
                group_type,
                group: group.clone(),
                peer: from.clone(),
                is_host: false,
            });
        }
        match message {
            GroupMessage::Join(options) => self.admit(now, from, &group, &options),
            GroupMessage::Leave => {
                if is_member {
                    self.remove_member(now, &group, &from, LeaveReason::Left);
                } else {
                    tracing::debug!(%group, peer = %from, "leave from a non-member");
                }
            }
            GroupMessage::Pong => {
                if !is_member {
                    // A peer that still thinks it is a member; tell it so it rejoins.
                    self.send_error(&from, &group, ErrorCode::NotMember);
                }
            }
            GroupMessage::Msg(_) | GroupMessage::State(_) if !is_member => {
                tracing::warn!(%group, peer = %from, "message from a non-member refused");
                self.send_error(&from, &group, ErrorCode::NotMember);
            }
            GroupMessage::Msg(_) | GroupMessage::State(_)
                if !self.within_budget(now, &group, &from) => {}
            GroupMessage::Msg(relay) => self.relay(&group, &from, relay.payload, false, None),
            GroupMessage::State(relay) => self.relay(&group, &from, relay.payload, true, None),
            other => {
                tracing::warn!(%group, peer = %from, kind = %other.kind(), "host-only message sent to the host; dropped");
            }
        }
    }

    /// Answers a join: `welcome`, or `error` with `forbidden` (banned), `not_invited`,
    /// `pending_approval` (the join is recorded as a request) or `full`. A current member
    /// rejoining keeps its role and join time and is not counted against the limit.
    fn admit(&mut self, now: u64, from: PeerId, group: &GroupId, options: &JoinOptions) {
        let Some(hosted) = self.hosted.get(group) else {
            return;
        };
        let authored = options.features.iter().any(|f| f == FEATURE_AUTHOR);
        let existing = hosted.members.contains_key(&from);
        if !existing && let Some(refusal) = self.refusal(now, &from, group) {
            let interval = ms(self.config.refusal_interval);
            let Some(hosted) = self.hosted.get_mut(group) else {
                return;
            };
            // One answer per peer per interval: a peer that keeps asking (a banned one
            // retrying in a loop) costs the host no more than that.
            if hosted
                .refused
                .get(&from)
                .is_some_and(|at| now.saturating_sub(*at) < interval)
            {
                tracing::debug!(%group, peer = %from, code = %refusal.code, "join refused again too soon; not answered");
                return;
            }
            hosted.refused.insert(from.clone(), now);
            tracing::info!(%group, peer = %from, code = %refusal.code, "join refused");
            return self.send(&from, group, &GroupMessage::Error(refusal));
        }
        let relay_limit = self.relay_limit();
        let Some(hosted) = self.hosted.get_mut(group) else {
            return;
        };
        let role = match hosted.members.get(&from) {
            Some(member) => member.role.clone(),
            None => hosted
                .remembered
                .remove(&from)
                .unwrap_or_else(|| hosted.record.default_role.clone()),
        };
        let name = options
            .name
            .as_deref()
            .map(crate::names::clean_name)
            .filter(|n| !n.is_empty());
        let member = hosted.members.entry(from.clone()).or_insert(Member {
            role: role.clone(),
            name: None,
            budget: super::budget::Budget::new(now, relay_limit),
            joined_at: wall(now),
            last_heard: now,
            authored,
            confirmed: true,
        });
        member.last_heard = now;
        member.authored = authored;
        member.name = name;
        let record = MemberRecord {
            peer: from.clone(),
            role: role.clone(),
            joined_at: member.joined_at,
            present: true,
            authored,
        };
        let volatile = hosted.volatile;
        let group_type = hosted.record.group_type.clone();
        if !volatile {
            self.persist(StoreOp::PutMember {
                group: group.clone(),
                member: record,
            });
        }
        if existing {
            tracing::debug!(%group, peer = %from, "member rejoined");
        } else {
            tracing::info!(%group, peer = %from, "member joined");
            // First, so the welcome carries the epoch of the list that includes the joiner.
            self.broadcast_members(group, Some(&from), None);
        }
        let hosted = &self.hosted[group];
        let r = &hosted.record;
        let welcome = Welcome {
            group_name: r.name.clone(),
            group_type: r.group_type.clone(),
            group_context: r.group_context.clone(),
            max_members: r.max_members,
            volatile,
            members: self.member_list(hosted),
            state: None,
            role: Some(role),
            roles: r.roles.clone(),
            default_role: Some(r.default_role.clone()),
            admission: Some(r.admission),
            features: if authored {
                vec![FEATURE_AUTHOR.to_owned()]
            } else {
                Vec::new()
            },
            epoch: Some(hosted.epoch),
        };
        self.send(&from, group, &GroupMessage::Welcome(Box::new(welcome)));
        if existing {
            return;
        }
        self.event(&group_type, GroupEventKind::Join, group, Some(&from), None);
        self.hook(HookCall::Join {
            group_type,
            group: group.clone(),
            peer: from,
            is_host: false,
        });
    }

    /// Why a join of `from`, not a member of hosted `group`, is refused, if it is: banned,
    /// not invited, waiting for approval (the join is then recorded as a request, with a
    /// `join_request` event the first time), or full.
    fn refusal(&mut self, now: u64, from: &PeerId, group: &GroupId) -> Option<ErrorBody> {
        let max_requests = self.config.max_join_requests;
        let member_cap = self.config.member_cap;
        let hosted = self.hosted.get_mut(group)?;
        if hosted.banned.contains_key(from) {
            return Some(ErrorBody {
                code: ErrorCode::Forbidden,
                message: "you were removed from this group by its host".to_owned(),
            });
        }
        // A member lost for now (its role kept) comes back as the member it was.
        let admitted = hosted.record.admission == Admission::Open
            || hosted.invited.contains(from)
            || hosted.remembered.contains_key(from);
        if admitted {
            let capped = hosted.record.max_members == 0 && hosted.count() >= member_cap;
            return (hosted.is_full() || capped).then(|| ErrorBody::new(ErrorCode::Full));
        }
        if hosted.record.admission == Admission::Invite {
            return Some(ErrorBody::new(ErrorCode::NotInvited));
        }
        let mut ops = Vec::new();
        let new = hosted.request(group, from, wall(now), max_requests, &mut ops);
        let volatile = hosted.volatile;
        self.persist_all(volatile, ops);
        if new {
            let group_type = self.hosted.get(group)?.record.group_type.clone();
            self.event(
                &group_type,
                GroupEventKind::JoinRequest,
                group,
                Some(from),
                None,
            );
        }
        Some(ErrorBody::new(ErrorCode::PendingApproval))
    }

    /// Takes a token from `from`'s relay budget; when there is none the message is dropped,
    /// and the member hears why (`rate_limited`, with the count) at most once a second.
    fn within_budget(&mut self, now: u64, group: &GroupId, from: &PeerId) -> bool {
        let limit = self.relay_limit();
        let Some(member) = self
            .hosted
            .get_mut(group)
            .and_then(|h| h.members.get_mut(from))
        else {
            return false;
        };
        match member.budget.take(now, limit) {
            Verdict::Relay => true,
            Verdict::Drop => false,
            Verdict::DropAndTell { dropped } => {
                tracing::warn!(%group, peer = %from, dropped, rate = limit.rate, burst = limit.burst, "member over its relay limit; messages dropped");
                let body = ErrorBody {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "{dropped} message(s) dropped: more than {} per second (bursts of {}) from one member",
                        limit.rate, limit.burst
                    ),
                };
                self.send(from, group, &GroupMessage::Error(body));
                false
            }
        }
    }

    /// Relays a member's (or the host's) message to every other member, with the author.
    /// Sends a message of `author` to every member but the author, or to `only` that one.
    fn relay(
        &mut self,
        group: &GroupId,
        author: &PeerId,
        payload: Box<RawValue>,
        state: bool,
        only: Option<&PeerId>,
    ) {
        let Some(hosted) = self.hosted.get(group) else {
            return;
        };
        let group_type = hosted.record.group_type.clone();
        let recipients: Vec<(PeerId, bool)> = hosted
            .members
            .iter()
            .filter(|(peer, _)| *peer != author && only.is_none_or(|only| *peer == only))
            .map(|(peer, m)| (peer.clone(), m.authored))
            .collect();
        let message = |from: Option<PeerId>| {
            let relay = Relay {
                from,
                payload: payload.clone(),
            };
            if state {
                GroupMessage::State(relay)
            } else {
                GroupMessage::Msg(relay)
            }
        };
        // Encoded once per form, not once per recipient: a fan-out copies bytes only.
        let encode = |message: GroupMessage| match message.encode(group) {
            Ok(encoded) => Some(encoded),
            Err(error) => {
                tracing::error!(%group, %error, "cannot encode group message");
                None
            }
        };
        let authored = encode(message(Some(author.clone())));
        let bare = if recipients.iter().any(|(_, wants_author)| !wants_author) {
            encode(message(None))
        } else {
            None
        };
        for (peer, wants_author) in recipients {
            let encoded = if wants_author { &authored } else { &bare };
            if let Some((topic, payload)) = encoded {
                self.outputs.push(Output::Send {
                    to: peer,
                    topic: topic.clone(),
                    payload: payload.clone(),
                    token: None,
                });
            }
        }
        let kind = if state {
            GroupEventKind::State
        } else {
            GroupEventKind::Msg
        };
        self.event(&group_type, kind, group, Some(author), Some(payload));
    }

    /// Takes a member out (left, kicked or lost): members get `members`, the handler
    /// `on_leave`, the event stream `members` and `leave`. A lost member's role is kept.
    pub(super) fn remove_member(
        &mut self,
        _now: u64,
        group: &GroupId,
        peer: &PeerId,
        reason: LeaveReason,
    ) {
        let Some(hosted) = self.hosted.get_mut(group) else {
            return;
        };
        let Some(member) = hosted.members.remove(peer) else {
            return;
        };
        let volatile = hosted.volatile;
        let group_type = hosted.record.group_type.clone();
        if reason == LeaveReason::Lost {
            hosted.remembered.insert(peer.clone(), member.role.clone());
        }
        if !volatile {
            self.persist(if reason == LeaveReason::Lost {
                StoreOp::PutMember {
                    group: group.clone(),
                    member: MemberRecord {
                        peer: peer.clone(),
                        role: member.role,
                        joined_at: member.joined_at,
                        present: false,
                        authored: false,
                    },
                }
            } else {
                StoreOp::DeleteMember {
                    group: group.clone(),
                    peer: peer.clone(),
                }
            });
        }
        tracing::info!(%group, %peer, reason = reason.as_str(), "member removed");
        self.broadcast_members(group, None, Some(peer));
        self.event(
            &group_type,
            GroupEventKind::Leave,
            group,
            Some(peer),
            Some(raw(&serde_json::json!({ "reason": reason.as_str() }))),
        );
        if member.confirmed {
            self.hook(HookCall::Leave {
                group_type,
                group: group.clone(),
                peer: peer.clone(),
                is_host: false,
                reason,
            });
        }
    }

    pub(super) fn host_tick(&mut self, now: u64) {
        let timeout = ms(self.config.member_timeout);
        let interval = ms(self.config.ping_interval).max(1);
        let mut lost = Vec::new();
        let mut pings = Vec::new();
        let refusal_interval = ms(self.config.refusal_interval);
        for (group, hosted) in &mut self.hosted {
            hosted
                .refused
                .retain(|_, at| now.saturating_sub(*at) < refusal_interval);
            for (peer, member) in &hosted.members {
                if now.saturating_sub(member.last_heard) > timeout {
                    lost.push((group.clone(), peer.clone()));
                }
            }
            if now >= hosted.next_ping {
                hosted.next_ping = now.saturating_add(interval);
                let epoch = hosted.epoch;
                pings.extend(
                    hosted
                        .members
                        .keys()
                        .map(|p| (group.clone(), p.clone(), epoch)),
                );
            }
        }
        for (group, peer) in lost {
            tracing::info!(%group, %peer, "member silent too long");
            self.remove_member(now, &group, &peer, LeaveReason::Lost);
        }
        for (group, peer, epoch) in pings {
            if self.is_member(&group, &peer) {
                let ping = GroupMessage::Ping(PingBody { epoch: Some(epoch) });
                self.send(&peer, &group, &ping);
            }
        }
    }

    // ---- discovery ----

    pub(super) fn on_discover_request(&mut self, from: PeerId, payload: &RawValue) {
        let request: DiscoverRequest = match serde_json::from_str(payload.get()) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%from, %error, "bad discovery request");
                return;
            }
        };
        let limit = request
            .limit
            .unwrap_or(self.config.discover_limit)
            .min(self.config.discover_limit);
        let data = self.listed_group_rows(limit, request.offset.unwrap_or(0));
        let reply = DiscoverReply {
            request_id: request.request_id,
            ok: true,
            data,
        };
        self.outputs.push(Output::Send {
            to: from,
            topic: DISCOVER_REPLY_TOPIC.to_owned(),
            payload: raw(&reply),
            token: None,
        });
    }

    /// This peer's groups that discovery lists ([`Admission::listed`]: open and approval ones)
    /// as `_groups` rows, newest first: the discovery answer, and what a Goop² peer's
    /// `{"op":"query","table":"_groups"}` should get back. Each row says its admission.
    pub fn listed_group_rows(&self, limit: u32, offset: u32) -> Vec<GroupRow> {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        self.hosted_groups()
            .into_iter()
            .filter(|g| g.admission.listed())
            .skip(offset)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|g| GroupRow {
                member_count: Some(u32::try_from(g.members.len()).unwrap_or(u32::MAX)),
                roles: serde_json::to_string(&g.roles).unwrap_or_else(|_| "[]".to_owned()),
                id: g.id,
                name: g.name,
                owner: g.owner,
                group_type: g.group_type,
                group_context: g.group_context,
                max_members: g.max_members,
                created_at: rfc3339(g.created_at),
                host_joined: u8::from(g.host_joined),
                volatile: u8::from(g.volatile),
                default_role: g.default_role,
                admission: Some(g.admission),
            })
            .collect()
    }

    // ---- helpers ----

    fn hosted_mut(&mut self, group: &GroupId) -> Result<&mut Hosted, GroupError> {
        self.hosted
            .get_mut(group)
            .ok_or_else(|| GroupError::UnknownGroup(group.clone()))
    }

    fn save_group(&mut self, group: &GroupId) {
        if let Some(hosted) = self.hosted.get(group)
            && !hosted.volatile
        {
            let record = hosted.record.clone();
            self.persist(StoreOp::PutGroup(record));
        }
    }

    /// Sends `members` to every member but `except` and the host, and emits the event.
    fn broadcast_members(
        &mut self,
        group: &GroupId,
        except: Option<&PeerId>,
        about: Option<&PeerId>,
    ) {
        let Some(hosted) = self.hosted.get_mut(group) else {
            return;
        };
        hosted.epoch = next_epoch(hosted.epoch);
        let epoch = hosted.epoch;
        let hosted = &self.hosted[group];
        let members = self.member_list(hosted);
        let group_type = hosted.record.group_type.clone();
        let recipients: Vec<PeerId> = hosted
            .members
            .keys()
            .filter(|p| Some(*p) != except)
            .cloned()
            .collect();
        let message = GroupMessage::Members(Members {
            members: members.clone(),
            epoch: Some(epoch),
        });
        for peer in recipients {
            self.send(&peer, group, &message);
        }
        self.event(
            &group_type,
            GroupEventKind::Members,
            group,
            about,
            Some(members_payload(&members)),
        );
    }

    fn broadcast_meta(&mut self, group: &GroupId) {
        let Some(hosted) = self.hosted.get_mut(group) else {
            return;
        };
        hosted.epoch = next_epoch(hosted.epoch);
        let r = &hosted.record;
        let meta = Meta {
            group_name: r.name.clone(),
            group_type: r.group_type.clone(),
            max_members: r.max_members,
            roles: r.roles.clone(),
            default_role: Some(r.default_role.clone()),
            admission: Some(r.admission),
            epoch: Some(hosted.epoch),
        };
        let group_type = r.group_type.clone();
        let recipients: Vec<PeerId> = hosted.members.keys().cloned().collect();
        let payload = raw(&meta);
        let message = GroupMessage::Meta(meta);
        for peer in recipients {
            self.send(&peer, group, &message);
        }
        self.event(
            &group_type,
            GroupEventKind::Meta,
            group,
            None,
            Some(payload),
        );
    }
}

/// Unix milliseconds as RFC 3339 UTC (`2026-03-08T12:00:00Z`), the `created_at` shape of
/// Goop²'s `_groups` rows.
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Bans `peer` from `hosted` (`group`) as of `banned_at`, lifting the oldest bans past
/// `max_bans`; the store operations go to `ops`.
fn ban(
    hosted: &mut Hosted,
    group: &GroupId,
    peer: &PeerId,
    banned_at: i64,
    max_bans: usize,
    ops: &mut Vec<StoreOp>,
) {
    for oldest in make_room(&mut hosted.banned, max_bans) {
        tracing::warn!(%group, peer = %oldest, max_bans, "ban list full; the oldest ban is lifted");
        ops.push(StoreOp::DeleteBan {
            group: group.clone(),
            peer: oldest,
        });
    }
    hosted.banned.insert(peer.clone(), banned_at);
    ops.push(StoreOp::PutBan {
        group: group.clone(),
        peer: peer.clone(),
        banned_at,
    });
}
