//! Chat rooms between real `goop node` processes on loopback, over HTTP: each message reaches
//! every peer and its event stream once, with its true author; joiners and a restarted host
//! have the history; a room keeps its newest 100 messages; leave, close and bad input.

use serde_json::json;

use super::support::{
    Answer, Events, Peer, assert_error, dial, get, ok, pairs, post, restart_killed, start, until,
};

/// Short liveness so a lost host is noticed within about a second.
const FAST_PINGS: [&str; 2] = ["--group-ping-ms", "300"];

async fn peer(label: &str) -> Peer {
    start(&[FAST_PINGS[0], FAST_PINGS[1], "--label", label]).await
}

async fn create(host: &Peer, name: &str, description: &str) -> String {
    let body = json!({ "name": name, "description": description }).to_string();
    let room = ok(&post(&host.ready.api, "/api/chat/rooms/create", &body).await);
    assert_eq!(room["name"], name, "{room}");
    assert_eq!(room["host"], host.ready.peer_id.as_str(), "{room}");
    room["id"].as_str().unwrap().to_owned()
}

async fn join(member: &Peer, host: &Peer, room: &str) {
    dial(member, host).await;
    let body = json!({ "host_peer_id": host.ready.peer_id, "group_id": room }).to_string();
    let answer = ok(&post(&member.ready.api, "/api/chat/rooms/join", &body).await);
    assert_eq!(answer["status"], "joined");
}

async fn send(peer: &Peer, room: &str, text: &str) -> Answer {
    let body = json!({ "group_id": room, "text": text }).to_string();
    post(&peer.ready.api, "/api/chat/rooms/send", &body).await
}

async fn state(peer: &Peer, room: &str) -> Answer {
    get(
        &peer.ready.api,
        &format!("/api/chat/rooms/state?group_id={room}"),
    )
    .await
}

/// `(from, text)` of the room's messages as `peer` has them, oldest first.
async fn texts(peer: &Peer, room: &str) -> Vec<(String, String)> {
    pairs(&ok(&state(peer, room).await)["messages"], "from", "text")
}

fn line(peer: &Peer, text: &str) -> (String, String) {
    (peer.ready.peer_id.clone(), text.to_owned())
}

