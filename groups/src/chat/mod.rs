//! The `chat` group type: one room per group, and the last [`HISTORY`] messages of each room
//! kept by every peer in it.
//!
//! It is built on the group layer, and mends Goop²'s chat (reference `goop2-handlers.md` §1
//! and §7):
//! - A message goes only through the host: a member sends it to the host as a group `msg`,
//!   the host relays it to the other members with its true author. Nothing circles between
//!   members, and nobody posts under another peer's id: the author is the peer the group layer
//!   received the message from, whatever the message says.
//! - A message's id is its time and its author (`<unix ms>-<peer id>`); a peer keeps one
//!   message per id, and a sender's times only go up.
//! - A joiner, and a member rejoining by itself after a restart, asks the host for the room's
//!   name, description and history once welcomed (`chat.room:<group>:history-request`,
//!   answered to members only, with `chat.room:<group>:history`, taken from the room's host
//!   only).
//! - Rooms and their messages are kept in SQLite and come back after a restart; leaving a room
//!   removes it; a text is at most [`MAX_TEXT_BYTES`] bytes.
//!
//! The group manager's hooks must not block, so [`ChatHandler`] hands them to an actor task
//! through a channel; [`ChatHandle`] is the actor's face for the HTTP layer.

mod store;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use proto::{GroupEvent, GroupEventKind, GroupId, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::group::{CreateInfo, GroupError, GroupHandle, GroupSpec, TypeHandler};
use crate::mq::Mq;

use self::store::ChatDb;

/// The group type of chat rooms.
pub const CHAT_TYPE: &str = "chat";
/// Messages kept per room; older ones are dropped.
pub const HISTORY: usize = 100;
/// The longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// The longest display name kept with a message, in characters; longer ones are cut.
pub const MAX_NAME_CHARS: usize = crate::names::MAX_NAME_CHARS;
/// The longest room description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Hook calls waiting for the actor before more are dropped (with a warning).
const HOOK_QUEUE: usize = 4096;
/// New messages an event-stream listener may fall behind by before it is told it lagged.
const EVENT_BUFFER: usize = 1024;
/// The MQ topic prefix of chat messages between peers.
const TOPIC_PREFIX: &str = "chat.room:";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `<timestamp>-<from>`: unique per author and millisecond.
    pub id: String,
    /// The author, as the group layer saw it.
    pub from: PeerId,
    /// The author's display name, as the author gave it.
    #[serde(default)]
    pub from_name: String,
    /// The text.
    pub text: String,
    /// When the author sent it, Unix milliseconds.
    pub timestamp: i64,
}

/// A room: a chat group as this peer knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Room {
    /// The group's id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// What it is for (may be empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its host.
    pub host: PeerId,
}

/// A member of a room, with a display name when one is known.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomMember {
    /// The member.
    pub peer_id: PeerId,
    /// Its display name: its own for this peer, else the one on its latest message.
    pub name: String,
}

/// A room with its members, as `GET /api/chat/rooms/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    /// The room.
    #[serde(flatten)]
    pub room: Room,
    /// The host and the members.
    pub members: Vec<RoomMember>,
}

/// A room and its messages, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct RoomState {
    /// The room.
    pub room: RoomView,
    /// The messages kept, oldest first (`[]` when there are none).
    pub messages: Vec<ChatMessage>,
}

/// A message new to this peer, for the event stream: `{"group_id", "message"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatEvent {
    /// The room.
    pub group_id: GroupId,
    /// The message.
    pub message: ChatMessage,
}

