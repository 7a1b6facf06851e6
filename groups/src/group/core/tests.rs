//! The state machine under a deterministic simulated network: several cores, one FIFO of
//! messages, time advanced by hand. Rules are checked one by one, then as properties.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use proto::{
    Admission, ErrorCode, GroupEvent, GroupEventKind, GroupId, GroupMessage, PeerId, Relay,
};
use serde_json::value::RawValue;

use super::*;
use crate::group::handler::{HandlerRegistry, TypeHandler};

fn peer(name: &str) -> PeerId {
    format!("12D3KooW{name}").parse().unwrap()
}

fn raw_json(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn config() -> GroupConfig {
    GroupConfig {
        ping_interval: std::time::Duration::from_secs(10),
        member_timeout: std::time::Duration::from_secs(30),
        host_timeout: std::time::Duration::from_secs(30),
        join_timeout: std::time::Duration::from_secs(5),
        rejoin_backoff_min: std::time::Duration::from_secs(1),
        rejoin_backoff_max: std::time::Duration::from_secs(8),
        ..GroupConfig::default()
    }
}

struct Wire {
    from: PeerId,
    to: PeerId,
    topic: String,
    payload: Box<RawValue>,
}

/// Several cores joined by a perfect FIFO network, with peers that can be offline (sends to
/// them fail) or muted (hung: messages to and from them vanish, their timers stop).
struct Sim {
    now: u64,
    cores: BTreeMap<PeerId, GroupCore>,
    queue: VecDeque<Wire>,
    offline: BTreeSet<PeerId>,
    muted: BTreeSet<PeerId>,
    events: Vec<(PeerId, GroupEvent)>,
    hooks: Vec<(PeerId, HookCall)>,
    joins: Vec<(PeerId, JoinTicket, Result<Subscription, GroupError>)>,
    writes: BTreeMap<PeerId, Vec<StoreOp>>,
    delivered: Vec<Wire>,
    /// Messages matching this are lost in transit.
    lose: Option<fn(&Wire) -> bool>,
    /// Relays a host sent to a peer that was not its member at that moment.
    relays_to_non_members: usize,
}

impl Sim {
    fn new(peers: &[&str], registry: HandlerRegistry) -> Self {
        let registry = Arc::new(registry);
        let cores = peers
            .iter()
            .map(|p| {
                let id = peer(p);
                let core = GroupCore::new(id.clone(), config(), Arc::clone(&registry));
                (id, core)
            })
            .collect();
        Self {
            now: 1_000_000,
            cores,
            queue: VecDeque::new(),
            offline: BTreeSet::new(),
            muted: BTreeSet::new(),
            events: Vec::new(),
            hooks: Vec::new(),
            joins: Vec::new(),
            writes: BTreeMap::new(),
            delivered: Vec::new(),
            lose: None,
            relays_to_non_members: 0,
        }
    }

    /// Replaces `p`'s core with a fresh one on `config` (before it does anything).
    fn configure(&mut self, p: &str, config: GroupConfig) {
        let core = GroupCore::new(peer(p), config, Arc::new(HandlerRegistry::new()));
        self.cores.insert(peer(p), core);
    }

    fn core(&mut self, p: &str) -> &mut GroupCore {
        self.cores.get_mut(&peer(p)).unwrap()
    }

    /// Runs a command on one core and delivers everything that follows.
    fn with<R>(&mut self, p: &str, f: impl FnOnce(&mut GroupCore, u64) -> R) -> R {
        let now = self.now;
        let core = self.core(p);
        let result = f(core, now);
        let outputs = core.take_outputs();
        self.absorb(&peer(p), outputs);
        self.run();
        result
    }

    fn absorb(&mut self, who: &PeerId, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send {
                    to, topic, payload, ..
                } => {
                    self.check_relay(who, &to, &topic);
                    self.queue.push_back(Wire {
                        from: who.clone(),
                        to,
                        topic,
                        payload,
                    });
                }
                Output::Persist(op) => self.writes.entry(who.clone()).or_default().push(op),
                Output::Event { event, .. } => self.events.push((who.clone(), event)),
                Output::Hook(call) => self.hooks.push((who.clone(), call)),
                Output::JoinFinished { ticket, result } => {
                    self.joins.push((who.clone(), ticket, result));
                }
                Output::DiscoverFinished { .. } => {}
            }
        }
    }

    /// A relay leaves the host only towards a current member.
    fn check_relay(&mut self, who: &PeerId, to: &PeerId, topic: &str) {
        let Ok(parsed) = proto::GroupTopic::parse(topic) else {
            return;
        };
        let relay = matches!(
            parsed.kind,
            proto::GroupMsgKind::Msg | proto::GroupMsgKind::State
        );
        let core = &self.cores[who];
        if relay && core.hosted_group(&parsed.group).is_some() && !core.is_member(&parsed.group, to)
        {
            self.relays_to_non_members += 1;
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some(wire) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "message storm");
            if self.offline.contains(&wire.to) || self.offline.contains(&wire.from) {
                let input = Input::SendFailed {
                    to: wire.to.clone(),
                    topic: wire.topic.clone(),
                };
                let now = self.now;
                if let Some(core) = self.cores.get_mut(&wire.from) {
                    let outputs = core.handle(now, input);
                    let from = wire.from.clone();
                    self.absorb(&from, outputs);
                }
                continue;
            }
            if self.muted.contains(&wire.to)
                || self.muted.contains(&wire.from)
                || self.lose.is_some_and(|lose| lose(&wire))
            {
                continue;
            }
            let now = self.now;
            let input = Input::Message {
                from: wire.from.clone(),
                topic: wire.topic.clone(),
                payload: wire.payload.clone(),
            };
            let to = wire.to.clone();
            let Some(core) = self.cores.get_mut(&to) else {
                // A peer outside the simulation (a Goop² peer played by hand): keep the wire.
                self.delivered.push(wire);
                continue;
            };
            let outputs = core.handle(now, input);
            self.delivered.push(wire);
            self.absorb(&to, outputs);
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        let peers: Vec<PeerId> = self.cores.keys().cloned().collect();
        for p in peers {
            if self.offline.contains(&p) || self.muted.contains(&p) {
                continue;
            }
            let outputs = self.cores.get_mut(&p).unwrap().handle(now, Input::Tick);
            self.absorb(&p, outputs);
        }
        self.run();
    }

    /// Restarts a peer from what its store holds; its peers see it go and come back.
    fn restart(&mut self, p: &str) {
        let id = peer(p);
        let snapshot = self.cores[&id].store_snapshot();
        self.writes.insert(
            id.clone(),
            vec![StoreOp::ReplaceAll(Box::new(snapshot.clone()))],
        );
        let mut core = GroupCore::new(id.clone(), config(), Arc::new(HandlerRegistry::new()));
        core.restore(self.now, snapshot);
        let outputs = core.take_outputs();
        self.cores.insert(id.clone(), core);
        self.absorb(&id, outputs);
        let now = self.now;
        let others: Vec<PeerId> = self.cores.keys().filter(|o| **o != id).cloned().collect();
        for other in others {
            for input in [
                Input::PeerDisconnected(id.clone()),
                Input::PeerConnected(id.clone()),
            ] {
                let outputs = self.cores.get_mut(&other).unwrap().handle(now, input);
                self.absorb(&other, outputs);
            }
        }
        self.run();
    }

    /// Delivers a message as if `from` sent it.
    fn inject(&mut self, from: &str, to: &str, message: &GroupMessage, group: &GroupId) {
        let (topic, payload) = message.encode(group).unwrap();
        self.queue.push_back(Wire {
            from: peer(from),
            to: peer(to),
            topic,
            payload,
        });
        self.run();
    }

    fn join(&mut self, p: &str, host: &str, group: &GroupId) -> Result<Subscription, GroupError> {
        let ticket = self.with(p, |c, now| c.join_remote(now, &peer(host), group))?;
        let index = self
            .joins
            .iter()
            .position(|(who, t, _)| who == &peer(p) && *t == ticket)
            .expect("the join was answered");
        self.joins.remove(index).2
    }

    fn events_of(&self, p: &str, kind: GroupEventKind) -> Vec<&GroupEvent> {
        self.events
            .iter()
            .filter(|(who, e)| who == &peer(p) && e.kind == kind)
            .map(|(_, e)| e)
            .collect()
    }

    fn member_ids(&mut self, host: &str, group: &GroupId) -> Vec<PeerId> {
        self.core(host)
            .members(group)
            .unwrap()
            .into_iter()
            .map(|m| m.peer_id)
            .collect()
    }

    fn create(&mut self, host: &str, spec: GroupSpec) -> GroupId {
        self.with(host, |c, now| c.create(now, spec)).unwrap()
    }
}

