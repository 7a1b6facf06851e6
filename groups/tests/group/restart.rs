//! Restarts: a host reopens its SQLite file and gets its groups and members back, and the
//! members come back by themselves; a member restores its subscriptions and rejoins.

use groups::group::{GroupSpec, HandlerRegistry, MemoryNetwork};
use proto::GroupEventKind;

use super::harness::{Peer, eventually, member_ids, raw, temp_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_restores_groups_and_members_come_back() {
    let net = MemoryNetwork::new();
    let db = temp_db("host-restart");
    let host = Peer::start_with(&net, "Host", HandlerRegistry::new(), Some(&db)).await;
    let a = Peer::start(&net, "A").await;
    let mut b = Peer::start(&net, "B").await;
    let g = host
        .handle
        .create(GroupSpec {
            name: "durable".to_owned(),
            max_members: 5,
            roles: vec!["viewer".to_owned(), "editor".to_owned()],
            ..GroupSpec::default()
        })
        .await
        .unwrap();
    host.handle.join_own(g.clone()).await.unwrap();
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    b.handle.join(host.id.clone(), g.clone()).await.unwrap();
    host.handle
        .set_role(g.clone(), a.id.clone(), "editor".to_owned())
        .await
        .unwrap();
    let host_id = host.id.clone();
    host.stop(&net).await;

    // The members notice.
    eventually("members notice the host is gone", || async {
        !a.handle.subscriptions().await.unwrap()[0].connected
            && !b.handle.subscriptions().await.unwrap()[0].connected
    })
    .await;
    assert!(matches!(
        a.handle.send(g.clone(), raw("1")).await,
        Err(groups::group::GroupError::HostLost { .. })
    ));

    let host = Peer::start_with(&net, "Host", HandlerRegistry::new(), Some(&db)).await;
    assert_eq!(host.id, host_id);
    let restored = host.handle.hosted_groups().await.unwrap();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].name, "durable");
    assert_eq!(restored[0].max_members, 5);
    assert!(restored[0].host_joined);

    eventually("members rejoin by themselves", || async {
        a.handle.subscriptions().await.unwrap()[0].connected
            && b.handle.subscriptions().await.unwrap()[0].connected
    })
    .await;
    let members = host.handle.members(g.clone()).await.unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].peer_id, host.id);
    let role_of_a = members
        .iter()
        .find(|m| m.peer_id == a.id)
        .unwrap()
        .role
        .clone();
    assert_eq!(role_of_a, "editor");

    // The relay works again, with the author.
    a.handle.send(g.clone(), raw(r#""back""#)).await.unwrap();
    let event = b
        .next_event(|e| e.kind == GroupEventKind::Msg && e.group == g)
        .await;
    assert_eq!(event.from, Some(a.id.clone()));
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_rejoins_its_groups() {
    let net = MemoryNetwork::new();
    let db = temp_db("member-restart");
    let host = Peer::start(&net, "Host").await;
    let g = host
        .handle
        .create(GroupSpec {
            name: "g".to_owned(),
            ..GroupSpec::default()
        })
        .await
        .unwrap();
    let a = Peer::start_with(&net, "A", HandlerRegistry::new(), Some(&db)).await;
    a.handle.join(host.id.clone(), g.clone()).await.unwrap();
    let a_id = a.id.clone();
    a.stop(&net).await;
    eventually("host drops the member", || async {
        member_ids(&host.handle, &g).await.is_empty()
    })
    .await;

    let a = Peer::start_with(&net, "A", HandlerRegistry::new(), Some(&db)).await;
    eventually("the member rejoins", || async {
        a.handle
            .subscriptions()
            .await
            .unwrap()
            .first()
            .is_some_and(|s| s.connected)
    })
    .await;
    assert_eq!(member_ids(&host.handle, &g).await, vec![a_id]);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

struct Volatile;
impl groups::group::TypeHandler for Volatile {
    fn volatile(&self) -> bool {
        true
    }
    fn host_can_join(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volatile_group_given_at_startup_keeps_its_members_across_a_restart() {
    let net = MemoryNetwork::new();
    let registry = || {
        let mut registry = HandlerRegistry::new();
        registry.register("cluster", std::sync::Arc::new(Volatile));
        registry
    };
    let spec = GroupSpec {
        id: Some("c0ffee00c0ffee00".parse().unwrap()),
        name: "cluster".to_owned(),
        group_type: "cluster".to_owned(),
        ..GroupSpec::default()
    };
    let host = Peer::start_full(&net, "Host", registry(), None, vec![spec.clone()]).await;
    let g = spec.id.clone().unwrap();
    let worker = Peer::start_with(&net, "W", registry(), None).await;
    worker
        .handle
        .join(host.id.clone(), g.clone())
        .await
        .unwrap();
    host.stop(&net).await;

    let host = Peer::start_full(&net, "Host", registry(), None, vec![spec]).await;
    eventually("the worker is back", || async {
        member_ids(&host.handle, &g).await == vec![worker.id.clone()]
    })
    .await;
    // The host counts the member when the join arrives; the worker counts itself connected
    // when the answer does, a moment later.
    eventually("the worker is connected again", || async {
        worker.handle.subscriptions().await.unwrap()[0].connected
    })
    .await;
}
