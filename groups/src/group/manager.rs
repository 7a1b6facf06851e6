//! The async shell around [`GroupCore`]: one task owns the core, feeds it transport events,
//! commands and ticks, and carries out its outputs. Sends go through one queue and one task
//! per peer so messages to a peer keep their order and a slow peer holds up only itself; a
//! peer whose queue fills up counts as lost. Store writes go to the store thread in order;
//! a command is answered once its writes are committed.
//!
//! [`GroupHandle`] is what the HTTP layer and the group types call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use proto::{GroupEvent, GroupId, GroupRow, MemberInfo, PeerId};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::GroupConfig;
use super::core::{
    DiscoverTicket, GroupCore, GroupSpec, HookCall, HostedGroup, Input, JoinTicket, MetaUpdate,
    Output, ReceivedInvite, SendToken, Subscription,
};
use super::error::GroupError;
use super::handler::{CreateInfo, HandlerRegistry};
use super::store::{GroupStore, StoreOp};
use super::transport::{GroupTransport, TransportError, TransportEvent};

type Reply<T> = oneshot::Sender<Result<T, GroupError>>;

enum Command {
    Create(GroupSpec, Reply<GroupId>),
    Close(GroupId, Reply<()>),
    JoinOwn(GroupId, Reply<()>),
    LeaveOwn(GroupId, Reply<()>),
    Kick(GroupId, PeerId, Reply<()>),
    Invite(GroupId, PeerId, Reply<()>),
    Uninvite(GroupId, PeerId, Reply<()>),
    Unban(GroupId, PeerId, Reply<bool>),
    Approve(GroupId, PeerId, Reply<()>),
    Deny(GroupId, PeerId, Reply<()>),
    SetRole(GroupId, PeerId, String, Reply<()>),
    UpdateMeta(GroupId, MetaUpdate, Reply<()>),
    Send(GroupId, Box<RawValue>, SendMode, Reply<()>),
    SendTo(GroupId, PeerId, Box<RawValue>, Reply<()>),
    Join(PeerId, GroupId, Reply<Subscription>),
    Leave(GroupId, Reply<()>),
    Discover(PeerId, Option<u32>, Reply<Vec<GroupRow>>),
    Hosted(oneshot::Sender<Vec<HostedGroup>>),
    ListedRows(u32, u32, oneshot::Sender<Vec<GroupRow>>),
    Subscriptions(oneshot::Sender<Vec<Subscription>>),
    Members(GroupId, Reply<Vec<MemberInfo>>),
    IsMember(GroupId, PeerId, oneshot::Sender<bool>),
    Invitations(oneshot::Sender<Vec<ReceivedInvite>>),
}

/// How a group send is answered.
#[derive(Clone, Copy)]
struct SendMode {
    /// A `state` message rather than a `msg`.
    state: bool,
    /// Answer once the host received it, rather than once it is queued.
    wait: bool,
}

/// The group manager's API. Cheap to clone; every call is answered by the manager task.
#[derive(Clone)]
pub struct GroupHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<GroupEvent>,
    me: PeerId,
}

impl std::fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupHandle").field("me", &self.me).finish()
    }
}

