//! The member side: joining remote groups, accepting control messages only from their host,
//! noticing a lost host and rejoining it with backoff, invitations received, and discovery
//! requests.

use proto::{
    CloseReason, DISCOVER_TOPIC, DiscoverReply, DiscoverRequest, ErrorCode, FEATURE_AUTHOR,
    GroupEventKind, GroupId, GroupMessage, Invite, JoinOptions, PeerId, Relay, Welcome,
};
use serde_json::value::RawValue;

use super::{
    DiscoverTicket, GroupCore, GroupError, HookCall, JoinTicket, Joined, Link, Output,
    PendingDiscover, PendingJoin, ReceivedInvite, SendToken, members_payload, ms, raw, wall,
};
use crate::group::store::{StoreOp, SubscriptionRecord};

impl GroupCore {
    fn join_message(&self) -> GroupMessage {
        GroupMessage::Join(JoinOptions {
            features: vec![FEATURE_AUTHOR.to_owned()],
            name: self.label.clone(),
        })
    }

    /// Asks `host` to admit this peer to `group`. The answer comes as
    /// [`Output::JoinFinished`] with the ticket: on `welcome`, on the host's `error` (with its
    /// reason), or after the join timeout. A current membership stays in place until the new
    /// join succeeds.
    pub fn join_remote(
        &mut self,
        now: u64,
        host: &PeerId,
        group: &GroupId,
    ) -> Result<JoinTicket, GroupError> {
        if host == &self.me {
            return Err(GroupError::SelfTarget);
        }
        if self.hosted.contains_key(group) {
            return Err(GroupError::HostedHere(group.clone()));
        }
        if self.pending_joins.contains_key(group) {
            return Err(GroupError::JoinInProgress(group.clone()));
        }
        let ticket = JoinTicket(self.next_id());
        self.pending_joins.insert(
            group.clone(),
            PendingJoin {
                host: host.clone(),
                ticket,
                deadline: now.saturating_add(ms(self.config.join_timeout)),
            },
        );
        self.send(host, group, &self.join_message());
        Ok(ticket)
    }

    /// Leaves a joined group (or cancels a join in progress).
    pub fn leave_remote(&mut self, _now: u64, group: &GroupId) -> Result<(), GroupError> {
        let cancelled = self.pending_joins.remove(group);
        if let Some(pending) = &cancelled {
            self.outputs.push(Output::JoinFinished {
                ticket: pending.ticket,
                result: Err(GroupError::Cancelled(group.clone())),
            });
        }
        let Some(joined) = self.joined.remove(group) else {
            return match cancelled {
                Some(pending) => {
                    self.send(&pending.host, group, &GroupMessage::Leave);
                    Ok(())
                }
                None => Err(GroupError::NotJoined(group.clone())),
            };
        };
        self.send(&joined.host, group, &GroupMessage::Leave);
        if !joined.volatile {
            self.persist(StoreOp::DeleteSubscription {
                host: joined.host.clone(),
                group: group.clone(),
            });
        }
        let me = self.me.clone();
        self.event(
            &joined.group_type,
            GroupEventKind::Leave,
            group,
            Some(&me),
            Some(raw(&serde_json::json!({ "reason": "left" }))),
        );
        tracing::info!(%group, host = %joined.host, "left group");
        Ok(())
    }

    /// Sends `payload` to a group: as the host to every member, or as a member to the host,
    /// which relays it. A member gets a token to learn whether the host received it.
    pub fn send_to_group(
        &mut self,
        _now: u64,
        group: &GroupId,
        payload: Box<RawValue>,
        state: bool,
    ) -> Result<Option<SendToken>, GroupError> {
        if self.hosted.contains_key(group) {
            self.send_as_host(group, payload, state);
            return Ok(None);
        }
        let joined = self
            .joined
            .get(group)
            .ok_or_else(|| GroupError::NotJoined(group.clone()))?;
        if let Link::Down { .. } = joined.link {
            return Err(GroupError::HostLost {
                host: joined.host.clone(),
                group: group.clone(),
            });
        }
        let host = joined.host.clone();
        let relay = Relay {
            from: None,
            payload,
        };
        let message = if state {
            GroupMessage::State(relay)
        } else {
            GroupMessage::Msg(relay)
        };
        let token = SendToken(self.next_id());
        self.send_with_token(&host, group, &message, Some(token));
        Ok(Some(token))
    }

