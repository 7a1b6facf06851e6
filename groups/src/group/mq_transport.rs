//! The group transport over the MQ bus: what a `goop node` runs groups on.
//!
//! Sends go through [`Mq::enqueue`], so the manager's per-peer sender pipelines them and each
//! delivery resolves on the remote's acknowledgement. A send to this peer itself never touches
//! the network: it goes straight into the manager's own channel (the MQ bus refuses
//! self-sends).
//!
//! One forwarding task merges the MQ subscription to the `group` topics (`group:<gid>:<type>`,
//! `group.invite`, `group.discover*`) with the node's connection events into the manager's
//! bounded channel. `from` is always the authenticated remote of the stream a message came on.
//! When the bounded connection-event channel overflows (`Lagged`), the task re-reads the
//! connected peers and reports the difference, so no connect or disconnect is lost for good.
//!
//! Liveness and idle connections: libp2p closes a connection with no open stream after the
//! node's idle timeout (60 s), which raises `Disconnected` for a peer that is still alive. A
//! group keeps its links busy instead: the host pings every member every `ping_interval`
//! (20 s by default) and each member answers, both on long-lived MQ streams that stay open
//! for `link_idle` (120 s) after their last message. So a connection between a host and a
//! live member always carries an open stream and is never idle; a `Disconnected` for a member
//! means the connection really broke, and the host drops it (a member that is alive rejoins
//! at once, see the member's rejoin on reconnect).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use proto::PeerId;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::transport::{GroupTransport, TransportError, TransportEvent};
use crate::mq::{Incoming, Mq, MqError, Subscription};
use crate::net::{NodeHandle, PeerEvent, peer_to_proto, proto_to_peer};

/// The topic prefix the group manager listens on.
const GROUP_PREFIX: &str = "group";

/// Peer ids kept converted between their wire and libp2p forms: base58 costs more than the
/// rest of a small message's handling. Past this many the cache starts over.
const PEER_CACHE: usize = 4096;

/// Sends group messages over the MQ bus. Cheap to clone.
#[derive(Clone)]
pub struct MqTransport {
    mq: Mq,
    me: PeerId,
    local: mpsc::Sender<TransportEvent>,
    peers: Arc<Mutex<HashMap<PeerId, libp2p::PeerId>>>,
}