/// What `create` needs.
#[derive(Debug, Clone, Default)]
pub struct NewRoom {
    /// The name (required).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Free text linking the room to what made it.
    pub context: String,
    /// Member limit; 0 for none.
    pub max_members: u32,
}

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A room needs a name.
    #[error("room name must not be empty")]
    EmptyName,
    /// The description is over [`MAX_DESCRIPTION_BYTES`].
    #[error("room description is {len} bytes, over the limit of {max}")]
    DescriptionTooLong {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// This peer is in no such room.
    #[error("room not found: {0}")]
    UnknownRoom(GroupId),
    /// A message needs text.
    #[error("message text must not be empty")]
    EmptyText,
    /// The text is over [`MAX_TEXT_BYTES`].
    #[error("message text is {len} bytes, over the limit of {max}")]
    TextTooLong {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Only the host closes a room.
    #[error("only the host of room {0} can close it")]
    NotHost(GroupId),
    /// The host has no membership to leave: closing is what ends its room.
    #[error("this peer hosts room {0}: close it rather than leave it")]
    IsHost(GroupId),
    /// The group is not a chat room.
    #[error("group {group} is a {group_type:?} group, not a chat room")]
    NotChat {
        /// The group.
        group: GroupId,
        /// Its type.
        group_type: String,
    },
    /// The group layer refused or failed.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The chat tables could not be read or written.
    #[error("chat store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The chat actor has stopped.
    #[error("the chat service has stopped")]
    Stopped,
}

/// A hook call from the group manager.
#[derive(Debug)]
enum Hook {
    /// A chat group was created here (or restored at start).
    Created { group: GroupId, name: String },
    /// A room was closed (by this host, or by the host of a joined room, or this peer was
    /// kicked).
    Closed { group: GroupId },
    /// A group event of a chat group: `msg`, `welcome` and `leave` matter.
    Event(GroupEvent),
}

/// The [`TypeHandler`] to register for [`CHAT_TYPE`]: it passes the hooks to the chat actor.
pub struct ChatHandler {
    hooks: mpsc::Sender<Hook>,
}

impl ChatHandler {
    fn pass(&self, hook: Hook) {
        if let Err(error) = self.hooks.try_send(hook) {
            tracing::warn!(%error, "chat busy; a group hook was dropped");
        }
    }
}

impl TypeHandler for ChatHandler {
    fn on_create(&self, info: &CreateInfo<'_>) -> Result<(), String> {
        self.pass(Hook::Created {
            group: info.group.clone(),
            name: info.name.to_owned(),
        });
        Ok(())
    }

    fn on_close(&self, group: &GroupId) {
        self.pass(Hook::Closed {
            group: group.clone(),
        });
    }

    fn on_event(&self, event: &GroupEvent) {
        if matches!(
            event.kind,
            GroupEventKind::Msg | GroupEventKind::Welcome | GroupEventKind::Leave
        ) {
            self.pass(Hook::Event(event.clone()));
        }
    }
}

/// The hook calls for the actor [`start`] runs, made with the handler by [`handler`].
pub struct ChatHooks(mpsc::Receiver<Hook>);

/// The handler to register for [`CHAT_TYPE`] before the peer starts, and the hooks it passes
/// on, for [`start`].
pub fn handler() -> (Arc<ChatHandler>, ChatHooks) {
    let (hooks, receiver) = mpsc::channel(HOOK_QUEUE);
    (Arc::new(ChatHandler { hooks }), ChatHooks(receiver))
}

/// What the actor needs.
pub struct ChatParts {
    /// The hooks from [`handler`].
    pub hooks: ChatHooks,
    /// The peer's database file.
    pub database: std::path::PathBuf,
    /// Peer names: this peer's, sent with its messages, and the members' names.
    pub names: crate::names::Names,
    /// The MQ bus, for histories.
    pub mq: Mq,
    /// The group manager.
    pub groups: GroupHandle,
}

/// Opens the chat tables, brings the rooms in line with the groups this peer hosts and has
/// joined, and starts the actor.
pub async fn start(
    parts: ChatParts,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<ChatHandle, ChatError> {
    let ChatParts {
        hooks,
        database,
        names,
        mq,
        groups,
    } = parts;
    let db = open_db(&database).await?;
    let me = groups.peer_id().clone();
    let mut actor = Actor {
        me,
        label: names.label().to_owned(),
        names,
        rooms: HashMap::new(),
        db,
        last_sent: 0,
        groups,
        mq,
        tracker: tracker.clone(),
        events: broadcast::channel(EVENT_BUFFER).0,
    };
    actor.restore().await?;
    let (commands, receiver) = mpsc::channel(256);
    let incoming = actor.mq.subscribe(TOPIC_PREFIX);
    let events = actor.events.clone();
    tracker.spawn(actor.run(receiver, hooks.0, incoming, commands.downgrade(), cancel));
    Ok(ChatHandle { commands, events })
}

async fn open_db(path: &Path) -> Result<ChatDb, ChatError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || ChatDb::open(&path))
        .await
        .map_err(|_| ChatError::Stopped)?
        .map_err(ChatError::from)
}

/// The chat actor's handle: what the HTTP layer calls.
#[derive(Clone)]
pub struct ChatHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ChatEvent>,
}

impl std::fmt::Debug for ChatHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatHandle").finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, ChatError>>;

