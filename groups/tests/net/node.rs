//! The node: dialling, peer lists and connection events.

use groups::{MqConfig, PeerEvent};
use libp2p::multiaddr::Protocol;

use super::support::{addr_of, raw, start, start_on, within};

#[tokio::test]
async fn dialling_connects_both_sides_and_reports_events() {
    let a = start(MqConfig::default()).await;
    let b = start(MqConfig::default()).await;
    let mut events = b.handle().peer_events();
    let peer = within(10, "dial", a.handle().dial(addr_of(&b).await))
        .await
        .unwrap();
    assert_eq!(peer, b.handle().local_peer_id());
    let event = within(10, "connected event", events.recv()).await.unwrap();
    assert!(
        matches!(event, PeerEvent::Connected { peer, .. } if peer == a.handle().local_peer_id()),
        "{event:?}"
    );
    let peers = a.handle().peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer, b.handle().local_peer_id());
    assert!(!peers[0].addrs.is_empty());

    a.shutdown().await;
    let event = within(10, "disconnected event", events.recv())
        .await
        .unwrap();
    assert!(matches!(event, PeerEvent::Disconnected { .. }), "{event:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn dialling_a_closed_port_fails_with_the_address_in_the_error() {
    let a = start(MqConfig::default()).await;
    let b = start(MqConfig::default()).await;
    let addr = addr_of(&b).await;
    b.shutdown().await;
    let err = within(10, "dial", a.handle().dial(addr.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    a.shutdown().await;
}

#[tokio::test]
async fn a_node_on_tcp_and_quic_is_reached_over_quic_and_carries_the_bus() {
    const BOTH: [&str; 2] = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];
    let a = start_on(&["/ip4/127.0.0.1/udp/0/quic-v1"], MqConfig::default()).await;
    let b = start_on(&BOTH, MqConfig::default()).await;
    let addrs = b.handle().listen_addrs().await.unwrap();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    let is_quic = |addr: &libp2p::Multiaddr| addr.iter().any(|p| p == Protocol::QuicV1);
    let quic = addrs
        .iter()
        .find(|a| is_quic(a))
        .expect("a QUIC address")
        .clone();
    assert!(
        addrs.iter().any(|a| !is_quic(a)),
        "a TCP address too: {addrs:?}"
    );

    let peer = within(10, "dial over QUIC", a.handle().dial(quic))
        .await
        .unwrap();
    assert_eq!(peer, b.handle().local_peer_id());
    let peers = a.handle().peers().await.unwrap();
    assert!(peers[0].addrs.iter().all(is_quic), "{peers:?}");

    // Both ways over the one QUIC connection: a's stream to b, b's answer on a stream of its own.
    let mut at_b = b.mq().subscribe("quic:");
    let mut at_a = a.mq().subscribe("quic:");
    let sent = a
        .mq()
        .enqueue(peer, "quic:ping", raw("12345678901234567890"))
        .await
        .unwrap();
    within(10, "ack", sent.acked()).await.unwrap();
    let got = within(10, "ping", at_b.recv()).await.unwrap();
    assert_eq!(
        (got.from, got.payload.get()),
        (a.handle().local_peer_id(), "12345678901234567890")
    );
    let sent = b
        .mq()
        .enqueue(got.from, "quic:pong", raw("2"))
        .await
        .unwrap();
    within(10, "ack", sent.acked()).await.unwrap();
    let got = within(10, "pong", at_a.recv()).await.unwrap();
    assert_eq!((got.topic.as_str(), got.payload.get()), ("quic:pong", "2"));

    a.shutdown().await;
    b.shutdown().await;
}
