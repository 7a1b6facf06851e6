//! Peers with a group manager each, on one in-memory network; raw peers that speak the wire
//! by hand (to forge, to stay silent); polling with a deadline instead of sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use groups::group::{
    GroupConfig, GroupHandle, GroupManagerParts, GroupSpec, GroupStore, GroupTransport,
    HandlerRegistry, MemoryNetwork, MemoryTransport, TransportEvent, spawn_group_manager,
};
use proto::{GroupEvent, GroupId, GroupMessage, PeerId};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn peer(name: &str) -> PeerId {
    format!("12D3KooW{name}").parse().unwrap()
}

pub(crate) fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// Fast timers so liveness shows within a test's second.
pub(crate) fn config() -> GroupConfig {
    GroupConfig {
        ping_interval: Duration::from_millis(100),
        member_timeout: Duration::from_millis(1500),
        host_timeout: Duration::from_millis(1500),
        join_timeout: Duration::from_secs(2),
        discover_timeout: Duration::from_secs(2),
        rejoin_backoff_min: Duration::from_millis(50),
        rejoin_backoff_max: Duration::from_millis(400),
        tick_interval: Duration::from_millis(20),
        ..GroupConfig::default()
    }
}

/// A peer running a group manager.
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    pub(crate) handle: GroupHandle,
    pub(crate) events: broadcast::Receiver<GroupEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Peer {
    pub(crate) async fn start(net: &MemoryNetwork, name: &str) -> Self {
        Self::start_with(net, name, HandlerRegistry::new(), None).await
    }

    pub(crate) async fn start_with(
        net: &MemoryNetwork,
        name: &str,
        registry: HandlerRegistry,
        db: Option<&Path>,
    ) -> Self {
        Self::start_full(net, name, registry, db, Vec::new()).await
    }

    pub(crate) async fn start_full(
        net: &MemoryNetwork,
        name: &str,
        registry: HandlerRegistry,
        db: Option<&Path>,
        startup_groups: Vec<GroupSpec>,
    ) -> Self {
        let id = peer(name);
        let store = match db {
            Some(path) => Some(GroupStore::open_async(path.to_owned()).await.unwrap()),
            None => None,
        };
        let (transport, incoming) = net.attach(id.clone(), 4096);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let handle = spawn_group_manager(
            GroupManagerParts {
                config: config(),
                registry,
                store,
                startup_groups,
                ..GroupManagerParts::new(id.clone(), transport, incoming)
            },
            &tracker,
            cancel.clone(),
        )
        .await
        .unwrap();
        let events = handle.events();
        Self {
            id,
            handle,
            events,
            cancel,
            tracker,
        }
    }

    /// Stops the manager (and closes its store), then takes the peer off the network.
    pub(crate) async fn stop(self, net: &MemoryNetwork) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(DEADLINE, self.tracker.wait())
            .await
            .expect("manager stops");
        net.detach(&self.id);
    }

    /// Waits for the next local event matching `pred`, skipping others.
    pub(crate) async fn next_event(&mut self, pred: impl Fn(&GroupEvent) -> bool) -> GroupEvent {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match self.events.recv().await {
                    Ok(event) if pred(&event) => return event,
                    Ok(_) => {}
                    Err(error) => panic!("event stream: {error}"),
                }
            }
        })
        .await
        .expect("event arrives before the deadline")
    }
}

/// A peer with no manager: sends whatever it is told and records what it receives.
pub(crate) struct RawPeer {
    pub(crate) id: PeerId,
    transport: MemoryTransport,
    incoming: mpsc::Receiver<TransportEvent>,
}

impl RawPeer {
    pub(crate) fn attach(net: &MemoryNetwork, name: &str) -> Self {
        let id = peer(name);
        let (transport, incoming) = net.attach(id.clone(), 4096);
        Self {
            id,
            transport,
            incoming,
        }
    }

    pub(crate) async fn send(&self, to: &PeerId, group: &GroupId, message: &GroupMessage) {
        let (topic, payload) = message.encode(group).unwrap();
        self.transport.send(to, &topic, payload).await.unwrap();
    }

    /// Sends a JSON literal as it would come from a Goop² peer.
    pub(crate) async fn send_raw(&self, to: &PeerId, topic: &str, json: &str) {
        self.transport.send(to, topic, raw(json)).await.unwrap();
    }

    /// The next message received whose topic ends with `suffix`.
    pub(crate) async fn next_message(&mut self, suffix: &str) -> (PeerId, String, Box<RawValue>) {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match self.incoming.recv().await {
                    Some(TransportEvent::Message {
                        from,
                        topic,
                        payload,
                    }) if topic.ends_with(suffix) => return (from, topic, payload),
                    Some(_) => {}
                    None => panic!("raw peer detached"),
                }
            }
        })
        .await
        .expect("message arrives before the deadline")
    }
}

/// Polls `check` until it returns true or the deadline passes.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The peer ids of a group's members, as `handle` sees them.
pub(crate) async fn member_ids(handle: &GroupHandle, group: &GroupId) -> Vec<PeerId> {
    handle
        .members(group.clone())
        .await
        .map(|m| m.into_iter().map(|m| m.peer_id).collect())
        .unwrap_or_default()
}

/// A fresh directory for a database.
pub(crate) fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "goop-group-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("data.db")
}
