//! The MQ bus: topic-addressed messages between peers on `/goop/mq/1.0.0`.
//!
//! Sending: one task per destination peer keeps a long-lived stream and a window of
//! unacknowledged messages on it (pipelined; acks are per message and read as cumulative).
//! [`Mq::send`] resolves once the remote acknowledged the message, which it does only after
//! the message sat in the queue of every local subscriber whose prefix matched. A broken
//! stream is reopened and the unacknowledged messages are sent again with the same ids; after
//! `max_attempts` failures in a row without progress the send fails with a clear error.
//!
//! Receiving: any number of streams per peer, each read line by line (so Goop²'s
//! one-message-per-stream senders work too). Messages are deduplicated by id per sender within
//! a bounded window, delivered in stream order, and acknowledged after delivery. Oversized or
//! malformed lines are answered with a `nack` and skipped; the stream stays usable.

mod ids;
mod inbound;
mod lines;
mod outbound;
mod subs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use libp2p::{PeerId, StreamProtocol};
use proto::{Frame, MsgFrame, MsgId};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::net::{NodeHandle, PeerEvent};

pub use subs::{Incoming, Subscription};

/// The MQ settings. [`MqConfig::default`] holds the defaults.
#[derive(Debug, Clone)]
pub struct MqConfig {
    /// The largest frame accepted or sent, newline excluded (default 16 MiB).
    pub max_frame_bytes: usize,
    /// Unacknowledged messages in flight per destination peer (default 256).
    pub window: usize,
    /// Messages queued per destination peer before `send` waits for space (default 1024).
    pub send_queue: usize,
    /// How long a stream may go without an acknowledgement, once what is in flight is
    /// written, before it counts as broken (default 30 s); also how long a write may wait
    /// with the receiver taking no data at all. A slow receiver that keeps taking data is
    /// not broken, however long a large message takes. A receiver slowed by a full
    /// subscriber counts against this too.
    pub ack_timeout: Duration,
    /// Failures in a row without any acknowledgement (stream open or stream break) after which
    /// the messages in flight fail (default 3).
    pub max_attempts: u32,
    /// The first pause before reopening a stream; doubled on each failure (default 100 ms).
    pub retry_backoff: Duration,
    /// Message ids remembered per sender for de-duplication (default 16384).
    pub dedup_window: usize,
    /// Messages queued per subscription before delivery waits for space (default 1024).
    pub subscriber_capacity: usize,
    /// Inbound streams handled at once; more are refused (default 1024).
    pub max_inbound_streams: usize,
    /// How long an outbound stream with nothing in flight stays open (default 120 s).
    pub link_idle: Duration,
    /// How long an inbound stream may stay silent before it is closed (default 300 s).
    pub inbound_idle: Duration,
}