    /// Asks `peer` for its open and approval groups; the answer comes as [`Output::DiscoverFinished`].
    pub fn discover(&mut self, now: u64, peer: &PeerId, limit: Option<u32>) -> DiscoverTicket {
        let id = self.next_id();
        self.pending_discovers.insert(
            id,
            PendingDiscover {
                peer: peer.clone(),
                deadline: now.saturating_add(ms(self.config.discover_timeout)),
            },
        );
        let request = DiscoverRequest {
            request_id: id,
            limit,
            offset: None,
        };
        self.outputs.push(Output::Send {
            to: peer.clone(),
            topic: DISCOVER_TOPIC.to_owned(),
            payload: raw(&request),
            token: None,
        });
        DiscoverTicket(id)
    }

    // ---- receiving ----

    pub(super) fn member_receive(
        &mut self,
        now: u64,
        from: PeerId,
        group: GroupId,
        message: GroupMessage,
    ) {
        let answers_pending = matches!(message, GroupMessage::Welcome(_) | GroupMessage::Error(_))
            && self
                .pending_joins
                .get(&group)
                .is_some_and(|p| p.host == from);
        if answers_pending && let Some(pending) = self.pending_joins.remove(&group) {
            match message {
                GroupMessage::Welcome(welcome) => {
                    self.apply_welcome(now, &from, &group, *welcome);
                    let result = self
                        .subscription(&group)
                        .ok_or_else(|| GroupError::NotJoined(group.clone()));
                    self.outputs.push(Output::JoinFinished {
                        ticket: pending.ticket,
                        result,
                    });
                    return;
                }
                GroupMessage::Error(body) => {
                    tracing::info!(%group, host = %from, code = %body.code, "join refused");
                    self.outputs.push(Output::JoinFinished {
                        ticket: pending.ticket,
                        result: Err(GroupError::Rejected {
                            code: body.code.clone(),
                            message: body.message.clone(),
                        }),
                    });
                    if self.joined.get(&group).is_none_or(|j| j.host != from) {
                        return;
                    }
                    // A refusal from the host of a current membership also concerns it.
                    return self.member_receive(now, from, group, GroupMessage::Error(body));
                }
                _ => return,
            }
        }
        let Some(joined) = self.joined.get_mut(&group) else {
            return self.answer_stranger(from, &group, message);
        };
        if joined.host != from {
            tracing::warn!(%group, peer = %from, host = %joined.host, kind = %message.kind(), "group message from a peer that is not the host; dropped");
            return;
        }
        if let Link::Up { last_heard } = &mut joined.link {
            *last_heard = now;
        }
        let group_type = joined.group_type.clone();
        match message {
            GroupMessage::Welcome(welcome) => self.apply_welcome(now, &from, &group, *welcome),
            GroupMessage::Members(members) => {
                joined.members.clone_from(&members.members);
                if members.epoch.is_some() {
                    joined.epoch = members.epoch;
                }
                // The list also says this peer's role (a missed `set-role` is repaired here).
                let mine = members.members.iter().find(|m| m.peer_id == self.me);
                if let Some(mine) = mine
                    && mine.role != joined.role
                {
                    joined.role.clone_from(&mine.role);
                    self.save_subscription(&group);
                }
                self.event(
                    &group_type,
                    GroupEventKind::Members,
                    &group,
                    Some(&from),
                    Some(members_payload(&members.members)),
                );
            }
            GroupMessage::Meta(meta) => {
                if !meta.group_name.is_empty() {
                    joined.name.clone_from(&meta.group_name);
                }
                joined.max_members = meta.max_members;
                if meta.epoch.is_some() {
                    joined.epoch = meta.epoch;
                }
                self.save_subscription(&group);
                self.event(
                    &group_type,
                    GroupEventKind::Meta,
                    &group,
                    Some(&from),
                    Some(raw(&meta)),
                );
            }
            GroupMessage::Msg(relay) => {
                let author = relay.from.unwrap_or(from);
                self.event(
                    &group_type,
                    GroupEventKind::Msg,
                    &group,
                    Some(&author),
                    Some(relay.payload),
                );
            }
            GroupMessage::State(relay) => {
                let author = relay.from.unwrap_or(from);
                self.event(
                    &group_type,
                    GroupEventKind::State,
                    &group,
                    Some(&author),
                    Some(relay.payload),
                );
            }
            GroupMessage::Ping(ping) => {
                let down = matches!(joined.link, Link::Down { .. });
                let stale = ping.epoch.is_some() && ping.epoch != joined.epoch;
                self.send(&from, &group, &GroupMessage::Pong);
                if down {
                    // The host is back and still counts this peer as a member: rejoin now to
                    // get the current members and settings.
                    self.send_rejoin(now, &group);
                } else if stale {
                    // An update was missed: a join (a no-op for a member) brings a welcome
                    // with the current state.
                    tracing::debug!(%group, host = %from, "missed an update; refreshing");
                    self.send(&from, &group, &self.join_message());
                }
            }
            GroupMessage::Close(body) => {
                self.drop_joined(&group, body.reason);
            }
            GroupMessage::SetRole(set) => {
                if set.peer_id == self.me {
                    joined.role.clone_from(&set.role);
                }
                if let Some(m) = joined.members.iter_mut().find(|m| m.peer_id == set.peer_id) {
                    m.role.clone_from(&set.role);
                }
                self.save_subscription(&group);
            }
            GroupMessage::Error(body) => {
                let payload = raw(&body);
                self.event(
                    &group_type,
                    GroupEventKind::Error,
                    &group,
                    Some(&from),
                    Some(payload),
                );
                match body.code {
                    ErrorCode::UnknownGroup | ErrorCode::NotInvited | ErrorCode::Forbidden => {
                        tracing::info!(%group, host = %from, code = %body.code, "host no longer admits this peer; dropping the subscription");
                        self.drop_joined(&group, CloseReason::Closed);
                    }
                    ErrorCode::NotMember => {
                        // The host forgot this peer (it was dropped as lost): rejoin.
                        if let Some(joined) = self.joined.get_mut(&group) {
                            joined.link = Link::Down {
                                attempt: 0,
                                next_try: now,
                            };
                        }
                        self.send_rejoin(now, &group);
                    }
                    _ => {}
                }
            }
            other @ (GroupMessage::Join(_) | GroupMessage::Leave | GroupMessage::Pong) => {
                tracing::warn!(%group, peer = %from, kind = %other.kind(), "member-only message sent to a member; dropped");
            }
        }
    }