enum Command {
    Create(NewRoom, Reply<Room>),
    Close(GroupId, Reply<()>),
    Join(PeerId, GroupId, Reply<Room>),
    Leave(GroupId, Reply<()>),
    Send(GroupId, String, Reply<ChatMessage>),
    State(GroupId, Reply<RoomState>),
    List(Reply<Vec<Room>>),
    /// A join the group layer answered (sent by the task that waited for it).
    Joined(crate::group::Subscription, Reply<Room>),
    /// A message the host took (sent by the task that waited for it).
    Sent(GroupId, ChatMessage, Reply<ChatMessage>),
}

impl ChatHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ChatError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| ChatError::Stopped)?;
        answer.await.map_err(|_| ChatError::Stopped)?
    }

    /// Creates a room hosted by this peer.
    pub async fn create(&self, room: NewRoom) -> Result<Room, ChatError> {
        self.call(|r| Command::Create(room, r)).await
    }

    /// Closes a room this peer hosts; its members lose it too.
    pub async fn close(&self, group: GroupId) -> Result<(), ChatError> {
        self.call(|r| Command::Close(group, r)).await
    }

    /// Joins a room hosted by `host`; resolves once the host welcomed this peer.
    pub async fn join(&self, host: PeerId, group: GroupId) -> Result<Room, ChatError> {
        self.call(|r| Command::Join(host, group, r)).await
    }

    /// Leaves a joined room and forgets it.
    pub async fn leave(&self, group: GroupId) -> Result<(), ChatError> {
        self.call(|r| Command::Leave(group, r)).await
    }

    /// Sends a message to a room; resolves once the host has it (at once on the host).
    pub async fn send(&self, group: GroupId, text: String) -> Result<ChatMessage, ChatError> {
        self.call(|r| Command::Send(group, text, r)).await
    }

    /// A room, its members and its messages.
    pub async fn state(&self, group: GroupId) -> Result<RoomState, ChatError> {
        self.call(|r| Command::State(group, r)).await
    }

    /// The rooms this peer is in.
    pub async fn rooms(&self) -> Result<Vec<Room>, ChatError> {
        self.call(Command::List).await
    }

    /// Every message new to this peer from now on, its own included, in the order it stored
    /// them (a history a joiner receives is not repeated here).
    pub fn events(&self) -> broadcast::Receiver<ChatEvent> {
        self.events.subscribe()
    }
}

/// A room and what this peer keeps of it.
struct RoomData {
    room: Room,
    messages: VecDeque<ChatMessage>,
}

impl RoomData {
    fn new(room: Room) -> Self {
        Self {
            room,
            messages: VecDeque::new(),
        }
    }

    fn has(&self, id: &str) -> bool {
        self.messages.iter().any(|m| m.id == id)
    }

    fn push(&mut self, message: ChatMessage) {
        if self.messages.len() == HISTORY {
            self.messages.pop_front();
        }
        self.messages.push_back(message);
    }
}

/// A chat message on the group bus, in Goop²'s typed control envelope:
/// `{"group_type":"chat","chat":{"action":"msg","message":{...}}}`.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    group_type: String,
    chat: T,
}

#[derive(Serialize, Deserialize)]
struct MsgAction {
    action: String,
    message: WireMessage,
}

/// A message as a sender writes it; its `id` and `from` are not trusted.
#[derive(Serialize, Deserialize)]
struct WireMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    from_name: String,
    text: String,
    timestamp: i64,
}

/// A room's history, host → joiner on `chat.room:<group>:history`.
#[derive(Serialize, Deserialize)]
struct History {
    action: String,
    room: HistoryRoom,
    messages: Vec<WireMessage>,
}

#[derive(Serialize, Deserialize)]
struct HistoryRoom {
    name: String,
    #[serde(default)]
    description: String,
}

struct Actor {
    me: PeerId,
    label: String,
    /// The members' names, asked of the members themselves.
    names: crate::names::Names,
    rooms: HashMap<GroupId, RoomData>,
    db: ChatDb,
    /// The time of this peer's latest message: the next one is later, so ids never repeat.
    last_sent: i64,
    groups: GroupHandle,
    mq: Mq,
    tracker: TaskTracker,
    events: broadcast::Sender<ChatEvent>,
}