fn spec(name: &str) -> GroupSpec {
    GroupSpec {
        name: name.to_owned(),
        ..GroupSpec::default()
    }
}

/// Members are listed with the names they gave when they joined (cleaned), the host with its
/// own; a joiner without a name has none. Members have the names from the host's list.
#[test]
fn members_are_listed_with_the_names_they_joined_with() {
    let mut sim = Sim::new(&["H", "A", "B"], HandlerRegistry::new());
    for (p, label) in [("H", "Hal"), ("A", " Ada\u{7}\n")] {
        let config = GroupConfig {
            label: label.to_owned(),
            ..config()
        };
        sim.configure(p, config);
    }
    let g = sim.create("H", spec("named"));
    sim.with("H", |c, now| c.join_own(now, &g)).unwrap();
    sim.join("A", "H", &g).unwrap();
    sim.join("B", "H", &g).unwrap();
    let names = |members: Vec<MemberInfo>| -> Vec<(PeerId, Option<String>)> {
        members.into_iter().map(|m| (m.peer_id, m.name)).collect()
    };
    let expected = vec![
        (peer("H"), Some("Hal".to_owned())),
        (peer("A"), Some("Ada".to_owned())),
        (peer("B"), None),
    ];
    assert_eq!(names(sim.core("H").members(&g).unwrap()), expected);
    assert_eq!(names(sim.core("B").members(&g).unwrap()), expected);
    assert_eq!(names(sim.core("A").members(&g).unwrap()), expected);
}

/// Names, types and contexts with control characters or over their limits are refused (they
/// would reach logs and other peers raw), at creation and in a settings change.
#[test]
fn group_fields_with_control_characters_or_too_long_are_refused() {
    let mut sim = Sim::new(&["H"], HandlerRegistry::new());
    let bad = [
        spec("two\nlines"),
        GroupSpec {
            group_type: "x\n2026-11-22T00:00:00Z ERROR fake".to_owned(),
            ..spec("g")
        },
        GroupSpec {
            group_context: "\u{1b}[31m".to_owned(),
            ..spec("g")
        },
        spec(&"n".repeat(host::MAX_NAME_BYTES + 1)),
        GroupSpec {
            group_type: "t".repeat(host::MAX_TYPE_BYTES + 1),
            ..spec("g")
        },
    ];
    for spec in bad {
        let refused = sim.with("H", |c, now| c.create(now, spec.clone()));
        assert!(
            matches!(refused, Err(GroupError::InvalidField { .. })),
            "{spec:?}: {refused:?}"
        );
    }
    assert!(sim.core("H").hosted_groups().is_empty());
    let g = sim.create("H", spec(&"n".repeat(host::MAX_NAME_BYTES)));
    let rename = MetaUpdate {
        name: Some("tab\there".to_owned()),
        ..MetaUpdate::default()
    };
    let refused = sim.with("H", |c, now| c.update_meta(now, &g, rename));
    assert!(
        matches!(refused, Err(GroupError::InvalidField { field: "name", .. })),
        "{refused:?}"
    );
    for (roles, empty) in [(vec!["a", " "], true), (vec!["a\u{7}"], false)] {
        let update = MetaUpdate {
            roles: Some(roles.into_iter().map(str::to_owned).collect()),
            ..MetaUpdate::default()
        };
        let refused = sim.with("H", |c, now| c.update_meta(now, &g, update));
        if empty {
            assert!(matches!(refused, Err(GroupError::EmptyRole)), "{refused:?}");
        } else {
            let field = matches!(refused, Err(GroupError::InvalidField { field: "role", .. }));
            assert!(field, "{refused:?}");
        }
    }
}

