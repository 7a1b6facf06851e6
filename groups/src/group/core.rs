//! The group state machine: hosted groups and joined groups of one peer.
//!
//! Driven by [`GroupCore::handle`] (messages, connection changes, send failures, ticks) and by
//! commands (create, join, kick...), each taking `now` in Unix milliseconds. Every call queues
//! [`Output`]s (sends, store writes, local events, hook calls, answers to pending joins) that
//! the shell carries out in order; [`GroupCore::take_outputs`] drains them. Nothing here does
//! I/O or reads a clock, so every rule below is tested without a network.
//!
//! The rules that fix Goop²'s group bugs live here: only members may send to a group and the
//! host relays with the true author; only the host may send control messages to its members;
//! every join gets an answer; a rejoin keeps the member's role and does not count against the
//! limit; liveness works both ways (the host drops members it no longer hears, members rejoin a
//! host they lost, with backoff); every way out of a group fires the leave hook.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use proto::{
    Admission, DEFAULT_ROLE, DISCOVER_REPLY_TOPIC, DISCOVER_TOPIC, ErrorBody, ErrorCode,
    GROUP_TOPIC_PREFIX, GroupEvent, GroupEventKind, GroupId, GroupMessage, GroupRow, GroupTopic,
    INVITE_TOPIC, MemberInfo, Members, OWNER_ROLE, PeerId, RelayForm,
};
use serde::Serialize;
use serde_json::value::RawValue;

use super::config::GroupConfig;
use super::error::GroupError;
use super::handler::HandlerRegistry;
use super::store::{GroupRecord, MemberRecord, StoreOp, StoreSnapshot, SubscriptionRecord};

mod budget;
mod host;
mod member;
#[cfg(test)]
mod tests;

/// Answers a pending [`GroupCore::join_remote`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct JoinTicket(pub u64);

/// Answers a pending [`GroupCore::discover`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DiscoverTicket(pub u64);

/// Names a send whose result someone waits for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SendToken(pub u64);

/// How a peer left a group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LeaveReason {
    /// It said `leave` (or the host left its own group).
    Left,
    /// The host removed it.
    Kicked,
    /// The host stopped hearing from it (no pong in time, connection lost, send failed).
    Lost,
}

impl LeaveReason {
    /// The reason as shown in events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Kicked => "kicked",
            Self::Lost => "lost",
        }
    }
}

/// What the shell tells the core.
#[derive(Debug)]
pub enum Input {
    /// A message from the transport (the group topics, invitations, discovery).
    Message {
        /// The authenticated sender.
        from: PeerId,
        /// The topic.
        topic: String,
        /// The payload.
        payload: Box<RawValue>,
    },
    /// A connection to a peer is up.
    PeerConnected(PeerId),
    /// The last connection to a peer is gone.
    PeerDisconnected(PeerId),
    /// A send the core asked for failed (or the peer's queue was full).
    SendFailed {
        /// The receiver.
        to: PeerId,
        /// The topic of the message that failed.
        topic: String,
    },
    /// Time passed: ping, drop, rejoin, time out.
    Tick,
}

/// A type-handler call for the shell to make.
#[derive(Debug, Clone)]
pub enum HookCall {
    /// `on_create`.
    Create {
        /// The group's type.
        group_type: String,
        /// The group.
        group: GroupId,
        /// Its name.
        name: String,
        /// Its limit.
        max_members: u32,
        /// Restored from the store rather than created.
        restored: bool,
    },
    /// `on_join`.
    Join {
        /// The group's type.
        group_type: String,
        /// The group.
        group: GroupId,
        /// Who joined.
        peer: PeerId,
        /// Whether it is the host.
        is_host: bool,
    },
    /// `on_leave`.
    Leave {
        /// The group's type.
        group_type: String,
        /// The group.
        group: GroupId,
        /// Who left.
        peer: PeerId,
        /// Whether it is the host.
        is_host: bool,
        /// How.
        reason: LeaveReason,
    },
    /// `on_close`.
    Close {
        /// The group's type.
        group_type: String,
        /// The group.
        group: GroupId,
    },
}