impl Default for MqConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: proto::DEFAULT_MAX_FRAME_BYTES,
            window: 256,
            send_queue: 1024,
            ack_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(100),
            dedup_window: 16 * 1024,
            subscriber_capacity: 1024,
            max_inbound_streams: 1024,
            link_idle: Duration::from_secs(120),
            inbound_idle: Duration::from_secs(300),
        }
    }
}

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MqError {
    /// A peer does not send to itself over the network.
    #[error("cannot send an mq message to this peer itself")]
    SelfSend,
    /// The encoded message is over the sender's limit.
    #[error("mq message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The payload could not be encoded as JSON.
    #[error("invalid mq payload: {0}")]
    Payload(String),
    /// The receiver refused the message with a nack.
    #[error("peer {peer} refused mq message {id}: {message} ({code})")]
    Rejected {
        /// The receiver.
        peer: proto::PeerId,
        /// The message.
        id: MsgId,
        /// The nack code (`too_large`, `malformed`, `unavailable` or the receiver's own).
        code: String,
        /// The receiver's explanation.
        message: String,
    },
    /// The message could not be delivered within the retry budget.
    #[error("cannot deliver mq message {id} to peer {peer} after {attempts} attempts: {reason}")]
    Undeliverable {
        /// The receiver.
        peer: proto::PeerId,
        /// The message.
        id: MsgId,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The bus is shutting down.
    #[error("the mq bus has stopped")]
    Closed,
}

impl MqError {
    /// A short machine-readable code for the error, used in HTTP answers.
    pub fn code(&self) -> &str {
        match self {
            Self::SelfSend => "self_send",
            Self::TooLarge { .. } => "too_large",
            Self::Payload(_) => "invalid_payload",
            Self::Rejected { code, .. } => code,
            Self::Undeliverable { .. } => "undeliverable",
            Self::Closed => "closed",
        }
    }
}

/// A message on its way to a link task.
pub(crate) struct Outgoing {
    pub(crate) id: MsgId,
    /// The encoded frame, newline included.
    pub(crate) bytes: Bytes,
    pub(crate) reply: oneshot::Sender<Result<MsgId, MqError>>,
}

/// A message in a peer's send queue; [`Pending::acked`] waits for its acknowledgement.
#[derive(Debug)]
pub struct Pending {
    id: MsgId,
    answer: oneshot::Receiver<Result<MsgId, MqError>>,
}

impl Pending {
    /// The message id.
    pub fn id(&self) -> &MsgId {
        &self.id
    }

    /// Resolves once the receiver acknowledged the message, or with why it was not delivered.
    pub async fn acked(self) -> Result<MsgId, MqError> {
        // A link only drops a message unanswered when the bus stops.
        self.answer.await.unwrap_or(Err(MqError::Closed))
    }
}

/// The handle to the MQ bus. Cheap to clone.
#[derive(Clone)]
pub struct Mq {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mq")
            .field("local", &self.inner.node.local_peer_id())
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) config: MqConfig,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) node: NodeHandle,
    pub(crate) subs: Arc<subs::Subscriptions>,
    links: Mutex<HashMap<PeerId, mpsc::Sender<Outgoing>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    seq: AtomicI64,
    ids: ids::IdGen,
}

/// The protocol as libp2p wants it.
pub(crate) fn protocol() -> StreamProtocol {
    StreamProtocol::new(proto::MQ_PROTOCOL)
}

/// Attempts at handing a message to a link task that went away between lookup and send.
const HANDOFF_ATTEMPTS: usize = 4;

impl Mq {
    /// Registers the MQ protocol on the swarm and starts accepting streams.
    pub(crate) fn start(
        config: MqConfig,
        mut control: libp2p_stream::Control,
        node: NodeHandle,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, libp2p_stream::AlreadyRegistered> {
        let incoming = control.accept(protocol())?;
        let inner = Arc::new(Inner {
            subs: Arc::new(subs::Subscriptions::default()),
            config,
            control,
            node,
            links: Mutex::new(HashMap::new()),
            tasks: tasks.clone(),
            cancel: cancel.clone(),
            seq: AtomicI64::new(1),
            ids: ids::IdGen::new(),
        });
        tasks.spawn(inbound::accept_loop(
            incoming,
            inbound::Receiver::new(&inner),
            tasks.clone(),
            cancel,
        ));
        Ok(Self { inner })
    }

    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.node.local_peer_id()
    }

    /// The node the bus runs on.
    pub fn node(&self) -> &NodeHandle {
        &self.inner.node
    }