impl GroupHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| GroupError::Stopped)?;
        rx.await.map_err(|_| GroupError::Stopped)
    }

    /// This peer.
    pub fn peer_id(&self) -> &PeerId {
        &self.me
    }

    /// Local events of every group, for the HTTP event stream and group types. A receiver
    /// that falls behind by more than the buffer learns it (`Lagged`) rather than missing
    /// events silently.
    pub fn events(&self) -> broadcast::Receiver<GroupEvent> {
        self.events.subscribe()
    }

    /// `POST /api/groups`: creates a hosted group, answered once it is stored.
    pub async fn create(&self, spec: GroupSpec) -> Result<GroupId, GroupError> {
        self.call(|tx| Command::Create(spec, tx)).await?
    }

    /// `POST /api/groups/close`.
    pub async fn close(&self, group: GroupId) -> Result<(), GroupError> {
        self.call(|tx| Command::Close(group, tx)).await?
    }

    /// `POST /api/groups/join-own`.
    pub async fn join_own(&self, group: GroupId) -> Result<(), GroupError> {
        self.call(|tx| Command::JoinOwn(group, tx)).await?
    }

    /// `POST /api/groups/leave-own`.
    pub async fn leave_own(&self, group: GroupId) -> Result<(), GroupError> {
        self.call(|tx| Command::LeaveOwn(group, tx)).await?
    }

    /// `POST /api/groups/kick`: the member is removed and banned (see [`GroupCore::kick`]).
    ///
    /// [`GroupCore::kick`]: super::GroupCore::kick
    pub async fn kick(&self, group: GroupId, peer: PeerId) -> Result<(), GroupError> {
        self.call(|tx| Command::Kick(group, peer, tx)).await?
    }

    /// `POST /api/groups/invite`: records the invitation and resolves once the peer received
    /// it.
    pub async fn invite(&self, group: GroupId, peer: PeerId) -> Result<(), GroupError> {
        self.call(|tx| Command::Invite(group, peer, tx)).await?
    }

    /// `POST /api/groups/unban`: lets a kicked peer join again; whether it was banned.
    pub async fn unban(&self, group: GroupId, peer: PeerId) -> Result<bool, GroupError> {
        self.call(|tx| Command::Unban(group, peer, tx)).await?
    }

    /// `POST /api/groups/approve`: the peer that asked to join is invited, so its next join
    /// gets in (see [`GroupCore::approve`]). Answered once recorded, not once the peer heard.
    ///
    /// [`GroupCore::approve`]: super::GroupCore::approve
    pub async fn approve(&self, group: GroupId, peer: PeerId) -> Result<(), GroupError> {
        self.call(|tx| Command::Approve(group, peer, tx)).await?
    }

    /// `POST /api/groups/deny`: the peer that asked to join is banned (see
    /// [`GroupCore::deny`]).
    ///
    /// [`GroupCore::deny`]: super::GroupCore::deny
    pub async fn deny(&self, group: GroupId, peer: PeerId) -> Result<(), GroupError> {
        self.call(|tx| Command::Deny(group, peer, tx)).await?
    }

    /// Withdraws an invitation.
    pub async fn uninvite(&self, group: GroupId, peer: PeerId) -> Result<(), GroupError> {
        self.call(|tx| Command::Uninvite(group, peer, tx)).await?
    }

    /// `POST /api/groups/set-role`.
    pub async fn set_role(
        &self,
        group: GroupId,
        peer: PeerId,
        role: String,
    ) -> Result<(), GroupError> {
        self.call(|tx| Command::SetRole(group, peer, role, tx))
            .await?
    }

    /// `POST /api/groups/meta`, `max-members`, `set-default-role`, `set-roles`.
    pub async fn update_meta(&self, group: GroupId, update: MetaUpdate) -> Result<(), GroupError> {
        self.call(|tx| Command::UpdateMeta(group, update, tx))
            .await?
    }

    /// `POST /api/groups/send`: as host to every member, or as member to the host (resolves
    /// once the host received it).
    pub async fn send(&self, group: GroupId, payload: Box<RawValue>) -> Result<(), GroupError> {
        let mode = SendMode {
            state: false,
            wait: true,
        };
        self.call(|tx| Command::Send(group, payload, mode, tx))
            .await?
    }

    /// Like [`GroupHandle::send`], serializing `payload` first.
    pub async fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        group: GroupId,
        payload: &T,
    ) -> Result<(), GroupError> {
        let raw = serde_json::value::to_raw_value(payload)
            .map_err(|e| GroupError::Encode(e.to_string()))?;
        self.send(group, raw).await
    }

    /// As the host of `group`, sends `payload` (serialized) as a `msg` to member `peer` only;
    /// answered once it is queued.
    pub async fn send_json_to<T: serde::Serialize + ?Sized>(
        &self,
        group: GroupId,
        peer: PeerId,
        payload: &T,
    ) -> Result<(), GroupError> {
        let raw = serde_json::value::to_raw_value(payload)
            .map_err(|e| GroupError::Encode(e.to_string()))?;
        self.call(|tx| Command::SendTo(group, peer, raw, tx))
            .await?
    }

    /// Like [`GroupHandle::send`], but answered once the message is queued (behind the ones
    /// queued before it, so one caller's messages keep their order) instead of once the host
    /// received it: for streams of messages. A message that cannot be delivered shows as the
    /// host being lost (a member rejoins) or the member being dropped (on the host).
    pub async fn post(&self, group: GroupId, payload: Box<RawValue>) -> Result<(), GroupError> {
        let mode = SendMode {
            state: false,
            wait: false,
        };
        self.call(|tx| Command::Send(group, payload, mode, tx))
            .await?
    }

    /// Like [`GroupHandle::send`], as a `state` message.
    pub async fn send_state(
        &self,
        group: GroupId,
        payload: Box<RawValue>,
    ) -> Result<(), GroupError> {
        let mode = SendMode {
            state: true,
            wait: true,
        };
        self.call(|tx| Command::Send(group, payload, mode, tx))
            .await?
    }

    /// `POST /api/groups/join` (and `rejoin`): resolves on the host's `welcome`, its refusal,
    /// or the join timeout.
    pub async fn join(&self, host: PeerId, group: GroupId) -> Result<Subscription, GroupError> {
        self.call(|tx| Command::Join(host, group, tx)).await?
    }

    /// `POST /api/groups/leave`.
    pub async fn leave(&self, group: GroupId) -> Result<(), GroupError> {
        self.call(|tx| Command::Leave(group, tx)).await?
    }

    /// Asks `peer` for its open and approval groups.
    pub async fn discover(
        &self,
        peer: PeerId,
        limit: Option<u32>,
    ) -> Result<Vec<GroupRow>, GroupError> {
        self.call(|tx| Command::Discover(peer, limit, tx)).await?
    }

    /// `GET /api/groups`: hosted groups, newest first.
    pub async fn hosted_groups(&self) -> Result<Vec<HostedGroup>, GroupError> {
        self.call(Command::Hosted).await
    }

    /// This peer's listed groups (open and approval ones) as Goop² `_groups` rows (for
    /// answering a Goop² peer's `_groups` query without SQL).
    pub async fn listed_group_rows(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<GroupRow>, GroupError> {
        self.call(|tx| Command::ListedRows(limit, offset, tx)).await
    }

    /// `GET /api/groups/subscriptions`: joined groups, newest first.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, GroupError> {
        self.call(Command::Subscriptions).await
    }

    /// Members of a hosted or joined group.
    pub async fn members(&self, group: GroupId) -> Result<Vec<MemberInfo>, GroupError> {
        self.call(|tx| Command::Members(group, tx)).await?
    }

    /// Whether `peer` is a member of hosted group `group` (for membership-gated protocols).
    pub async fn is_member(&self, group: GroupId, peer: PeerId) -> Result<bool, GroupError> {
        self.call(|tx| Command::IsMember(group, peer, tx)).await
    }

    /// Invitations this peer received (joining one is the user's decision: call `join`).
    pub async fn invitations(&self) -> Result<Vec<ReceivedInvite>, GroupError> {
        self.call(Command::Invitations).await
    }
}