/// What the core asks the shell to do.
#[derive(Debug)]
pub enum Output {
    /// Send a message; per receiver, in the order given.
    Send {
        /// The receiver.
        to: PeerId,
        /// The topic.
        topic: String,
        /// The payload.
        payload: Box<RawValue>,
        /// Set when a caller waits for this send's result.
        token: Option<SendToken>,
    },
    /// Write to the store.
    Persist(StoreOp),
    /// A local event for the event stream and the type handler's `on_event`.
    Event {
        /// The group's type, to find the handler.
        group_type: String,
        /// The event.
        event: GroupEvent,
    },
    /// Call a type handler.
    Hook(HookCall),
    /// A join finished.
    JoinFinished {
        /// The ticket [`GroupCore::join_remote`] returned.
        ticket: JoinTicket,
        /// The group joined, or why not.
        result: Result<Subscription, GroupError>,
    },
    /// A discovery request finished.
    DiscoverFinished {
        /// The ticket [`GroupCore::discover`] returned.
        ticket: DiscoverTicket,
        /// The peer's open and approval groups, or why not.
        result: Result<Vec<GroupRow>, GroupError>,
    },
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct GroupSpec {
    /// The id; a random 16-hex id when `None`.
    pub id: Option<GroupId>,
    /// The name (required).
    pub name: String,
    /// The type, which picks the handler (may be empty).
    pub group_type: String,
    /// Free text linking the group to what made it.
    pub group_context: String,
    /// Member limit, the host included once it joined; 0 for none.
    pub max_members: u32,
    /// Keep it in memory only (also implied by the type's handler).
    pub volatile: bool,
    /// Who may join.
    pub admission: Admission,
    /// Known roles; when not empty, roles given to members must be among them.
    pub roles: Vec<String>,
    /// The role of new joiners (`viewer` when `None`).
    pub default_role: Option<String>,
}

/// A settings change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct MetaUpdate {
    /// A new name.
    pub name: Option<String>,
    /// A new member limit.
    pub max_members: Option<u32>,
    /// New known roles.
    pub roles: Option<Vec<String>>,
    /// A new default role.
    pub default_role: Option<String>,
    /// A new admission.
    pub admission: Option<Admission>,
}

/// A hosted group, as the API lists it.
#[derive(Debug, Clone)]
pub struct HostedGroup {
    /// The id.
    pub id: GroupId,
    /// The name.
    pub name: String,
    /// The host (this peer).
    pub owner: PeerId,
    /// The type.
    pub group_type: String,
    /// The context.
    pub group_context: String,
    /// Member limit, 0 for none.
    pub max_members: u32,
    /// In memory only.
    pub volatile: bool,
    /// Who may join.
    pub admission: Admission,
    /// The role of new joiners.
    pub default_role: String,
    /// Known roles.
    pub roles: Vec<String>,
    /// Whether the host is a member.
    pub host_joined: bool,
    /// Whether the type lets the host join.
    pub host_can_join: bool,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Members, the host first when joined.
    pub members: Vec<MemberInfo>,
    /// Invited peers.
    pub invited: Vec<PeerId>,
    /// Peers kicked and not let in again (until unbanned or invited), oldest ban first.
    pub banned: Vec<PeerId>,
    /// Peers asking to join a group that admits by approval, oldest request first.
    pub requests: Vec<PeerId>,
}

/// A remote group this peer joined (or is rejoining), as the API lists it.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The host.
    pub host: PeerId,
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub group_name: String,
    /// Its type.
    pub group_type: String,
    /// Its context.
    pub group_context: String,
    /// Its limit.
    pub max_members: u32,
    /// Whether it is volatile.
    pub volatile: bool,
    /// This peer's role.
    pub role: String,
    /// The members, as the host last listed them.
    pub members: Vec<MemberInfo>,
    /// Whether the host is reachable now (false while rejoining).
    pub connected: bool,
    /// When this peer joined, Unix ms.
    pub subscribed_at: i64,
}

/// The alias the HTTP layer and the cluster type use for a joined group.
pub type JoinedGroup = Subscription;

/// An invitation this peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedInvite {
    /// The inviting host (the authenticated sender).
    pub host: PeerId,
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub group_name: String,
    /// Its type.
    pub group_type: String,
    /// Its context.
    pub group_context: String,
    /// When it arrived, Unix ms.
    pub received_at: i64,
}

