//! Against a peer that behaves like a Goop² receiver: one message per stream, ack, close.

use std::time::Duration;

use futures::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use groups::MqConfig;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::mpsc;

use super::support::{raw, start, within};

/// Starts a bare swarm whose MQ handler reads one line per stream, acks it and closes, as
/// Goop²'s `handleIncoming` does. Returns its id, address, and the ids it acked in order.
async fn goop2_receiver() -> (PeerId, Multiaddr, mpsc::Receiver<String>) {
    paced_receiver(None).await
}

/// [`goop2_receiver`], reading at most `pace.0` bytes at a time with a pause of `pace.1`
/// after each: a slow link.
async fn paced_receiver(
    pace: Option<(usize, Duration)>,
) -> (PeerId, Multiaddr, mpsc::Receiver<String>) {
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
                        let (line, mut stream) = match pace {
                            None => {
                                let mut reader = futures::io::BufReader::new(stream);
                                let mut line = String::new();
                                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                (line.into_bytes(), reader.into_inner())
                            }
                            Some((bytes, pause)) => {
                                let mut stream = stream;
                                let mut line = Vec::new();
                                let mut buf = vec![0; bytes];
                                while !line.contains(&b'\n') {
                                    match stream.read(&mut buf).await {
                                        Ok(n) if n > 0 => line.extend_from_slice(&buf[..n]),
                                        _ => return,
                                    }
                                    tokio::time::sleep(pause).await;
                                }
                                (line, stream)
                            }
                        };
                        let msg: serde_json::Value = serde_json::from_slice(&line).unwrap();
                        let ack = serde_json::json!({"type": "ack", "id": msg["id"], "seq": msg["seq"]});
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

/// A node with a 1 s ack timeout and one attempt per message, connected to a receiver
/// reading at `pace`; with the receiver's id and the ids it acked.
async fn impatient_sender_to(
    pace: (usize, Duration),
) -> (groups::Node, PeerId, mpsc::Receiver<String>) {
    let impatient = MqConfig {
        ack_timeout: Duration::from_secs(1),
        max_attempts: 1,
        ..MqConfig::default()
    };
    let a = start(impatient).await;
    let (peer, addr, acked) = paced_receiver(Some(pace)).await;
    assert_eq!(a.handle().dial(addr).await.unwrap(), peer);
    (a, peer, acked)
}

/// A message that takes longer to write than the ack timeout, to a receiver that reads it
/// slowly but steadily, is delivered: a sender gives up on a receiver that takes nothing for
/// the timeout, not on a slow one (a 16 MiB result on a slow link).
#[tokio::test]
async fn a_large_message_to_a_slow_but_steady_reader_is_delivered() {
    // 64 KiB every 50 ms: at least 2.4 s for 3 MiB.
    let (a, peer, mut acked) = impatient_sender_to((64 * 1024, Duration::from_millis(50))).await;
    let payload = format!("\"{}\"", "x".repeat(3 * 1024 * 1024));
    let started = std::time::Instant::now();
    let sent = a.mq().enqueue(peer, "big", raw(&payload)).await.unwrap();
    let id = within(60, "ack", sent.acked()).await.expect("delivered");
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the write outlasted the timeout"
    );
    assert_eq!(
        within(10, "receiver", acked.recv()).await.unwrap(),
        id.to_string()
    );
    a.shutdown().await;
}

/// A receiver that takes nothing at all fails the send once the ack timeout passes with no
/// data taken, saying so.
#[tokio::test]
async fn a_large_message_to_a_reader_that_stops_fails_saying_so() {
    let (a, peer, _acked) = impatient_sender_to((1, Duration::from_secs(3600))).await;
    let payload = format!("\"{}\"", "x".repeat(16 * 1024 * 1024 - 1024));
    let sent = a.mq().enqueue(peer, "big", raw(&payload)).await.unwrap();
    let error = within(60, "failure", sent.acked()).await.unwrap_err();
    assert!(error.to_string().contains("took no data"), "{error}");
    a.shutdown().await;
}
