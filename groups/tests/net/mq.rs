//! The MQ bus between real swarms: order, exactly-once, Goop²-style streams, limits, errors.

use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use groups::{MqConfig, MqError};
use libp2p::{PeerId, StreamProtocol};

use super::support::{addr_of, pair, raw, start, within};

const MQ: StreamProtocol = StreamProtocol::new("/goop/mq/1.0.0");

#[tokio::test]
async fn ten_thousand_messages_arrive_in_order_exactly_once() {
    const N: u64 = 10_000;
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let a_id = a.handle().local_peer_id();
    let mut sub = b.mq().subscribe("bulk:");
    let receiver = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < N as usize {
            let m = sub.recv().await.expect("bus running");
            assert_eq!(m.from, a_id);
            assert_eq!(m.topic, "bulk:n");
            got.push(m.payload.get().parse::<u64>().unwrap());
        }
        // Nothing more may arrive: each message exactly once.
        let extra = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await;
        assert!(extra.is_err(), "unexpected extra message {extra:?}");
        got
    });
    let mq = a.mq();
    let peer = b.handle().local_peer_id();
    let mut pending = Vec::new();
    within(60, "enqueue", async {
        for i in 0..N {
            pending.push(
                mq.enqueue(peer, "bulk:n", raw(&i.to_string()))
                    .await
                    .unwrap(),
            );
        }
    })
    .await;
    within(60, "acks", async {
        for p in pending {
            p.acked().await.unwrap();
        }
    })
    .await;
    let got = within(60, "receive", receiver).await.unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn payloads_pass_untouched_and_from_is_the_authenticated_sender() {
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let c = start(MqConfig::default()).await;
    c.handle().dial(addr_of(&b).await).await.unwrap();
    let mut sub = b.mq().subscribe("test:");
    let payload =
        r#"{"big":123456789012345678901234567890,"f":1.10,"s":"é","n":null,"a":[true,{}]}"#;
    let id = a
        .mq()
        .send(b.handle().local_peer_id(), "test:foo", raw(payload))
        .await
        .unwrap();
    c.mq()
        .send(b.handle().local_peer_id(), "test:bar", raw("null"))
        .await
        .unwrap();
    let first = within(10, "first", sub.recv()).await.unwrap();
    let second = within(10, "second", sub.recv()).await.unwrap();
    let (from_a, from_c) = if first.from == a.handle().local_peer_id() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(from_a.id, id);
    assert_eq!(from_a.topic, "test:foo");
    assert_eq!(from_a.payload.get(), payload);
    assert_eq!(from_c.from, c.handle().local_peer_id());
    assert_eq!(from_c.payload.get(), "null");
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn prefix_subscriptions_only_see_their_topics_and_end_when_dropped() {
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let mut call = b.mq().subscribe("call:");
    let dropped = b.mq().subscribe("call:");
    drop(dropped);
    let peer = b.handle().local_peer_id();
    for topic in ["chat", "call:abc:offer", "call:xyz"] {
        a.mq().send(peer, topic, raw("1")).await.unwrap();
    }
    assert_eq!(
        within(5, "1", call.recv()).await.unwrap().topic,
        "call:abc:offer"
    );
    assert_eq!(within(5, "2", call.recv()).await.unwrap().topic, "call:xyz");
    a.shutdown().await;
    b.shutdown().await;
}

/// Writes lines on a raw stream to `peer`'s MQ protocol and reads `answers` lines back.
async fn raw_exchange(
    node: &groups::Node,
    peer: PeerId,
    lines: &[&str],
    answers: usize,
) -> Vec<String> {
    let mut control = node.handle().stream_control();
    let mut stream = within(10, "open", control.open_stream(peer, MQ))
        .await
        .unwrap();
    for line in lines {
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.write_all(b"\n").await.unwrap();
    }
    stream.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while got.len() < answers {
        let n = within(10, "answer", stream.read(&mut byte)).await.unwrap();
        assert!(n > 0, "stream ended after {got:?}");
        if byte[0] == b'\n' {
            got.push(String::from_utf8(std::mem::take(&mut buf)).unwrap());
        } else {
            buf.push(byte[0]);
        }
    }
    stream.close().await.unwrap();
    got
}

#[tokio::test]
async fn a_goop2_style_sender_with_one_message_per_stream_is_accepted() {
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let mut sub = b.mq().subscribe("group:");
    let peer = b.handle().local_peer_id();
    for n in 1..=3 {
        let line = format!(
            r#"{{"type":"msg","id":"6f1c-{n}","seq":{n},"topic":"group:9a:msg","payload":{{"text":"hi"}}}}"#
        );
        let answers = raw_exchange(&a, peer, &[&line], 1).await;
        assert_eq!(
            answers[0],
            format!(r#"{{"type":"ack","id":"6f1c-{n}","seq":{n}}}"#)
        );
        let m = within(5, "delivery", sub.recv()).await.unwrap();
        assert_eq!(m.from, a.handle().local_peer_id());
        assert_eq!(m.id.as_str(), format!("6f1c-{n}"));
        assert_eq!(m.payload.get(), r#"{"text":"hi"}"#);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_repeated_id_is_acknowledged_but_delivered_once() {
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let mut sub = b.mq().subscribe("");
    let peer = b.handle().local_peer_id();
    let line = r#"{"type":"msg","id":"same","seq":1,"topic":"t","payload":1}"#;
    // Acks are cumulative: one ack may answer both lines.
    let answers = raw_exchange(&a, peer, &[line, line], 1).await;
    assert_eq!(answers[0], r#"{"type":"ack","id":"same","seq":1}"#);
    // Also across streams, as after a retransmission on a new stream.
    raw_exchange(&a, peer, &[line], 1).await;
    assert_eq!(
        within(5, "first", sub.recv()).await.unwrap().id.as_str(),
        "same"
    );
    let again = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(again.is_err(), "delivered twice: {again:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_malformed_frame_is_refused_and_the_stream_keeps_working() {
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let mut sub = b.mq().subscribe("");
    let peer = b.handle().local_peer_id();
    let answers = raw_exchange(
        &a,
        peer,
        &[
            "this is not json",
            r#"{"type":"msg","id":"x","topic":"t","payload":}"#,
            r#"{"type":"msg","id":"ok","seq":3,"topic":"t","payload":[1]}"#,
        ],
        3,
    )
    .await;
    assert!(
        answers[0].contains(r#""type":"nack""#) && answers[0].contains("malformed"),
        "{answers:?}"
    );
    assert!(
        answers[1].contains("malformed") && answers[1].contains(r#""id":"x""#),
        "{answers:?}"
    );
    assert_eq!(answers[2], r#"{"type":"ack","id":"ok","seq":3}"#);
    assert_eq!(
        within(5, "delivery", sub.recv()).await.unwrap().id.as_str(),
        "ok"
    );
    // The bus still works for ordinary sends.
    a.mq().send(peer, "t", raw("2")).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_with_a_clear_error_and_the_link_keeps_working() {
    let small = MqConfig {
        max_frame_bytes: 1024,
        ..MqConfig::default()
    };
    let (a, b) = pair(MqConfig::default(), small).await;
    let mut sub = b.mq().subscribe("");
    let peer = b.handle().local_peer_id();
    a.mq().send(peer, "t", raw("1")).await.unwrap();
    let big = format!("\"{}\"", "x".repeat(64 * 1024));
    let err = within(10, "oversized send", a.mq().send(peer, "t", raw(&big)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("limit of 1024 bytes"), "{err}");
    a.mq().send(peer, "t", raw("2")).await.unwrap();
    assert_eq!(within(5, "1", sub.recv()).await.unwrap().payload.get(), "1");
    assert_eq!(within(5, "2", sub.recv()).await.unwrap().payload.get(), "2");
    assert!(
        a.handle()
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer == peer)
    );

    // The sender's own limit refuses before anything goes out.
    let huge = format!("\"{}\"", "x".repeat(proto::DEFAULT_MAX_FRAME_BYTES));
    let err = a.mq().send(peer, "t", raw(&huge)).await.unwrap_err();
    assert!(matches!(err, MqError::TooLarge { .. }), "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_send_to_an_unreachable_peer_fails_clearly_in_bounded_time() {
    let a = start(MqConfig::default()).await;
    // A peer nobody knows an address for.
    let stranger = PeerId::random();
    let started = Instant::now();
    let err = within(20, "send to stranger", a.mq().send(stranger, "t", raw("1")))
        .await
        .unwrap_err();
    assert!(matches!(err, MqError::Undeliverable { .. }), "{err}");
    assert!(err.to_string().contains("no address"), "{err}");

    // A peer whose address is known but that has gone away.
    let gone = start(MqConfig::default()).await;
    let (gone_id, gone_addr) = (gone.handle().local_peer_id(), addr_of(&gone).await);
    gone.shutdown().await;
    a.handle().add_address(gone_id, gone_addr).await.unwrap();
    let err = within(20, "send to gone peer", a.mq().send(gone_id, "t", raw("1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MqError::Undeliverable { attempts: 3, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = a
        .mq()
        .send(a.handle().local_peer_id(), "t", raw("1"))
        .await
        .unwrap_err();
    assert!(matches!(err, MqError::SelfSend), "{err}");
    a.shutdown().await;
}

#[tokio::test]
async fn a_full_subscriber_slows_the_sender_instead_of_losing_messages() {
    let tiny = MqConfig {
        subscriber_capacity: 4,
        ..MqConfig::default()
    };
    let (a, b) = pair(MqConfig::default(), tiny).await;
    let mut sub = b.mq().subscribe("");
    let peer = b.handle().local_peer_id();
    let mq = a.mq();
    let sender = tokio::spawn(async move {
        let mut pending = Vec::new();
        for i in 0..200 {
            pending.push(mq.enqueue(peer, "t", raw(&i.to_string())).await.unwrap());
        }
        for p in pending {
            p.acked().await.unwrap();
        }
    });
    // Nothing is read for a while: the sender must not have finished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sender.is_finished());
    for i in 0..200 {
        let m = within(10, "delivery", sub.recv()).await.unwrap();
        assert_eq!(m.payload.get(), i.to_string());
    }
    within(10, "sender", sender).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_send_after_the_receiver_stopped_fails_instead_of_hanging() {
    let (a, b) = pair(MqConfig::default(), MqConfig::default()).await;
    let peer = b.handle().local_peer_id();
    a.mq().send(peer, "t", raw("1")).await.unwrap();
    // The connection drops; the next send dials the remembered address, which refuses.
    let mut events = a.handle().peer_events();
    b.shutdown().await;
    within(10, "disconnect", events.recv()).await.unwrap();
    let err = a.mq().send(peer, "t", raw("2")).await.unwrap_err();
    assert!(matches!(err, MqError::Undeliverable { .. }), "{err}");
    a.shutdown().await;
}

#[tokio::test]
async fn links_that_go_idle_and_retire_lose_and_reorder_nothing() {
    let quick = MqConfig {
        link_idle: Duration::from_millis(5),
        ..MqConfig::default()
    };
    let (a, b) = pair(quick, MqConfig::default()).await;
    let mut sub = b.mq().subscribe("");
    let peer = b.handle().local_peer_id();
    let mq = a.mq();
    let sender = tokio::spawn(async move {
        let mut pending = Vec::new();
        for i in 0..300u32 {
            pending.push(mq.enqueue(peer, "t", raw(&i.to_string())).await.unwrap());
            if i % 7 == 0 {
                // Long enough for the link to go idle and retire between some messages.
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
        }
        for p in pending {
            p.acked().await.unwrap();
        }
    });
    for i in 0..300u32 {
        let m = within(20, "delivery", sub.recv()).await.unwrap();
        assert_eq!(m.payload.get(), i.to_string());
    }
    within(20, "sender", sender).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

/// A long message written slowly, over a stream silent for less than the receiver's idle
/// time between pieces but longer than it in all, is received: idle means nothing arriving.
#[tokio::test]
async fn a_message_arriving_slowly_is_not_cut_off_as_idle() {
    let patient = MqConfig {
        inbound_idle: Duration::from_secs(1),
        ..MqConfig::default()
    };
    let (a, b) = pair(MqConfig::default(), patient).await;
    let mut sub = b.mq().subscribe("slow");
    let peer = b.handle().local_peer_id();
    let mut control = a.handle().stream_control();
    let mut stream = within(10, "open", control.open_stream(peer, MQ))
        .await
        .unwrap();
    let line = format!(
        r#"{{"type":"msg","id":"slow-1","seq":1,"topic":"slow","payload":"{}"}}"#,
        "y".repeat(256 * 1024)
    );
    // 32 KiB every 300 ms: about 2.4 s in all, more than twice the idle time.
    let started = Instant::now();
    for piece in line.as_bytes().chunks(32 * 1024) {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stream.write_all(b"\n").await.unwrap();
    stream.flush().await.unwrap();
    let m = within(10, "delivery", sub.recv()).await.unwrap();
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(
        (m.id.as_str(), m.payload.get().len()),
        ("slow-1", 256 * 1024 + 2)
    );
    a.shutdown().await;
    b.shutdown().await;
}