/// A member of a hosted group.
#[derive(Debug, Clone)]
struct Member {
    role: String,
    /// The name it gave when it last joined (in memory only).
    name: Option<String>,
    /// What it may still have relayed ([`GroupConfig::relay_rate`]).
    budget: budget::Budget,
    joined_at: i64,
    last_heard: u64,
    /// Relays to it carry the author (it asked for [`FEATURE_AUTHOR`]).
    authored: bool,
    /// It has shown itself alive since it (re)joined. A member restored from the store is
    /// not, until it says something: only then do the handler's `on_join` and the `join`
    /// event fire, so a type handler never counts a member that did not come back.
    confirmed: bool,
}

/// A group this peer hosts.
#[derive(Debug)]
struct Hosted {
    record: GroupRecord,
    volatile: bool,
    members: BTreeMap<PeerId, Member>,
    /// Roles of members that were lost, for when they come back.
    remembered: BTreeMap<PeerId, String>,
    invited: BTreeSet<PeerId>,
    /// Kicked peers, with when each was banned (Unix ms): their joins are refused with
    /// `forbidden` until the host lifts the ban or invites them.
    banned: BTreeMap<PeerId, i64>,
    /// When each peer whose join was refused lately was last answered (see
    /// [`GroupConfig::refusal_interval`]); kept for that long.
    refused: BTreeMap<PeerId, u64>,
    /// Peers asking to join (admission by approval), with when each first asked (Unix ms);
    /// stored, so the host can still answer a request made before it restarted.
    requests: BTreeMap<PeerId, i64>,
    next_ping: u64,
    /// Changes with every change of members, roles or settings; starts at a random value so
    /// a restarted host never repeats the epoch its members last saw.
    epoch: u64,
}

/// Epochs stay below 2^53, so a peer that reads JSON numbers as doubles (JavaScript, or Go
/// decoding into `float64`) reads each one exactly and tells consecutive ones apart.
const EPOCH_MASK: u64 = (1 << 53) - 1;

/// The epoch after `epoch`, wrapping within [`EPOCH_MASK`].
fn next_epoch(epoch: u64) -> u64 {
    epoch.wrapping_add(1) & EPOCH_MASK
}

/// The peers of a map of when each was noted, oldest first.
fn oldest_first(noted: &BTreeMap<PeerId, i64>) -> Vec<PeerId> {
    let mut peers: Vec<(&PeerId, &i64)> = noted.iter().collect();
    peers.sort_by_key(|(peer, at)| (**at, *peer));
    peers.into_iter().map(|(peer, _)| peer.clone()).collect()
}

/// Takes the oldest entries out of `noted` until it has room for one more under `max`
/// (at least one); returns the peers taken out.
fn make_room(noted: &mut BTreeMap<PeerId, i64>, max: usize) -> Vec<PeerId> {
    let mut dropped = Vec::new();
    while noted.len() >= max.max(1) {
        let Some(oldest) = noted
            .iter()
            .min_by_key(|(peer, at)| (**at, (*peer).clone()))
            .map(|(peer, _)| peer.clone())
        else {
            break;
        };
        noted.remove(&oldest);
        dropped.push(oldest);
    }
    dropped
}

impl Hosted {
    /// Records the request of `peer` to join (admission by approval), at `at`, dropping the
    /// oldest past `max`; the store operations go to `ops`. Returns whether it is a new
    /// request.
    fn request(
        &mut self,
        group: &GroupId,
        peer: &PeerId,
        at: i64,
        max: usize,
        ops: &mut Vec<StoreOp>,
    ) -> bool {
        if self.requests.contains_key(peer) {
            return false;
        }
        for oldest in make_room(&mut self.requests, max) {
            tracing::warn!(%group, peer = %oldest, max, "join requests full; the oldest is dropped");
            ops.push(StoreOp::DeleteRequest {
                group: group.clone(),
                peer: oldest,
            });
        }
        self.requests.insert(peer.clone(), at);
        ops.push(StoreOp::PutRequest {
            group: group.clone(),
            peer: peer.clone(),
            requested_at: at,
        });
        tracing::info!(%group, %peer, "join request waiting for the host's approval");
        true
    }