    /// A group message about a group this peer neither hosts nor belongs to.
    fn answer_stranger(&mut self, from: PeerId, group: &GroupId, message: GroupMessage) {
        match message {
            GroupMessage::Join(_) | GroupMessage::Msg(_) | GroupMessage::State(_) => {
                tracing::info!(%group, peer = %from, kind = %message.kind(), "message for an unknown group; answering unknown_group");
                self.send_error(&from, group, ErrorCode::UnknownGroup);
            }
            GroupMessage::Ping(_) | GroupMessage::Welcome(_) => {
                // The sender counts this peer as a member (a late welcome after a timed-out
                // join, a leave that never arrived): say leave so it is not kept as a ghost.
                tracing::info!(%group, peer = %from, kind = %message.kind(), "not a member; answering leave");
                self.send(&from, group, &GroupMessage::Leave);
            }
            other => {
                tracing::debug!(%group, peer = %from, kind = %other.kind(), "message for an unknown group; dropped");
            }
        }
    }

    fn apply_welcome(&mut self, now: u64, host: &PeerId, group: &GroupId, welcome: Welcome) {
        let volatile = welcome.volatile || self.registry.volatile(&welcome.group_type);
        if volatile {
            // One volatile group per type: leave the others of this type.
            let others: Vec<GroupId> = self
                .joined
                .iter()
                .filter(|(g, j)| *g != group && j.group_type == welcome.group_type)
                .map(|(g, _)| g.clone())
                .collect();
            for other in others {
                let _ = self.leave_remote(now, &other);
            }
        }
        let previous = self.joined.remove(group);
        let mut subscribed_at = wall(now);
        if let Some(previous) = previous {
            if &previous.host == host {
                subscribed_at = previous.subscribed_at;
            } else {
                tracing::info!(%group, old = %previous.host, new = %host, "group moved to another host; leaving the old one");
                self.send(&previous.host, group, &GroupMessage::Leave);
                if !previous.volatile {
                    self.persist(StoreOp::DeleteSubscription {
                        host: previous.host,
                        group: group.clone(),
                    });
                }
            }
        }
        let role = welcome
            .role
            .clone()
            .or_else(|| {
                welcome
                    .members
                    .iter()
                    .find(|m| m.peer_id == self.me)
                    .map(|m| m.role.clone())
            })
            .unwrap_or_else(|| "member".to_owned());
        let payload = raw(&welcome);
        let authored = welcome.features.iter().any(|f| f == FEATURE_AUTHOR);
        let epoch = welcome.epoch;
        let group_type = welcome.group_type.clone();
        self.joined.insert(
            group.clone(),
            Joined {
                host: host.clone(),
                name: welcome.group_name,
                group_type: welcome.group_type,
                group_context: welcome.group_context,
                max_members: welcome.max_members,
                volatile,
                role,
                members: welcome.members,
                authored,
                link: Link::Up { last_heard: now },
                subscribed_at,
                epoch,
            },
        );
        self.save_subscription(group);
        tracing::info!(%group, %host, "joined group");
        self.event(
            &group_type,
            GroupEventKind::Welcome,
            group,
            Some(host),
            Some(payload),
        );
    }

