//! Create, join, relay, leave, kick, close; limits, invitations, roles; refusals and forgeries.

use groups::group::{GroupError, GroupSpec, MemoryNetwork, MetaUpdate};
use proto::{
    Admission, CloseBody, ErrorBody, ErrorCode, GroupEventKind, GroupId, GroupMessage, JoinOptions,
    Members, Relay,
};

use super::harness::{Peer, RawPeer, eventually, member_ids, raw};

fn spec(name: &str) -> GroupSpec {
    GroupSpec {
        name: name.to_owned(),
        ..GroupSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_join_relay_leave_kick_close() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let a = Peer::start(&net, "A").await;
    let b = Peer::start(&net, "B").await;
    let mut c = Peer::start(&net, "C").await;

    let g = host.handle.create(spec("Chess")).await.unwrap();
    host.handle.join_own(g.clone()).await.unwrap();
    for p in [&a, &b, &c] {
        let joined = p.handle.join(host.id.clone(), g.clone()).await.unwrap();
        assert_eq!(joined.group_name, "Chess");
        assert_eq!(joined.role, "viewer");
    }
    let members = member_ids(&host.handle, &g).await;
    assert_eq!(members.len(), 4);
    assert_eq!(members[0], host.id);

    // A and B interleave; C sees each author's messages in order, exactly once, attributed.
    for i in 0..30 {
        let sender = if i % 2 == 0 { &a } else { &b };
        sender
            .handle
            .send(
                g.clone(),
                raw(&format!(
                    r#"{{"i":{i},"big":123456789012345678901234567890}}"#
                )),
            )
            .await
            .unwrap();
    }
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    while from_a.len() + from_b.len() < 30 {
        let event = c.next_event(|e| e.kind == GroupEventKind::Msg).await;
        let body: serde_json::Value =
            serde_json::from_str(event.payload.as_ref().unwrap().get()).unwrap();
        assert!(
            event
                .payload
                .unwrap()
                .get()
                .contains("123456789012345678901234567890")
        );
        let i = body["i"].as_u64().unwrap();
        match event.from {
            Some(p) if p == a.id => from_a.push(i),
            Some(p) if p == b.id => from_b.push(i),
            other => panic!("message from {other:?}"),
        }
    }
    assert_eq!(from_a, (0..30).step_by(2).collect::<Vec<_>>());
    assert_eq!(from_b, (1..30).step_by(2).collect::<Vec<_>>());

    // Leave.
    b.handle.leave(g.clone()).await.unwrap();
    eventually("b gone", || async {
        member_ids(&host.handle, &g).await.len() == 3
    })
    .await;
    eventually("a sees b gone", || async {
        a.handle.members(g.clone()).await.unwrap().len() == 3
    })
    .await;

    // Kick: C is told, and its subscription goes.
    host.handle.kick(g.clone(), c.id.clone()).await.unwrap();
    let close = c.next_event(|e| e.kind == GroupEventKind::Close).await;
    assert!(close.payload.unwrap().get().contains("kicked"));
    assert!(c.handle.subscriptions().await.unwrap().is_empty());
    assert_eq!(
        member_ids(&host.handle, &g).await,
        vec![host.id.clone(), a.id.clone()]
    );

    // Close: A is told; the group is gone on both sides.
    host.handle.close(g.clone()).await.unwrap();
    eventually("a sees the close", || async {
        a.handle.subscriptions().await.unwrap().is_empty()
    })
    .await;
    assert!(host.handle.hosted_groups().await.unwrap().is_empty());
    assert!(matches!(
        host.handle.close(g.clone()).await,
        Err(GroupError::UnknownGroup(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_group_refuses_with_full_and_a_member_may_rejoin() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let a = Peer::start(&net, "A").await;
    let b = Peer::start(&net, "B").await;
    let g = host
        .handle
        .create(GroupSpec {
            max_members: 2,
            ..spec("pair")
        })
        .await
        .unwrap();
    host.handle.join_own(g.clone()).await.unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    let refused = b.handle.join(host.id.clone(), g.clone()).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            GroupError::Rejected {
                code: ErrorCode::Full,
                ..
            }
        ),
        "{refused}"
    );
    assert!(!refused.is_transient() || matches!(refused, GroupError::Rejected { .. }));
    assert_eq!(member_ids(&host.handle, &g).await.len(), 2);
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    assert_eq!(member_ids(&host.handle, &g).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_only_group_admits_only_invited_peers() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let outsider = Peer::start(&net, "Out").await;
    let mut guest = Peer::start(&net, "Guest").await;
    let g = host
        .handle
        .create(GroupSpec {
            admission: Admission::Invite,
            ..spec("private")
        })
        .await
        .unwrap();
    let refused = outsider
        .handle
        .join(host.id.clone(), g.clone())
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        GroupError::Rejected {
            code: ErrorCode::NotInvited,
            ..
        }
    ));
    host.handle
        .invite(g.clone(), guest.id.clone())
        .await
        .unwrap();
    let invite = guest.next_event(|e| e.kind == GroupEventKind::Invite).await;
    assert_eq!(invite.from, Some(host.id.clone()));
    assert_eq!(invite.group, g);
    // The invitation joined nobody.
    assert!(guest.handle.subscriptions().await.unwrap().is_empty());
    assert!(member_ids(&host.handle, &g).await.is_empty());
    assert_eq!(guest.handle.invitations().await.unwrap().len(), 1);
    guest.handle.join(host.id.clone(), g.clone()).await.unwrap();
    assert_eq!(member_ids(&host.handle, &g).await, vec![guest.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_set_checked_and_told_to_the_member() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let a = Peer::start(&net, "A").await;
    let g = host
        .handle
        .create(GroupSpec {
            roles: vec!["viewer".to_owned(), "editor".to_owned()],
            default_role: Some("viewer".to_owned()),
            ..spec("doc")
        })
        .await
        .unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    host.handle
        .set_role(g.clone(), a.id.clone(), "editor".to_owned())
        .await
        .unwrap();
    eventually("a learns its role", || async {
        a.handle.subscriptions().await.unwrap()[0].role == "editor"
    })
    .await;
    assert!(matches!(
        host.handle
            .set_role(g.clone(), a.id.clone(), "admin".to_owned())
            .await,
        Err(GroupError::UnknownRole { .. })
    ));
    assert!(matches!(
        host.handle
            .set_role(g.clone(), host.id.clone(), "viewer".to_owned())
            .await,
        Err(GroupError::OwnerRoleFixed)
    ));
    // A rejoin keeps the role.
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    let members = host.handle.members(g.clone()).await.unwrap();
    assert_eq!(members[0].role, "editor");
    // A rename keeps the limit and the roles.
    host.handle
        .update_meta(
            g.clone(),
            MetaUpdate {
                name: Some("Doc 2".to_owned()),
                ..MetaUpdate::default()
            },
        )
        .await
        .unwrap();
    eventually("a sees the new name", || async {
        a.handle.subscriptions().await.unwrap()[0].group_name == "Doc 2"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_for_an_unknown_group_is_answered_at_once() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let a = Peer::start(&net, "A").await;
    let started = std::time::Instant::now();
    let refused = a
        .handle
        .join(host.id.clone(), "ghost".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        GroupError::Rejected {
            code: ErrorCode::UnknownGroup,
            ..
        }
    ));
    // Answered, not timed out (the join timeout is 2 s).
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_errors_say_why() {
    let net = MemoryNetwork::new();
    let a = Peer::start(&net, "A").await;
    let g: GroupId = "g".parse().unwrap();
    // Nobody there: the send fails.
    let unreachable = a
        .handle
        .join(super::harness::peer("Nobody"), g.clone())
        .await;
    assert!(
        matches!(unreachable, Err(GroupError::Send { .. })),
        "{unreachable:?}"
    );
    // Somebody there who never answers: the join times out.
    let _silent = RawPeer::attach(&net, "Silent");
    let timed_out = a
        .handle
        .join(super::harness::peer("Silent"), g)
        .await
        .unwrap_err();
    assert!(matches!(timed_out, GroupError::JoinTimedOut { .. }));
    assert!(
        timed_out
            .to_string()
            .contains("timed out waiting for welcome")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_control_messages_from_a_non_host_are_dropped() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let mut a = Peer::start(&net, "A").await;
    let forger = RawPeer::attach(&net, "Forger");
    let g = host.handle.create(spec("g")).await.unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();

    forger
        .send(&a.id, &g, &GroupMessage::Close(CloseBody::default()))
        .await;
    forger
        .send(
            &a.id,
            &g,
            &GroupMessage::Members(Members {
                members: vec![],
                epoch: None,
            }),
        )
        .await;
    forger
        .send(
            &a.id,
            &g,
            &GroupMessage::Error(ErrorBody::new(ErrorCode::UnknownGroup)),
        )
        .await;
    forger
        .send(
            &a.id,
            &g,
            &GroupMessage::Msg(Relay {
                from: Some(host.id.clone()),
                payload: raw(r#""forged""#),
            }),
        )
        .await;
    // A real message from the host after the forgeries: once it arrives, they were handled.
    host.handle.send(g.clone(), raw(r#""real""#)).await.unwrap();
    let event = a
        .next_event(|e| {
            matches!(
                e.kind,
                GroupEventKind::Msg | GroupEventKind::Close | GroupEventKind::Members
            )
        })
        .await;
    assert_eq!(event.payload.unwrap().get(), r#""real""#);
    assert_eq!(event.from, Some(host.id.clone()));
    let subs = a.handle.subscriptions().await.unwrap();
    assert_eq!(subs.len(), 1);
    assert!(subs[0].connected);
    assert_eq!(subs[0].members.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_non_member_is_refused() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let mut a = Peer::start(&net, "A").await;
    let mut stranger = RawPeer::attach(&net, "Stranger");
    let g = host.handle.create(spec("g")).await.unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();

    stranger
        .send(
            &host.id,
            &g,
            &GroupMessage::Msg(Relay {
                from: None,
                payload: raw(r#""spam""#),
            }),
        )
        .await;
    let (from, _, payload) = stranger.next_message(":error").await;
    assert_eq!(from, host.id);
    assert!(payload.get().contains("not_member"));
    // A got nothing but what the host sends afterwards.
    host.handle
        .send(g.clone(), raw(r#""after""#))
        .await
        .unwrap();
    let event = a.next_event(|e| e.kind == GroupEventKind::Msg).await;
    assert_eq!(event.payload.unwrap().get(), r#""after""#);

    // A member that is not joined cannot send either.
    let b = Peer::start(&net, "B").await;
    assert!(matches!(
        b.handle.send(g.clone(), raw("1")).await,
        Err(GroupError::NotJoined(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_members_are_dropped() {
    let net = MemoryNetwork::new();
    let mut host = Peer::start(&net, "Host").await;
    let a = Peer::start(&net, "A").await;
    let mut silent = RawPeer::attach(&net, "Silent");
    let g = host.handle.create(spec("g")).await.unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();

    // A member that joins and then never answers a ping is dropped after the timeout.
    silent
        .send(&host.id, &g, &GroupMessage::Join(JoinOptions::default()))
        .await;
    silent.next_message(":welcome").await;
    assert_eq!(member_ids(&host.handle, &g).await.len(), 2);
    let leave = host
        .next_event(|e| e.kind == GroupEventKind::Leave && e.from.as_ref() == Some(&silent.id))
        .await;
    assert!(leave.payload.unwrap().get().contains("lost"));
    assert_eq!(member_ids(&host.handle, &g).await, vec![a.id.clone()]);

    // A member whose connection drops is dropped at once.
    let a_id = a.id.clone();
    a.stop(&net).await;
    host.next_event(|e| e.kind == GroupEventKind::Leave && e.from.as_ref() == Some(&a_id))
        .await;
    assert!(member_ids(&host.handle, &g).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_the_open_groups_of_a_peer() {
    let net = MemoryNetwork::new();
    let host = Peer::start(&net, "Host").await;
    let a = Peer::start(&net, "A").await;
    let open = host.handle.create(spec("open")).await.unwrap();
    host.handle
        .create(GroupSpec {
            admission: Admission::Invite,
            ..spec("private")
        })
        .await
        .unwrap();
    let rows = a.handle.discover(host.id.clone(), None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, open);
    assert_eq!(rows[0].name, "open");
    assert_eq!(rows[0].owner, host.id);
    assert!(rows[0].created_at.ends_with('Z'));
    // The same rows answer a Goop² `_groups` query locally.
    let local = host.handle.listed_group_rows(10, 0).await.unwrap();
    assert_eq!(local, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_works_with_a_goop2_host() {
    let net = MemoryNetwork::new();
    let mut go_host = RawPeer::attach(&net, "GoHost");
    let mut a = Peer::start(&net, "A").await;
    let g: GroupId = "9f3a1c2b4d5e6f70".parse().unwrap();
    let host_id = go_host.id.clone();
    let join = tokio::spawn({
        let handle = a.handle.clone();
        let g = g.clone();
        async move { handle.join(host_id, g).await }
    });
    let (from, topic, payload) = go_host.next_message(":join").await;
    assert_eq!(from, a.id);
    assert_eq!(topic, format!("group:{g}:join"));
    assert!(
        payload
            .get()
            .starts_with(r#"{"type":"join","group":"9f3a1c2b4d5e6f70""#)
    );
    // Exactly what a Goop² host writes: bare welcome, no role, no features, no epoch.
    go_host
        .send_raw(
            &a.id,
            &topic.replace(":join", ":welcome"),
            &format!(
                r#"{{"group_name":"Chess","group_type":"chat","max_members":0,"volatile":false,
                   "members":[{{"peer_id":"{}","role":"owner","joined_at":0}},
                              {{"peer_id":"{}","role":"viewer","joined_at":1741435200000}}]}}"#,
                go_host.id, a.id
            ),
        )
        .await;
    let joined = join.await.unwrap().unwrap();
    assert_eq!(joined.role, "viewer");
    assert_eq!(joined.group_type, "chat");

    // A bare relay reads as from the host (Goop² does not carry the author).
    go_host
        .send_raw(
            &a.id,
            &format!("group:{g}:msg"),
            r#"{"text":"hi","n":1.50}"#,
        )
        .await;
    let event = a.next_event(|e| e.kind == GroupEventKind::Msg).await;
    assert_eq!(event.from, Some(go_host.id.clone()));
    assert_eq!(event.payload.unwrap().get(), r#"{"text":"hi","n":1.50}"#);

    // Its ping gets a pong; its close ends the membership.
    go_host
        .send_raw(
            &a.id,
            &format!("group:{g}:ping"),
            &format!(r#"{{"type":"ping","group":"{g}"}}"#),
        )
        .await;
    let (_, _, pong) = go_host.next_message(":pong").await;
    assert_eq!(pong.get(), format!(r#"{{"type":"pong","group":"{g}"}}"#));
    go_host
        .send_raw(
            &a.id,
            &format!("group:{g}:close"),
            &format!(r#"{{"type":"close","group":"{g}"}}"#),
        )
        .await;
    a.next_event(|e| e.kind == GroupEventKind::Close).await;
    assert!(a.handle.subscriptions().await.unwrap().is_empty());
}