    /// Forgets the request of `peer`, if it made one; the store operation goes to `ops`.
    /// Returns whether there was one.
    fn forget_request(&mut self, group: &GroupId, peer: &PeerId, ops: &mut Vec<StoreOp>) -> bool {
        let had = self.requests.remove(peer).is_some();
        if had {
            ops.push(StoreOp::DeleteRequest {
                group: group.clone(),
                peer: peer.clone(),
            });
        }
        had
    }

    fn count(&self) -> u32 {
        let members = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        members.saturating_add(u32::from(self.record.host_joined_at.is_some()))
    }

    fn is_full(&self) -> bool {
        self.record.max_members > 0 && self.count() >= self.record.max_members
    }
}

/// The link of a joined group to its host.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// Welcomed; `last_heard` is the last time the host said anything.
    Up { last_heard: u64 },
    /// Lost; a join goes out at `next_try`.
    Down { attempt: u32, next_try: u64 },
}

/// A remote group this peer joined.
#[derive(Debug)]
struct Joined {
    host: PeerId,
    name: String,
    group_type: String,
    group_context: String,
    max_members: u32,
    volatile: bool,
    role: String,
    members: Vec<MemberInfo>,
    authored: bool,
    link: Link,
    subscribed_at: i64,
    /// The host's epoch as last heard (see `proto::PingBody`).
    epoch: Option<u64>,
}

#[derive(Debug)]
struct PendingJoin {
    host: PeerId,
    ticket: JoinTicket,
    deadline: u64,
}

#[derive(Debug)]
struct PendingDiscover {
    peer: PeerId,
    deadline: u64,
}

/// The group state machine of one peer.
pub struct GroupCore {
    me: PeerId,
    /// This peer's display name, cleaned (`None` when empty).
    label: Option<String>,
    config: GroupConfig,
    registry: Arc<HandlerRegistry>,
    hosted: BTreeMap<GroupId, Hosted>,
    joined: BTreeMap<GroupId, Joined>,
    pending_joins: BTreeMap<GroupId, PendingJoin>,
    pending_discovers: BTreeMap<u64, PendingDiscover>,
    invites: VecDeque<ReceivedInvite>,
    outputs: Vec<Output>,
    next_id: u64,
    rng: u64,
}

impl std::fmt::Debug for GroupCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCore")
            .field("me", &self.me)
            .field("hosted", &self.hosted.len())
            .field("joined", &self.joined.len())
            .finish_non_exhaustive()
    }
}

fn ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn wall(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// JSON for an event payload. Every type passed here serializes (plain structs and maps).
fn raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode a group event payload");
        RawValue::from_string("null".to_owned()).unwrap_or_default()
    })
}

impl GroupCore {
    /// A core for peer `me` with nothing hosted or joined.
    pub fn new(me: PeerId, config: GroupConfig, registry: Arc<HandlerRegistry>) -> Self {
        let rng = config.seed | 1;
        let label = Some(crate::names::clean_name(&config.label)).filter(|l| !l.is_empty());
        Self {
            me,
            label,
            config,
            registry,
            hosted: BTreeMap::new(),
            joined: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            pending_discovers: BTreeMap::new(),
            invites: VecDeque::new(),
            outputs: Vec::new(),
            next_id: 1,
            rng,
        }
    }

    /// This peer.
    pub fn me(&self) -> &PeerId {
        &self.me
    }

    fn relay_limit(&self) -> budget::Limit {
        budget::Limit {
            rate: self.config.relay_rate,
            burst: self.config.relay_burst,
        }
    }

