//! An in-memory transport connecting several group managers in one process: for tests and
//! local demos, not for production (the MQ bus over libp2p is the real one).
//!
//! Delivery is in order per (sender, receiver) when one task sends to a given peer at a time,
//! which is how the group manager sends. A peer can be taken offline (its peers see it
//! disconnect and sends to it fail) or muted (sends to it succeed but are never delivered, like
//! a process that hangs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use proto::PeerId;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::transport::{GroupTransport, TransportError, TransportEvent};

#[derive(Default)]
struct Inner {
    peers: BTreeMap<PeerId, mpsc::Sender<TransportEvent>>,
    muted: BTreeSet<PeerId>,
}

/// The shared medium. Cloning gives another handle to the same network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings `peer` online: it gets a transport and the receiver of its incoming events, and
    /// it and every online peer see each other connect. Replaces an earlier attachment.
    pub fn attach(
        &self,
        peer: PeerId,
        capacity: usize,
    ) -> (MemoryTransport, mpsc::Receiver<TransportEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut inner = self.lock();
        inner.muted.remove(&peer);
        for (other, other_tx) in &inner.peers {
            if other == &peer {
                continue;
            }
            let _ = other_tx.try_send(TransportEvent::Connected(peer.clone()));
            let _ = tx.try_send(TransportEvent::Connected(other.clone()));
        }
        inner.peers.insert(peer.clone(), tx);
        drop(inner);
        (
            MemoryTransport {
                me: peer,
                network: self.clone(),
            },
            rx,
        )
    }

    /// Takes `peer` offline: the others see it disconnect, sends to it fail.
    pub fn detach(&self, peer: &PeerId) {
        let mut inner = self.lock();
        inner.peers.remove(peer);
        for other_tx in inner.peers.values() {
            let _ = other_tx.try_send(TransportEvent::Disconnected(peer.clone()));
        }
    }

    /// Messages to `peer` are accepted and dropped, as if it hung.
    pub fn mute(&self, peer: &PeerId) {
        self.lock().muted.insert(peer.clone());
    }
}

/// One peer's side of a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    me: PeerId,
    network: MemoryNetwork,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("me", &self.me)
            .finish()
    }
}

impl GroupTransport for MemoryTransport {
    type Delivery = std::future::Ready<Result<(), TransportError>>;

    async fn queue(
        &self,
        to: &PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> Result<Self::Delivery, TransportError> {
        Ok(std::future::ready(self.deliver(to, topic, payload).await))
    }
}

impl MemoryTransport {
    async fn deliver(
        &self,
        to: &PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> Result<(), TransportError> {
        let target = {
            let inner = self.network.lock();
            if !inner.peers.contains_key(&self.me) {
                return Err(TransportError::Unreachable(
                    "this peer is offline".to_owned(),
                ));
            }
            if inner.muted.contains(to) {
                return Ok(());
            }
            inner.peers.get(to).cloned()
        };
        let target =
            target.ok_or_else(|| TransportError::Unreachable(format!("{to} is offline")))?;
        target
            .send(TransportEvent::Message {
                from: self.me.clone(),
                topic: topic.to_owned(),
                payload,
            })
            .await
            .map_err(|_| TransportError::Unreachable(format!("{to} went offline")))
    }
}