impl std::fmt::Debug for MqTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqTransport")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Builds the MQ transport and the manager's incoming channel (`capacity` events), and starts
/// the forwarding task in `tracker` until `cancel` fires. The subscription and the connection
/// events are taken before this returns, so nothing that happens afterwards is missed.
pub fn mq_transport(
    mq: &Mq,
    capacity: usize,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> (MqTransport, mpsc::Receiver<TransportEvent>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let subscription = mq.subscribe(GROUP_PREFIX);
    let peer_events = mq.peer_events();
    let forward = Forward {
        subscription,
        peer_events: Some(peer_events),
        node: mq.node().clone(),
        tx: tx.clone(),
        connected: HashSet::new(),
        names: HashMap::new(),
    };
    tracker.spawn(forward.run(cancel));
    let me = peer_to_proto(&mq.local_peer_id());
    (
        MqTransport {
            mq: mq.clone(),
            me,
            local: tx,
            peers: Arc::default(),
        },
        rx,
    )
}

impl GroupTransport for MqTransport {
    type Delivery = BoxFuture<'static, Result<(), TransportError>>;

    async fn queue(
        &self,
        to: &PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> Result<Self::Delivery, TransportError> {
        if to == &self.me {
            let event = TransportEvent::Message {
                from: self.me.clone(),
                topic: topic.to_owned(),
                payload,
            };
            let result =
                self.local.send(event).await.map_err(|_| {
                    TransportError::Refused("the group manager has stopped".to_owned())
                });
            return Ok(Box::pin(std::future::ready(result)));
        }
        let peer = self.libp2p_peer(to)?;
        let pending = self
            .mq
            .enqueue(peer, topic, payload)
            .await
            .map_err(transport_error)?;
        Ok(Box::pin(async move {
            pending.acked().await.map(|_| ()).map_err(transport_error)
        }))
    }
}

impl MqTransport {
    fn libp2p_peer(&self, to: &PeerId) -> Result<libp2p::PeerId, TransportError> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = peers.get(to) {
            return Ok(*peer);
        }
        let peer = proto_to_peer(to).map_err(|e| TransportError::Unreachable(e.to_string()))?;
        if peers.len() >= PEER_CACHE {
            peers.clear();
        }
        peers.insert(to.clone(), peer);
        Ok(peer)
    }
}

/// How an MQ failure reads to the group manager: a peer that cannot be reached is lost, a
/// message it refused is a refusal.
fn transport_error(error: MqError) -> TransportError {
    match error {
        MqError::Undeliverable { .. } => TransportError::Unreachable(error.to_string()),
        MqError::SelfSend
        | MqError::TooLarge { .. }
        | MqError::Payload(_)
        | MqError::Rejected { .. }
        | MqError::Closed => TransportError::Refused(error.to_string()),
    }
}

struct Forward {
    subscription: Subscription,
    peer_events: Option<broadcast::Receiver<PeerEvent>>,
    node: NodeHandle,
    tx: mpsc::Sender<TransportEvent>,
    /// The peers the manager was told are connected.
    connected: HashSet<libp2p::PeerId>,
    /// Wire forms of the senders seen.
    names: HashMap<libp2p::PeerId, PeerId>,
}

enum Event {
    Stop,
    Message(Incoming),
    Peer(PeerEvent),
    PeersLagged(u64),
    PeersClosed,
}

impl Forward {
    async fn run(mut self, cancel: CancellationToken) {
        // Peers connected before the subscription started are connected for the manager too.
        if !self.resync(&cancel).await {
            return;
        }
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => Event::Stop,
                message = self.subscription.recv() => message.map_or(Event::Stop, Event::Message),
                event = recv_peer(&mut self.peer_events) => match event {
                    Ok(event) => Event::Peer(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => Event::PeersLagged(n),
                    Err(broadcast::error::RecvError::Closed) => Event::PeersClosed,
                },
            };
            let out = match event {
                Event::Stop => break,
                Event::Message(message) => {
                    if !is_group_topic(&message.topic) {
                        tracing::debug!(topic = %message.topic, "ignoring a non-group topic");
                        continue;
                    }
                    TransportEvent::Message {
                        from: self.name(&message.from),
                        topic: message.topic,
                        payload: message.payload,
                    }
                }
                Event::Peer(PeerEvent::Connected { peer, .. }) => {
                    self.connected.insert(peer);
                    TransportEvent::Connected(peer_to_proto(&peer))
                }
                Event::Peer(PeerEvent::Disconnected { peer }) => {
                    self.connected.remove(&peer);
                    TransportEvent::Disconnected(peer_to_proto(&peer))
                }
                Event::PeersLagged(missed) => {
                    tracing::warn!(missed, "connection events lagged; re-reading the peers");
                    if !self.resync(&cancel).await {
                        break;
                    }
                    continue;
                }
                Event::PeersClosed => {
                    self.peer_events = None;
                    continue;
                }
            };
            if !self.deliver(out, &cancel).await {
                break;
            }
        }
        tracing::debug!("group transport forwarding stopped");
    }

    fn name(&mut self, peer: &libp2p::PeerId) -> PeerId {
        if let Some(name) = self.names.get(peer) {
            return name.clone();
        }
        if self.names.len() >= PEER_CACHE {
            self.names.clear();
        }
        let name = peer_to_proto(peer);
        self.names.insert(*peer, name.clone());
        name
    }

    /// Tells the manager about every change between what it knows and the connected peers.
    /// Returns false when the manager or the node is gone.
    async fn resync(&mut self, cancel: &CancellationToken) -> bool {
        let peers = tokio::select! {
            () = cancel.cancelled() => return false,
            peers = self.node.peers() => match peers {
                Ok(peers) => peers,
                Err(_) => return false,
            },
        };
        let now: HashSet<libp2p::PeerId> = peers.into_iter().map(|p| p.peer).collect();
        let gone: Vec<_> = self.connected.difference(&now).copied().collect();
        let new: Vec<_> = now.difference(&self.connected).copied().collect();
        self.connected = now;
        for peer in gone {
            if !self
                .deliver(TransportEvent::Disconnected(peer_to_proto(&peer)), cancel)
                .await
            {
                return false;
            }
        }
        for peer in new {
            if !self
                .deliver(TransportEvent::Connected(peer_to_proto(&peer)), cancel)
                .await
            {
                return false;
            }
        }
        true
    }

    /// Hands an event to the manager, waiting for room (the MQ receiver waits with it, which
    /// slows the senders down instead of dropping messages).
    async fn deliver(&self, event: TransportEvent, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            sent = self.tx.send(event) => sent.is_ok(),
        }
    }
}

async fn recv_peer(
    events: &mut Option<broadcast::Receiver<PeerEvent>>,
) -> Result<PeerEvent, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// `group:<gid>:<type>`, `group.invite`, `group.discover...`; not `groups...`.
fn is_group_topic(topic: &str) -> bool {
    topic.starts_with("group:") || topic.starts_with("group.")
}

#[cfg(test)]
mod tests {
    use super::is_group_topic;

    #[test]
    fn only_group_topics_reach_the_manager() {
        for t in [
            "group:abc:msg",
            "group.invite",
            "group.discover",
            "group.discover.reply",
        ] {
            assert!(is_group_topic(t), "{t}");
        }
        for t in ["groups", "groupx:1", "chat", "group"] {
            assert!(!is_group_topic(t), "{t}");
        }
    }
}