    /// Drains the queued outputs, in the order they must be carried out.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Loads what the store held: hosted groups with their members (present ones are members
    /// again until liveness says otherwise; lost ones keep their role for when they return),
    /// invitations, and subscriptions, which rejoin their hosts from the next tick on.
    pub fn restore(&mut self, now: u64, snapshot: StoreSnapshot) {
        let relay_limit = self.relay_limit();
        let mut members: BTreeMap<GroupId, Vec<MemberRecord>> = BTreeMap::new();
        for (group, member) in snapshot.members {
            members.entry(group).or_default().push(member);
        }
        let mut invites: BTreeMap<GroupId, BTreeSet<PeerId>> = BTreeMap::new();
        for (group, peer) in snapshot.invites {
            invites.entry(group).or_default().insert(peer);
        }
        let mut bans: BTreeMap<GroupId, BTreeMap<PeerId, i64>> = BTreeMap::new();
        for (group, peer, banned_at) in snapshot.bans {
            bans.entry(group).or_default().insert(peer, banned_at);
        }
        let mut requests: BTreeMap<GroupId, BTreeMap<PeerId, i64>> = BTreeMap::new();
        for (group, peer, asked_at) in snapshot.requests {
            requests.entry(group).or_default().insert(peer, asked_at);
        }
        for mut record in snapshot.groups {
            // The store only ever holds this peer's groups; a database copied from another
            // peer would make this peer answer for groups it cannot host.
            if record.owner != self.me {
                tracing::warn!(group = %record.id, owner = %record.owner, "stored group owned by another peer; taking it over");
                record.owner = self.me.clone();
            }
            let epoch = self.new_epoch();
            let mut hosted = Hosted {
                epoch,
                volatile: false,
                members: BTreeMap::new(),
                remembered: BTreeMap::new(),
                invited: invites.remove(&record.id).unwrap_or_default(),
                banned: bans.remove(&record.id).unwrap_or_default(),
                refused: BTreeMap::new(),
                requests: requests.remove(&record.id).unwrap_or_default(),
                next_ping: now,
                record,
            };
            for m in members.remove(&hosted.record.id).unwrap_or_default() {
                if m.present {
                    hosted.members.insert(
                        m.peer,
                        Member {
                            role: m.role,
                            name: None,
                            budget: budget::Budget::new(now, relay_limit),
                            joined_at: m.joined_at,
                            last_heard: now,
                            authored: m.authored,
                            confirmed: false,
                        },
                    );
                } else {
                    hosted.remembered.insert(m.peer, m.role);
                }
            }
            let r = &hosted.record;
            self.outputs.push(Output::Hook(HookCall::Create {
                group_type: r.group_type.clone(),
                group: r.id.clone(),
                name: r.name.clone(),
                max_members: r.max_members,
                restored: true,
            }));
            if r.host_joined_at.is_some() {
                self.outputs.push(Output::Hook(HookCall::Join {
                    group_type: r.group_type.clone(),
                    group: r.id.clone(),
                    peer: self.me.clone(),
                    is_host: true,
                }));
            }
            tracing::info!(group = %r.id, members = hosted.members.len(), "restored hosted group");
            self.hosted.insert(r.id.clone(), hosted);
        }
        for s in snapshot.subscriptions {
            if self.hosted.contains_key(&s.group) {
                continue;
            }
            tracing::info!(group = %s.group, host = %s.host, "restored subscription; rejoining");
            self.joined.insert(
                s.group.clone(),
                Joined {
                    volatile: self.registry.volatile(&s.group_type),
                    host: s.host,
                    name: s.group_name,
                    group_type: s.group_type,
                    group_context: s.group_context,
                    max_members: s.max_members,
                    role: s.role,
                    members: Vec::new(),
                    authored: false,
                    link: Link::Down {
                        attempt: 0,
                        next_try: now,
                    },
                    subscribed_at: s.subscribed_at,
                    epoch: None,
                },
            );
        }
    }

