//! Decoding the exact Goop² shapes, and round trips of ours.

use super::*;

fn gid(s: &str) -> GroupId {
    s.parse().unwrap()
}

fn peer(s: &str) -> PeerId {
    s.parse().unwrap()
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn decode(topic: &str, payload: &str) -> GroupMessage {
    let topic = GroupTopic::parse(topic).unwrap();
    GroupMessage::decode(&topic, &raw(payload), RelayForm::Bare).unwrap()
}

fn json(raw: &RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap()
}

#[test]
fn topics_parse_and_format() {
    let topic = GroupTopic::parse("group:9f3a:set-role").unwrap();
    assert_eq!(topic.group, gid("9f3a"));
    assert_eq!(topic.kind, GroupMsgKind::SetRole);
    assert_eq!(topic.to_string(), "group:9f3a:set-role");
    for kind in GroupMsgKind::ALL {
        let topic = GroupTopic::new(gid("g1"), kind);
        assert_eq!(GroupTopic::parse(&topic.to_string()).unwrap(), topic);
    }
    for bad in [
        "group:",
        "group:g1",
        "group::msg",
        "chat:g1:msg",
        "group.invite",
    ] {
        assert!(GroupTopic::parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        GroupTopic::parse("group:g1:dance"),
        Err(GroupWireError::UnknownKind(k)) if k == "dance"
    ));
    // The group id ends at the first colon, so the rest is the type.
    assert!(GroupTopic::parse("group:g1:msg:extra").is_err());
}

#[test]
fn goop2_envelope_messages_decode() {
    assert!(matches!(
        decode("group:g1:join", r#"{"type":"join","group":"g1"}"#),
        GroupMessage::Join(JoinOptions { features, name }) if features.is_empty() && name.is_none()
    ));
    assert!(matches!(
        decode("group:g1:leave", r#"{"type":"leave","group":"g1"}"#),
        GroupMessage::Leave
    ));
    assert!(matches!(
        decode("group:g1:ping", r#"{"type":"ping","group":"g1"}"#),
        GroupMessage::Ping(PingBody { epoch: None })
    ));
    assert!(matches!(
        decode("group:g1:pong", r#"{"type":"pong","group":"g1"}"#),
        GroupMessage::Pong
    ));
    assert!(matches!(
        decode("group:g1:close", r#"{"type":"close","group":"g1"}"#),
        GroupMessage::Close(CloseBody {
            reason: CloseReason::Closed
        })
    ));
    let error = decode(
        "group:g1:error",
        r#"{"type":"error","group":"g1","payload":{"code":"full","message":"group is full"}}"#,
    );
    let GroupMessage::Error(body) = error else {
        panic!("{error:?}")
    };
    assert_eq!(body.code, ErrorCode::Full);
    assert_eq!(body.message, "group is full");
}

#[test]
fn envelope_must_match_its_topic() {
    let topic = GroupTopic::parse("group:g1:leave").unwrap();
    let other_group = raw(r#"{"type":"leave","group":"g2"}"#);
    assert!(matches!(
        GroupMessage::decode(&topic, &other_group, RelayForm::Bare),
        Err(GroupWireError::Mismatch { .. })
    ));
    let other_type = raw(r#"{"type":"join","group":"g1"}"#);
    assert!(GroupMessage::decode(&topic, &other_type, RelayForm::Bare).is_err());
    let not_json_object = raw("[1,2]");
    assert!(GroupMessage::decode(&topic, &not_json_object, RelayForm::Bare).is_err());
}

#[test]
fn goop2_welcome_decodes_with_and_without_optional_fields() {
    let full = decode(
        "group:g1:welcome",
        r#"{"group_name":"Chess","group_type":"chat","group_context":"ctx","max_members":4,
            "volatile":false,"members":[{"peer_id":"12D3KooWA","role":"owner","joined_at":0},
            {"peer_id":"12D3KooWB","role":"viewer","joined_at":1741435200000}]}"#,
    );
    let GroupMessage::Welcome(welcome) = full else {
        panic!("{full:?}")
    };
    assert_eq!(welcome.group_name, "Chess");
    assert_eq!(welcome.group_type, "chat");
    assert_eq!(welcome.group_context, "ctx");
    assert_eq!(welcome.max_members, 4);
    assert_eq!(welcome.members.len(), 2);
    assert_eq!(welcome.members[1].peer_id, peer("12D3KooWB"));
    assert_eq!(welcome.members[1].joined_at, 1_741_435_200_000);
    assert_eq!(welcome.role, None);

    // Goop² omits empty strings and may write an empty member slice as null.
    let sparse = decode(
        "group:g1:welcome",
        r#"{"max_members":0,"volatile":true,"members":null}"#,
    );
    let GroupMessage::Welcome(welcome) = sparse else {
        panic!("{sparse:?}")
    };
    assert!(welcome.group_name.is_empty() && welcome.members.is_empty() && welcome.volatile);
}

#[test]
fn goop2_bare_messages_decode() {
    let members = decode(
        "group:g1:members",
        r#"{"members":[{"peer_id":"12D3KooWA","role":"owner","joined_at":0}]}"#,
    );
    assert!(matches!(members, GroupMessage::Members(m) if m.members[0].role == "owner"));
    let meta = decode(
        "group:g1:meta",
        r#"{"group_name":"Chess","group_type":"chat","max_members":8}"#,
    );
    let GroupMessage::Meta(meta) = meta else {
        panic!("{meta:?}")
    };
    assert_eq!(
        (meta.group_name.as_str(), meta.max_members, meta.roles.len()),
        ("Chess", 8, 0)
    );

    // msg and state are whatever JSON the sender passed, null included, untouched.
    let big = r#"{"n":123456789012345678901234567890,"f":0.1000000000000000055511151231257827}"#;
    let GroupMessage::Msg(relay) = decode("group:g1:msg", big) else {
        panic!()
    };
    assert_eq!(relay.payload.get(), big);
    assert_eq!(relay.from, None);
    let GroupMessage::State(relay) = decode("group:g1:state", "null") else {
        panic!()
    };
    assert_eq!(relay.payload.get(), "null");
}

#[test]
fn goop2_invite_decodes() {
    let invite: Invite = serde_json::from_str(
        r#"{"group_id":"g1","group_name":"Chess","host_peer_id":"12D3KooWA",
            "group_type":"template","volatile":false}"#,
    )
    .unwrap();
    assert_eq!(invite.group_id, gid("g1"));
    assert_eq!(invite.host_peer_id, Some(peer("12D3KooWA")));
    assert!(invite.group_context.is_empty());
    let round = serde_json::to_value(&invite).unwrap();
    assert!(round.get("group_context").is_none());
}

#[test]
fn encodings_use_the_goop2_style_per_type() {
    let g = gid("g1");
    let (topic, payload) = GroupMessage::Leave.encode(&g).unwrap();
    assert_eq!(topic, "group:g1:leave");
    assert_eq!(payload.get(), r#"{"type":"leave","group":"g1"}"#);
    let (_, payload) = GroupMessage::Close(CloseBody::default())
        .encode(&g)
        .unwrap();
    assert_eq!(payload.get(), r#"{"type":"close","group":"g1"}"#);
    let (_, payload) = GroupMessage::Join(JoinOptions::default())
        .encode(&g)
        .unwrap();
    assert_eq!(payload.get(), r#"{"type":"join","group":"g1"}"#);
    let (_, payload) = GroupMessage::Error(ErrorBody::new(ErrorCode::Full))
        .encode(&g)
        .unwrap();
    assert_eq!(
        payload.get(),
        r#"{"type":"error","group":"g1","payload":{"code":"full","message":"group is full"}}"#
    );
    let (_, payload) = GroupMessage::Msg(Relay {
        from: None,
        payload: raw(r#"{"x":1}"#),
    })
    .encode(&g)
    .unwrap();
    assert_eq!(payload.get(), r#"{"x":1}"#);
    let welcome = Welcome {
        max_members: 2,
        members: vec![],
        ..Welcome::default()
    };
    let (topic, payload) = GroupMessage::Welcome(Box::new(welcome)).encode(&g).unwrap();
    assert_eq!(topic, "group:g1:welcome");
    assert_eq!(
        json(&payload),
        serde_json::json!({"max_members":2,"volatile":false,"members":[]})
    );
}

#[test]
fn our_additions_round_trip() {
    let g = gid("g1");
    let round = |message: GroupMessage, form: RelayForm| {
        let (topic, payload) = message.encode(&g).unwrap();
        let topic = GroupTopic::parse(&topic).unwrap();
        GroupMessage::decode(&topic, &payload, form).unwrap()
    };
    let join = round(
        GroupMessage::Join(JoinOptions {
            features: vec![FEATURE_AUTHOR.to_owned()],
            name: Some("Ada".to_owned()),
        }),
        RelayForm::Bare,
    );
    assert!(matches!(
        join,
        GroupMessage::Join(o) if o.features == [FEATURE_AUTHOR] && o.name.as_deref() == Some("Ada")
    ));
    let kick = round(
        GroupMessage::Close(CloseBody {
            reason: CloseReason::Kicked,
        }),
        RelayForm::Bare,
    );
    assert!(matches!(kick, GroupMessage::Close(b) if b.reason == CloseReason::Kicked));
    for code in [
        ErrorCode::UnknownGroup,
        ErrorCode::NotInvited,
        ErrorCode::NotMember,
        ErrorCode::Forbidden,
        ErrorCode::Other("banned".to_owned()),
    ] {
        let error = round(
            GroupMessage::Error(ErrorBody::new(code.clone())),
            RelayForm::Bare,
        );
        assert!(matches!(error, GroupMessage::Error(b) if b.code == code));
    }
    let ping = round(
        GroupMessage::Ping(PingBody { epoch: Some(42) }),
        RelayForm::Bare,
    );
    assert!(matches!(
        ping,
        GroupMessage::Ping(PingBody { epoch: Some(42) })
    ));
    let set_role = round(
        GroupMessage::SetRole(SetRole {
            peer_id: peer("12D3KooWB"),
            role: "editor".to_owned(),
        }),
        RelayForm::Bare,
    );
    assert!(matches!(set_role, GroupMessage::SetRole(s) if s.role == "editor"));
    let meta = round(
        GroupMessage::Meta(Meta {
            group_name: "n".to_owned(),
            group_type: "chat".to_owned(),
            max_members: 3,
            roles: vec!["viewer".to_owned(), "editor".to_owned()],
            default_role: Some("viewer".to_owned()),
            admission: Some(Admission::Invite),
            epoch: Some(3),
        }),
        RelayForm::Bare,
    );
    assert!(matches!(meta, GroupMessage::Meta(m) if m.roles.len() == 2
        && m.admission == Some(Admission::Invite)));

    // A relay with its author goes out in envelope style, and keeps the payload's bytes.
    let payload = r#"{"big":123456789012345678901234567890}"#;
    let authored = GroupMessage::Msg(Relay {
        from: Some(peer("12D3KooWB")),
        payload: raw(payload),
    });
    let (_, wire) = authored.encode(&g).unwrap();
    assert_eq!(
        wire.get(),
        r#"{"type":"msg","group":"g1","from":"12D3KooWB","payload":{"big":123456789012345678901234567890}}"#
    );
    let back = round(authored, RelayForm::Authored);
    let GroupMessage::Msg(relay) = back else {
        panic!("{back:?}")
    };
    assert_eq!(relay.from, Some(peer("12D3KooWB")));
    assert_eq!(relay.payload.get(), payload);

    // A bare relay read where an authored one was expected stays bare, untouched.
    let topic = GroupTopic::parse("group:g1:msg").unwrap();
    let bare = GroupMessage::decode(&topic, &raw(payload), RelayForm::Authored).unwrap();
    let GroupMessage::Msg(relay) = bare else {
        panic!("{bare:?}")
    };
    assert_eq!((relay.from, relay.payload.get()), (None, payload));
}

#[test]
fn discovery_round_trips_in_the_goop2_row_shape() {
    let request = DiscoverRequest {
        request_id: 7,
        limit: Some(10),
        offset: None,
    };
    let text = serde_json::to_string(&request).unwrap();
    assert_eq!(text, r#"{"request_id":7,"limit":10}"#);
    assert_eq!(
        serde_json::from_str::<DiscoverRequest>(&text).unwrap(),
        request
    );
    let reply: DiscoverReply = serde_json::from_str(
        r#"{"request_id":7,"ok":true,"data":[{"id":"g1","name":"Chess","owner":"12D3KooWA",
            "group_type":"chat","group_context":"","max_members":0,
            "created_at":"2026-03-08T12:00:00Z","host_joined":1,"volatile":0,
            "default_role":"viewer","roles":"[]"}]}"#,
    )
    .unwrap();
    assert_eq!(reply.data[0].id, gid("g1"));
    assert_eq!(reply.data[0].host_joined, 1);
    let again: DiscoverReply =
        serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
    assert_eq!(again, reply);
}

#[test]
fn local_event_has_the_goop2_shape() {
    let event = GroupEvent {
        kind: GroupEventKind::Msg,
        group: gid("g1"),
        from: Some(peer("12D3KooWB")),
        payload: Some(raw(r#"{"x":1}"#)),
    };
    assert_eq!(
        serde_json::to_string(&event).unwrap(),
        r#"{"type":"msg","group":"g1","from":"12D3KooWB","payload":{"x":1}}"#
    );
    let bare = GroupEvent {
        kind: GroupEventKind::HostLost,
        group: gid("g1"),
        from: None,
        payload: None,
    };
    assert_eq!(
        serde_json::to_string(&bare).unwrap(),
        r#"{"type":"host_lost","group":"g1"}"#
    );
}
