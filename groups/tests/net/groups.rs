//! Group managers over the MQ bus on real libp2p swarms: the MQ transport, its connection
//! events, and a long stream of relayed messages.

use std::time::Duration;

use groups::group::GroupSpec;
use groups::{GroupConfig, GroupHandle, GroupManagerParts, MqConfig, Node, mq_transport};
use proto::{GroupEventKind, GroupId, PeerId};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::{addr_of, raw, start, within};

struct Peer {
    node: Node,
    groups: GroupHandle,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Peer {
    fn id(&self) -> PeerId {
        groups::net::peer_to_proto(&self.node.handle().local_peer_id())
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.node.shutdown().await;
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        ping_interval: Duration::from_millis(300),
        member_timeout: Duration::from_millis(900),
        tick_interval: Duration::from_millis(50),
        peer_queue: 16 * 1024,
        event_buffer: 32 * 1024,
        // The long stream goes as fast as it can: no relay limit (its own test is the core's).
        relay_rate: 0,
        ..GroupConfig::default()
    }
}

async fn peer() -> Peer {
    let node = start(MqConfig::default()).await;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (transport, incoming) = mq_transport(&node.mq(), 4096, &tasks, cancel.clone());
    let me = groups::net::peer_to_proto(&node.handle().local_peer_id());
    let mut parts = GroupManagerParts::new(me, transport, incoming);
    parts.config = config();
    let groups = groups::spawn_group_manager(parts, &tasks, cancel.clone())
        .await
        .expect("manager starts");
    Peer {
        node,
        groups,
        tasks,
        cancel,
    }
}

async fn connect(from: &Peer, to: &Peer) {
    from.node
        .handle()
        .dial(addr_of(&to.node).await)
        .await
        .expect("dial");
}

async fn create(host: &Peer, name: &str) -> GroupId {
    host.groups
        .create(GroupSpec {
            name: name.to_owned(),
            ..GroupSpec::default()
        })
        .await
        .expect("create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_reach_every_member_in_order_once_with_their_author() {
    const N: u64 = 10_000;
    let host = peer().await;
    let mut members = Vec::new();
    for _ in 0..4 {
        let member = peer().await;
        connect(&member, &host).await;
        members.push(member);
    }
    let group = create(&host, "stream").await;
    for member in &members {
        within(10, "join", member.groups.join(host.id(), group.clone()))
            .await
            .expect("join");
    }
    let sender = &members[0];
    let receivers = &members[1..];
    let mut streams: Vec<_> = receivers.iter().map(|m| m.groups.events()).collect();
    let author = sender.id();

    let send = async {
        for n in 0..N {
            let payload = raw(&format!(r#"{{"n":{n}}}"#));
            sender
                .groups
                .post(group.clone(), payload)
                .await
                .expect("post");
        }
    };
    let receive = futures::future::join_all(streams.iter_mut().map(|events| {
        let author = author.clone();
        let group = group.clone();
        async move {
            let mut next = 0u64;
            while next < N {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(n)) => panic!("receiver lagged by {n}"),
                    Err(RecvError::Closed) => panic!("events closed at {next}"),
                };
                if event.kind != GroupEventKind::Msg {
                    continue;
                }
                assert_eq!(event.group, group);
                assert_eq!(
                    event.from.as_ref(),
                    Some(&author),
                    "author of message {next}"
                );
                let payload: serde_json::Value =
                    serde_json::from_str(event.payload.as_ref().expect("payload").get()).unwrap();
                assert_eq!(payload["n"], next, "messages in order, once each");
                next += 1;
            }
        }
    }));
    within(120, "10,000 relayed messages", async {
        tokio::join!(send, receive);
    })
    .await;
    // Nothing more arrives: every message came exactly once.
    let probe = raw(r#"{"n":"end"}"#);
    sender
        .groups
        .send(group.clone(), probe)
        .await
        .expect("send");
    for events in &mut streams {
        loop {
            let event = within(10, "the end marker", events.recv()).await.unwrap();
            if event.kind == GroupEventKind::Msg {
                assert!(event.payload.unwrap().get().contains("end"));
                break;
            }
        }
    }
    assert_eq!(host.groups.members(group.clone()).await.unwrap().len(), 4);

    for member in members {
        member.stop().await;
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_node_stops_is_dropped_and_a_send_to_self_is_local() {
    let host = peer().await;
    let member = peer().await;
    connect(&member, &host).await;
    let group = create(&host, "liveness").await;
    within(10, "join", member.groups.join(host.id(), group.clone()))
        .await
        .expect("join");
    assert_eq!(host.groups.members(group.clone()).await.unwrap().len(), 1);
    // The host joining its own group and sending reaches the member; the host's own copy
    // never goes through the network (the MQ bus refuses sends to self).
    host.groups.join_own(group.clone()).await.expect("join own");
    let mut events = member.groups.events();
    host.groups
        .send(group.clone(), raw(r#"{"hello":1}"#))
        .await
        .expect("host send");
    loop {
        let event = within(10, "host message", events.recv()).await.unwrap();
        if event.kind == GroupEventKind::Msg {
            break;
        }
    }

    member.stop().await;
    within(10, "the host drops the member", async {
        loop {
            let members = host.groups.members(group.clone()).await.unwrap();
            if members.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    host.stop().await;
}