impl Actor {
    /// Loads the rooms kept, then keeps those of groups this peer still hosts or has joined
    /// and adds any such group missing.
    async fn restore(&mut self) -> Result<(), ChatError> {
        let hosted: HashMap<GroupId, String> = self
            .groups
            .hosted_groups()
            .await?
            .into_iter()
            .filter(|g| g.group_type == CHAT_TYPE)
            .map(|g| (g.id, g.name))
            .collect();
        let joined: HashMap<GroupId, (PeerId, String)> = self
            .groups
            .subscriptions()
            .await?
            .into_iter()
            .filter(|s| s.group_type == CHAT_TYPE)
            .map(|s| (s.group, (s.host, s.group_name)))
            .collect();
        for (room, messages) in self.db.load()? {
            if !hosted.contains_key(&room.id) && !joined.contains_key(&room.id) {
                self.db.delete_room(&room.id)?;
                continue;
            }
            for m in &messages {
                if m.from == self.me {
                    self.last_sent = self.last_sent.max(m.timestamp);
                }
            }
            let mut data = RoomData::new(room);
            data.messages = messages.into();
            self.rooms.insert(data.room.id.clone(), data);
        }
        for (id, name) in hosted {
            let me = self.me.clone();
            self.ensure_room(id, name, me)?;
        }
        for (id, (host, name)) in joined {
            self.ensure_room(id, name, host)?;
        }
        tracing::info!(rooms = self.rooms.len(), "chat rooms restored");
        Ok(())
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut hooks: mpsc::Receiver<Hook>,
        mut incoming: crate::mq::Subscription,
        myself: mpsc::WeakSender<Command>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(command) = commands.recv() => self.command(command, &myself).await,
                Some(hook) = hooks.recv() => self.hook(hook).await,
                Some(message) = incoming.recv() => self.incoming(message).await,
                else => break,
            }
        }
        tracing::debug!("chat stopped");
    }

    async fn command(&mut self, command: Command, myself: &mpsc::WeakSender<Command>) {
        match command {
            Command::Create(new, reply) => {
                let _ = reply.send(self.create(new).await);
            }
            Command::Close(group, reply) => {
                let _ = reply.send(self.close(group).await);
            }
            Command::Join(host, group, reply) => {
                // The join waits for the host's welcome: in a task of its own, so the other
                // rooms go on meanwhile.
                let groups = self.groups.clone();
                let myself = myself.clone();
                self.tracker.spawn(async move {
                    match groups.join(host, group).await {
                        Ok(subscription) => {
                            if let Some(actor) = myself.upgrade() {
                                let _ = actor.send(Command::Joined(subscription, reply)).await;
                            }
                        }
                        Err(error) => {
                            let _ = reply.send(Err(error.into()));
                        }
                    }
                });
            }
            Command::Joined(subscription, reply) => {
                let joined = self.joined(subscription).await;
                if let Ok(room) = &joined {
                    self.request_history(room);
                }
                let _ = reply.send(joined);
            }
            Command::Leave(group, reply) => {
                let _ = reply.send(self.leave(group).await);
            }
            Command::Send(group, text, reply) => self.send(group, text, reply, myself),
            Command::Sent(group, message, reply) => {
                let _ = reply.send(self.add(&group, message.clone()).map(|()| message));
            }
            Command::State(group, reply) => {
                let _ = reply.send(self.state(group).await);
            }
            Command::List(reply) => {
                let mut rooms: Vec<Room> = self.rooms.values().map(|d| d.room.clone()).collect();
                rooms.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
                let _ = reply.send(Ok(rooms));
            }
        }
    }

    async fn create(&mut self, new: NewRoom) -> Result<Room, ChatError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() {
            return Err(ChatError::EmptyName);
        }
        if new.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(ChatError::DescriptionTooLong {
                len: new.description.len(),
                max: MAX_DESCRIPTION_BYTES,
            });
        }
        let group = self
            .groups
            .create(GroupSpec {
                id: None,
                name: name.clone(),
                group_type: CHAT_TYPE.to_owned(),
                group_context: new.context,
                max_members: new.max_members,
                volatile: false,
                admission: Default::default(),
                roles: Vec::new(),
                default_role: None,
            })
            .await?;
        let me = self.me.clone();
        self.ensure_room(group.clone(), name, me)?;
        let data = self.room_mut(&group)?;
        data.room.description = new.description;
        let room = data.room.clone();
        self.db.put_room(&room)?;
        tracing::info!(%group, name = %room.name, "chat room created");
        Ok(room)
    }

    async fn close(&mut self, group: GroupId) -> Result<(), ChatError> {
        let data = self.room(&group)?;
        if data.room.host != self.me {
            return Err(ChatError::NotHost(group));
        }
        self.groups.close(group.clone()).await?;
        self.forget(&group)
    }

    async fn joined(
        &mut self,
        subscription: crate::group::Subscription,
    ) -> Result<Room, ChatError> {
        if subscription.group_type != CHAT_TYPE {
            // Joined by mistake: not a room, so not a membership to keep.
            if let Err(error) = self.groups.leave(subscription.group.clone()).await {
                tracing::warn!(group = %subscription.group, %error, "cannot leave a group joined as a chat room");
            }
            return Err(ChatError::NotChat {
                group: subscription.group,
                group_type: subscription.group_type,
            });
        }
        self.ensure_room(
            subscription.group.clone(),
            subscription.group_name,
            subscription.host,
        )?;
        Ok(self.room(&subscription.group)?.room.clone())
    }

    async fn leave(&mut self, group: GroupId) -> Result<(), ChatError> {
        let data = self.room(&group)?;
        if data.room.host == self.me {
            return Err(ChatError::IsHost(group));
        }
        match self.groups.leave(group.clone()).await {
            Ok(()) | Err(GroupError::NotJoined(_) | GroupError::UnknownGroup(_)) => {}
            Err(error) => return Err(error.into()),
        }
        self.forget(&group)
    }

    /// Checks and sends a message of this peer, in a task of its own (a member waits for the
    /// host to take it), and keeps it once sent.
    fn send(
        &mut self,
        group: GroupId,
        text: String,
        reply: Reply<ChatMessage>,
        myself: &mpsc::WeakSender<Command>,
    ) {
        if let Err(error) = check_text(&text).and_then(|()| self.room(&group).map(|_| ())) {
            let _ = reply.send(Err(error));
            return;
        }
        let timestamp = now_ms().max(self.last_sent + 1);
        self.last_sent = timestamp;
        let message = ChatMessage {
            id: message_id(timestamp, &self.me),
            from: self.me.clone(),
            from_name: self.label.clone(),
            text,
            timestamp,
        };
        let payload = match encode_msg(&message) {
            Ok(payload) => payload,
            Err(error) => {
                let _ = reply.send(Err(ChatError::Group(GroupError::Encode(error))));
                return;
            }
        };
        let groups = self.groups.clone();
        let myself = myself.clone();
        self.tracker.spawn(async move {
            match groups.send(group.clone(), payload).await {
                // Kept once sent, so the sender's next read has it. On the host, the group
                // layer's own event for it comes too and is dropped as a duplicate.
                Ok(()) => {
                    if let Some(actor) = myself.upgrade() {
                        let _ = actor.send(Command::Sent(group, message, reply)).await;
                    }
                }
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            }
        });
    }

    async fn state(&mut self, group: GroupId) -> Result<RoomState, ChatError> {
        let data = self.room(&group)?;
        let room = data.room.clone();
        let messages: Vec<ChatMessage> = data.messages.iter().cloned().collect();
        let listed = match self.groups.members(group.clone()).await {
            Ok(members) => members,
            // Between a host's close and the hook that removes the room.
            Err(GroupError::UnknownGroup(_)) => return Err(ChatError::UnknownRoom(group)),
            Err(error) => return Err(error.into()),
        };
        let mut peers = vec![room.host.clone()];
        for member in listed {
            if !peers.contains(&member.peer_id) {
                peers.push(member.peer_id);
            }
        }
        let members = peers
            .into_iter()
            .map(|peer_id| {
                // The name the member gives when asked, else the one its last message
                // carried (this peer's own is its label).
                let name = self.names.resolve(&peer_id).unwrap_or_else(|| {
                    messages
                        .iter()
                        .rev()
                        .find(|m| m.from == peer_id)
                        .map(|m| m.from_name.clone())
                        .unwrap_or_default()
                });
                RoomMember { peer_id, name }
            })
            .collect();
        Ok(RoomState {
            room: RoomView { room, members },
            messages,
        })
    }

    async fn hook(&mut self, hook: Hook) {
        let result = match hook {
            Hook::Created { group, name } => {
                let me = self.me.clone();
                self.ensure_room(group, name, me)
            }
            Hook::Closed { group } => self.forget(&group),
            Hook::Event(event) => self.event(event).await,
        };
        if let Err(error) = result {
            tracing::warn!(%error, "chat hook failed");
        }
    }

    async fn event(&mut self, event: GroupEvent) -> Result<(), ChatError> {
        match event.kind {
            // A join, or a rejoin after a restart: the room may not be known yet, and what
            // was said meanwhile is with the host.
            GroupEventKind::Welcome => {
                self.room_of_subscription(&event.group).await?;
                if let Some(data) = self.rooms.get(&event.group) {
                    self.request_history(&data.room);
                }
                Ok(())
            }
            // This peer left the group some other way than through the chat routes.
            GroupEventKind::Leave if event.from.as_ref() == Some(&self.me) => {
                match self.rooms.get(&event.group) {
                    Some(data) if data.room.host != self.me => self.forget(&event.group),
                    _ => Ok(()),
                }
            }
            GroupEventKind::Msg => {
                let (Some(author), Some(payload)) = (event.from, event.payload) else {
                    return Ok(());
                };
                match decode_msg(&payload, &author) {
                    Some(message) => self.add(&event.group, message),
                    None => {
                        tracing::debug!(group = %event.group, %author, "ignoring a group message that is not a chat message");
                        Ok(())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// A member asking for a room's history, or the history a host sent back.
    async fn incoming(&mut self, message: crate::mq::Incoming) {
        let from = crate::net::peer_to_proto(&message.from);
        if let Some(group) = parse_topic(&message.topic, "history-request") {
            self.history_requested(group, from).await;
            return;
        }
        let Some(group) = parse_topic(&message.topic, "history") else {
            tracing::debug!(topic = %message.topic, %from, "ignoring a chat message on an unknown topic");
            return;
        };
        let Some(data) = self.rooms.get_mut(&group) else {
            tracing::debug!(%group, %from, "ignoring a chat history for a room this peer is not in");
            return;
        };
        if data.room.host != from || from == self.me {
            tracing::warn!(%group, %from, "ignoring a chat history not from the room's host");
            return;
        }
        let Ok(history) = serde_json::from_str::<History>(message.payload.get()) else {
            tracing::warn!(%group, %from, "ignoring a malformed chat history");
            return;
        };
        if !history.room.name.trim().is_empty() {
            data.room.name = history.room.name;
        }
        if history.room.description.len() <= MAX_DESCRIPTION_BYTES {
            data.room.description = history.room.description;
        }
        let mut messages: VecDeque<ChatMessage> = VecDeque::new();
        for wire in history.messages {
            // The host vouches for its history's authors: they are the peers it relayed.
            let Ok(author) = wire.from.parse::<PeerId>() else {
                continue;
            };
            if let Some(m) = checked(wire, &author)
                && !messages.iter().any(|k| k.id == m.id)
            {
                if messages.len() == HISTORY {
                    messages.pop_front();
                }
                messages.push_back(m);
            }
        }
        // Messages relayed here after the host wrote this history, and not in it, stay.
        let newer: Vec<ChatMessage> = data
            .messages
            .iter()
            .filter(|m| {
                !messages.iter().any(|k| k.id == m.id)
                    && messages
                        .back()
                        .is_none_or(|last| m.timestamp >= last.timestamp)
            })
            .cloned()
            .collect();
        data.messages = messages;
        for message in newer {
            data.push(message);
        }
        let room = data.room.clone();
        let all: Vec<ChatMessage> = data.messages.iter().cloned().collect();
        if let Err(error) = self
            .db
            .put_room(&room)
            .and_then(|()| self.db.replace_messages(&group, &all))
        {
            tracing::warn!(%group, %error, "cannot store a chat history");
        }
    }

    /// Asks a room's host for its history, in a task.
    fn request_history(&self, room: &Room) {
        if room.host == self.me {
            return;
        }
        let topic = format!("{TOPIC_PREFIX}{}:history-request", room.id);
        let request = serde_json::json!({ "action": "history-request" });
        self.post(room.id.clone(), room.host.clone(), topic, &request);
    }

    /// Answers a member's request for the history of a room this peer hosts.
    async fn history_requested(&mut self, group: GroupId, peer: PeerId) {
        let hosted = self
            .rooms
            .get(&group)
            .is_some_and(|d| d.room.host == self.me);
        match self.groups.is_member(group.clone(), peer.clone()).await {
            Ok(true) if hosted => self.send_history(&group, peer),
            Ok(_) => {
                tracing::warn!(%group, %peer, "refusing a chat history to a peer that is not a member");
            }
            Err(error) => tracing::warn!(%group, %peer, %error, "cannot check a chat member"),
        }
    }

    /// Sends a member the room's history, in a task: a slow member holds nobody up.
    fn send_history(&self, group: &GroupId, peer: PeerId) {
        let Some(data) = self.rooms.get(group) else {
            return;
        };
        let history = History {
            action: "history".to_owned(),
            room: HistoryRoom {
                name: data.room.name.clone(),
                description: data.room.description.clone(),
            },
            messages: data.messages.iter().map(WireMessage::from).collect(),
        };
        let topic = format!("{TOPIC_PREFIX}{group}:history");
        self.post(group.clone(), peer, topic, &history);
    }

    /// Sends `payload` on `topic` to `peer` over the MQ bus, in a task; a failure is logged.
    fn post(&self, group: GroupId, peer: PeerId, topic: String, payload: &impl Serialize) {
        let mq = self.mq.clone();
        let payload = serde_json::value::to_raw_value(payload).map_err(|e| e.to_string());
        self.tracker.spawn(async move {
            let sent = match (crate::net::proto_to_peer(&peer), payload) {
                (Ok(to), Ok(payload)) => mq
                    .send(to, &topic, payload)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(e.to_string()),
                (_, Err(e)) => Err(e),
            };
            if let Err(error) = sent {
                tracing::warn!(%group, %peer, %topic, %error, "cannot send a chat message");
            }
        });
    }

    /// Makes the room of a chat group this peer has joined, if it is not known yet.
    async fn room_of_subscription(&mut self, group: &GroupId) -> Result<(), ChatError> {
        if self.rooms.contains_key(group) {
            return Ok(());
        }
        let subscription = self
            .groups
            .subscriptions()
            .await?
            .into_iter()
            .find(|s| &s.group == group && s.group_type == CHAT_TYPE);
        match subscription {
            Some(s) => self.ensure_room(s.group, s.group_name, s.host),
            None => Ok(()),
        }
    }

    /// Keeps a message, once per id.
    fn add(&mut self, group: &GroupId, message: ChatMessage) -> Result<(), ChatError> {
        let Some(data) = self.rooms.get_mut(group) else {
            return Ok(());
        };
        if data.has(&message.id) {
            return Ok(());
        }
        self.db.add_message(group, &message)?;
        data.push(message.clone());
        // Nobody listening is not an error.
        let _ = self.events.send(ChatEvent {
            group_id: group.clone(),
            message,
        });
        Ok(())
    }

    /// Makes sure a room is known for `group`, storing it when it is new.
    fn ensure_room(&mut self, group: GroupId, name: String, host: PeerId) -> Result<(), ChatError> {
        if self.rooms.contains_key(&group) {
            return Ok(());
        }
        let room = Room {
            id: group.clone(),
            name,
            description: String::new(),
            host,
        };
        self.db.put_room(&room)?;
        self.rooms.insert(group, RoomData::new(room));
        Ok(())
    }

    fn forget(&mut self, group: &GroupId) -> Result<(), ChatError> {
        if self.rooms.remove(group).is_some() {
            self.db.delete_room(group)?;
            tracing::info!(%group, "chat room gone");
        }
        Ok(())
    }

    fn room(&self, group: &GroupId) -> Result<&RoomData, ChatError> {
        self.rooms
            .get(group)
            .ok_or_else(|| ChatError::UnknownRoom(group.clone()))
    }

    fn room_mut(&mut self, group: &GroupId) -> Result<&mut RoomData, ChatError> {
        self.rooms
            .get_mut(group)
            .ok_or_else(|| ChatError::UnknownRoom(group.clone()))
    }
}

impl From<&ChatMessage> for WireMessage {
    fn from(m: &ChatMessage) -> Self {
        Self {
            id: m.id.clone(),
            from: m.from.as_str().to_owned(),
            from_name: m.from_name.clone(),
            text: m.text.clone(),
            timestamp: m.timestamp,
        }
    }
}

fn check_text(text: &str) -> Result<(), ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::EmptyText);
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ChatError::TextTooLong {
            len: text.len(),
            max: MAX_TEXT_BYTES,
        });
    }
    Ok(())
}

