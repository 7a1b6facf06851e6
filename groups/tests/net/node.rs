//! The node: dialling, peer lists and connection events.

use groups::{MqConfig, PeerEvent};

use super::support::{addr_of, start, within};

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