/// Everything the group manager is built from.
pub struct GroupManagerParts<T> {
    /// This peer.
    pub me: PeerId,
    /// Settings.
    pub config: GroupConfig,
    /// The group types.
    pub registry: HandlerRegistry,
    /// Sends group messages.
    pub transport: T,
    /// The transport's messages on the `group` topics and its connection events.
    pub incoming: mpsc::Receiver<TransportEvent>,
    /// The group tables; without a store nothing persists.
    pub store: Option<GroupStore>,
    /// Groups to create before any message is handled, when they do not exist yet: a volatile
    /// group whose id outlives the process (a cluster's, kept by the job store) is back before
    /// its members rejoin, so they are not told it is unknown.
    pub startup_groups: Vec<GroupSpec>,
}

impl<T> std::fmt::Debug for GroupManagerParts<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupManagerParts")
            .field("me", &self.me)
            .field("startup_groups", &self.startup_groups.len())
            .finish_non_exhaustive()
    }
}

impl<T> GroupManagerParts<T> {
    /// Parts with the default settings, no handlers, no store and no startup groups.
    pub fn new(me: PeerId, transport: T, incoming: mpsc::Receiver<TransportEvent>) -> Self {
        Self {
            me,
            config: GroupConfig::default(),
            registry: HandlerRegistry::new(),
            transport,
            incoming,
            store: None,
            startup_groups: Vec::new(),
        }
    }
}