    /// Forgets a joined group because its host closed it or removed this peer.
    fn drop_joined(&mut self, group: &GroupId, reason: CloseReason) {
        let Some(joined) = self.joined.remove(group) else {
            return;
        };
        if !joined.volatile {
            self.persist(StoreOp::DeleteSubscription {
                host: joined.host.clone(),
                group: group.clone(),
            });
        }
        tracing::info!(%group, host = %joined.host, ?reason, "group closed by its host");
        self.event(
            &joined.group_type,
            GroupEventKind::Close,
            group,
            Some(&joined.host),
            Some(raw(&proto::CloseBody { reason })),
        );
        self.hook(HookCall::Close {
            group_type: joined.group_type,
            group: group.clone(),
        });
    }

    fn save_subscription(&mut self, group: &GroupId) {
        let Some(joined) = self.joined.get(group) else {
            return;
        };
        if joined.volatile {
            return;
        }
        let record = SubscriptionRecord {
            host: joined.host.clone(),
            group: group.clone(),
            group_name: joined.name.clone(),
            group_type: joined.group_type.clone(),
            group_context: joined.group_context.clone(),
            max_members: joined.max_members,
            role: joined.role.clone(),
            subscribed_at: joined.subscribed_at,
        };
        self.persist(StoreOp::PutSubscription(record));
    }

    /// The host of a joined group stopped answering: rejoin it with backoff.
    pub(super) fn host_lost(&mut self, now: u64, group: &GroupId, why: &str) {
        let first = self.backoff(1);
        let Some(joined) = self.joined.get_mut(group) else {
            return;
        };
        if let Link::Down { .. } = joined.link {
            return;
        }
        joined.link = Link::Down {
            attempt: 0,
            next_try: now.saturating_add(first),
        };
        let host = joined.host.clone();
        let group_type = joined.group_type.clone();
        tracing::info!(%group, %host, why, "host lost; will rejoin");
        self.event(
            &group_type,
            GroupEventKind::HostLost,
            group,
            Some(&host),
            Some(raw(&serde_json::json!({ "reason": why }))),
        );
    }

    /// Sends a join to the host of a group whose link is down, and schedules the next try.
    pub(super) fn send_rejoin(&mut self, now: u64, group: &GroupId) {
        let Some(Link::Down { attempt, .. }) = self.joined.get(group).map(|j| j.link) else {
            return;
        };
        let attempt = attempt.saturating_add(1);
        let delay = self.backoff(attempt.saturating_add(1));
        let Some(joined) = self.joined.get_mut(group) else {
            return;
        };
        joined.link = Link::Down {
            attempt,
            next_try: now.saturating_add(delay),
        };
        let host = joined.host.clone();
        tracing::debug!(%group, %host, attempt, "rejoining");
        self.send(&host, group, &self.join_message());
    }

