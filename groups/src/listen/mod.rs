//! The `listen` group type: a host plays a queue of MP3 files to its group; listeners follow
//! its play state and pull the audio from it over `/goop/listen/1.0.0`.
//!
//! A peer is in at most one listen group, as its host or as a listener. Mends Goop²'s listen
//! (reference `goop2-handlers.md` §3 and §7):
//! - A newcomer gets the track, the queue and the play state as soon as it joins (Goop²'s
//!   re-sync never ran), and only the newcomer (Goop² meant to send it to everyone); the end
//!   of the queue is told to listeners (they kept counting).
//! - A seek while playing keeps the track timer: auto-advance and the 5 s `sync` go on.
//! - The audio is served to members only, from the track's audio start (the ID3 tag skipped)
//!   at the current position, paced at the track's bitrate with a few seconds of lead instead
//!   of as fast as the network takes it; it stops when the track changes or pauses.
//! - Internet streams (`http://` URLs) are refused with a clear error rather than relayed.
//!
//! The wire: control messages are group `msg`s from the host in the typed envelope
//! `{"group_type":"listen","listen":{action,...}}`; a listener applies them only when they come
//! from its host. The audio stream: `LISTEN <group>` and a line end; then `OK mp3 <bitrate>
//! <duration>` and a line end and the bytes, or `ERR <reason>`.