    /// What the store should hold now: non-volatile hosted groups with their members (lost
    /// ones as absent, so their roles survive) and invitations, and non-volatile
    /// subscriptions. Written whole after a failed write.
    pub fn store_snapshot(&self) -> StoreSnapshot {
        let mut snapshot = StoreSnapshot::default();
        for hosted in self.hosted.values().filter(|h| !h.volatile) {
            let id = &hosted.record.id;
            snapshot.groups.push(hosted.record.clone());
            for (peer, m) in &hosted.members {
                snapshot.members.push((
                    id.clone(),
                    MemberRecord {
                        peer: peer.clone(),
                        role: m.role.clone(),
                        joined_at: m.joined_at,
                        present: true,
                        authored: m.authored,
                    },
                ));
            }
            for (peer, role) in &hosted.remembered {
                snapshot.members.push((
                    id.clone(),
                    MemberRecord {
                        peer: peer.clone(),
                        role: role.clone(),
                        joined_at: 0,
                        present: false,
                        authored: false,
                    },
                ));
            }
            for peer in &hosted.invited {
                snapshot.invites.push((id.clone(), peer.clone()));
            }
            for (peer, banned_at) in &hosted.banned {
                snapshot.bans.push((id.clone(), peer.clone(), *banned_at));
            }
            for (peer, asked_at) in &hosted.requests {
                snapshot
                    .requests
                    .push((id.clone(), peer.clone(), *asked_at));
            }
        }
        for (group, joined) in self.joined.iter().filter(|(_, j)| !j.volatile) {
            snapshot.subscriptions.push(SubscriptionRecord {
                host: joined.host.clone(),
                group: group.clone(),
                group_name: joined.name.clone(),
                group_type: joined.group_type.clone(),
                group_context: joined.group_context.clone(),
                max_members: joined.max_members,
                role: joined.role.clone(),
                subscribed_at: joined.subscribed_at,
            });
        }
        snapshot
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Output> {
        match input {
            Input::Message {
                from,
                topic,
                payload,
            } => self.on_message(now, from, &topic, &payload),
            Input::PeerConnected(peer) => self.on_connected(now, &peer),
            Input::PeerDisconnected(peer) => self.on_disconnected(now, &peer),
            Input::SendFailed { to, topic } => self.on_send_failed(now, &to, &topic),
            Input::Tick => self.on_tick(now),
        }
        self.take_outputs()
    }

    fn on_message(&mut self, now: u64, from: PeerId, topic: &str, payload: &RawValue) {
        if from == self.me {
            tracing::debug!(topic, "ignoring a group message from this peer");
            return;
        }
        if topic == INVITE_TOPIC {
            return self.on_invite(now, from, payload);
        }
        if topic == DISCOVER_TOPIC {
            return self.on_discover_request(from, payload);
        }
        if topic == DISCOVER_REPLY_TOPIC {
            return self.on_discover_reply(from, payload);
        }
        if !topic.starts_with(GROUP_TOPIC_PREFIX) {
            tracing::debug!(topic, %from, "ignoring a message outside the group topics");
            return;
        }
        let parsed = match GroupTopic::parse(topic) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%from, %error, "dropping group message");
                return;
            }
        };
        let form = match self.joined.get(&parsed.group) {
            Some(joined) if joined.authored && !self.hosted.contains_key(&parsed.group) => {
                RelayForm::Authored
            }
            _ => RelayForm::Bare,
        };
        let message = match GroupMessage::decode(&parsed, payload, form) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%from, group = %parsed.group, %error, "dropping group message");
                return;
            }
        };
        let group = parsed.group;
        if self.hosted.contains_key(&group) {
            self.host_receive(now, from, group, message);
        } else {
            self.member_receive(now, from, group, message);
        }
    }

    fn on_tick(&mut self, now: u64) {
        self.host_tick(now);
        self.member_tick(now);
        let expired: Vec<u64> = self
            .pending_discovers
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.pending_discovers.remove(&id) {
                self.outputs.push(Output::DiscoverFinished {
                    ticket: DiscoverTicket(id),
                    result: Err(GroupError::DiscoverTimedOut(pending.peer)),
                });
            }
        }
    }

    fn on_connected(&mut self, now: u64, peer: &PeerId) {
        // A host that comes back gets a join at once instead of at the next backoff step.
        let groups: Vec<GroupId> = self
            .joined
            .iter()
            .filter(|(_, j)| &j.host == peer && matches!(j.link, Link::Down { .. }))
            .map(|(g, _)| g.clone())
            .collect();
        for group in groups {
            self.send_rejoin(now, &group);
        }
    }

    fn on_disconnected(&mut self, now: u64, peer: &PeerId) {
        let hosted: Vec<GroupId> = self
            .hosted
            .iter()
            .filter(|(_, h)| h.members.contains_key(peer))
            .map(|(g, _)| g.clone())
            .collect();
        for group in hosted {
            self.remove_member(now, &group, peer, LeaveReason::Lost);
        }
        let joined: Vec<GroupId> = self
            .joined
            .iter()
            .filter(|(_, j)| &j.host == peer && matches!(j.link, Link::Up { .. }))
            .map(|(g, _)| g.clone())
            .collect();
        for group in joined {
            self.host_lost(now, &group, "connection lost");
        }
    }

    fn on_send_failed(&mut self, now: u64, to: &PeerId, topic: &str) {
        let group = match GroupTopic::parse(topic) {
            Ok(parsed) => parsed.group,
            Err(_) => return,
        };
        if self
            .hosted
            .get(&group)
            .is_some_and(|h| h.members.contains_key(to))
        {
            tracing::info!(%group, peer = %to, "send to member failed; dropping it");
            self.remove_member(now, &group, to, LeaveReason::Lost);
            return;
        }
        if let Some(pending) = self.pending_joins.get(&group)
            && &pending.host == to
            && let Some(pending) = self.pending_joins.remove(&group)
        {
            self.outputs.push(Output::JoinFinished {
                ticket: pending.ticket,
                result: Err(GroupError::Send {
                    peer: to.clone(),
                    source: super::transport::TransportError::Unreachable(
                        "join could not be delivered".to_owned(),
                    ),
                }),
            });
        }
        if self
            .joined
            .get(&group)
            .is_some_and(|j| &j.host == to && matches!(j.link, Link::Up { .. }))
        {
            self.host_lost(now, &group, "send to host failed");
        }
    }

    // ---- shared helpers ----

    fn send(&mut self, to: &PeerId, group: &GroupId, message: &GroupMessage) {
        self.send_with_token(to, group, message, None);
    }

    fn send_with_token(
        &mut self,
        to: &PeerId,
        group: &GroupId,
        message: &GroupMessage,
        token: Option<SendToken>,
    ) {
        match message.encode(group) {
            Ok((topic, payload)) => self.outputs.push(Output::Send {
                to: to.clone(),
                topic,
                payload,
                token,
            }),
            Err(error) => tracing::error!(%group, %error, "cannot encode group message"),
        }
    }

    fn send_error(&mut self, to: &PeerId, group: &GroupId, code: ErrorCode) {
        self.send(to, group, &GroupMessage::Error(ErrorBody::new(code)));
    }

    fn event(
        &mut self,
        group_type: &str,
        kind: GroupEventKind,
        group: &GroupId,
        from: Option<&PeerId>,
        payload: Option<Box<RawValue>>,
    ) {
        self.outputs.push(Output::Event {
            group_type: group_type.to_owned(),
            event: GroupEvent {
                kind,
                group: group.clone(),
                from: from.cloned(),
                payload,
            },
        });
    }

    fn persist(&mut self, op: StoreOp) {
        self.outputs.push(Output::Persist(op));
    }

    /// Persists `ops`, the changes of one group, unless that group is volatile.
    fn persist_all(&mut self, volatile: bool, ops: Vec<StoreOp>) {
        if !volatile {
            self.outputs.extend(ops.into_iter().map(Output::Persist));
        }
    }

    fn hook(&mut self, call: HookCall) {
        self.outputs.push(Output::Hook(call));
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// xorshift64*: ids and jitter, from the configured seed.
    /// A fresh epoch for a hosted group, below 2^53 (see [`next_epoch`]).
    fn new_epoch(&mut self) -> u64 {
        self.random() & EPOCH_MASK
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The delay before rejoin attempt `attempt` (1-based): doubling from the minimum up to the
    /// maximum, minus up to a quarter of jitter so members of a restarted host spread out.
    fn backoff(&mut self, attempt: u32) -> u64 {
        let min = ms(self.config.rejoin_backoff_min).max(1);
        let max = ms(self.config.rejoin_backoff_max).max(min);
        let exp = attempt.saturating_sub(1).min(32);
        let base = min.saturating_mul(1u64 << exp).min(max);
        let jitter = self.random() % (base / 4 + 1);
        base - jitter
    }

    // ---- reads ----

    /// Every hosted group, newest first.
    pub fn hosted_groups(&self) -> Vec<HostedGroup> {
        let mut groups: Vec<HostedGroup> =
            self.hosted.values().map(|h| self.hosted_view(h)).collect();
        groups.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        groups
    }

    /// One hosted group.
    pub fn hosted_group(&self, group: &GroupId) -> Option<HostedGroup> {
        self.hosted.get(group).map(|h| self.hosted_view(h))
    }

    /// Every joined (or rejoining) remote group, newest first.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut subs: Vec<Subscription> = self
            .joined
            .iter()
            .map(|(g, j)| Self::subscription_view(g, j))
            .collect();
        subs.sort_by(|a, b| {
            b.subscribed_at
                .cmp(&a.subscribed_at)
                .then(a.group.cmp(&b.group))
        });
        subs
    }

    /// One joined group.
    pub fn subscription(&self, group: &GroupId) -> Option<Subscription> {
        self.joined
            .get(group)
            .map(|j| Self::subscription_view(group, j))
    }

    /// The members of a hosted or joined group.
    pub fn members(&self, group: &GroupId) -> Result<Vec<MemberInfo>, GroupError> {
        if let Some(hosted) = self.hosted.get(group) {
            return Ok(self.member_list(hosted));
        }
        if let Some(joined) = self.joined.get(group) {
            return Ok(joined.members.clone());
        }
        Err(GroupError::UnknownGroup(group.clone()))
    }

    /// Whether `peer` is a member of hosted group `group` (the host counts once joined).
    pub fn is_member(&self, group: &GroupId, peer: &PeerId) -> bool {
        self.hosted.get(group).is_some_and(|h| {
            h.members.contains_key(peer) || (peer == &self.me && h.record.host_joined_at.is_some())
        })
    }

    /// Invitations received, oldest first.
    pub fn received_invites(&self) -> Vec<ReceivedInvite> {
        self.invites.iter().cloned().collect()
    }

    fn hosted_view(&self, h: &Hosted) -> HostedGroup {
        let r = &h.record;
        HostedGroup {
            id: r.id.clone(),
            name: r.name.clone(),
            owner: r.owner.clone(),
            group_type: r.group_type.clone(),
            group_context: r.group_context.clone(),
            max_members: r.max_members,
            volatile: h.volatile,
            admission: r.admission,
            default_role: r.default_role.clone(),
            roles: r.roles.clone(),
            host_joined: r.host_joined_at.is_some(),
            host_can_join: self.registry.host_can_join(&r.group_type),
            created_at: r.created_at,
            members: self.member_list(h),
            invited: h.invited.iter().cloned().collect(),
            banned: oldest_first(&h.banned),
            requests: oldest_first(&h.requests),
        }
    }

    fn subscription_view(group: &GroupId, j: &Joined) -> Subscription {
        Subscription {
            host: j.host.clone(),
            group: group.clone(),
            group_name: j.name.clone(),
            group_type: j.group_type.clone(),
            group_context: j.group_context.clone(),
            max_members: j.max_members,
            volatile: j.volatile,
            role: j.role.clone(),
            members: j.members.clone(),
            connected: matches!(j.link, Link::Up { .. }),
            subscribed_at: j.subscribed_at,
        }
    }

    /// The member list as sent: the host first (as owner) when joined, then by join time.
    fn member_list(&self, h: &Hosted) -> Vec<MemberInfo> {
        let mut list = Vec::with_capacity(h.members.len() + 1);
        if let Some(at) = h.record.host_joined_at {
            list.push(MemberInfo {
                peer_id: self.me.clone(),
                name: self.label.clone(),
                role: OWNER_ROLE.to_owned(),
                joined_at: at,
            });
        }
        let mut members: Vec<MemberInfo> = h
            .members
            .iter()
            .map(|(peer, m)| MemberInfo {
                peer_id: peer.clone(),
                name: m.name.clone(),
                role: m.role.clone(),
                joined_at: m.joined_at,
            })
            .collect();
        members.sort_by(|a, b| {
            a.joined_at
                .cmp(&b.joined_at)
                .then(a.peer_id.cmp(&b.peer_id))
        });
        list.extend(members);
        list
    }
}

/// The role a joiner gets when a group names none.
fn default_role(role: &str) -> String {
    if role.is_empty() {
        DEFAULT_ROLE.to_owned()
    } else {
        role.to_owned()
    }
}

/// The payload of a `members` event.
fn members_payload(members: &[MemberInfo]) -> Box<RawValue> {
    raw(&Members {
        members: members.to_vec(),
        epoch: None,
    })
}