/// Starts the group manager: restores what the store holds, creates the startup groups, then
/// runs in a task of `tracker` until `cancel` fires.
pub async fn spawn_group_manager<T: GroupTransport>(
    parts: GroupManagerParts<T>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<GroupHandle, GroupError> {
    let GroupManagerParts {
        me,
        config,
        registry,
        transport,
        incoming,
        store,
        startup_groups,
    } = parts;
    let registry = Arc::new(registry);
    let clock = Clock::new();
    let mut core = GroupCore::new(me.clone(), config.clone(), Arc::clone(&registry));
    if let Some(store) = &store {
        let snapshot = store.load().await?;
        core.restore(clock.now(), snapshot);
    }
    let (commands_tx, commands) = mpsc::channel(config.command_buffer.max(1));
    let (events, _) = broadcast::channel(config.event_buffer.max(1));
    let (results_tx, results) = mpsc::channel(config.peer_queue.max(1));
    let mut manager = Manager {
        core,
        transport: Arc::new(transport),
        store,
        registry,
        config,
        clock,
        outboxes: HashMap::new(),
        senders: JoinSet::new(),
        results_tx,
        pending_joins: HashMap::new(),
        pending_sends: HashMap::new(),
        pending_discovers: HashMap::new(),
        events: events.clone(),
        cancel: cancel.clone(),
    };
    // Restored groups a type handler refuses stay hosted (their members expect them); the
    // handler has logged why.
    let outputs = manager.core.take_outputs();
    manager.carry_out(outputs, true).await?;
    for spec in startup_groups {
        let exists = spec
            .id
            .as_ref()
            .is_some_and(|id| manager.core.hosted_group(id).is_some());
        if exists {
            continue;
        }
        let now = manager.clock.now();
        let name = spec.name.clone();
        match manager.core.create(now, spec) {
            Ok(group) => {
                let outputs = manager.core.take_outputs();
                let refusals = manager.carry_out(outputs, true).await?;
                if refusals.iter().any(|(g, _, _)| g == &group) {
                    let _ = manager.core.close(now, &group);
                    manager.flush(true).await?;
                }
            }
            Err(error) => tracing::warn!(%name, %error, "cannot create a startup group"),
        }
    }
    tracker.spawn(manager.run(commands, incoming, results));
    Ok(GroupHandle {
        commands: commands_tx,
        events,
        me,
    })
}

/// Unix milliseconds that never go backwards: the wall clock at start plus a monotonic delta.
struct Clock {
    start_wall: u64,
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            start_wall: wall,
            start: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_wall.saturating_add(elapsed)
    }
}

struct Outgoing {
    topic: String,
    payload: Box<RawValue>,
    token: Option<SendToken>,
}

struct SendResult {
    to: PeerId,
    topic: String,
    token: Option<SendToken>,
    result: Result<(), TransportError>,
}

