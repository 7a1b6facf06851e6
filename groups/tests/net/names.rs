//! Peer names over real swarms: asked on connect, answered as Goop² does, filed under the
//! authenticated sender whatever the answer claims.

use std::time::Duration;

use groups::names::{
    IDENTITY_RESPONSE_TOPIC, IDENTITY_TOPIC, IdentityResponse, Names, NamesConfig,
};
use groups::net::peer_to_proto;
use groups::{MqConfig, Node};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::{addr_of, raw, start, within};

/// Names on `node`'s bus, answering with `label`.
fn named(node: &Node, label: &str, tasks: &TaskTracker, cancel: &CancellationToken) -> Names {
    Names::start(&node.mq(), NamesConfig::new(label), tasks, cancel.clone())
}

/// Polls `resolve` until it gives a name (each poll may ask again, within the rate limit).
async fn name_of(names: &Names, peer: &libp2p::PeerId) -> String {
    let peer = peer_to_proto(peer);
    within(10, "the name", async {
        loop {
            if let Some(name) = names.resolve(&peer) {
                return name;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn peers_learn_each_others_names_when_they_connect() {
    let (a, b) = (
        start(MqConfig::default()).await,
        start(MqConfig::default()).await,
    );
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let a_names = named(&a, "Ada", &tasks, &cancel);
    let b_names = named(&b, "  Bea\u{7}\n", &tasks, &cancel);
    a.handle().dial(addr_of(&b).await).await.expect("dial");
    let (a_id, b_id) = (a.handle().local_peer_id(), b.handle().local_peer_id());
    assert_eq!(name_of(&a_names, &b_id).await, "Bea");
    assert_eq!(name_of(&b_names, &a_id).await, "Ada");
    // Each peer's own name is its label, cleaned.
    assert_eq!(
        b_names.resolve(&peer_to_proto(&b_id)).as_deref(),
        Some("Bea")
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_goop2_style_peer_is_answered_and_its_answer_is_filed_under_its_own_id() {
    let (a, other, raw_peer) = (
        start(MqConfig::default()).await,
        start(MqConfig::default()).await,
        start(MqConfig::default()).await,
    );
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let a_names = named(&a, "Ada", &tasks, &cancel);
    let _other_names = named(&other, "Olga", &tasks, &cancel);
    other.handle().dial(addr_of(&a).await).await.expect("dial");
    let (a_id, other_id) = (a.handle().local_peer_id(), other.handle().local_peer_id());
    assert_eq!(name_of(&a_names, &other_id).await, "Olga");

    // The raw peer speaks only the bus: it is asked when it connects, and asks in turn.
    let mut asks = raw_peer.mq().subscribe(IDENTITY_TOPIC);
    raw_peer
        .handle()
        .dial(addr_of(&a).await)
        .await
        .expect("dial");
    let ask = within(10, "a's ask", asks.recv()).await.unwrap();
    assert_eq!(
        (ask.from, ask.topic.as_str(), ask.payload.get()),
        (a_id, IDENTITY_TOPIC, "null")
    );
    raw_peer
        .mq()
        .send(a_id, IDENTITY_TOPIC, raw("null"))
        .await
        .unwrap();
    let answer = within(10, "a's answer", async {
        loop {
            let m = asks.recv().await.unwrap();
            if m.topic == IDENTITY_RESPONSE_TOPIC {
                return m;
            }
        }
    })
    .await;
    let answer: IdentityResponse = serde_json::from_str(answer.payload.get()).unwrap();
    assert_eq!(
        answer,
        IdentityResponse {
            peer_id: a_id.to_base58(),
            content: "Ada".into(),
            reachable: true,
        }
    );

    // An answer claiming to be another peer names its sender, not the peer it claims.
    let claim = serde_json::json!({"peerID": other_id.to_base58(), "content": "Mallory"});
    raw_peer
        .mq()
        .send(a_id, IDENTITY_RESPONSE_TOPIC, raw(&claim.to_string()))
        .await
        .unwrap();
    assert_eq!(
        name_of(&a_names, &raw_peer.handle().local_peer_id()).await,
        "Mallory"
    );
    assert_eq!(
        a_names.resolve(&peer_to_proto(&other_id)).as_deref(),
        Some("Olga")
    );
    cancel.cancel();
}
