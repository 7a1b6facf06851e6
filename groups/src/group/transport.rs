//! The interface groups need from the MQ bus: send a JSON payload on a topic to a peer and
//! learn whether it was delivered, and receive messages and connection changes.
//!
//! The MQ handle provides `send(peer, topic, payload) -> Result<MsgId, MqError>`, a bounded
//! receiver for a topic prefix, and peer connect/disconnect events; `mq_transport` adapts those to
//! [`GroupTransport`] and a bounded `mpsc::Receiver<TransportEvent>`. The group manager
//! subscribes to the prefix `group` (covering `group:`, `group.invite` and `group.discover`).

use std::future::Future;

use proto::PeerId;
use serde_json::value::RawValue;

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (dial failed, connection lost, no acknowledgement in time).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The transport refused the message (too large, shutting down).
    #[error("message refused: {0}")]
    Refused(String),
}

/// Sends group messages. Implementations keep messages to one peer in order; the manager
/// sends to one peer from one task at a time, so a FIFO per peer is enough.
///
/// [`GroupTransport::queue`] lets that task pipeline: it hands a message over and gets a
/// future of its delivery, then hands over the next one without waiting for the first
/// acknowledgement (the messages still arrive in the order they were queued).
pub trait GroupTransport: Send + Sync + 'static {
    /// The delivery of a queued message: resolves once the receiver acknowledged it.
    type Delivery: Future<Output = Result<(), TransportError>> + Send + 'static;

    /// Queues `payload` on `topic` for `to`, behind the messages queued for `to` before it,
    /// and resolves once it is queued (waiting for room when the queue is full).
    fn queue(
        &self,
        to: &PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> impl Future<Output = Result<Self::Delivery, TransportError>> + Send;

    /// Delivers `payload` on `topic` to `to`, resolving once the receiver acknowledged it.
    fn send(
        &self,
        to: &PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move { self.queue(to, topic, payload).await?.await }
    }
}

/// What the transport tells the group manager.
#[derive(Debug)]
pub enum TransportEvent {
    /// A message from an authenticated peer.
    Message {
        /// The sender, as the transport authenticated it.
        from: PeerId,
        /// The topic.
        topic: String,
        /// The payload, untouched.
        payload: Box<RawValue>,
    },
    /// A connection to this peer is up.
    Connected(PeerId),
    /// The last connection to this peer is gone.
    Disconnected(PeerId),
}