    /// Sends `payload` (raw JSON) on `topic` to `peer` and resolves once `peer` acknowledged
    /// it, with the message id. Waits for queue space when many messages to `peer` are pending
    /// (backpressure). Equivalent to [`Self::enqueue`] followed by [`Pending::acked`].
    pub async fn send(
        &self,
        peer: PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> Result<MsgId, MqError> {
        self.enqueue(peer, topic, payload).await?.acked().await
    }

    /// Queues a message for `peer` and returns once it is in the peer's send queue, without
    /// waiting for the acknowledgement. Messages enqueued one after another by one caller are
    /// delivered in that order; this is how a caller pipelines many messages.
    pub async fn enqueue(
        &self,
        peer: PeerId,
        topic: &str,
        payload: Box<RawValue>,
    ) -> Result<Pending, MqError> {
        let inner = &self.inner;
        if peer == inner.node.local_peer_id() {
            return Err(MqError::SelfSend);
        }
        let id = inner.ids.next();
        let frame = Frame::Msg(MsgFrame {
            id: id.clone(),
            seq: inner.seq.fetch_add(1, Ordering::Relaxed),
            topic: topic.to_owned(),
            payload,
        });
        let bytes = Bytes::from(frame.encode());
        let size = bytes.len() - 1;
        if size > inner.config.max_frame_bytes {
            return Err(MqError::TooLarge {
                size,
                max: inner.config.max_frame_bytes,
            });
        }
        let (reply, answer) = oneshot::channel();
        let mut out = Outgoing {
            id: id.clone(),
            bytes,
            reply,
        };
        for _ in 0..HANDOFF_ATTEMPTS {
            let link = self.link(peer)?;
            match link.send(out).await {
                Ok(()) => return Ok(Pending { id, answer }),
                // The link retired (idle) between lookup and send: ask for a new one.
                Err(mpsc::error::SendError(back)) => {
                    out = back;
                    self.forget_link(peer, &link);
                }
            }
        }
        Err(MqError::Closed)
    }

    /// Like [`Self::send`], serializing `payload` first.
    pub async fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        peer: PeerId,
        topic: &str,
        payload: &T,
    ) -> Result<MsgId, MqError> {
        let raw = serde_json::value::to_raw_value(payload)
            .map_err(|e| MqError::Payload(e.to_string()))?;
        self.send(peer, topic, raw).await
    }

    /// Receives messages whose topic starts with `prefix` (`""` for all). Dropping the
    /// subscription ends it. Each message goes to every matching subscription; a full one
    /// slows the sender down instead of losing messages.
    pub fn subscribe(&self, prefix: &str) -> Subscription {
        self.inner
            .subs
            .subscribe(prefix, self.inner.config.subscriber_capacity)
    }

    /// Connection events (peer connected / disconnected), for liveness.
    pub fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.node.peer_events()
    }

    fn link(&self, peer: PeerId) -> Result<mpsc::Sender<Outgoing>, MqError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(MqError::Closed);
        }
        let mut links = inner.links.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = links.get(&peer)
            && !link.is_closed()
        {
            return Ok(link.clone());
        }
        let (tx, rx) = mpsc::channel(inner.config.send_queue);
        links.insert(peer, tx.clone());
        drop(links);
        let link = outbound::Link::new(peer, rx, inner);
        inner.tasks.spawn(link.run(Arc::downgrade(inner)));
        Ok(tx)
    }

    fn forget_link(&self, peer: PeerId, link: &mpsc::Sender<Outgoing>) {
        let mut links = self
            .inner
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if links.get(&peer).is_some_and(|l| l.same_channel(link)) {
            links.remove(&peer);
        }
    }
}

impl Inner {
    /// Called by an idle link task. Under the table's lock, so no caller can look the link up
    /// in between: when nothing is queued, closes the channel and removes the link. When a
    /// message slipped in as the channel closed (a caller that looked the link up earlier),
    /// the link stays, on a fresh channel that replaces the closed one in the table; the
    /// closed channel comes back so the link sends its last messages first and order holds.
    pub(crate) fn retire_link(&self, peer: PeerId, rx: &mut mpsc::Receiver<Outgoing>) -> Retire {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if !rx.is_empty() {
            return Retire::Busy;
        }
        // Closing makes every later `send` on a stale clone fail at once, so its caller asks
        // for a link again instead of waiting on this one.
        rx.close();
        if rx.is_empty() {
            links.remove(&peer);
            return Retire::Done;
        }
        let (tx, fresh) = mpsc::channel(self.config.send_queue);
        links.insert(peer, tx);
        Retire::Reopened(std::mem::replace(rx, fresh))
    }
}

/// What an idle link does next.
pub(crate) enum Retire {
    /// It is out of the table and may end.
    Done,
    /// Messages are queued: it keeps going.
    Busy,
    /// It keeps going on a fresh channel; these messages, from the closed one, go first.
    Reopened(mpsc::Receiver<Outgoing>),
}