#[tokio::test]
async fn messages_reach_every_peer_once_with_their_true_author() {
    let (host, b, c) = (peer("host").await, peer("bea").await, peer("cas").await);
    let room = create(&host, "lobby", "where we meet").await;
    join(&b, &host, &room).await;
    join(&c, &host, &room).await;
    let fresh = ok(&state(&c, &room).await);
    assert_eq!(fresh["messages"], json!([]), "{fresh}");
    let mut c_events = Events::open_path(&c.ready.api, "/api/chat/events").await;
    let mut b_events = Events::open_path(&b.ready.api, "/api/chat/events").await;

    let sent = ok(&send(&b, &room, "hello from b").await);
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["message"]["from"], b.ready.peer_id.as_str());
    assert_eq!(sent["message"]["from_name"], "bea");
    // Each peer keeps messages in the order they reached it: each next message is sent once
    // the previous one is everywhere, so that order is the same on all three.
    let everywhere = async |count: usize| {
        for p in [&host, &b, &c] {
            until(10, &format!("{count} message(s) everywhere"), async || {
                texts(p, &room).await.len() >= count
            })
            .await;
        }
    };
    everywhere(1).await;
    ok(&send(&host, &room, "welcome").await);
    everywhere(2).await;
    ok(&send(&c, &room, "hi all").await);
    let want = vec![
        line(&b, "hello from b"),
        line(&host, "welcome"),
        line(&c, "hi all"),
    ];
    for (who, p) in [("host", &host), ("b", &b), ("c", &c)] {
        until(10, &format!("{who} has the three messages"), async || {
            texts(p, &room).await.len() >= 3
        })
        .await;
        let got = texts(p, &room).await;
        assert_eq!(got, want, "{who}");
    }
    // The event streams show each new message once, the sender's own included.
    for events in [&mut c_events, &mut b_events] {
        events.wait_for(r#""text":"hi all""#).await;
        for text in ["hello from b", "welcome", "hi all"] {
            let needle = format!(r#""text":"{text}""#);
            assert_eq!(events.seen.matches(&needle).count(), 1, "{}", events.seen);
        }
        assert_eq!(events.seen.matches("event: message").count(), 3);
        assert!(
            events
                .seen
                .contains(&format!(r#"{{"group_id":"{room}","message":{{"#))
        );
    }

    // Nothing circles: a moment later, still three each.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for p in [&host, &b, &c] {
        assert_eq!(texts(p, &room).await.len(), 3);
    }

    // The room's members, with the names they go by.
    let view = ok(&state(&host, &room).await)["room"].clone();
    assert_eq!(view["description"], "where we meet", "{view}");
    let names = pairs(&view["members"], "peer_id", "name");
    for (p, name) in [(&host, "host"), (&b, "bea"), (&c, "cas")] {
        assert!(
            names.contains(&(p.ready.peer_id.clone(), name.to_owned())),
            "{names:?}"
        );
    }

    // A member that claims another's id through the group layer is still itself.
    let forged = json!({
        "group_id": room,
        "payload": {"group_type": "chat", "chat": {"action": "msg", "message": {
            "id": "1-someone", "from": host.ready.peer_id, "from_name": "host",
            "text": "i am the host", "timestamp": 1}}}
    });
    ok(&post(&b.ready.api, "/api/groups/send", &forged.to_string()).await);
    until(10, "c has the forged message", async || {
        texts(&c, &room).await.len() == 4
    })
    .await;
    let last = ok(&state(&c, &room).await)["messages"][3].clone();
    assert_eq!(last["from"], b.ready.peer_id.as_str(), "{last}");
    assert_eq!(last["id"], format!("1-{}", b.ready.peer_id), "{last}");

    // Leaving forgets the room; the host sees one member fewer.
    let body = json!({ "group_id": room }).to_string();
    ok(&post(&c.ready.api, "/api/chat/rooms/leave", &body).await);
    assert_error(&state(&c, &room).await, 404, "not_found");
    until(10, "the host sees c gone", async || {
        let view = ok(&state(&host, &room).await);
        view["room"]["members"].as_array().unwrap().len() == 2
    })
    .await;

    // Only the host closes; then the members lose the room too.
    assert_error(
        &post(&b.ready.api, "/api/chat/rooms/close", &body).await,
        409,
        "not_host",
    );
    ok(&post(&host.ready.api, "/api/chat/rooms/close", &body).await);
    assert_error(&state(&host, &room).await, 404, "not_found");
    until(10, "b loses the closed room", async || {
        state(&b, &room).await.status == 404
    })
    .await;
    let rooms = ok(&get(&b.ready.api, "/api/chat/rooms").await);
    assert_eq!(rooms, json!([]), "{rooms}");
}

#[tokio::test]
async fn joiners_and_a_restarted_host_have_the_newest_hundred_messages() {
    let host = peer("host").await;
    let room = create(&host, "archive", "old talk").await;
    for n in 1..=120 {
        ok(&send(&host, &room, &format!("message {n}")).await);
    }
    let kept = texts(&host, &room).await;
    assert_eq!(kept.len(), 100);
    assert_eq!(kept[0].1, "message 21");
    assert_eq!(kept[99].1, "message 120");

    // A late joiner gets the history and the description from the host.
    let late = peer("late").await;
    join(&late, &host, &room).await;
    until(10, "the joiner has the history", async || {
        texts(&late, &room).await == kept
    })
    .await;
    let view = ok(&state(&late, &room).await)["room"].clone();
    assert_eq!(view["description"], "old talk", "{view}");
    assert_eq!(view["name"], "archive", "{view}");

    // kill -9 the host and start it on the same data directory and port: the room, its
    // history and its member come back.
    let host = restart_killed(host, &[FAST_PINGS[0], FAST_PINGS[1], "--label", "host"]).await;
    assert_eq!(texts(&host, &room).await, kept);
    until(15, "the member is back in the room", async || {
        ok(&state(&host, &room).await)["room"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["peer_id"] == late.ready.peer_id.as_str())
    })
    .await;
    until(10, "the member sees its host again", async || {
        let subs = get(&late.ready.api, "/api/groups/subscriptions")
            .await
            .json();
        subs["subscriptions"][0]["host_reachable"] == true
    })
    .await;
    ok(&send(&late, &room, "still here").await);
    until(10, "the host has the member's new message", async || {
        texts(&host, &room).await.last() == Some(&line(&late, "still here"))
    })
    .await;
    assert_eq!(texts(&host, &room).await.len(), 100);

    // Leaving the group through the group routes forgets the room too.
    let body = json!({ "group_id": room }).to_string();
    ok(&post(&late.ready.api, "/api/groups/leave", &body).await);
    until(10, "the member forgets the room it left", async || {
        ok(&get(&late.ready.api, "/api/chat/rooms").await) == json!([])
    })
    .await;
    assert_error(&state(&late, &room).await, 404, "not_found");
}

#[tokio::test]
async fn bad_chat_input_is_refused() {
    let host = peer("host").await;
    let api = &host.ready.api;
    assert_error(
        &post(api, "/api/chat/rooms/create", r#"{"name":"  "}"#).await,
        400,
        "invalid_request",
    );
    assert_error(
        &post(api, "/api/chat/rooms/create", r#"{"name":"x","colour":1}"#).await,
        400,
        "invalid_json",
    );
    let room = create(&host, "r", "").await;
    assert_error(&send(&host, &room, "").await, 400, "invalid_request");
    assert_error(
        &send(&host, &room, &"x".repeat(4097)).await,
        400,
        "too_long",
    );
    ok(&send(&host, &room, &"x".repeat(4096)).await);
    assert_error(
        &send(&host, "0123456789abcdef", "hi").await,
        404,
        "not_found",
    );
    assert_error(
        &post(api, "/api/chat/rooms/send", r#"{"text":"hi"}"#).await,
        400,
        "bad_request",
    );
    assert_error(&get(api, "/api/chat/rooms/state").await, 400, "bad_request");
    let body = json!({ "group_id": room }).to_string();
    assert_error(
        &post(api, "/api/chat/rooms/leave", &body).await,
        409,
        "is_host",
    );
    assert_eq!(texts(&host, &room).await.len(), 1);
}