/// `<timestamp>-<author>`.
fn message_id(timestamp: i64, author: &PeerId) -> String {
    format!("{timestamp}-{author}")
}

/// The message a sender wrote, as `author` sent it: the author and the id come from who sent
/// it, not from what it says. `None` when the text is empty or too long.
fn checked(wire: WireMessage, author: &PeerId) -> Option<ChatMessage> {
    check_text(&wire.text).ok()?;
    Some(ChatMessage {
        id: message_id(wire.timestamp, author),
        from: author.clone(),
        from_name: crate::names::clean_name(&wire.from_name),
        text: wire.text,
        timestamp: wire.timestamp,
    })
}

fn encode_msg(message: &ChatMessage) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(&Envelope {
        group_type: CHAT_TYPE.to_owned(),
        chat: MsgAction {
            action: "msg".to_owned(),
            message: WireMessage::from(message),
        },
    })
    .map_err(|e| e.to_string())
}

/// A chat message in a group `msg` from `author`; `None` for anything else.
fn decode_msg(payload: &RawValue, author: &PeerId) -> Option<ChatMessage> {
    let envelope: Envelope<MsgAction> = serde_json::from_str(payload.get()).ok()?;
    if envelope.group_type != CHAT_TYPE || envelope.chat.action != "msg" {
        return None;
    }
    checked(envelope.chat.message, author)
}