#[test]
fn create_join_own_join_leave_counts_like_goop2() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g = sim.create("H", spec("Chess"));
    sim.with("H", |c, now| c.join_own(now, &g)).unwrap();
    let members = sim.core("H").members(&g).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, "owner");

    let joined = sim.join("A", "H", &g).unwrap();
    assert_eq!(joined.group_name, "Chess");
    assert_eq!(joined.role, "viewer");
    assert_eq!(joined.members.len(), 2);
    let members = sim.core("H").members(&g).unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[1].role, "viewer");
    assert_eq!(sim.events_of("H", GroupEventKind::Join).len(), 1);

    sim.with("A", |c, now| c.leave_remote(now, &g)).unwrap();
    assert_eq!(sim.member_ids("H", &g), vec![peer("H")]);
    assert!(sim.core("A").subscription(&g).is_none());
    let leaves: Vec<_> = sim
        .hooks
        .iter()
        .filter(|(_, h)| {
            matches!(
                h,
                HookCall::Leave {
                    reason: LeaveReason::Left,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(leaves.len(), 1);
}

/// A member over the relay limit has its messages dropped, not relayed, and hears why once
/// a second (a `rate_limited` error event with the count); the others keep their own budget,
/// and the member's budget refills with time.
#[test]
fn a_member_over_the_relay_limit_is_dropped_and_told_once_a_second() {
    let mut sim = Sim::new(&["H", "A", "B"], HandlerRegistry::new());
    let limited = GroupConfig {
        relay_rate: 10,
        relay_burst: 5,
        ..config()
    };
    sim.configure("H", limited);
    let g = sim.create("H", spec("g"));
    sim.join("A", "H", &g).unwrap();
    sim.join("B", "H", &g).unwrap();
    let send = |sim: &mut Sim, p: &str, n: u32| {
        sim.with(p, |c, now| {
            c.send_to_group(now, &g, raw_json(&format!("{{\"n\":{n}}}")), false)
        })
        .unwrap();
    };
    for n in 0..8 {
        send(&mut sim, "A", n);
    }
    let at_b = |sim: &Sim| -> Vec<String> {
        sim.events_of("B", GroupEventKind::Msg)
            .into_iter()
            .map(|e| e.payload.as_ref().unwrap().get().to_owned())
            .collect()
    };
    let first_five: Vec<String> = (0..5).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(at_b(&sim), first_five);
    let errors = |sim: &Sim| -> Vec<String> {
        sim.events_of("A", GroupEventKind::Error)
            .into_iter()
            .map(|e| e.payload.as_ref().unwrap().get().to_owned())
            .collect()
    };
    let told = errors(&sim);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains(r#""code":"rate_limited""#), "{told:?}");
    assert!(told[0].contains("1 message(s) dropped"), "{told:?}");
    // B has a budget of its own.
    send(&mut sim, "B", 100);
    assert_eq!(sim.events_of("A", GroupEventKind::Msg).len(), 1);
    // A second later A has ten more tokens (capped at the burst of five) and hears of the
    // two drops it was not told of yet at its next drop.
    sim.tick(1_000);
    for n in 8..14 {
        send(&mut sim, "A", n);
    }
    assert_eq!(at_b(&sim).len(), 10);
    let told = errors(&sim);
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told[1].contains("3 message(s) dropped"), "{told:?}");
    // A is still a member.
    assert_eq!(sim.member_ids("H", &g), vec![peer("A"), peer("B")]);
}

#[test]
fn relays_keep_order_author_and_go_exactly_once() {
    let mut sim = Sim::new(&["H", "A", "B", "C"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    for p in ["A", "B", "C"] {
        sim.join(p, "H", &g).unwrap();
    }
    for i in 0..20 {
        let (p, n) = if i % 3 == 0 { ("A", i) } else { ("B", i) };
        sim.with(p, |c, now| {
            c.send_to_group(now, &g, raw_json(&format!("{{\"n\":{n}}}")), false)
        })
        .unwrap();
    }
    let at_c: Vec<(PeerId, String)> = sim
        .events_of("C", GroupEventKind::Msg)
        .into_iter()
        .map(|e| {
            (
                e.from.clone().unwrap(),
                e.payload.as_ref().unwrap().get().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(PeerId, String)> = (0..20)
        .map(|i| {
            let author = if i % 3 == 0 { peer("A") } else { peer("B") };
            (author, format!("{{\"n\":{i}}}"))
        })
        .collect();
    assert_eq!(at_c, expected);
    // Nobody gets their own messages back.
    let at_a = sim.events_of("A", GroupEventKind::Msg);
    assert!(at_a.iter().all(|e| e.from == Some(peer("B"))));
    assert_eq!(at_a.len(), 13);
    // The host sees every message with its author.
    assert_eq!(sim.events_of("H", GroupEventKind::Msg).len(), 20);

    // A message as the host reaches everyone with the host as author.
    sim.with("H", |c, now| c.send_to_group(now, &g, raw_json("1"), false))
        .unwrap();
    assert_eq!(
        sim.events_of("C", GroupEventKind::Msg).last().unwrap().from,
        Some(peer("H"))
    );
}

#[test]
fn a_host_can_send_to_one_member_only() {
    let mut sim = Sim::new(&["H", "A", "B", "X"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    for p in ["A", "B"] {
        sim.join(p, "H", &g).unwrap();
    }
    sim.with("H", |c, _| {
        c.send_as_host_to(&g, &peer("B"), raw_json("{\"to\":\"B\"}"))
    })
    .unwrap();
    sim.run();
    let at_b = sim.events_of("B", GroupEventKind::Msg);
    assert_eq!(at_b.len(), 1);
    assert_eq!(at_b[0].from, Some(peer("H")));
    assert_eq!(at_b[0].payload.as_ref().unwrap().get(), "{\"to\":\"B\"}");
    assert!(sim.events_of("A", GroupEventKind::Msg).is_empty());
    // Not to a stranger, and not in a group it does not host.
    let stranger = sim.with("H", |c, _| c.send_as_host_to(&g, &peer("X"), raw_json("1")));
    assert!(matches!(stranger, Err(GroupError::NotMember { .. })));
    let other: GroupId = "0000000000000001".parse().unwrap();
    let unknown = sim.with("H", |c, _| {
        c.send_as_host_to(&other, &peer("A"), raw_json("1"))
    });
    assert!(matches!(unknown, Err(GroupError::UnknownGroup(_))));
}

#[test]
fn full_group_refuses_but_a_member_may_rejoin() {
    let mut sim = Sim::new(&["H", "A", "B"], HandlerRegistry::new());
    let g = sim.create(
        "H",
        GroupSpec {
            max_members: 2,
            ..spec("g")
        },
    );
    sim.with("H", |c, now| c.join_own(now, &g)).unwrap();
    sim.join("A", "H", &g).unwrap();
    let refused = sim.join("B", "H", &g).unwrap_err();
    assert!(
        matches!(&refused, GroupError::Rejected { code: ErrorCode::Full, message } if message == "group is full"),
        "{refused:?}"
    );
    assert_eq!(sim.member_ids("H", &g).len(), 2);
    // A rejoin of a current member is not a new member.
    sim.join("A", "H", &g).unwrap();
    assert_eq!(sim.member_ids("H", &g).len(), 2);
    // The limit cannot drop below the count.
    let lower = sim.with("H", |c, now| {
        c.update_meta(
            now,
            &g,
            MetaUpdate {
                max_members: Some(1),
                ..MetaUpdate::default()
            },
        )
    });
    assert!(matches!(lower, Err(GroupError::LimitBelowCount { .. })));
}

#[test]
fn invite_only_admits_invited_peers_only() {
    let mut sim = Sim::new(&["H", "A", "B"], HandlerRegistry::new());
    let g = sim.create(
        "H",
        GroupSpec {
            admission: Admission::Invite,
            ..spec("secret")
        },
    );
    let refused = sim.join("A", "H", &g).unwrap_err();
    assert!(matches!(
        refused,
        GroupError::Rejected {
            code: ErrorCode::NotInvited,
            ..
        }
    ));
    sim.with("H", |c, now| c.invite(now, &g, &peer("B")))
        .unwrap();
    // The invitation is recorded on both sides, and joins nobody.
    assert_eq!(
        sim.core("H").hosted_group(&g).unwrap().invited,
        vec![peer("B")]
    );
    let invites = sim.core("B").received_invites();
    assert_eq!(invites.len(), 1);
    assert_eq!(invites[0].host, peer("H"));
    assert!(sim.core("B").subscription(&g).is_none());
    assert_eq!(sim.member_ids("H", &g), Vec::<PeerId>::new());

    sim.join("B", "H", &g).unwrap();
    assert_eq!(sim.member_ids("H", &g), vec![peer("B")]);
    // A kick revokes the invitation (and bans: see the test below).
    sim.with("H", |c, now| c.kick(now, &g, &peer("B"))).unwrap();
    assert!(sim.core("B").subscription(&g).is_none());
    assert!(sim.core("H").hosted_group(&g).unwrap().invited.is_empty());
    sim.with("H", |c, _| c.unban(&g, &peer("B"))).unwrap();
    assert!(matches!(
        sim.join("B", "H", &g),
        Err(GroupError::Rejected {
            code: ErrorCode::NotInvited,
            ..
        })
    ));
}

/// Goop² let a kicked peer straight back into an open group. A kick bans: the peer's joins
/// are refused with `forbidden` (across a host restart) until the host lifts the ban or
/// invites the peer again; a full ban list lifts its oldest ban.
#[test]
fn a_kicked_peer_stays_out_until_unbanned_or_invited() {
    let mut sim = Sim::new(&["H", "A", "B", "C"], HandlerRegistry::new());
    let g = sim.create("H", spec("open"));
    for p in ["A", "B", "C"] {
        sim.join(p, "H", &g).unwrap();
    }
    let forbidden = |sim: &mut Sim, p: &str| {
        matches!(
            sim.join(p, "H", &g),
            Err(GroupError::Rejected {
                code: ErrorCode::Forbidden,
                ..
            })
        )
    };
    sim.with("H", |c, now| c.kick(now, &g, &peer("A"))).unwrap();
    assert!(forbidden(&mut sim, "A"), "a kicked peer may not rejoin");
    assert_eq!(
        sim.core("H").hosted_group(&g).unwrap().banned,
        vec![peer("A")]
    );
    sim.restart("H");
    assert!(forbidden(&mut sim, "A"), "the ban survives a restart");
    assert!(sim.with("H", |c, _| c.unban(&g, &peer("A"))).unwrap());
    assert!(!sim.with("H", |c, _| c.unban(&g, &peer("A"))).unwrap());
    sim.join("A", "H", &g).unwrap();

    // An invitation lifts a ban too.
    sim.tick(1);
    sim.with("H", |c, now| c.kick(now, &g, &peer("B"))).unwrap();
    assert!(forbidden(&mut sim, "B"));
    sim.with("H", |c, now| c.invite(now, &g, &peer("B")))
        .unwrap();
    sim.join("B", "H", &g).unwrap();
    assert!(sim.core("H").hosted_group(&g).unwrap().banned.is_empty());
}

/// A refused peer that keeps asking is answered once per interval, not once per join.
#[test]
fn a_refused_peer_is_answered_once_per_interval() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g = sim.create(
        "H",
        GroupSpec {
            admission: Admission::Invite,
            ..spec("closed")
        },
    );
    let refusals = |sim: &Sim| {
        sim.delivered
            .iter()
            .filter(|w| w.to == peer("A") && w.topic.ends_with(":error"))
            .count()
    };
    assert!(sim.join("A", "H", &g).is_err());
    assert_eq!(refusals(&sim), 1);
    // At once again: no answer; the join times out on A's side.
    let ticket = sim
        .with("A", |c, now| c.join_remote(now, &peer("H"), &g))
        .unwrap();
    assert_eq!(refusals(&sim), 1);
    sim.tick(6_000);
    let (_, _, timed_out) = sim
        .joins
        .iter()
        .find(|(who, t, _)| who == &peer("A") && *t == ticket)
        .expect("the join ended");
    assert!(timed_out.is_err(), "{timed_out:?}");
    // Past the interval, answered again.
    assert!(matches!(
        sim.join("A", "H", &g),
        Err(GroupError::Rejected {
            code: ErrorCode::NotInvited,
            ..
        })
    ));
    assert_eq!(refusals(&sim), 2);
}

/// A group that admits by approval: a join from a peer not invited is recorded as a request
/// (one `join_request` event, however often it asks, across a restart of the host) and
/// refused with `pending_approval`; approving lets its next join in, denying bans it; neither
/// works on a peer that did not ask.
#[test]
fn an_approval_group_lets_in_whom_the_host_approves() {
    let mut sim = Sim::new(&["H", "A", "B", "C"], HandlerRegistry::new());
    let g = sim.create(
        "H",
        GroupSpec {
            admission: Admission::Approval,
            ..spec("vetted")
        },
    );
    let pending = |sim: &mut Sim, p: &str| {
        matches!(
            sim.join(p, "H", &g),
            Err(GroupError::Rejected {
                code: ErrorCode::PendingApproval,
                ..
            })
        )
    };
    assert!(pending(&mut sim, "A"));
    sim.tick(1);
    assert!(pending(&mut sim, "B"));
    // The requests are stored, so a restarted host still has them.
    let stored: BTreeSet<PeerId> = replay(&sim.writes[&peer("H")])
        .requests
        .into_iter()
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(stored, BTreeSet::from([peer("A"), peer("B")]));
    sim.restart("H");
    sim.tick(1_000);
    assert!(pending(&mut sim, "A"), "asking again is still pending");
    let requests = |sim: &mut Sim| sim.core("H").hosted_group(&g).unwrap().requests;
    assert_eq!(requests(&mut sim), vec![peer("A"), peer("B")]);
    // One event each: A asking again after the restart is the request already stored.
    let asked: Vec<Option<PeerId>> = sim
        .events_of("H", GroupEventKind::JoinRequest)
        .iter()
        .map(|e| e.from.clone())
        .collect();
    assert_eq!(asked, vec![Some(peer("A")), Some(peer("B"))]);
    assert!(sim.member_ids("H", &g).is_empty());

    // Approved: invited, and in at its next join.
    sim.with("H", |c, now| c.approve(now, &g, &peer("A")))
        .unwrap();
    assert_eq!(requests(&mut sim), vec![peer("B")]);
    assert!(
        sim.core("H")
            .hosted_group(&g)
            .unwrap()
            .invited
            .contains(&peer("A"))
    );
    sim.join("A", "H", &g).unwrap();
    // Denied: banned, so refused for good.
    sim.with("H", |c, now| c.deny(now, &g, &peer("B"))).unwrap();
    assert!(requests(&mut sim).is_empty());
    assert_eq!(
        sim.core("H").hosted_group(&g).unwrap().banned,
        vec![peer("B")]
    );
    assert!(matches!(
        sim.join("B", "H", &g),
        Err(GroupError::Rejected {
            code: ErrorCode::Forbidden,
            ..
        })
    ));
    // Only a request can be approved or denied.
    assert!(matches!(
        sim.with("H", |c, now| c.approve(now, &g, &peer("C"))),
        Err(GroupError::NoRequest { .. })
    ));
    assert!(matches!(
        sim.with("H", |c, now| c.deny(now, &g, &peer("C"))),
        Err(GroupError::NoRequest { .. })
    ));
    // Opening the group drops what was asked; the peer simply joins.
    sim.tick(1_000);
    assert!(pending(&mut sim, "C"));
    let open = MetaUpdate {
        admission: Some(Admission::Open),
        ..MetaUpdate::default()
    };
    sim.with("H", |c, now| c.update_meta(now, &g, open))
        .unwrap();
    assert!(requests(&mut sim).is_empty());
    sim.join("C", "H", &g).unwrap();
}

#[test]
fn join_requests_past_the_limit_drop_the_oldest() {
    let mut sim = Sim::new(&["H", "A", "B", "C"], HandlerRegistry::new());
    let config = GroupConfig {
        max_join_requests: 2,
        ..config()
    };
    sim.configure("H", config);
    let g = sim.create(
        "H",
        GroupSpec {
            admission: Admission::Approval,
            ..spec("busy")
        },
    );
    for p in ["A", "B", "C"] {
        assert!(sim.join(p, "H", &g).is_err());
        sim.tick(1);
    }
    assert_eq!(
        sim.core("H").hosted_group(&g).unwrap().requests,
        vec![peer("B"), peer("C")]
    );
}

#[test]
fn a_full_ban_list_lifts_its_oldest_ban() {
    let mut sim = Sim::new(&["H", "A", "B", "C"], HandlerRegistry::new());
    // The host with room for two bans.
    let config = GroupConfig {
        max_bans: 2,
        ..config()
    };
    sim.configure("H", config);
    let g = sim.create("H", spec("small"));
    for p in ["A", "B", "C"] {
        sim.join(p, "H", &g).unwrap();
        sim.tick(1);
    }
    for p in ["A", "B", "C"] {
        sim.with("H", |c, now| c.kick(now, &g, &peer(p))).unwrap();
        sim.tick(1);
    }
    assert_eq!(
        sim.core("H").hosted_group(&g).unwrap().banned,
        vec![peer("B"), peer("C")]
    );
    sim.join("A", "H", &g).unwrap();
}

#[test]
fn a_join_for_an_unknown_group_is_answered() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g: GroupId = "nope".parse().unwrap();
    let refused = sim.join("A", "H", &g).unwrap_err();
    assert!(matches!(
        refused,
        GroupError::Rejected {
            code: ErrorCode::UnknownGroup,
            ..
        }
    ));
}

/// Every epoch a host sends (welcome, members, ping) is below 2^53, where a peer reading JSON
/// numbers as doubles still reads it exactly, across groups, membership changes and restarts.
#[test]
fn epochs_on_the_wire_stay_below_two_to_the_53() {
    let mut sim = Sim::new(&["H", "A", "B"], HandlerRegistry::new());
    let groups: Vec<GroupId> = (0..8)
        .map(|i| sim.create("H", spec(&format!("g{i}"))))
        .collect();
    for g in &groups {
        sim.join("A", "H", g).unwrap();
        sim.join("B", "H", g).unwrap();
        sim.with("A", |c, now| c.leave_remote(now, g)).unwrap();
    }
    sim.restart("H");
    sim.tick(30_000);
    let mut epochs = Vec::new();
    for wire in &sim.delivered {
        let body: serde_json::Value = serde_json::from_str(wire.payload.get()).unwrap();
        if let Some(epoch) = body.get("epoch").and_then(serde_json::Value::as_u64) {
            epochs.push(epoch);
        }
    }
    assert!(epochs.len() > 30, "only {} epochs seen", epochs.len());
    assert!(epochs.iter().all(|e| *e < 1 << 53), "{epochs:?}");
    assert_eq!(super::next_epoch((1 << 53) - 1), 0);
}

#[test]
fn control_messages_from_anyone_but_the_host_are_dropped() {
    let mut sim = Sim::new(&["H", "A", "M"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    sim.join("A", "H", &g).unwrap();
    sim.join("M", "H", &g).unwrap();
    // M, a member but not the host, forges a close, a member list and a message to A.
    sim.inject(
        "M",
        "A",
        &GroupMessage::Close(proto::CloseBody::default()),
        &g,
    );
    sim.inject(
        "M",
        "A",
        &GroupMessage::Members(proto::Members {
            members: vec![],
            epoch: None,
        }),
        &g,
    );
    sim.inject(
        "M",
        "A",
        &GroupMessage::Msg(Relay {
            from: Some(peer("H")),
            payload: raw_json("1"),
        }),
        &g,
    );
    let sub = sim.core("A").subscription(&g).expect("still joined");
    assert!(sub.connected);
    assert_eq!(sub.members.len(), 2);
    assert!(sim.events_of("A", GroupEventKind::Close).is_empty());
    assert!(sim.events_of("A", GroupEventKind::Msg).is_empty());
    // The real host's close works.
    sim.with("H", |c, now| c.close(now, &g)).unwrap();
    assert!(sim.core("A").subscription(&g).is_none());
    assert_eq!(sim.events_of("A", GroupEventKind::Close).len(), 1);
}

#[test]
fn a_non_member_message_is_refused_not_relayed() {
    let mut sim = Sim::new(&["H", "A", "X"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    sim.join("A", "H", &g).unwrap();
    sim.inject(
        "X",
        "H",
        &GroupMessage::Msg(Relay {
            from: None,
            payload: raw_json("\"spam\""),
        }),
        &g,
    );
    assert!(sim.events_of("A", GroupEventKind::Msg).is_empty());
    assert!(sim.events_of("H", GroupEventKind::Msg).is_empty());
    let refusal = sim
        .delivered
        .iter()
        .find(|w| w.to == peer("X") && w.topic.ends_with(":error"))
        .expect("X got an error");
    assert!(refusal.payload.get().contains("not_member"));
}

#[test]
fn a_silent_member_is_dropped_with_a_leave_hook_and_keeps_its_role_on_return() {
    let mut sim = Sim::new(&["H", "A", "B"], HandlerRegistry::new());
    let g = sim.create(
        "H",
        GroupSpec {
            roles: vec!["viewer".to_owned(), "editor".to_owned()],
            ..spec("g")
        },
    );
    sim.join("A", "H", &g).unwrap();
    sim.join("B", "H", &g).unwrap();
    sim.with("H", |c, now| c.set_role(now, &g, &peer("A"), "editor"))
        .unwrap();
    assert_eq!(sim.core("A").subscription(&g).unwrap().role, "editor");
    assert!(matches!(
        sim.with("H", |c, now| c.set_role(now, &g, &peer("A"), "god")),
        Err(GroupError::UnknownRole { .. })
    ));

    sim.muted.insert(peer("A"));
    for _ in 0..5 {
        sim.tick(10_000);
    }
    assert_eq!(sim.member_ids("H", &g), vec![peer("B")]);
    assert!(sim.hooks.iter().any(|(_, h)| matches!(
        h,
        HookCall::Leave { peer: p, reason: LeaveReason::Lost, .. } if p == &peer("A")
    )));
    // B was told.
    let last_members = sim.core("B").subscription(&g).unwrap().members;
    assert_eq!(last_members.len(), 1);

    // A hears nothing from the host either, so it rejoins by itself, and keeps its role.
    sim.muted.clear();
    for _ in 0..8 {
        sim.tick(5_000);
    }
    let sub = sim.core("A").subscription(&g).unwrap();
    assert!(sub.connected);
    assert_eq!(sub.role, "editor");
    assert_eq!(sim.member_ids("H", &g).len(), 2);

    // A member lost for now can be kicked: it is banned, and told so when it comes back.
    sim.muted.insert(peer("B"));
    for _ in 0..5 {
        sim.tick(10_000);
    }
    assert_eq!(sim.member_ids("H", &g), vec![peer("A")]);
    sim.with("H", |c, now| c.kick(now, &g, &peer("B"))).unwrap();
    assert_eq!(
        sim.core("H").hosted_group(&g).unwrap().banned,
        vec![peer("B")]
    );
    assert!(matches!(
        sim.with("H", |c, now| c.kick(now, &g, &peer("B"))),
        Err(GroupError::NotMember { .. })
    ));
    sim.muted.clear();
    for _ in 0..8 {
        sim.tick(5_000);
    }
    assert!(sim.core("B").subscription(&g).is_none(), "B gave up");
    assert_eq!(sim.member_ids("H", &g), vec![peer("A")]);
}

/// While a join waits for its host, a `welcome` or an `error` from another peer (a member of
/// the group, even) is ignored, where Goop² took them from anyone; a second join of the same
/// group is refused as in progress; the host's own welcome ends it.
#[test]
fn a_pending_join_is_answered_only_by_its_host() {
    let mut sim = Sim::new(&["H", "A", "M"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    sim.join("M", "H", &g).unwrap();
    // The host is slow to answer: A's join is pending while M forges the answers.
    sim.muted.insert(peer("H"));
    let ticket = sim
        .with("A", |c, now| c.join_remote(now, &peer("H"), &g))
        .unwrap();
    let forged = proto::Welcome {
        group_name: "forged".to_owned(),
        ..proto::Welcome::default()
    };
    sim.inject("M", "A", &GroupMessage::Welcome(Box::new(forged)), &g);
    sim.inject(
        "M",
        "A",
        &GroupMessage::Error(proto::ErrorBody::new(ErrorCode::Forbidden)),
        &g,
    );
    assert!(sim.core("A").subscription(&g).is_none());
    assert!(
        !sim.joins
            .iter()
            .any(|(who, t, _)| who == &peer("A") && *t == ticket),
        "a forged message answered the join"
    );
    assert!(matches!(
        sim.with("A", |c, now| c.join_remote(now, &peer("H"), &g)),
        Err(GroupError::JoinInProgress(_))
    ));
    // The host answers after all (the join reaches it late): its welcome ends the join,
    // under the group's real name.
    sim.muted.clear();
    sim.inject(
        "A",
        "H",
        &GroupMessage::Join(proto::JoinOptions::default()),
        &g,
    );
    let answer = sim
        .joins
        .iter()
        .find(|(who, t, _)| who == &peer("A") && *t == ticket)
        .map(|(_, _, r)| r.clone());
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    assert_eq!(sim.core("A").subscription(&g).unwrap().group_name, "g");
}

#[test]
fn a_late_welcome_does_not_leave_a_ghost() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    // A's join reaches the host, but the welcome is lost on the way back.
    sim.lose = Some(|w| w.topic.ends_with(":welcome"));
    let ticket = sim.with("A", |c, now| c.join_remote(now, &peer("H"), &g).unwrap());
    assert_eq!(sim.member_ids("H", &g), vec![peer("A")]);
    sim.lose = None;
    sim.tick(6_000);
    assert!(
        sim.joins
            .iter()
            .any(|(_, t, r)| *t == ticket && matches!(r, Err(GroupError::JoinTimedOut { .. })))
    );
    // The timed-out join sent a leave, so the host holds no ghost.
    assert!(sim.member_ids("H", &g).is_empty());
    // A welcome that arrives after all is answered with a leave.
    let welcome = GroupMessage::Welcome(Box::default());
    sim.inject("H", "A", &welcome, &g);
    assert!(sim.core("A").subscription(&g).is_none());
    let last = sim.delivered.last().unwrap();
    assert_eq!(last.from, peer("A"));
    assert_eq!(last.topic, format!("group:{g}:leave"));
}

#[test]
fn goop2_members_get_bare_relays_and_ours_get_the_author() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    sim.join("A", "H", &g).unwrap();
    // A Goop² member joins without asking for the author feature.
    sim.inject(
        "Go",
        "H",
        &GroupMessage::Join(proto::JoinOptions::default()),
        &g,
    );
    let welcome = sim
        .delivered
        .iter()
        .rev()
        .find(|w| w.to == peer("Go"))
        .unwrap();
    assert!(welcome.topic.ends_with(":welcome"));
    assert!(!welcome.payload.get().contains("features"));
    sim.with("A", |c, now| {
        c.send_to_group(now, &g, raw_json(r#"{"x":1}"#), false)
    })
    .unwrap();
    let relay = sim
        .delivered
        .iter()
        .rev()
        .find(|w| w.to == peer("Go"))
        .unwrap();
    assert_eq!(relay.payload.get(), r#"{"x":1}"#);
    sim.inject(
        "Go",
        "H",
        &GroupMessage::Msg(Relay {
            from: None,
            payload: raw_json("2"),
        }),
        &g,
    );
    let at_a = sim.events_of("A", GroupEventKind::Msg);
    assert_eq!(at_a.last().unwrap().from, Some(peer("Go")));
}

#[test]
fn joining_a_volatile_group_leaves_the_other_of_its_type() {
    let mut registry = HandlerRegistry::new();
    registry.register("cluster", Arc::new(NoHost));
    let mut sim = Sim::new(&["H1", "H2", "W"], registry);
    let c1 = sim.create(
        "H1",
        GroupSpec {
            group_type: "cluster".to_owned(),
            ..spec("c1")
        },
    );
    let c2 = sim.create(
        "H2",
        GroupSpec {
            group_type: "cluster".to_owned(),
            ..spec("c2")
        },
    );
    sim.join("W", "H1", &c1).unwrap();
    sim.join("W", "H2", &c2).unwrap();
    let subs: Vec<GroupId> = sim
        .core("W")
        .subscriptions()
        .into_iter()
        .map(|s| s.group)
        .collect();
    assert_eq!(subs, vec![c2.clone()]);
    assert!(sim.member_ids("H1", &c1).is_empty());
    assert_eq!(sim.member_ids("H2", &c2), vec![peer("W")]);
    // Volatile subscriptions are not stored.
    assert!(sim.writes.get(&peer("W")).is_none_or(Vec::is_empty));
}

#[test]
fn a_lost_leave_does_not_leave_a_ghost() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    sim.join("A", "H", &g).unwrap();
    sim.lose = Some(|w| w.topic.ends_with(":leave"));
    sim.with("A", |c, now| c.leave_remote(now, &g)).unwrap();
    assert_eq!(sim.member_ids("H", &g), vec![peer("A")]);
    sim.lose = None;
    // The next ping reaches a peer that is no longer a member; it answers leave.
    sim.tick(10_000);
    assert!(sim.member_ids("H", &g).is_empty());
    assert!(sim.hooks.iter().any(|(_, h)| matches!(
        h,
        HookCall::Leave {
            reason: LeaveReason::Left,
            ..
        }
    )));
}

#[test]
fn hosts_take_back_members_after_a_restore() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let g = sim.create("H", spec("g"));
    sim.join("A", "H", &g).unwrap();
    sim.with("H", |c, now| c.set_role(now, &g, &peer("A"), "editor"))
        .unwrap();
    // Replay what the host wrote into a snapshot, as the store would load it.
    let mut snapshot = StoreSnapshot::default();
    for op in sim.writes.remove(&peer("H")).unwrap() {
        match op {
            StoreOp::PutGroup(r) => {
                snapshot.groups.retain(|g| g.id != r.id);
                snapshot.groups.push(r);
            }
            StoreOp::PutMember { group, member } => {
                snapshot.members.retain(|(_, m)| m.peer != member.peer);
                snapshot.members.push((group, member));
            }
            other => panic!("unexpected write {other:?}"),
        }
    }
    let registry = Arc::new(HandlerRegistry::new());
    let mut restarted = GroupCore::new(peer("H"), config(), registry);
    restarted.restore(sim.now, snapshot);
    let outputs = restarted.take_outputs();
    sim.cores.insert(peer("H"), restarted);
    sim.hooks.clear();
    sim.absorb(&peer("H"), outputs);
    assert_eq!(sim.member_ids("H", &g), vec![peer("A")]);
    // The handler hears of the restored group, not yet of a member that may not come back.
    assert!(matches!(
        &sim.hooks[..],
        [(_, HookCall::Create { restored: true, .. })]
    ));
    // The restarted host pings; A rejoins to refresh and keeps its role.
    sim.offline.insert(peer("H"));
    let now = sim.now;
    let outputs = sim
        .core("A")
        .handle(now, Input::PeerDisconnected(peer("H")));
    sim.absorb(&peer("A"), outputs);
    sim.offline.clear();
    let outputs = sim.core("A").handle(now, Input::PeerConnected(peer("H")));
    sim.absorb(&peer("A"), outputs);
    sim.run();
    let sub = sim.core("A").subscription(&g).unwrap();
    assert!(sub.connected);
    assert_eq!(sub.role, "editor");
    let joins = sim
        .hooks
        .iter()
        .filter(|(_, h)| matches!(h, HookCall::Join { peer: p, .. } if p == &peer("A")))
        .count();
    assert_eq!(joins, 1, "on_join once the restored member is back");
}

struct NoHost;
impl TypeHandler for NoHost {
    fn host_can_join(&self) -> bool {
        false
    }
    fn volatile(&self) -> bool {
        true
    }
}

#[test]
fn type_flags_apply_and_volatile_groups_are_singletons_and_not_stored() {
    let mut registry = HandlerRegistry::new();
    registry.register("cluster", Arc::new(NoHost));
    let mut sim = Sim::new(&["H"], registry);
    let first = sim.create(
        "H",
        GroupSpec {
            group_type: "cluster".to_owned(),
            ..spec("c1")
        },
    );
    assert!(matches!(
        sim.with("H", |c, now| c.join_own(now, &first)),
        Err(GroupError::HostCannotJoin(_))
    ));
    let second = sim.create(
        "H",
        GroupSpec {
            group_type: "cluster".to_owned(),
            ..spec("c2")
        },
    );
    let hosted: Vec<GroupId> = sim
        .core("H")
        .hosted_groups()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(hosted, vec![second]);
    assert!(sim.writes.get(&peer("H")).is_none_or(Vec::is_empty));
    // A group of a type without a handler is an ordinary group.
    let plain = sim.create(
        "H",
        GroupSpec {
            group_type: "general".to_owned(),
            ..spec("p")
        },
    );
    sim.with("H", |c, now| c.join_own(now, &plain)).unwrap();
}

#[test]
fn discovery_lists_open_and_approval_groups_not_invite_only_ones() {
    let mut sim = Sim::new(&["H", "A"], HandlerRegistry::new());
    let open = sim.create("H", spec("open"));
    sim.create(
        "H",
        GroupSpec {
            admission: Admission::Invite,
            ..spec("closed")
        },
    );
    sim.tick(1);
    let asking = sim.create(
        "H",
        GroupSpec {
            admission: Admission::Approval,
            ..spec("asking")
        },
    );
    let ticket = sim.with("A", |c, now| c.discover(now, &peer("H"), None));
    let reply = sim
        .delivered
        .iter()
        .find(|w| w.topic == proto::DISCOVER_REPLY_TOPIC)
        .unwrap();
    let reply: proto::DiscoverReply = serde_json::from_str(reply.payload.get()).unwrap();
    assert_eq!(reply.request_id, ticket.0);
    // Newest first, each row saying how it admits.
    let listed: Vec<_> = reply
        .data
        .iter()
        .map(|row| (row.id.clone(), row.admission))
        .collect();
    assert_eq!(
        listed,
        [
            (asking, Some(Admission::Approval)),
            (open, Some(Admission::Open))
        ]
    );
    assert!(reply.data.iter().all(|row| row.owner == peer("H")));
}

#[test]
fn rfc3339_matches_known_dates() {
    assert_eq!(host::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(host::rfc3339(1_741_435_200_000), "2025-03-08T12:00:00Z");
    assert_eq!(host::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
}

/// The tables as the store would hold them after `ops`, normalised for comparison with
/// [`GroupCore::store_snapshot`] (lost members' join times and invitation times are not kept
/// in memory).
fn replay(ops: &[StoreOp]) -> StoreSnapshot {
    let mut groups = BTreeMap::new();
    let mut members = BTreeMap::new();
    let mut invites = BTreeSet::new();
    let mut bans = BTreeMap::new();
    let mut requests = BTreeMap::new();
    let mut subs = BTreeMap::new();
    for op in ops {
        match op.clone() {
            StoreOp::PutGroup(g) => {
                groups.insert(g.id.clone(), g);
            }
            StoreOp::DeleteGroup(id) => {
                groups.remove(&id);
                members.retain(|(g, _), _| g != &id);
                invites.retain(|(g, _)| g != &id);
                bans.retain(|(g, _), _| g != &id);
                requests.retain(|(g, _), _| g != &id);
            }
            StoreOp::PutMember { group, mut member } => {
                if !member.present {
                    member.joined_at = 0;
                }
                members.insert((group, member.peer.clone()), member);
            }
            StoreOp::DeleteMember { group, peer } => {
                members.remove(&(group, peer));
            }
            StoreOp::PutInvite { group, peer, .. } => {
                invites.insert((group, peer));
            }
            StoreOp::DeleteInvite { group, peer } => {
                invites.remove(&(group, peer));
            }
            StoreOp::PutBan {
                group,
                peer,
                banned_at,
            } => {
                bans.insert((group, peer), banned_at);
            }
            StoreOp::DeleteBan { group, peer } => {
                bans.remove(&(group, peer));
            }
            StoreOp::PutRequest {
                group,
                peer,
                requested_at,
            } => {
                requests.insert((group, peer), requested_at);
            }
            StoreOp::DeleteRequest { group, peer } => {
                requests.remove(&(group, peer));
            }
            StoreOp::PutSubscription(sub) => {
                subs.insert((sub.host.clone(), sub.group.clone()), sub);
            }
            StoreOp::DeleteSubscription { host, group } => {
                subs.remove(&(host, group));
            }
            StoreOp::ReplaceAll(snapshot) => {
                // A restart in the simulation: the tables start again from what was loaded.
                let snapshot = normalised(*snapshot);
                groups = snapshot
                    .groups
                    .into_iter()
                    .map(|g| (g.id.clone(), g))
                    .collect();
                members = snapshot
                    .members
                    .into_iter()
                    .map(|(g, m)| ((g, m.peer.clone()), m))
                    .collect();
                invites = snapshot.invites.into_iter().collect();
                bans = snapshot
                    .bans
                    .into_iter()
                    .map(|(g, p, at)| ((g, p), at))
                    .collect();
                requests = snapshot
                    .requests
                    .into_iter()
                    .map(|(g, p, at)| ((g, p), at))
                    .collect();
                subs = snapshot
                    .subscriptions
                    .into_iter()
                    .map(|s| ((s.host.clone(), s.group.clone()), s))
                    .collect();
            }
        }
    }
    StoreSnapshot {
        groups: groups.into_values().collect(),
        members: members.into_iter().map(|((g, _), m)| (g, m)).collect(),
        invites: invites.into_iter().collect(),
        bans: bans.into_iter().map(|((g, p), at)| (g, p, at)).collect(),
        requests: requests
            .into_iter()
            .map(|((g, p), at)| (g, p, at))
            .collect(),
        subscriptions: subs.into_values().collect(),
    }
}

/// The same normalisation and order for a core's own view.
fn normalised(mut snapshot: StoreSnapshot) -> StoreSnapshot {
    snapshot.groups.sort_by(|a, b| a.id.cmp(&b.id));
    for (_, m) in &mut snapshot.members {
        if !m.present {
            m.joined_at = 0;
        }
    }
    snapshot
        .members
        .sort_by(|a, b| (&a.0, &a.1.peer).cmp(&(&b.0, &b.1.peer)));
    snapshot.invites.sort();
    snapshot.bans.sort();
    snapshot.requests.sort();
    snapshot
        .subscriptions
        .sort_by(|a, b| (&a.host, &a.group).cmp(&(&b.host, &b.group)));
    snapshot
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Leave(usize),
    Kick(usize),
    Send(usize),
    Mute(usize),
    Unmute(usize),
    SetRole(usize, bool),
    RestartHost,
    RestartPeer(usize),
    Invite(usize),
    Unban(usize),
    Approve(usize),
    Deny(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..5usize).prop_map(Op::Join),
        1 => (0..5usize).prop_map(Op::Leave),
        1 => (0..5usize).prop_map(Op::Kick),
        3 => (0..5usize).prop_map(Op::Send),
        1 => (0..5usize).prop_map(Op::Mute),
        1 => (0..5usize).prop_map(Op::Unmute),
        1 => (0..5usize, any::<bool>()).prop_map(|(i, e)| Op::SetRole(i, e)),
        1 => Just(Op::RestartHost),
        1 => (0..5usize).prop_map(Op::RestartPeer),
        1 => (0..5usize).prop_map(Op::Invite),
        1 => (0..5usize).prop_map(Op::Unban),
        1 => (0..5usize).prop_map(Op::Approve),
        1 => (0..5usize).prop_map(Op::Deny),
        2 => (1..20_000u64).prop_map(Op::Tick),
    ]
}

const PEERS: [&str; 5] = ["P0", "P1", "P2", "P3", "P4"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever peers do: the member count never exceeds the limit; every relayed message
    /// reaches only peers that were members when it was relayed, and carries its true
    /// author; nobody receives a message twice.
    #[test]
    fn membership_invariants(
        max in 0u32..4,
        admission in prop_oneof![
            Just(Admission::Open),
            Just(Admission::Invite),
            Just(Admission::Approval),
        ],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut names = vec!["H"];
        names.extend(PEERS);
        let mut sim = Sim::new(&names, HandlerRegistry::new());
        let g = sim.create("H", GroupSpec { max_members: max, admission, ..spec("g") });
        let mut sent = 0u64;
        for op in ops {
            match op {
                Op::Join(i) => {
                    let _ = sim.with(PEERS[i], |c, now| c.join_remote(now, &peer("H"), &g));
                }
                Op::Leave(i) => {
                    let _ = sim.with(PEERS[i], |c, now| c.leave_remote(now, &g));
                }
                Op::Kick(i) => {
                    let _ = sim.with("H", |c, now| c.kick(now, &g, &peer(PEERS[i])));
                }
                Op::Send(i) => {
                    sent += 1;
                    let body = format!("{{\"author\":\"{}\",\"n\":{sent}}}", peer(PEERS[i]));
                    let _ = sim.with(PEERS[i], |c, now| c.send_to_group(now, &g, raw_json(&body), false));
                }
                Op::Mute(i) => { sim.muted.insert(peer(PEERS[i])); }
                Op::Unmute(i) => { sim.muted.remove(&peer(PEERS[i])); }
                Op::SetRole(i, editor) => {
                    let role = if editor { "editor" } else { "viewer" };
                    let _ = sim.with("H", |c, now| c.set_role(now, &g, &peer(PEERS[i]), role));
                }
                Op::RestartHost => sim.restart("H"),
                Op::RestartPeer(i) => sim.restart(PEERS[i]),
                Op::Invite(i) => {
                    let _ = sim.with("H", |c, now| c.invite(now, &g, &peer(PEERS[i])));
                }
                Op::Unban(i) => {
                    let _ = sim.with("H", |c, _| c.unban(&g, &peer(PEERS[i])));
                }
                Op::Approve(i) => {
                    let _ = sim.with("H", |c, now| c.approve(now, &g, &peer(PEERS[i])));
                }
                Op::Deny(i) => {
                    let _ = sim.with("H", |c, now| c.deny(now, &g, &peer(PEERS[i])));
                }
                Op::Tick(ms) => sim.tick(ms),
            }
            let count = sim.member_ids("H", &g).len();
            prop_assert!(max == 0 || count <= max as usize, "{count} members, limit {max}");
            let hosted = sim.core("H").hosted_group(&g).unwrap();
            for m in &hosted.members {
                prop_assert!(!hosted.banned.contains(&m.peer_id), "banned member");
            }
            if admission != Admission::Open {
                for m in &hosted.members {
                    prop_assert!(hosted.invited.contains(&m.peer_id), "uninvited member");
                }
            }
            // A request is only ever waiting: not from a member, an invited or a banned peer,
            // and only in a group that admits by approval.
            for r in &hosted.requests {
                prop_assert!(admission == Admission::Approval, "request in a {admission:?} group");
                prop_assert!(!hosted.members.iter().any(|m| &m.peer_id == r), "member with a request");
                prop_assert!(!hosted.invited.contains(r), "invited peer with a request");
                prop_assert!(!hosted.banned.contains(r), "banned peer with a request");
            }
        }
        // Once the network heals and time passes, both sides agree on who is a member and with
        // which role: no ghosts, no zombies.
        sim.muted.clear();
        for _ in 0..30 {
            sim.tick(5_000);
        }
        let host_view: BTreeMap<PeerId, String> = sim
            .core("H")
            .members(&g)
            .unwrap()
            .into_iter()
            .map(|m| (m.peer_id, m.role))
            .collect();
        for p in PEERS {
            let sub = sim.core(p).subscription(&g);
            let member_view = sub.filter(|s| s.connected).map(|s| s.role);
            prop_assert_eq!(host_view.get(&peer(p)).cloned(), member_view, "views of {}", p);
        }
        // What each peer wrote, replayed, is what it holds in memory: no change goes unstored.
        for (who, core) in &sim.cores {
            let written = sim.writes.get(who).map(|ops| replay(ops)).unwrap_or_default();
            prop_assert_eq!(written, normalised(core.store_snapshot()), "store of {}", who);
        }
        // Every msg event carries the author named in the payload, and none is seen twice.
        let mut seen = BTreeSet::new();
        for (who, event) in &sim.events {
            if event.kind != GroupEventKind::Msg { continue; }
            let body: serde_json::Value = serde_json::from_str(event.payload.as_ref().unwrap().get()).unwrap();
            let from = event.from.as_ref().map(ToString::to_string);
            prop_assert_eq!(from.as_deref(), body["author"].as_str());
            prop_assert!(seen.insert((who.clone(), body["n"].as_u64())), "duplicate delivery");
            prop_assert!(event.from.as_ref() != Some(who), "own message echoed");
        }
        // Relays only go to members, checked when the host emits them, and a peer that never
        // joined received none.
        prop_assert_eq!(sim.relays_to_non_members, 0);
        let never_joined: BTreeSet<PeerId> = PEERS.iter().map(|p| peer(p)).filter(|p| {
            !sim.delivered.iter().any(|w| &w.to == p && w.topic.ends_with(":welcome"))
        }).collect();
        for wire in &sim.delivered {
            if wire.topic.ends_with(":msg") && wire.from == peer("H") {
                prop_assert!(!never_joined.contains(&wire.to), "relay to a non-member");
            }
        }
    }
}