enum Event {
    Stop,
    Command(Command),
    Transport(TransportEvent),
    TransportClosed,
    Sent(SendResult),
    Tick,
    SenderDone,
}

struct Manager<T> {
    core: GroupCore,
    transport: Arc<T>,
    store: Option<GroupStore>,
    registry: Arc<HandlerRegistry>,
    config: GroupConfig,
    clock: Clock,
    outboxes: HashMap<PeerId, mpsc::Sender<Outgoing>>,
    senders: JoinSet<()>,
    results_tx: mpsc::Sender<SendResult>,
    pending_joins: HashMap<JoinTicket, Reply<Subscription>>,
    pending_sends: HashMap<SendToken, Reply<()>>,
    pending_discovers: HashMap<DiscoverTicket, Reply<Vec<GroupRow>>>,
    events: broadcast::Sender<GroupEvent>,
    cancel: CancellationToken,
}

/// Waits on an optional receiver; a closed or absent one never yields.
async fn recv_or_pending<M>(rx: &mut Option<mpsc::Receiver<M>>) -> Option<M> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<T: GroupTransport> Manager<T> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        incoming: mpsc::Receiver<TransportEvent>,
        mut results: mpsc::Receiver<SendResult>,
    ) {
        let mut incoming = Some(incoming);
        let mut tick = tokio::time::interval(self.config.tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                () = self.cancel.cancelled() => Event::Stop,
                command = commands.recv() => command.map_or(Event::Stop, Event::Command),
                event = recv_or_pending(&mut incoming) => {
                    event.map_or(Event::TransportClosed, Event::Transport)
                }
                Some(result) = results.recv() => Event::Sent(result),
                _ = tick.tick() => Event::Tick,
                Some(_) = self.senders.join_next(), if !self.senders.is_empty() => Event::SenderDone,
            };
            match event {
                Event::Stop => break,
                Event::Command(command) => self.command(command).await,
                Event::Transport(event) => {
                    let input = match event {
                        TransportEvent::Message {
                            from,
                            topic,
                            payload,
                        } => Input::Message {
                            from,
                            topic,
                            payload,
                        },
                        TransportEvent::Connected(peer) => Input::PeerConnected(peer),
                        TransportEvent::Disconnected(peer) => {
                            self.outboxes.remove(&peer);
                            Input::PeerDisconnected(peer)
                        }
                    };
                    self.input(input).await;
                }
                Event::TransportClosed => {
                    tracing::warn!("group transport closed; no more incoming messages");
                    incoming = None;
                }
                Event::Sent(sent) => self.sent(sent).await,
                Event::Tick => {
                    self.input(Input::Tick).await;
                    self.resync_store().await;
                }
                Event::SenderDone => {}
            }
        }
        self.outboxes.clear();
        self.senders.shutdown().await;
        if let Some(store) = self.store.take() {
            store.close().await;
        }
        tracing::debug!("group manager stopped");
    }

    async fn input(&mut self, input: Input) {
        let now = self.clock.now();
        let outputs = self.core.handle(now, input);
        if let Err(error) = self.carry_out(outputs, false).await {
            tracing::error!(%error, "cannot carry out group outputs");
        }
    }

    /// After a failed write the tables lag behind memory: write the whole state back (memory
    /// is the truth; a command whose write failed was answered with the error).
    async fn resync_store(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        if !store.take_failed() {
            return;
        }
        let snapshot = self.core.store_snapshot();
        match store
            .apply(vec![StoreOp::ReplaceAll(Box::new(snapshot))])
            .await
        {
            Ok(()) => tracing::info!("group store caught up after a failed write"),
            Err(error) => tracing::warn!(%error, "group store still failing; will retry"),
        }
    }

    async fn sent(&mut self, sent: SendResult) {
        if let Some(token) = sent.token
            && let Some(reply) = self.pending_sends.remove(&token)
        {
            let _ = reply.send(sent.result.clone().map_err(|source| GroupError::Send {
                peer: sent.to.clone(),
                source,
            }));
        }
        match sent.result {
            Ok(()) => {}
            Err(error @ TransportError::Unreachable(_)) => {
                tracing::debug!(peer = %sent.to, topic = %sent.topic, %error, "group send failed");
                self.input(Input::SendFailed {
                    to: sent.to,
                    topic: sent.topic,
                })
                .await;
            }
            // One message refused (too large for the receiver, or the bus stopping) says
            // nothing about the link: the peer stays, the message is lost and logged.
            Err(error @ TransportError::Refused(_)) => {
                tracing::warn!(peer = %sent.to, topic = %sent.topic, %error, "group message refused");
            }
        }
    }

    /// Runs a command: the core decides, its outputs are carried out (and committed), then
    /// the caller is answered.
    async fn command(&mut self, command: Command) {
        let now = self.clock.now();
        macro_rules! simple {
            ($reply:expr, $result:expr) => {{
                let result = $result;
                let stored = self.flush(true).await;
                let _ = $reply.send(result.and_then(|v| stored.map(|()| v)));
            }};
        }
        match command {
            Command::Create(spec, reply) => {
                let result = self.core.create(now, spec);
                let outputs = self.core.take_outputs();
                let refused = self.carry_out(outputs, true).await;
                let result = match (result, refused) {
                    (Ok(group), Err(store)) => {
                        // Not durable: undo, so memory and store agree.
                        let _ = self.core.close(now, &group);
                        self.flush(false).await.ok();
                        Err(store)
                    }
                    (Ok(group), Ok(refusals)) => {
                        match refusals.into_iter().find(|(g, _, _)| g == &group) {
                            Some((_, group_type, reason)) => {
                                let _ = self.core.close(now, &group);
                                let _ = self.flush(true).await;
                                Err(GroupError::Handler { group_type, reason })
                            }
                            None => Ok(group),
                        }
                    }
                    (Err(error), _) => Err(error),
                };
                let _ = reply.send(result);
            }
            Command::Close(group, reply) => simple!(reply, self.core.close(now, &group)),
            Command::JoinOwn(group, reply) => simple!(reply, self.core.join_own(now, &group)),
            Command::LeaveOwn(group, reply) => simple!(reply, self.core.leave_own(now, &group)),
            Command::Kick(group, peer, reply) => {
                simple!(reply, self.core.kick(now, &group, &peer));
            }
            Command::Uninvite(group, peer, reply) => {
                simple!(reply, self.core.uninvite(&group, &peer));
            }
            Command::Unban(group, peer, reply) => {
                simple!(reply, self.core.unban(&group, &peer));
            }
            Command::Approve(group, peer, reply) => {
                simple!(reply, self.core.approve(now, &group, &peer).map(|_| ()));
            }
            Command::Deny(group, peer, reply) => {
                simple!(reply, self.core.deny(now, &group, &peer));
            }
            Command::SetRole(group, peer, role, reply) => {
                simple!(reply, self.core.set_role(now, &group, &peer, &role));
            }
            Command::UpdateMeta(group, update, reply) => {
                simple!(reply, self.core.update_meta(now, &group, update));
            }
            Command::SendTo(group, peer, payload, reply) => {
                let result = self.core.send_as_host_to(&group, &peer, payload);
                let _ = self.flush(false).await;
                let _ = reply.send(result);
            }
            Command::Invite(group, peer, reply) => match self.core.invite(now, &group, &peer) {
                Ok(token) => {
                    self.pending_sends.insert(token, reply);
                    if let Err(error) = self.flush(true).await
                        && let Some(reply) = self.pending_sends.remove(&token)
                    {
                        let _ = reply.send(Err(error));
                    }
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::Send(group, payload, mode, reply) => {
                match self.core.send_to_group(now, &group, payload, mode.state) {
                    Ok(Some(token)) if mode.wait => {
                        self.pending_sends.insert(token, reply);
                        let _ = self.flush(false).await;
                    }
                    Ok(Some(_)) => {
                        let _ = self.flush(false).await;
                        let _ = reply.send(Ok(()));
                    }
                    Ok(None) => simple!(reply, Ok(())),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Join(host, group, reply) => match self.core.join_remote(now, &host, &group) {
                Ok(ticket) => {
                    self.pending_joins.insert(ticket, reply);
                    let _ = self.flush(false).await;
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::Leave(group, reply) => simple!(reply, self.core.leave_remote(now, &group)),
            Command::Discover(peer, limit, reply) => {
                let ticket = self.core.discover(now, &peer, limit);
                self.pending_discovers.insert(ticket, reply);
                let _ = self.flush(false).await;
            }
            Command::Hosted(reply) => {
                let _ = reply.send(self.core.hosted_groups());
            }
            Command::ListedRows(limit, offset, reply) => {
                let _ = reply.send(self.core.listed_group_rows(limit, offset));
            }
            Command::Subscriptions(reply) => {
                let _ = reply.send(self.core.subscriptions());
            }
            Command::Members(group, reply) => {
                let _ = reply.send(self.core.members(&group));
            }
            Command::IsMember(group, peer, reply) => {
                let _ = reply.send(self.core.is_member(&group, &peer));
            }
            Command::Invitations(reply) => {
                let _ = reply.send(self.core.received_invites());
            }
        }
    }

    /// Carries out whatever the core queued.
    async fn flush(&mut self, durable: bool) -> Result<(), GroupError> {
        let outputs = self.core.take_outputs();
        self.carry_out(outputs, durable).await.map(|_| ())
    }

    /// Carries out outputs in order. Store writes go as one transaction, awaited when
    /// `durable`. Returns the `on_create` refusals (group, type, reason).
    async fn carry_out(
        &mut self,
        outputs: Vec<Output>,
        durable: bool,
    ) -> Result<Vec<(GroupId, String, String)>, GroupError> {
        let mut writes: Vec<StoreOp> = Vec::new();
        let mut refusals = Vec::new();
        for output in outputs {
            match output {
                Output::Send {
                    to,
                    topic,
                    payload,
                    token,
                } => self.enqueue(to, topic, payload, token),
                Output::Persist(op) => writes.push(op),
                Output::Event { group_type, event } => {
                    if let Some(handler) = self.registry.get(&group_type) {
                        handler.on_event(&event);
                    }
                    // No subscriber is not an error: nobody is watching.
                    let _ = self.events.send(event);
                }
                Output::Hook(call) => {
                    if let Some(refusal) = self.hook(call) {
                        refusals.push(refusal);
                    }
                }
                Output::JoinFinished { ticket, result } => {
                    if let Some(reply) = self.pending_joins.remove(&ticket) {
                        let _ = reply.send(result);
                    }
                }
                Output::DiscoverFinished { ticket, result } => {
                    if let Some(reply) = self.pending_discovers.remove(&ticket) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        if !writes.is_empty()
            && let Some(store) = &self.store
        {
            if durable {
                store.apply(writes).await?;
            } else if let Err(error) = store.submit(writes).await {
                tracing::error!(%error, "group store unavailable; changes not persisted");
            }
        }
        Ok(refusals)
    }

    fn hook(&self, call: HookCall) -> Option<(GroupId, String, String)> {
        match call {
            HookCall::Create {
                group_type,
                group,
                name,
                max_members,
                restored,
            } => {
                let handler = self.registry.get(&group_type)?;
                let info = CreateInfo {
                    group: &group,
                    name: &name,
                    max_members,
                    restored,
                };
                match handler.on_create(&info) {
                    Ok(()) => None,
                    Err(reason) => {
                        tracing::warn!(%group, %group_type, %reason, restored, "type handler refused the group");
                        Some((group, group_type, reason))
                    }
                }
            }
            HookCall::Join {
                group_type,
                group,
                peer,
                is_host,
            } => {
                if let Some(handler) = self.registry.get(&group_type) {
                    handler.on_join(&group, &peer, is_host);
                }
                None
            }
            HookCall::Leave {
                group_type,
                group,
                peer,
                is_host,
                reason,
            } => {
                if let Some(handler) = self.registry.get(&group_type) {
                    handler.on_leave(&group, &peer, is_host, reason);
                }
                None
            }
            HookCall::Close { group_type, group } => {
                if let Some(handler) = self.registry.get(&group_type) {
                    handler.on_close(&group);
                }
                None
            }
        }
    }

    /// Queues a message for `to` behind the ones already queued for it.
    fn enqueue(
        &mut self,
        to: PeerId,
        topic: String,
        payload: Box<RawValue>,
        token: Option<SendToken>,
    ) {
        let mut item = Outgoing {
            topic,
            payload,
            token,
        };
        if let Some(outbox) = self.outboxes.get(&to) {
            match outbox.try_send(item) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(item)) => {
                    tracing::warn!(peer = %to, "send queue full; treating the peer as lost");
                    self.fail_later(to, item);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(back)) => item = back,
            }
        }
        let (tx, rx) = mpsc::channel(self.config.peer_queue.max(1));
        // A fresh queue has room for one message.
        let _ = tx.try_send(item);
        self.outboxes.insert(to.clone(), tx);
        let transport = Arc::clone(&self.transport);
        let results = self.results_tx.clone();
        let cancel = self.cancel.clone();
        self.senders
            .spawn(peer_sender(to, rx, transport, results, cancel));
    }

    /// Reports a message that could not even be queued as a failed send.
    fn fail_later(&mut self, to: PeerId, item: Outgoing) {
        let result = SendResult {
            to,
            topic: item.topic,
            token: item.token,
            // A peer that cannot keep up counts as lost, like one that cannot be reached.
            result: Err(TransportError::Unreachable(
                "send queue full: the peer is too slow".to_owned(),
            )),
        };
        if let Err(error) = self.results_tx.try_send(result) {
            tracing::error!(%error, "cannot report a failed group send");
        }
    }
}

/// Messages to one peer queued in the transport whose delivery is not yet known; beyond
/// this the sender waits for acknowledgements before queueing more.
const SEND_WINDOW: usize = 1024;

/// Sends one peer's messages in order, pipelined (up to [`SEND_WINDOW`] awaiting their
/// acknowledgement), reporting failures and awaited results in the order they were queued.
async fn peer_sender<T: GroupTransport>(
    to: PeerId,
    mut rx: mpsc::Receiver<Outgoing>,
    transport: Arc<T>,
    results: mpsc::Sender<SendResult>,
    cancel: CancellationToken,
) {
    use futures::StreamExt as _;

    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut open = true;
    loop {
        let step = tokio::select! {
            () = cancel.cancelled() => break,
            item = rx.recv(), if open && in_flight.len() < SEND_WINDOW => match item {
                Some(item) => Step::Queue(item),
                None => Step::Closed,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => Step::Done(done),
            else => break,
        };
        let report = match step {
            Step::Closed => {
                open = false;
                continue;
            }
            Step::Queue(item) => {
                let queued = tokio::select! {
                    () = cancel.cancelled() => break,
                    queued = transport.queue(&to, &item.topic, item.payload) => queued,
                };
                let topic = item.topic;
                let token = item.token;
                match queued {
                    Ok(delivery) => {
                        in_flight.push_back(async move { (topic, token, delivery.await) });
                        continue;
                    }
                    Err(error) => (topic, token, Err(error)),
                }
            }
            Step::Done(done) => done,
        };
        let (topic, token, result) = report;
        if result.is_err() || token.is_some() {
            let report = SendResult {
                to: to.clone(),
                topic,
                token,
                result,
            };
            if results.send(report).await.is_err() {
                break;
            }
        }
    }
}

enum Step<D> {
    Queue(Outgoing),
    Closed,
    Done(D),
}
