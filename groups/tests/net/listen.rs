//! The `listen` group type on real libp2p swarms: the audio goes to the group's members only,
//! and a listener's forged control message steers nobody.

use std::time::Duration;

use futures::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use groups::listen::{LISTEN_TYPE, Listen, PROTOCOL};
use groups::{GroupConfig, GroupHandle, GroupManagerParts, HandlerRegistry, MqConfig, Node};
use libp2p::StreamProtocol;
use proto::{GroupId, PeerId};
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::{addr_of, raw, start, temp_dir, within};

struct Peer {
    node: Node,
    groups: GroupHandle,
    listen: Listen,
    _tasks: TaskTracker,
    _cancel: CancellationToken,
}

impl Peer {
    fn id(&self) -> PeerId {
        groups::net::peer_to_proto(&self.node.handle().local_peer_id())
    }
}

async fn peer(name: &str) -> Peer {
    let node = start(MqConfig::default()).await;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (transport, incoming) = groups::mq_transport(&node.mq(), 4096, &tasks, cancel.clone());
    let me = groups::net::peer_to_proto(&node.handle().local_peer_id());
    let mut parts = GroupManagerParts::new(me, transport, incoming);
    parts.config = GroupConfig {
        ping_interval: Duration::from_millis(300),
        tick_interval: Duration::from_millis(50),
        ..GroupConfig::default()
    };
    let mut registry = HandlerRegistry::new();
    let (handler, slot) = groups::listen::handler();
    registry.register(LISTEN_TYPE, handler);
    parts.registry = registry;
    let groups = groups::spawn_group_manager(parts, &tasks, cancel.clone())
        .await
        .expect("manager starts");
    let dir = temp_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = Listen::start(
        slot,
        dir,
        groups.clone(),
        node.handle(),
        &tasks,
        cancel.clone(),
    )
    .await
    .expect("listen starts");
    Peer {
        node,
        groups,
        listen,
        _tasks: tasks,
        _cancel: cancel,
    }
}

/// A 128 kbit/s MP3 of `seconds` (one frame header, then filler).
fn mp3(seconds: usize) -> String {
    let dir = temp_dir("listen-track");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = vec![0xff, 0xfb, 0x90, 0x00];
    bytes.resize(16_000 * seconds, b'a');
    let path = dir.join("track.mp3");
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

/// Asks `host` for the audio of `group` over a raw stream, as any peer may; the answer line.
async fn ask_audio(from: &Node, host: &Node, group: &GroupId) -> String {
    let mut control = from.handle().stream_control();
    let mut stream = within(
        5,
        "open the audio stream",
        control.open_stream(host.handle().local_peer_id(), StreamProtocol::new(PROTOCOL)),
    )
    .await
    .expect("stream opens");
    stream
        .write_all(format!("LISTEN {group}\n").as_bytes())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    within(
        5,
        "the answer line",
        (&mut reader).take(256).read_line(&mut line),
    )
    .await
    .unwrap();
    line.trim_end().to_owned()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    within(10, what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audio_goes_to_members_only_and_only_the_host_steers() {
    let host = peer("listen-host").await;
    let listener = peer("listen-listener").await;
    let other = peer("listen-other").await;
    let stranger = start(MqConfig::default()).await;
    for node in [&listener.node, &other.node, &stranger] {
        node.handle().dial(addr_of(&host.node).await).await.unwrap();
    }
    let group = host.listen.create("radio".into()).await.unwrap().id;
    host.listen.load(vec![mp3(60)]).unwrap();
    host.listen.control("play", 0.0, 0).unwrap();

    // Joined while it plays, each listener is told the track and that it plays.
    for member in [&listener, &other] {
        within(10, "join", member.listen.join(host.id(), group.clone()))
            .await
            .unwrap();
        until("the joiner hears that the track plays", || {
            member
                .listen
                .state()
                .is_some_and(|s| s.track.is_some() && s.play_state.is_some_and(|p| p.playing))
        })
        .await;
    }

    // A stranger asking for the audio is refused; a member gets it.
    let refused = ask_audio(&stranger, &host.node, &group).await;
    assert!(refused.starts_with("ERR access denied"), "{refused}");
    let mut audio = within(5, "the member's audio", listener.listen.audio())
        .await
        .expect("a member hears the host");
    let mut first = [0u8; 1024];
    within(5, "the first bytes", audio.read_exact(&mut first))
        .await
        .unwrap();
    assert!(
        first
            .iter()
            .all(|b| [0xff, 0xfb, 0x90, 0x00, b'a'].contains(b)),
        "the bytes of the track"
    );

    // A listener sends a control message of its own to the group: the host relays it (it is a
    // group message like any other), but neither the host nor the other listener obeys it.
    let forged = format!(
        r#"{{"group_type":"{LISTEN_TYPE}","listen":{{"action":"pause","position":0,"queue_index":0,"queue_total":1}}}}"#
    );
    let mut seen = other.groups.events();
    listener
        .groups
        .post(group.clone(), raw(&forged))
        .await
        .expect("a member may post to its group");
    within(10, "the other listener gets the forged message", async {
        loop {
            let event = seen.recv().await.expect("events");
            if event.kind == proto::GroupEventKind::Msg
                && event.from.as_ref() == Some(&listener.id())
            {
                break;
            }
        }
    })
    .await;
    // Its handler had the same event; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let playing = |p: &Peer| {
        p.listen
            .state()
            .and_then(|s| s.play_state)
            .is_some_and(|p| p.playing)
    };
    assert!(playing(&host), "the host was paused by a listener");
    assert!(playing(&other), "a listener obeyed another listener");
    // The host's own pause still reaches everyone.
    host.listen.control("pause", 0.0, 0).unwrap();
    until("the listeners see the host's pause", || {
        !playing(&listener) && !playing(&other)
    })
    .await;
}