mod mp3;
mod player;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use libp2p::StreamProtocol;
use proto::{GroupEvent, GroupEventKind, GroupId, PeerId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio_util::compat::{FuturesAsyncReadCompatExt as _, FuturesAsyncWriteCompatExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::group::{GroupError, GroupHandle, GroupSpec, TypeHandler};
use crate::net::{IdleTimeout, NodeHandle};

pub use self::mp3::{Probe, probe};
pub use self::player::{Control, Entry, PlayState, Player, Track};

/// The group type of listening groups.
pub const LISTEN_TYPE: &str = "listen";
/// The protocol the audio travels on.
pub const PROTOCOL: &str = "/goop/listen/1.0.0";
/// Seconds of audio sent ahead of the play position.
const LEAD_SECONDS: f64 = 4.0;
/// How long a listener waits for audio before it gives the stream up: a playing host sends
/// every 200 ms at least (and ends the stream when it pauses or changes track), so a longer
/// silence is a host that is gone.
const AUDIO_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the host's player looks at the time.
const TICK: Duration = Duration::from_millis(500);
/// Ticks between two `sync` messages while playing (5 s).
const SYNC_EVERY: u32 = 10;
/// Where a host keeps its queue.
const QUEUE_FILE: &str = "listen-queue.json";

/// Why a listen operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// This peer is already in a listen group.
    #[error("already in listen group {0}")]
    Busy(GroupId),
    /// This peer hosts no listen group.
    #[error("not hosting a listen group")]
    NotHosting,
    /// This peer is not a listener.
    #[error("not in a listening group")]
    NotListening,
    /// Nothing to load.
    #[error("no paths provided")]
    NoPaths,
    /// No track is loaded.
    #[error("no track loaded")]
    NoTrack,
    /// The queue ends here.
    #[error("already at last track")]
    AtEnd,
    /// No such queue entry.
    #[error("invalid queue index {0}")]
    BadIndex(usize),
    /// Not a position in the track.
    #[error("invalid position {0}")]
    BadPosition(f64),
    /// Not one of the control actions.
    #[error("unknown action: {0:?}")]
    BadAction(String),
    /// An `http://` or `https://` source.
    #[error("internet streams are not supported: {0}")]
    StreamUnsupported(String),
    /// Not a playable MP3 file.
    #[error("cannot play {path}: {reason}")]
    Probe {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The host refused or could not be reached for the audio.
    #[error("audio from {peer}: {reason}")]
    Audio {
        /// The host.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The group layer failed.
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// A listen group as `GET /api/listen/state` shows it (Goop²'s shape).
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The group.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// `host` or `listener`.
    pub role: &'static str,
    /// The loaded track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Whether it plays and where, now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub play_state: Option<PlayState>,
    /// The listeners (host only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<PeerId>>,
    /// The queue's display names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<String>,
    /// `file` for each entry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue_types: Vec<String>,
    /// The current entry.
    pub queue_index: usize,
    /// The queue's length.
    pub queue_total: usize,
}

enum Role {
    Host {
        group: GroupId,
        name: String,
        player: Player,
        listeners: Vec<PeerId>,
    },
    Listener {
        group: GroupId,
        name: String,
        host: PeerId,
        track: Option<Track>,
        play: Option<PlayState>,
        queue: Vec<String>,
        queue_index: usize,
        queue_total: usize,
    },
}

struct Inner {
    role: Mutex<Option<Role>>,
    groups: GroupHandle,
    node: NodeHandle,
    control: libp2p_stream::Control,
    data_dir: PathBuf,
    /// Bumped on every change of what plays: streams of the old state stop.
    generation: watch::Sender<u64>,
    tracker: TaskTracker,
}

/// The [`TypeHandler`] to register for [`LISTEN_TYPE`]; it acts once [`Listen::start`] ran.
#[derive(Default)]
pub struct ListenHandler {
    inner: Arc<OnceLock<Arc<Inner>>>,
}

/// The listen side of a peer.
#[derive(Clone)]
pub struct Listen {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen").finish_non_exhaustive()
    }
}

/// The handler to register before the peer starts, and the slot [`Listen::start`] fills.
pub fn handler() -> (Arc<ListenHandler>, ListenSlot) {
    let handler = ListenHandler::default();
    let slot = ListenSlot(handler.inner.clone());
    (Arc::new(handler), slot)
}

/// Where the handler finds the running [`Listen`].
pub struct ListenSlot(Arc<OnceLock<Arc<Inner>>>);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The saved queue of a host.
#[derive(Serialize, Deserialize)]
struct SavedQueue {
    group_id: GroupId,
    paths: Vec<PathBuf>,
    index: usize,
}

impl Listen {
    /// Serves the audio protocol, runs the player's clock and brings back a hosted group with
    /// its saved queue (paused).
    pub async fn start(
        slot: ListenSlot,
        data_dir: PathBuf,
        groups: GroupHandle,
        node: NodeHandle,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, ListenError> {
        let control = node.stream_control();
        let inner = Arc::new(Inner {
            role: Mutex::new(None),
            groups,
            node,
            control,
            data_dir,
            generation: watch::channel(0).0,
            tracker: tracker.clone(),
        });
        let listen = Self { inner };
        listen.restore().await?;
        let _ = slot.0.set(listen.inner.clone());
        let server = listen.clone();
        crate::net::serve_protocol(
            &listen.inner.node,
            PROTOCOL,
            tracker,
            cancel.clone(),
            move |peer, stream| {
                let server = server.clone();
                async move {
                    if let Err(error) = server.serve(&peer, stream).await {
                        tracing::debug!(%peer, %error, "listen stream ended");
                    }
                }
            },
        )
        .map_err(|e| ListenError::Audio {
            peer: listen.inner.groups.peer_id().clone(),
            reason: e.to_string(),
        })?;
        let clock = listen.clone();
        tracker.spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            let mut count = 0u32;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                count = count.wrapping_add(1);
                clock.tick(count.is_multiple_of(SYNC_EVERY));
            }
        });
        Ok(listen)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Role>> {
        // A panic while holding the lock leaves a consistent value: every change is one
        // assignment.
        self.inner
            .role
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn restore(&self) -> Result<(), ListenError> {
        let hosted = self.inner.groups.hosted_groups().await?;
        let Some(group) = hosted.into_iter().find(|g| g.group_type == LISTEN_TYPE) else {
            return Ok(());
        };
        let mut player = Player::default();
        let saved = std::fs::read(self.inner.data_dir.join(QUEUE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SavedQueue>(&bytes).ok())
            .filter(|q| q.group_id == group.id);
        if let Some(saved) = saved {
            let entries: Vec<Entry> = saved.paths.into_iter().map(Entry::of).collect();
            let now = now_ms();
            let loaded = player.load_queue(entries, now, &probe).and_then(|_| {
                let index = saved.index;
                if index > 0 {
                    player.skip(index, now, &probe)
                } else {
                    Ok(Vec::new())
                }
            });
            if let Err(error) = loaded {
                tracing::warn!(group = %group.id, %error, "the saved listen queue cannot be played; dropped");
                player = Player::default();
            }
        }
        tracing::info!(group = %group.id, "resuming as the host of a listen group");
        *self.lock() = Some(Role::Host {
            group: group.id,
            name: group.name,
            player,
            listeners: Vec::new(),
        });
        Ok(())
    }

    /// Creates a listen group hosted by this peer.
    pub async fn create(&self, name: String) -> Result<GroupView, ListenError> {
        if let Some(group) = self.current_group() {
            return Err(ListenError::Busy(group));
        }
        let name = if name.trim().is_empty() {
            "Listening Group".to_owned()
        } else {
            name.trim().to_owned()
        };
        let mut id = String::from("listen-");
        for byte in random_bytes() {
            id.push_str(&format!("{byte:02x}"));
        }
        let group: GroupId = id.parse().map_err(|_| ListenError::NotHosting)?;
        self.inner
            .groups
            .create(GroupSpec {
                id: Some(group.clone()),
                name: name.clone(),
                group_type: LISTEN_TYPE.to_owned(),
                group_context: name.clone(),
                max_members: 0,
                volatile: false,
                admission: Default::default(),
                roles: Vec::new(),
                default_role: None,
            })
            .await?;
        *self.lock() = Some(Role::Host {
            group,
            name,
            player: Player::default(),
            listeners: Vec::new(),
        });
        self.save_queue();
        self.state().ok_or(ListenError::NotHosting)
    }

    fn current_group(&self) -> Option<GroupId> {
        match &*self.lock() {
            Some(Role::Host { group, .. } | Role::Listener { group, .. }) => Some(group.clone()),
            None => None,
        }
    }

    /// The group this peer is in, as it stands now.
    pub fn state(&self) -> Option<GroupView> {
        let now = now_ms();
        match &*self.lock() {
            None => None,
            Some(Role::Host {
                group,
                name,
                player,
                listeners,
            }) => {
                let queue = player.names();
                Some(GroupView {
                    id: group.clone(),
                    name: name.clone(),
                    role: "host",
                    track: player.current().map(|(t, _, _)| t.clone()),
                    play_state: player.play_state(now),
                    listeners: Some(listeners.clone()),
                    queue_types: vec!["file".to_owned(); queue.len()],
                    queue_index: player.queue().1,
                    queue_total: queue.len(),
                    queue,
                })
            }
            Some(Role::Listener {
                group,
                name,
                track,
                play,
                queue,
                queue_index,
                queue_total,
                ..
            }) => Some(GroupView {
                id: group.clone(),
                name: name.clone(),
                role: "listener",
                track: track.clone(),
                play_state: play.map(|p| PlayState {
                    position: p.position_at(now),
                    updated_at: now,
                    ..p
                }),
                listeners: None,
                queue_types: vec!["file".to_owned(); queue.len()],
                queue: queue.clone(),
                queue_index: *queue_index,
                queue_total: *queue_total,
            }),
        }
    }

    /// Runs `change` on the host's player and tells the listeners what it returns.
    fn with_player(
        &self,
        change: impl FnOnce(&mut Player, i64) -> Result<Vec<Control>, ListenError>,
    ) -> Result<(), ListenError> {
        let (group, out) = {
            let mut role = self.lock();
            let Some(Role::Host { group, player, .. }) = role.as_mut() else {
                return Err(ListenError::NotHosting);
            };
            (group.clone(), change(player, now_ms())?)
        };
        self.inner.generation.send_modify(|g| *g += 1);
        self.save_queue();
        self.broadcast(group, out);
        Ok(())
    }

    /// Replaces the queue with `paths` and loads the first.
    pub fn load(&self, paths: Vec<String>) -> Result<Track, ListenError> {
        let entries = entries(paths)?;
        self.with_player(|player, now| player.load_queue(entries, now, &probe))?;
        self.current_track().ok_or(ListenError::NoTrack)
    }

    /// Appends `paths` to the queue.
    pub fn add(&self, paths: Vec<String>) -> Result<(), ListenError> {
        let entries = entries(paths)?;
        self.with_player(|player, now| player.add(entries, now, &probe))
    }

    fn current_track(&self) -> Option<Track> {
        match &*self.lock() {
            Some(Role::Host { player, .. }) => player.current().map(|(t, _, _)| t.clone()),
            _ => None,
        }
    }

    /// `play`, `pause`, `seek` (to `position`), `next`, `prev`, `skip` and `remove` (at
    /// `index`).
    pub fn control(&self, action: &str, position: f64, index: usize) -> Result<(), ListenError> {
        match action {
            "play" => self.with_player(|p, now| p.play(now)),
            "pause" => self.with_player(|p, now| p.pause(now)),
            "seek" => self.with_player(|p, now| p.seek(position, now)),
            "next" => self.with_player(|p, now| p.next(now, &probe)),
            "prev" => self.with_player(|p, now| p.prev(now, &probe)),
            "skip" => self.with_player(|p, now| p.skip(index, now, &probe)),
            "remove" => self.with_player(|p, now| p.remove(index, now, &probe)),
            _ => Err(ListenError::BadAction(action.to_owned())),
        }
    }

    /// Joins a listen group hosted by `host`, leaving a joined one first.
    pub async fn join(&self, host: PeerId, group: GroupId) -> Result<(), ListenError> {
        if let Some(Role::Host { group, .. }) = &*self.lock() {
            return Err(ListenError::Busy(group.clone()));
        }
        if let Some(current) = self.current_group() {
            let _ = self.inner.groups.leave(current).await;
            *self.lock() = None;
        }
        let subscription = self.inner.groups.join(host.clone(), group.clone()).await?;
        let mut role = self.lock();
        // The host's re-sync may have come in first and made the state already.
        if !matches!(&*role, Some(Role::Listener { group: g, .. }) if g == &group) {
            *role = Some(listener(group, subscription.group_name, host));
        }
        Ok(())
    }

    /// Leaves the listen group this peer listens to.
    pub async fn leave(&self) -> Result<(), ListenError> {
        let group = match &*self.lock() {
            Some(Role::Listener { group, .. }) => group.clone(),
            _ => return Err(ListenError::NotListening),
        };
        *self.lock() = None;
        self.inner.generation.send_modify(|g| *g += 1);
        match self.inner.groups.leave(group).await {
            Ok(()) | Err(GroupError::NotJoined(_) | GroupError::UnknownGroup(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Closes the group (host) or leaves it (listener); nothing to do when in none.
    pub async fn close(&self) -> Result<(), ListenError> {
        let hosted = match &*self.lock() {
            Some(Role::Host { group, .. }) => Some(group.clone()),
            Some(Role::Listener { .. }) => None,
            None => return Ok(()),
        };
        let Some(group) = hosted else {
            return self.leave().await;
        };
        self.broadcast(group.clone(), vec![close_control()]);
        *self.lock() = None;
        self.inner.generation.send_modify(|g| *g += 1);
        self.save_queue();
        match self.inner.groups.close(group).await {
            Ok(()) | Err(GroupError::UnknownGroup(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The audio of the group this peer is in, from where it plays now: from the file on
    /// the host, from the host on a listener.
    pub async fn audio(&self) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, ListenError> {
        let host = match &*self.lock() {
            Some(Role::Host { .. }) => None,
            Some(Role::Listener { group, host, .. }) => Some((group.clone(), host.clone())),
            None => return Err(ListenError::NotListening),
        };
        match host {
            None => {
                let (reader, writer) = tokio::io::duplex(64 * 1024);
                let this = self.clone();
                let (_, source) = this.source().map_err(|reason| ListenError::Audio {
                    peer: self.inner.groups.peer_id().clone(),
                    reason,
                })?;
                self.inner.tracker.spawn(async move {
                    let _ = this.pump(source, writer).await;
                });
                Ok(Box::new(reader))
            }
            Some((group, host)) => self.fetch(&group, &host).await,
        }
    }

    /// Opens the audio stream from the host and reads its header.
    async fn fetch(
        &self,
        group: &GroupId,
        host: &PeerId,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, ListenError> {
        let failed = |reason: String| ListenError::Audio {
            peer: host.clone(),
            reason,
        };
        let to = crate::net::proto_to_peer(host).map_err(|e| failed(e.to_string()))?;
        self.inner
            .node
            .connect(to)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut control = self.inner.control.clone();
        let open = control.open_stream(to, StreamProtocol::new(PROTOCOL));
        let mut stream = tokio::time::timeout(Duration::from_secs(5), open)
            .await
            .map_err(|_| failed("opening the stream timed out".into()))?
            .map_err(|e| failed(e.to_string()))?;
        stream
            .write_all(format!("LISTEN {group}\n").as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
        stream.flush().await.map_err(|e| failed(e.to_string()))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            (&mut reader).take(256).read_line(&mut line),
        )
        .await
        .map_err(|_| failed("no answer in time".into()))?
        .map_err(|e| failed(e.to_string()))?;
        let line = line.trim_end();
        if let Some(reason) = line.strip_prefix("ERR ") {
            return Err(failed(reason.to_owned()));
        }
        if !line.starts_with("OK ") {
            return Err(failed(format!("malformed answer {line:?}")));
        }
        Ok(Box::new(
            IdleTimeout::new(reader, AUDIO_IDLE_TIMEOUT).compat(),
        ))
    }

    /// The header line and the file to send, for the track the host plays now.
    fn source(&self) -> Result<(String, Source), String> {
        let now = now_ms();
        let role = self.lock();
        let Some(Role::Host { player, .. }) = role.as_ref() else {
            return Err("not found".into());
        };
        let (track, probe, entry) = player.current().ok_or_else(|| "no track".to_owned())?;
        let state = player
            .play_state(now)
            .ok_or_else(|| "no track".to_owned())?;
        let header = format!("OK mp3 {} {:.2}\n", track.bitrate, track.duration);
        let bytes_per_second = f64::from(track.bitrate) / 8.0;
        let offset = probe.offset_at(state.position);
        Ok((
            header,
            Source {
                path: entry.path.clone(),
                offset,
                bytes_per_second,
                playing: state.playing,
                generation: *self.inner.generation.borrow(),
            },
        ))
    }

    /// Answers one `LISTEN` request.
    async fn serve(&self, peer: &PeerId, stream: libp2p::Stream) -> Result<(), std::io::Error> {
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            (&mut stream).take(256).read_line(&mut line),
        )
        .await
        .map_err(|_| std::io::Error::other("no request in time"))??;
        let mut stream = stream.into_inner();
        let group = line
            .trim_end()
            .strip_prefix("LISTEN ")
            .and_then(|g| g.parse::<GroupId>().ok());
        let hosted = match &*self.lock() {
            Some(Role::Host { group, .. }) => Some(group.clone()),
            _ => None,
        };
        let answer = match (group, hosted) {
            (None, _) => Err("bad request".to_owned()),
            (Some(g), Some(h)) if g == h => {
                if self
                    .inner
                    .groups
                    .is_member(g, peer.clone())
                    .await
                    .unwrap_or(false)
                {
                    self.source()
                } else {
                    tracing::warn!(%peer, "refusing audio to a peer that is not a member");
                    Err("access denied: not a group member".into())
                }
            }
            _ => Err("not found".into()),
        };
        let (header, source) = match answer {
            Ok(found) => found,
            Err(reason) => {
                stream
                    .write_all(format!("ERR {reason}\n").as_bytes())
                    .await?;
                return stream.close().await;
            }
        };
        stream.write_all(header.as_bytes()).await?;
        self.pump(source, stream.compat_write()).await
    }

    /// Sends the audio of `source` to `out`, paced at the track's bitrate with a few seconds
    /// of lead, until the file ends or what plays changes.
    async fn pump(
        &self,
        source: Source,
        mut out: impl tokio::io::AsyncWrite + Unpin,
    ) -> Result<(), std::io::Error> {
        if !source.playing {
            return out.shutdown().await;
        }
        let mut changes = self.inner.generation.subscribe();
        // From a frame's start, not from the middle of one (Goop² cut frames).
        let (path, offset) = (source.path.clone(), source.offset);
        let offset = tokio::task::spawn_blocking(move || mp3::frame_start(&path, offset))
            .await
            .unwrap_or(source.offset);
        let mut file = tokio::fs::File::open(&source.path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let started = tokio::time::Instant::now();
        let mut sent: u64 = 0;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if *changes.borrow_and_update() != source.generation {
                break;
            }
            let allowed =
                (started.elapsed().as_secs_f64() + LEAD_SECONDS) * source.bytes_per_second;
            if sent as f64 >= allowed {
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
        out.flush().await?;
        out.shutdown().await
    }

    /// The player's clock: auto-advance, and the periodic `sync`.
    fn tick(&self, sync: bool) {
        let (group, out) = {
            let mut role = self.lock();
            let Some(Role::Host { group, player, .. }) = role.as_mut() else {
                return;
            };
            let now = now_ms();
            let mut out = player.tick(now, &probe);
            if out.is_empty() {
                if sync {
                    out.extend(player.sync(now));
                }
                (group.clone(), out)
            } else {
                self.inner.generation.send_modify(|g| *g += 1);
                (group.clone(), out)
            }
        };
        if !out.is_empty() {
            self.broadcast(group, out);
        }
    }

    /// Sends control messages to the group, in order, in a task.
    fn broadcast(&self, group: GroupId, controls: Vec<Control>) {
        self.send_controls(group, None, controls);
    }

    /// Sends control messages in order to every listener, or to `only` that one (a joiner
    /// catching up: the others have the state already).
    fn send_controls(&self, group: GroupId, only: Option<PeerId>, controls: Vec<Control>) {
        if controls.is_empty() {
            return;
        }
        let groups = self.inner.groups.clone();
        self.inner.tracker.spawn(async move {
            for control in controls {
                let envelope = serde_json::json!({"group_type": LISTEN_TYPE, "listen": control});
                let sent = match &only {
                    Some(peer) => {
                        groups
                            .send_json_to(group.clone(), peer.clone(), &envelope)
                            .await
                    }
                    None => groups.send_json(group.clone(), &envelope).await,
                };
                if let Err(error) = sent {
                    tracing::debug!(%group, %error, "cannot send a listen control message");
                }
            }
        });
    }

    /// Keeps the host's queue in `listen-queue.json` (an empty one when not hosting).
    fn save_queue(&self) {
        let saved = match &*self.lock() {
            Some(Role::Host { group, player, .. }) => {
                let (queue, index) = player.queue();
                Some(SavedQueue {
                    group_id: group.clone(),
                    paths: queue.iter().map(|e| e.path.clone()).collect(),
                    index,
                })
            }
            _ => None,
        };
        let path = self.inner.data_dir.join(QUEUE_FILE);
        let written = match saved {
            Some(saved) => serde_json::to_vec(&saved)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&path, bytes)),
            None => std::fs::remove_file(&path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot save the listen queue");
        }
    }

    /// A hook: someone joined the group this peer hosts; it gets the state at once.
    fn joined(&self, group: &GroupId, peer: &PeerId) {
        let out = {
            let mut role = self.lock();
            let Some(Role::Host {
                group: hosted,
                player,
                listeners,
                ..
            }) = role.as_mut()
            else {
                return;
            };
            if hosted != group {
                return;
            }
            if !listeners.contains(peer) {
                listeners.push(peer.clone());
            }
            player.resync(now_ms())
        };
        self.send_controls(group.clone(), Some(peer.clone()), out);
    }

    fn left(&self, group: &GroupId, peer: &PeerId) {
        if let Some(Role::Host {
            group: hosted,
            listeners,
            ..
        }) = self.lock().as_mut()
            && hosted == group
        {
            listeners.retain(|p| p != peer);
        }
    }

    fn closed(&self, group: &GroupId) {
        let mut role = self.lock();
        let ours = match role.as_ref() {
            Some(Role::Host { group: g, .. } | Role::Listener { group: g, .. }) => g == group,
            None => false,
        };
        if ours {
            *role = None;
            drop(role);
            self.inner.generation.send_modify(|g| *g += 1);
        }
    }

    /// A hook: a group event of a listen group.
    fn event(&self, event: &GroupEvent) {
        let mut role = self.lock();
        match event.kind {
            GroupEventKind::Msg => {
                let Some(Role::Listener {
                    group,
                    host,
                    track,
                    play,
                    queue,
                    queue_index,
                    queue_total,
                    ..
                }) = role.as_mut()
                else {
                    return;
                };
                if group != &event.group || event.from.as_ref() != Some(host) {
                    return;
                }
                let Some(control) = event
                    .payload
                    .as_ref()
                    .and_then(|p| serde_json::from_str::<Envelope>(p.get()).ok())
                    .filter(|e| e.group_type == LISTEN_TYPE)
                    .map(|e| e.listen)
                else {
                    return;
                };
                let now = now_ms();
                if control.track.is_some() {
                    track.clone_from(&control.track);
                }
                // Only `load` and `sync` carry the queue; the others leave it as it is.
                if !control.queue.is_empty() || control.action == "load" {
                    queue.clone_from(&control.queue);
                }
                if control.queue_total > 0 || control.action == "load" {
                    *queue_index = control.queue_index;
                    *queue_total = control.queue_total;
                }
                let playing = |p: bool| {
                    Some(PlayState {
                        playing: p,
                        position: control.position,
                        updated_at: now,
                    })
                };
                match control.action.as_str() {
                    "load" | "pause" => *play = playing(false),
                    "play" | "sync" => *play = playing(true),
                    "seek" => *play = playing(play.is_some_and(|p| p.playing)),
                    "close" => *role = None,
                    _ => {}
                }
            }
            GroupEventKind::Leave if event.from.as_ref() == Some(self.inner.groups.peer_id()) => {
                if matches!(role.as_ref(), Some(Role::Listener { group, .. }) if group == &event.group)
                {
                    *role = None;
                }
            }
            GroupEventKind::Welcome if role.is_none() => {
                // A rejoin after a restart: the group layer came back, this state did not.
                if let (Some(host), Some(payload)) = (&event.from, &event.payload) {
                    let name = serde_json::from_str::<serde_json::Value>(payload.get())
                        .ok()
                        .and_then(|v| v["group_name"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| event.group.to_string());
                    *role = Some(listener(event.group.clone(), name, host.clone()));
                }
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    group_type: String,
    listen: Control,
}

/// What a stream sends.
struct Source {
    path: PathBuf,
    offset: u64,
    bytes_per_second: f64,
    playing: bool,
    generation: u64,
}

fn listener(group: GroupId, name: String, host: PeerId) -> Role {
    Role::Listener {
        group,
        name,
        host,
        track: None,
        play: None,
        queue: Vec::new(),
        queue_index: 0,
        queue_total: 0,
    }
}

fn close_control() -> Control {
    Control {
        action: "close".to_owned(),
        track: None,
        position: 0.0,
        queue: Vec::new(),
        queue_types: Vec::new(),
        queue_index: 0,
        queue_total: 0,
    }
}

/// Queue entries for `paths`: local files only.
fn entries(paths: Vec<String>) -> Result<Vec<Entry>, ListenError> {
    if paths.is_empty() {
        return Err(ListenError::NoPaths);
    }
    paths
        .into_iter()
        .map(|p| {
            let lower = p.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                Err(ListenError::StreamUnsupported(p))
            } else {
                Ok(Entry::of(PathBuf::from(p)))
            }
        })
        .collect()
}

fn random_bytes() -> [u8; 8] {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish().to_le_bytes()
}

impl TypeHandler for ListenHandler {
    fn on_join(&self, group: &GroupId, peer: &PeerId, is_host: bool) {
        if let (false, Some(inner)) = (is_host, self.inner.get()) {
            Listen {
                inner: inner.clone(),
            }
            .joined(group, peer);
        }
    }

    fn on_leave(
        &self,
        group: &GroupId,
        peer: &PeerId,
        is_host: bool,
        _: crate::group::LeaveReason,
    ) {
        if let (false, Some(inner)) = (is_host, self.inner.get()) {
            Listen {
                inner: inner.clone(),
            }
            .left(group, peer);
        }
    }

    fn on_close(&self, group: &GroupId) {
        if let Some(inner) = self.inner.get() {
            Listen {
                inner: inner.clone(),
            }
            .closed(group);
        }
    }

    fn on_event(&self, event: &GroupEvent) {
        if let Some(inner) = self.inner.get() {
            Listen {
                inner: inner.clone(),
            }
            .event(event);
        }
    }
}
