//! Against a peer that behaves like a Goop² receiver: one message per stream, ack, close.

use std::time::Duration;

use futures::{AsyncBufReadExt as _, AsyncWriteExt as _, StreamExt as _};
use groups::MqConfig;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::mpsc;

use super::support::{raw, start, within};

/// Starts a bare swarm whose MQ handler reads one line per stream, acks it and closes, as
/// Goop²'s `handleIncoming` does. Returns its id, address, and the ids it acked in order.
async fn goop2_receiver() -> (PeerId, Multiaddr, mpsc::Receiver<String>) {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let id = *swarm.local_peer_id();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(StreamProtocol::new("/goop/mq/1.0.0"))
        .unwrap();
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                Some((_, stream)) = incoming.next() => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut reader = futures::io::BufReader::new(stream);
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let ack = serde_json::json!({"type": "ack", "id": msg["id"], "seq": msg["seq"]});
                        let mut stream = reader.into_inner();
                        let _ = stream.write_all(format!("{ack}\n").as_bytes()).await;
                        let _ = stream.close().await;
                        let _ = tx.send(msg["id"].as_str().unwrap().to_owned()).await;
                    });
                }
            }
        }
    });
    (id, addr, rx)
}

#[tokio::test]
async fn a_pipelined_sender_delivers_everything_to_a_goop2_receiver_in_order() {
    let a = start(MqConfig::default()).await;
    let (peer, addr, mut acked) = goop2_receiver().await;
    assert_eq!(a.handle().dial(addr).await.unwrap(), peer);
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(
            a.mq()
                .enqueue(peer, "chat", raw(&i.to_string()))
                .await
                .unwrap(),
        );
    }
    let mut sent_ids = Vec::new();
    for p in pending {
        sent_ids.push(within(30, "ack", p.acked()).await.unwrap().to_string());
    }
    let mut got = Vec::new();
    while got.len() < sent_ids.len() {
        got.push(within(10, "receiver", acked.recv()).await.unwrap());
    }
    // Each stream carried the window, but the receiver read only its first message: every
    // message was taken exactly once, in order, by the retransmissions.
    assert_eq!(got, sent_ids);
    a.shutdown().await;
}