/// The group of `chat.room:<group>:<action>` when the action is `action`. The group is what
/// lies between the prefix and the last `:`.
fn parse_topic(topic: &str, action: &str) -> Option<GroupId> {
    let rest = topic.strip_prefix(TOPIC_PREFIX)?;
    let (group, found) = rest.rsplit_once(':')?;
    (found == action).then(|| group.parse().ok()).flatten()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> PeerId {
        name.parse().unwrap()
    }

    #[test]
    fn a_message_is_its_author_s_whatever_it_says() {
        let payload = RawValue::from_string(
            r#"{"group_type":"chat","chat":{"action":"msg","message":{"id":"1-someone","from":"someone","from_name":"Someone","text":"hi","timestamp":7}}}"#
                .to_owned(),
        )
        .unwrap();
        let message = decode_msg(&payload, &peer("author")).expect("a chat message");
        assert_eq!(message.from, peer("author"));
        assert_eq!(message.id, "7-author");
        assert_eq!(message.from_name, "Someone");
        assert_eq!(message.text, "hi");
    }

    #[test]
    fn other_payloads_empty_and_long_texts_are_not_messages() {
        let author = peer("author");
        for text in [
            r#"{"hello":1}"#,
            r#"{"group_type":"listen","chat":{"action":"msg","message":{"text":"x","timestamp":1}}}"#,
            r#"{"group_type":"chat","chat":{"action":"members","message":{"text":"x","timestamp":1}}}"#,
            r#"{"group_type":"chat","chat":{"action":"msg","message":{"text":"  ","timestamp":1}}}"#,
        ] {
            let payload = RawValue::from_string(text.to_owned()).unwrap();
            assert!(decode_msg(&payload, &author).is_none(), "{text}");
        }
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let payload = encode_msg(&ChatMessage {
            id: String::new(),
            from: author.clone(),
            from_name: String::new(),
            text: long,
            timestamp: 1,
        })
        .unwrap();
        assert!(decode_msg(&payload, &author).is_none());
    }

    #[test]
    fn topics_name_their_group_and_action() {
        assert_eq!(
            parse_topic("chat.room:abc123:history", "history"),
            Some("abc123".parse().unwrap())
        );
        assert_eq!(parse_topic("chat.room:abc123:msg", "history"), None);
        assert_eq!(
            parse_topic("chat.room:abc123:history-request", "history-request"),
            Some("abc123".parse().unwrap())
        );
        assert_eq!(parse_topic("chat.room:noaction", "history"), None);
        assert_eq!(parse_topic("group:abc123:history", "history"), None);
    }

    #[test]
    fn a_room_keeps_its_newest_messages() {
        let mut data = RoomData::new(Room {
            id: "g".parse().unwrap(),
            name: "r".into(),
            description: String::new(),
            host: peer("h"),
        });
        for n in 1..=120 {
            data.push(ChatMessage {
                id: n.to_string(),
                from: peer("h"),
                from_name: String::new(),
                text: format!("m{n}"),
                timestamp: n,
            });
        }
        assert_eq!(data.messages.len(), HISTORY);
        assert_eq!(data.messages[0].text, "m21");
        assert_eq!(data.messages[HISTORY - 1].text, "m120");
    }
}