    pub(super) fn member_tick(&mut self, now: u64) {
        let goop2_timeout = ms(self.config.host_timeout);
        let goop_timeout = ms(self.config.member_timeout);
        let mut silent = Vec::new();
        let mut due = Vec::new();
        for (group, joined) in &self.joined {
            // A host that granted features is a goop host and pings every ping interval.
            let timeout = if joined.authored {
                goop_timeout
            } else {
                goop2_timeout
            };
            match joined.link {
                Link::Up { last_heard } if now.saturating_sub(last_heard) > timeout => {
                    silent.push(group.clone());
                }
                Link::Down { next_try, .. } if now >= next_try => due.push(group.clone()),
                _ => {}
            }
        }
        for group in silent {
            self.host_lost(now, &group, "no word from the host");
        }
        for group in due {
            self.send_rejoin(now, &group);
        }
        let expired: Vec<GroupId> = self
            .pending_joins
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(g, _)| g.clone())
            .collect();
        for group in expired {
            let Some(pending) = self.pending_joins.remove(&group) else {
                continue;
            };
            tracing::info!(%group, host = %pending.host, "join timed out");
            // If the host admitted this peer after all, the leave keeps it from holding a ghost.
            if self
                .joined
                .get(&group)
                .is_none_or(|j| j.host != pending.host)
            {
                self.send(&pending.host, &group, &GroupMessage::Leave);
            }
            self.outputs.push(Output::JoinFinished {
                ticket: pending.ticket,
                result: Err(GroupError::JoinTimedOut {
                    host: pending.host,
                    group,
                }),
            });
        }
    }

    pub(super) fn on_invite(&mut self, now: u64, from: PeerId, payload: &RawValue) {
        let invite: Invite = match serde_json::from_str(payload.get()) {
            Ok(invite) => invite,
            Err(error) => {
                tracing::warn!(%from, %error, "bad invitation dropped");
                return;
            }
        };
        if self.hosted.contains_key(&invite.group_id) {
            tracing::warn!(%from, group = %invite.group_id, "invitation to a group this peer hosts; dropped");
            return;
        }
        // The sender is the host, whatever the invitation claims.
        let received = ReceivedInvite {
            host: from.clone(),
            group: invite.group_id.clone(),
            group_name: invite.group_name.clone(),
            group_type: invite.group_type.clone(),
            group_context: invite.group_context.clone(),
            received_at: wall(now),
        };
        self.invites
            .retain(|i| !(i.host == received.host && i.group == received.group));
        while self.invites.len() >= self.config.max_received_invites.max(1) {
            self.invites.pop_front();
        }
        self.invites.push_back(received);
        tracing::info!(group = %invite.group_id, host = %from, "invited");
        let payload = raw(&serde_json::json!({
            "group_id": invite.group_id,
            "group_name": invite.group_name,
            "host": from,
            "group_type": invite.group_type,
            "group_context": invite.group_context,
        }));
        self.event(
            &invite.group_type,
            GroupEventKind::Invite,
            &invite.group_id,
            Some(&from),
            Some(payload),
        );
    }

    pub(super) fn on_discover_reply(&mut self, from: PeerId, payload: &RawValue) {
        let reply: DiscoverReply = match serde_json::from_str(payload.get()) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%from, %error, "bad discovery reply dropped");
                return;
            }
        };
        let matches = self
            .pending_discovers
            .get(&reply.request_id)
            .is_some_and(|p| p.peer == from);
        if !matches {
            tracing::debug!(%from, request_id = reply.request_id, "unexpected discovery reply");
            return;
        }
        self.pending_discovers.remove(&reply.request_id);
        self.outputs.push(Output::DiscoverFinished {
            ticket: DiscoverTicket(reply.request_id),
            result: Ok(reply.data),
        });
    }
}
