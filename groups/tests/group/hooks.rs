//! Type handlers: every hook fires, on every way in and out, and a refusal undoes a create.

use std::sync::{Arc, Mutex};

use groups::group::{
    CreateInfo, GroupError, GroupSpec, HandlerRegistry, LeaveReason, MemoryNetwork, TypeHandler,
};
use proto::{GroupEvent, GroupId, PeerId};

use super::harness::{Peer, eventually, raw};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl TypeHandler for Recorder {
    fn on_create(&self, info: &CreateInfo<'_>) -> Result<(), String> {
        if info.name == "refuse" {
            return Err("no thanks".to_owned());
        }
        self.push(format!("create {}", info.name));
        Ok(())
    }

    fn on_join(&self, _group: &GroupId, _peer: &PeerId, is_host: bool) {
        self.push(format!("join host={is_host}"));
    }

    fn on_leave(&self, _group: &GroupId, _peer: &PeerId, is_host: bool, reason: LeaveReason) {
        self.push(format!("leave host={is_host} {}", reason.as_str()));
    }

    fn on_close(&self, _group: &GroupId) {
        self.push("close".to_owned());
    }

    fn on_event(&self, event: &GroupEvent) {
        self.push(format!("event {:?}", event.kind));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_fire_for_every_way_in_and_out() {
    let net = MemoryNetwork::new();
    let recorder = Arc::new(Recorder::default());
    let member_recorder = Arc::new(Recorder::default());
    let mut registry = HandlerRegistry::new();
    registry.register("rec", recorder.clone());
    let mut member_registry = HandlerRegistry::new();
    member_registry.register("rec", member_recorder.clone());
    let host = Peer::start_with(&net, "Host", registry, None).await;
    let a = Peer::start_with(&net, "A", member_registry, None).await;
    let b = Peer::start(&net, "B").await;

    let refused = host
        .handle
        .create(GroupSpec {
            name: "refuse".to_owned(),
            group_type: "rec".to_owned(),
            ..GroupSpec::default()
        })
        .await;
    assert!(
        matches!(refused, Err(GroupError::Handler { .. })),
        "{refused:?}"
    );
    assert!(host.handle.hosted_groups().await.unwrap().is_empty());

    let g = host
        .handle
        .create(GroupSpec {
            name: "rec".to_owned(),
            group_type: "rec".to_owned(),
            ..GroupSpec::default()
        })
        .await
        .unwrap();
    host.handle.join_own(g.clone()).await.unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    b.handle.join(host.id.clone(), g.clone()).await.unwrap();
    a.handle.send(g.clone(), raw("1")).await.unwrap();
    eventually("the host relays", || async {
        recorder.calls().iter().any(|c| c == "event Msg")
    })
    .await;
    host.handle.kick(g.clone(), b.id.clone()).await.unwrap();
    a.handle.leave(g.clone()).await.unwrap();
    eventually("the host sees a leave", || async {
        recorder
            .calls()
            .iter()
            .any(|c| c == "leave host=false left")
    })
    .await;
    host.handle.leave_own(g.clone()).await.unwrap();
    host.handle.close(g.clone()).await.unwrap();

    let calls = recorder.calls();
    let hooks: Vec<&String> = calls.iter().filter(|c| !c.starts_with("event")).collect();
    assert_eq!(
        hooks,
        [
            // The refused group is closed again, so its handler can clean up.
            "close",
            "create rec",
            "join host=true",
            "join host=false",
            "join host=false",
            "leave host=false kicked",
            "leave host=false left",
            "leave host=true left",
            "close",
        ]
    );
    // The member side saw its welcome through on_event.
    assert!(member_recorder.calls().iter().any(|c| c == "event Welcome"));
}
