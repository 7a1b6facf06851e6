//! Groups between real `goop node` processes on loopback, driven over HTTP and watched on
//! `/api/groups/events`: membership, relay, refusals with their reasons, liveness across a
//! `kill -9`, and bad input from the network.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{
    Answer, Events, Peer, assert_error, dial, get, http, pairs, post, start, start_in, temp_dir,
    until,
};

/// Short liveness so a lost member or host is noticed within about a second.
const FAST_PINGS: &[&str] = &["--group-ping-ms", "300"];

async fn peer() -> Peer {
    start(FAST_PINGS).await
}

async fn create(host: &Peer, body: Value) -> String {
    let answer = post(&host.ready.api, "/api/groups", &body.to_string()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = answer.json();
    assert_eq!(answer["status"], "created");
    answer["id"].as_str().unwrap().to_owned()
}

/// A group named `name` that its host has joined too.
async fn create_joined(host: &Peer, name: &str) -> String {
    let group = create(host, json!({ "name": name })).await;
    let body = json!({ "group_id": group }).to_string();
    let joined = post(&host.ready.api, "/api/groups/join-own", &body).await;
    assert_eq!(joined.status, 200, "{joined:?}");
    group
}

async fn join(member: &Peer, host: &Peer, group: &str) -> Answer {
    let body = json!({ "host_peer_id": host.ready.peer_id, "group_id": group }).to_string();
    post(&member.ready.api, "/api/groups/join", &body).await
}

/// `(peer_id, role)` of the members of a group, as `peer` sees them.
async fn members(peer: &Peer, group: &str) -> Vec<(String, String)> {
    let answer = get(
        &peer.ready.api,
        &format!("/api/groups/members?group_id={group}"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    pairs(&answer.json(), "peer_id", "role")
}

async fn member_ids(peer: &Peer, group: &str) -> Vec<String> {
    let mut ids: Vec<String> = members(peer, group)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<&str>) -> Vec<String> {
    ids.sort_unstable();
    ids.into_iter().map(str::to_owned).collect()
}

/// The `data:` lines of the `event: <kind>` events seen so far, parsed.
fn events_of(events: &Events, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut current = None;
    for line in events.seen.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            current = Some(name.trim().to_owned());
        } else if let Some(data) = line.strip_prefix("data: ")
            && current.as_deref() == Some(kind)
        {
            out.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")));
        }
    }
    out
}

#[tokio::test]
async fn members_join_relay_change_roles_and_leave() {
    let (host, a, b) = tokio::join!(peer(), peer(), peer());
    tokio::join!(dial(&a, &host), dial(&b, &host));
    let group = create(&host, json!({ "name": "room", "group_type": "chat" })).await;

    assert_eq!(join(&a, &host, &group).await.json()["status"], "joined");
    assert_eq!(join(&b, &host, &group).await.json()["status"], "joined");
    assert_eq!(
        member_ids(&host, &group).await,
        sorted(vec![&a.ready.peer_id, &b.ready.peer_id])
    );
    let listed = get(&host.ready.api, "/api/groups").await.json();
    assert_eq!(listed[0]["id"], group.as_str());
    assert_eq!(listed[0]["member_count"], 2);
    assert_eq!(listed[0]["group_type"], "chat");
    let subs = get(&a.ready.api, "/api/groups/subscriptions").await.json();
    assert_eq!(subs["subscriptions"][0]["group_id"], group.as_str());
    assert_eq!(subs["subscriptions"][0]["host_reachable"], true);
    assert_eq!(subs["subscriptions"][0]["role"], "viewer");

    // Relay: what a sends reaches b, in order, once each, with a as the author.
    let mut b_events = Events::open_path(&b.ready.api, "/api/groups/events").await;
    const N: usize = 200;
    for n in 0..N {
        let body = json!({ "group_id": group, "payload": { "n": n } }).to_string();
        let sent = post(&a.ready.api, "/api/groups/send", &body).await;
        assert_eq!(sent.status, 200, "{sent:?}");
    }
    b_events.wait_for(&format!(r#""n":{}"#, N - 1)).await;
    let msgs = events_of(&b_events, "msg");
    let ns: Vec<u64> = msgs
        .iter()
        .map(|m| m["payload"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..N as u64).collect::<Vec<_>>());
    for m in &msgs {
        assert_eq!(m["type"], "msg");
        assert_eq!(m["group"], group.as_str());
        assert_eq!(m["from"], a.ready.peer_id.as_str());
    }

    // The host sends as itself.
    let body = json!({ "group_id": group, "payload": { "from_host": true } }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/send", &body)
            .await
            .status,
        200
    );
    b_events.wait_for("from_host").await;
    let last = events_of(&b_events, "msg").pop().unwrap();
    assert_eq!(last["from"], host.ready.peer_id.as_str());

    // Roles: free while the group has no role list, then only the listed ones.
    let set_role = |peer: &str, role: &str| {
        json!({ "group_id": group, "peer_id": peer, "role": role }).to_string()
    };
    let answer = post(
        &host.ready.api,
        "/api/groups/set-role",
        &set_role(&b.ready.peer_id, "editor"),
    )
    .await;
    assert_eq!(answer.json()["status"], "ok");
    until(5, "b sees its new role", async || {
        let subs = get(&b.ready.api, "/api/groups/subscriptions").await.json();
        subs["subscriptions"][0]["role"] == "editor"
    })
    .await;
    let roles = json!({ "group_id": group, "roles": ["viewer", "editor"] }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/set-roles", &roles)
            .await
            .status,
        200
    );
    let refused = post(
        &host.ready.api,
        "/api/groups/set-role",
        &set_role(&b.ready.peer_id, "admin"),
    )
    .await;
    assert_error(&refused, 400, "unknown_role");
    let missing = post(
        &host.ready.api,
        "/api/groups/set-role",
        r#"{"group_id":"x"}"#,
    )
    .await;
    assert_error(&missing, 400, "bad_request");
    // A group type with a line break would write a line of its own into the log.
    let forged = json!({ "name": "x", "group_type": "x\n2026-11-22T00:00:00Z ERROR forged" });
    let forged = post(&host.ready.api, "/api/groups", &forged.to_string()).await;
    assert_error(&forged, 400, "invalid_request");

    // Kick: b is told the group is over for it; the host is left with a.
    let kick = json!({ "group_id": group, "peer_id": b.ready.peer_id }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/kick", &kick)
            .await
            .json()["status"],
        "kicked"
    );
    b_events.wait_for("event: close").await;
    assert_eq!(
        member_ids(&host, &group).await,
        sorted(vec![&a.ready.peer_id])
    );
    let again = post(&host.ready.api, "/api/groups/kick", &kick).await;
    assert_error(&again, 404, "not_member");
    // And banned: b's join is refused until the host lifts the ban.
    let refused = join(&b, &host, &group).await;
    assert_ne!(refused.status, 200, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "forbidden", "{refused:?}");
    let listed = get(&host.ready.api, "/api/groups").await.json();
    assert_eq!(listed[0]["banned"], json!([b.ready.peer_id]), "{listed}");
    assert_eq!(
        post(&host.ready.api, "/api/groups/unban", &kick)
            .await
            .json()["status"],
        "unbanned"
    );
    let again = post(&host.ready.api, "/api/groups/unban", &kick).await;
    assert_error(&again, 400, "not_banned");
    assert_eq!(join(&b, &host, &group).await.json()["status"], "joined");
    assert_eq!(
        post(&host.ready.api, "/api/groups/kick", &kick)
            .await
            .json()["status"],
        "kicked"
    );
    until(5, "the host sees b kicked again", async || {
        member_ids(&host, &group).await == sorted(vec![&a.ready.peer_id])
    })
    .await;

    // Leave.
    let leave = json!({ "group_id": group }).to_string();
    assert_eq!(
        post(&a.ready.api, "/api/groups/leave", &leave).await.json()["status"],
        "left"
    );
    until(5, "the host sees a leave", async || {
        member_ids(&host, &group).await.is_empty()
    })
    .await;
    let subs = get(&a.ready.api, "/api/groups/subscriptions").await.json();
    assert_eq!(subs["subscriptions"], json!([]), "{subs}");

    // Close, then a join to a group the host no longer has is answered, not left hanging.
    assert_eq!(
        post(&host.ready.api, "/api/groups/close", &leave)
            .await
            .json()["status"],
        "closed"
    );
    assert_eq!(get(&host.ready.api, "/api/groups").await.body, "[]");
    let started = Instant::now();
    // The host refused: 502 with its reason.
    assert_error(&join(&a, &host, &group).await, 502, "unknown_group");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let closed_again = post(&host.ready.api, "/api/groups/close", &leave).await;
    assert_error(&closed_again, 404, "unknown_group");
}

#[tokio::test]
async fn full_and_invite_only_groups_refuse_with_their_reason() {
    let (host, a, b) = tokio::join!(peer(), peer(), peer());
    tokio::join!(dial(&a, &host), dial(&b, &host));

    let small = create(&host, json!({ "name": "small", "max_members": 1 })).await;
    assert_eq!(join(&a, &host, &small).await.status, 200);
    assert_error(&join(&b, &host, &small).await, 502, "full");
    // A member joining again is not refused as full.
    assert_eq!(join(&a, &host, &small).await.status, 200);

    let club = create(
        &host,
        json!({ "name": "club", "admission": "invite", "default_role": "player" }),
    )
    .await;
    assert_error(&join(&b, &host, &club).await, 502, "not_invited");
    let invite = json!({ "group_id": club, "peer_id": b.ready.peer_id }).to_string();
    let invited = post(&host.ready.api, "/api/groups/invite", &invite).await;
    assert_eq!(invited.json()["status"], "invited", "{invited:?}");
    let invitations = get(&b.ready.api, "/api/groups/invitations").await.json();
    assert_eq!(invitations[0]["group_id"], club.as_str());
    assert_eq!(invitations[0]["host_peer_id"], host.ready.peer_id.as_str());
    assert_eq!(join(&b, &host, &club).await.status, 200);
    assert_eq!(
        members(&host, &club).await,
        vec![(b.ready.peer_id.clone(), "player".to_owned())]
    );

    // Discovery lists open groups, not invite-only ones, as a typed request between the peers.
    let rows = get(
        &b.ready.api,
        &format!("/api/groups/discover?peer={}", host.ready.peer_id),
    )
    .await;
    assert_eq!(rows.status, 200, "{rows:?}");
    let rows = rows.json();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small"], "{rows}");
    assert_eq!(rows[0]["owner"], host.ready.peer_id.as_str());
    let bad = get(&b.ready.api, "/api/groups/discover?peer=nonsense").await;
    assert_error(&bad, 400, "invalid_peer_id");

    // Closing tells the members: the subscription goes away on their side too.
    let close = json!({ "group_id": small }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/close", &close)
            .await
            .status,
        200
    );
    until(5, "the member learns the group is closed", async || {
        let subs = get(&a.ready.api, "/api/groups/subscriptions").await.json();
        subs["subscriptions"] == json!([]) && subs["active_groups"] == json!([])
    })
    .await;

    // Bad bodies.
    assert_error(
        &post(&host.ready.api, "/api/groups", "{}").await,
        400,
        "bad_request",
    );
    assert_error(
        &post(&host.ready.api, "/api/groups", "{nope").await,
        400,
        "invalid_json",
    );
    assert_error(
        &post(&a.ready.api, "/api/groups/join", "{}").await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn a_killed_member_is_dropped_and_a_restarted_host_gets_its_members_back() {
    let (host, a, c) = tokio::join!(peer(), peer(), peer());
    tokio::join!(dial(&a, &host), dial(&c, &host));
    let group = create(&host, json!({ "name": "durable" })).await;
    assert_eq!(join(&a, &host, &group).await.status, 200);
    assert_eq!(join(&c, &host, &group).await.status, 200);

    a.kill_and_logs().await;
    until(10, "the host drops the killed member", async || {
        member_ids(&host, &group).await == sorted(vec![&c.ready.peer_id])
    })
    .await;

    // kill -9 the host, then start it again on the same data directory and port.
    let port = host.ready.listen[0].split('/').nth(4).unwrap().to_owned();
    let data_dir = host.data_dir.clone();
    let host_id = host.ready.peer_id.clone();
    host.kill_keeping_data().await;
    until(10, "the member sees its host gone", async || {
        let subs = get(&c.ready.api, "/api/groups/subscriptions").await.json();
        subs["subscriptions"][0]["host_reachable"] == false
    })
    .await;
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut args = FAST_PINGS.to_vec();
    args.extend(["--listen", &listen]);
    let host = start_in(data_dir, &args).await;
    assert_eq!(host.ready.peer_id, host_id);
    let listed = get(&host.ready.api, "/api/groups").await.json();
    assert_eq!(listed[0]["id"], group.as_str(), "the group is restored");
    until(15, "the member comes back by itself", async || {
        member_ids(&host, &group).await == sorted(vec![&c.ready.peer_id])
    })
    .await;
    until(5, "the member sees its host again", async || {
        let subs = get(&c.ready.api, "/api/groups/subscriptions").await.json();
        subs["subscriptions"][0]["host_reachable"] == true
    })
    .await;
}

#[tokio::test]
async fn bad_input_from_the_network_is_refused_and_logged() {
    let config = temp_dir("config");
    std::fs::create_dir_all(&config).unwrap();
    let config_file = config.join("goop.json");
    std::fs::write(&config_file, r#"{"max_message_bytes": 4096}"#).unwrap();
    let config_arg = config_file.to_str().unwrap().to_owned();
    let mut host_args = FAST_PINGS.to_vec();
    host_args.extend(["--config", &config_arg]);
    let (host, a, b, x) = tokio::join!(start(&host_args), peer(), peer(), peer());
    tokio::join!(
        dial(&a, &host),
        dial(&b, &host),
        dial(&x, &host),
        dial(&x, &a)
    );
    let group = create(&host, json!({ "name": "guarded" })).await;
    assert_eq!(join(&a, &host, &group).await.status, 200);
    assert_eq!(join(&b, &host, &group).await.status, 200);
    let mut a_events = Events::open_path(&a.ready.api, "/api/groups/events").await;

    let mq_send = async |from: &Peer, to: &Peer, topic: String, payload: &str| {
        let body = format!(
            r#"{{"peer_id":"{}","topic":"{topic}","payload":{payload}}}"#,
            to.ready.peer_id
        );
        post(&from.ready.api, "/api/mq/send", &body).await
    };
    let msg_topic = format!("group:{group}:msg");
    // A non-member's message to the host, well-formed.
    let evil = format!(r#"{{"type":"msg","group":"{group}","payload":{{"evil":1}}}}"#);
    assert_eq!(
        mq_send(&x, &host, msg_topic.clone(), &evil).await.status,
        200
    );
    // Malformed group payloads.
    for junk in [r#""not an object""#, "[1,2,3]", r#"{"type":"msg"}"#, "null"] {
        assert_eq!(
            mq_send(&x, &host, msg_topic.clone(), junk).await.status,
            200
        );
        assert_eq!(
            mq_send(&b, &host, msg_topic.clone(), junk).await.status,
            200
        );
    }
    // A forged close and member list sent to a member by a peer that is not the host.
    let close = format!(r#"{{"type":"close","group":"{group}"}}"#);
    assert_eq!(
        mq_send(&x, &a, format!("group:{group}:close"), &close)
            .await
            .status,
        200
    );
    let fake = format!(r#"{{"type":"members","group":"{group}","payload":{{"members":[]}}}}"#);
    assert_eq!(
        mq_send(&x, &a, format!("group:{group}:members"), &fake)
            .await
            .status,
        200
    );
    // A message over the host's size limit is refused; the sender stays a member.
    let big = json!({ "group_id": group, "payload": { "blob": "x".repeat(8 * 1024) } });
    let refused = post(&b.ready.api, "/api/groups/send", &big.to_string()).await;
    assert_error(&refused, 502, "refused");
    // A peer that is not a member cannot send through its own API either.
    let not_joined = json!({ "group_id": group, "payload": 1 }).to_string();
    assert_error(
        &post(&x.ready.api, "/api/groups/send", &not_joined).await,
        404,
        "not_joined",
    );

    // The group still works, and nothing of the above reached the member.
    let after = json!({ "group_id": group, "payload": { "after": true } }).to_string();
    assert_eq!(
        post(&b.ready.api, "/api/groups/send", &after).await.status,
        200
    );
    a_events.wait_for("after").await;
    assert!(!a_events.seen.contains("evil"), "{}", a_events.seen);
    assert!(!a_events.seen.contains("event: close"), "{}", a_events.seen);
    assert_eq!(
        member_ids(&host, &group).await,
        sorted(vec![&a.ready.peer_id, &b.ready.peer_id])
    );
    let subs = get(&a.ready.api, "/api/groups/subscriptions").await.json();
    assert_eq!(subs["subscriptions"][0]["group_id"], group.as_str());
    assert_eq!(subs["subscriptions"][0]["member_count"], 2);

    let host_logs = host.kill_and_logs().await;
    assert!(
        host_logs.contains("message from a non-member refused"),
        "{host_logs}"
    );
    let a_logs = a.kill_and_logs().await;
    assert!(a_logs.contains("not the host; dropped"), "{a_logs}");
    let _ = std::fs::remove_dir_all(config);
}

#[tokio::test]
async fn a_member_over_the_hosts_relay_limit_hears_that_it_was_rate_limited() {
    // 5 messages per second, in bursts of 20.
    let limited = [FAST_PINGS[0], FAST_PINGS[1], "--group-relay-rate", "5"];
    let (host, a) = tokio::join!(start(&limited), peer());
    dial(&a, &host).await;
    let group = create_joined(&host, "limited").await;
    assert_eq!(join(&a, &host, &group).await.status, 200);
    let mut a_events = Events::open_path(&a.ready.api, "/api/groups/events").await;
    let mut host_events = Events::open_path(&host.ready.api, "/api/groups/events").await;
    for n in 0..60 {
        let body = json!({ "group_id": group, "payload": { "n": n } }).to_string();
        assert_eq!(
            post(&a.ready.api, "/api/groups/send", &body).await.status,
            200
        );
    }
    a_events.wait_for("rate_limited").await;
    let told = events_of(&a_events, "error");
    assert_eq!(told[0]["payload"]["code"], "rate_limited", "{told:?}");
    // The burst went through; the host relayed no more than the limit allows.
    host_events.wait_for(r#""n":19"#).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relayed = events_of(&host_events, "msg").len();
    assert!((20..50).contains(&relayed), "{relayed} relayed");
}

#[tokio::test]
async fn members_and_peers_are_listed_with_the_names_they_give() {
    let (hal, ada) = (
        [FAST_PINGS[0], FAST_PINGS[1], "--label", "Hal"],
        [FAST_PINGS[0], FAST_PINGS[1], "--label", " Ada\u{7} "],
    );
    let (host, a, b) = tokio::join!(start(&hal), start(&ada), peer());
    tokio::join!(dial(&a, &host), dial(&b, &host));
    let group = create_joined(&host, "named").await;
    assert_eq!(join(&a, &host, &group).await.status, 200);
    assert_eq!(join(&b, &host, &group).await.status, 200);

    // `(peer_id, name or "")` of the members as `peer` lists them.
    let names = async |peer: &Peer, path: &str| {
        let listed = get(&peer.ready.api, path).await;
        assert_eq!(listed.status, 200, "{listed:?}");
        let listed = listed.json();
        let members = if path == "/api/groups" {
            listed[0]["members"].clone()
        } else {
            listed
        };
        let mut names: Vec<(String, String)> = members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let id = m["peer_id"].as_str().unwrap().to_owned();
                (id, m["name"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        names.sort();
        names
    };
    // Each named peer's name, cleaned; a peer without a label has none.
    let mut expected = vec![
        (host.ready.peer_id.clone(), "Hal".to_owned()),
        (a.ready.peer_id.clone(), "Ada".to_owned()),
        (b.ready.peer_id.clone(), String::new()),
    ];
    expected.sort();
    let members_path = format!("/api/groups/members?group_id={group}");
    until(10, "the host lists its members' names", async || {
        names(&host, "/api/groups").await == expected
    })
    .await;
    assert_eq!(names(&host, &members_path).await, expected);
    until(10, "a member lists the others' names", async || {
        names(&b, &members_path).await == expected
    })
    .await;
    let peers = get(&a.ready.api, "/api/peers").await.json();
    let host_entry = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == host.ready.peer_id.as_str())
        .unwrap_or_else(|| panic!("a is connected to the host: {peers}"));
    assert_eq!(host_entry["name"], "Hal", "{peers}");
}

#[tokio::test]
async fn the_host_joins_its_own_group_and_changes_its_settings() {
    let (host, a) = tokio::join!(peer(), peer());
    dial(&a, &host).await;
    let group = create(&host, json!({ "name": "settings" })).await;
    let other = create(&a, json!({ "name": "settings" })).await;
    assert_ne!(group, other, "group ids differ between peers");
    let body = json!({ "group_id": group }).to_string();

    let joined = post(&host.ready.api, "/api/groups/join-own", &body).await;
    assert_eq!(joined.json()["status"], "joined");
    assert_eq!(
        members(&host, &group).await,
        vec![(host.ready.peer_id.clone(), "owner".to_owned())]
    );
    let listed = get(&host.ready.api, "/api/groups").await.json();
    assert_eq!(listed[0]["host_in_group"], true);
    let again = post(&host.ready.api, "/api/groups/join-own", &body).await;
    assert_error(&again, 409, "host_already_joined");
    let left = post(&host.ready.api, "/api/groups/leave-own", &body).await;
    assert_eq!(left.json()["status"], "left");

    let meta = json!({ "group_id": group, "name": "renamed", "max_members": 5 }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/meta", &meta)
            .await
            .json()["status"],
        "ok"
    );
    let no_name = post(&host.ready.api, "/api/groups/meta", &body).await;
    assert_error(&no_name, 400, "bad_request");
    let max = json!({ "group_id": group, "max_members": 3 }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/max-members", &max)
            .await
            .status,
        200
    );
    let role = json!({ "group_id": group, "default_role": "editor" }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/set-default-role", &role)
            .await
            .status,
        200
    );
    let listed = get(&host.ready.api, "/api/groups").await.json();
    assert_eq!(listed[0]["name"], "renamed");
    assert_eq!(listed[0]["max_members"], 3);
    assert_eq!(listed[0]["default_role"], "editor");
    // A rename without max_members keeps the limit (Goop² lifted it).
    let rename = json!({ "group_id": group, "name": "renamed again" }).to_string();
    assert_eq!(
        post(&host.ready.api, "/api/groups/meta", &rename)
            .await
            .status,
        200
    );
    let listed = get(&host.ready.api, "/api/groups").await.json();
    assert_eq!(listed[0]["name"], "renamed again");
    assert_eq!(listed[0]["max_members"], 3);

    assert_eq!(join(&a, &host, &group).await.status, 200);
    assert_eq!(
        members(&host, &group).await,
        vec![(a.ready.peer_id.clone(), "editor".to_owned())]
    );
    let subs = get(&a.ready.api, "/api/groups/subscriptions").await.json();
    assert_eq!(subs["subscriptions"][0]["group_name"], "renamed again");
    assert_eq!(subs["active_groups"][0]["group_id"], group.as_str());
    let host_and_group =
        json!({ "host_peer_id": host.ready.peer_id, "group_id": group }).to_string();
    let rejoined = post(&a.ready.api, "/api/groups/rejoin", &host_and_group).await;
    assert_eq!(rejoined.json()["status"], "rejoined");

    let removed = post(
        &a.ready.api,
        "/api/groups/subscriptions/remove",
        &host_and_group,
    )
    .await;
    assert_eq!(removed.json()["status"], "removed");
    until(5, "the host sees the member go", async || {
        members(&host, &group).await.is_empty()
    })
    .await;
    let again = post(
        &a.ready.api,
        "/api/groups/subscriptions/remove",
        &host_and_group,
    )
    .await;
    assert_eq!(
        again.json()["status"],
        "removed",
        "a missing subscription is not an error"
    );
    let unknown = get(
        &host.ready.api,
        "/api/groups/members?group_id=0000000000000000",
    )
    .await;
    assert_error(&unknown, 404, "unknown_group");
}

#[tokio::test]
async fn group_routes_need_the_token_and_the_right_origin() {
    let token = "0123456789abcdef0123";
    let mut args = FAST_PINGS.to_vec();
    args.extend(["--api-token", token]);
    let p = start(&args).await;
    let api = &p.ready.api;
    let bearer = format!("Bearer {token}");
    assert_error(&get(api, "/api/groups").await, 401, "unauthorized");
    assert_error(&get(api, "/api/groups/events").await, 401, "unauthorized");
    let body = r#"{"name":"x"}"#;
    let refused = http(api, "POST", "/api/groups", &[], Some(body)).await;
    assert_error(&refused, 401, "unauthorized");
    let auth = [("Authorization", bearer.as_str())];
    let created = http(api, "POST", "/api/groups", &auth, Some(body)).await;
    assert_eq!(created.status, 200, "{created:?}");
    let foreign = [
        ("Authorization", bearer.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let refused = http(api, "POST", "/api/groups", &foreign, Some(body)).await;
    assert_error(&refused, 403, "forbidden_origin");
    let listed = http(api, "GET", "/api/groups", &auth, None).await;
    assert_eq!(listed.json().as_array().unwrap().len(), 1);
}

fn signal(peer: &Peer, name: &str) {
    let pid = peer.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn a_hung_member_is_dropped_by_liveness_and_rejoins_when_it_resumes() {
    let (host, a) = tokio::join!(peer(), peer());
    dial(&a, &host).await;
    let group = create(&host, json!({ "name": "pings" })).await;
    assert_eq!(join(&a, &host, &group).await.status, 200);

    // Stopped, the member keeps its connection open but answers nothing.
    signal(&a, "-STOP");
    until(10, "the host drops the silent member", async || {
        members(&host, &group).await.is_empty()
    })
    .await;
    signal(&a, "-CONT");
    until(15, "the member rejoins by itself", async || {
        member_ids(&host, &group).await == sorted(vec![&a.ready.peer_id])
    })
    .await;
}
