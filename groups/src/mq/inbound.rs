//! The receiving side: accepting MQ streams, reading frames, de-duplicating, delivering to
//! subscriptions and answering with acks and nacks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream};
use proto::{AckFrame, Frame, MsgFrame, MsgId, NackFrame};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::{Line, LineReader};
use super::subs::{Incoming, Subscriptions};
use super::{Inner, MqConfig};

/// Senders whose recent message ids are remembered; beyond this, idle ones are forgotten.
const MAX_TRACKED_SENDERS: usize = 4096;
/// Acks buffered before they are written even though more input is waiting.
const ACK_FLUSH_BYTES: usize = 32 * 1024;

/// Recently seen message ids of one sender, oldest first.
struct SeenIds {
    set: HashSet<MsgId>,
    order: VecDeque<MsgId>,
    cap: usize,
}

impl SeenIds {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn contains(&self, id: &MsgId) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: MsgId) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// What every inbound stream handler shares.
#[derive(Clone)]
pub(crate) struct Receiver {
    config: MqConfig,
    subs: Arc<Subscriptions>,
    /// Per sender: its seen ids, behind an async lock that also orders delivery across the
    /// sender's streams (a retransmission on a new stream waits for the old one's delivery).
    senders: Arc<Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<SeenIds>>>>>,
}

/// What a message turned into.
enum Outcome {
    Delivered,
    Duplicate,
    Stopping,
}

impl Receiver {
    pub(crate) fn new(inner: &Inner) -> Self {
        Self {
            config: inner.config.clone(),
            subs: inner.subs.clone(),
            senders: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn seen_ids(&self, peer: PeerId) -> Arc<tokio::sync::Mutex<SeenIds>> {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if !senders.contains_key(&peer) && senders.len() >= MAX_TRACKED_SENDERS {
            // Forget a sender nobody is delivering for right now.
            let idle = senders
                .iter()
                .find(|(_, seen)| Arc::strong_count(seen) == 1)
                .map(|(p, _)| *p);
            if let Some(idle) = idle {
                senders.remove(&idle);
            }
        }
        senders
            .entry(peer)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(SeenIds::new(
                    self.config.dedup_window,
                )))
            })
            .clone()
    }

    async fn deliver(
        &self,
        from: PeerId,
        seen: &tokio::sync::Mutex<SeenIds>,
        msg: MsgFrame,
        cancel: &CancellationToken,
    ) -> Outcome {
        let mut seen = seen.lock().await;
        if seen.contains(&msg.id) {
            tracing::debug!(%from, id = %msg.id, "dropped repeated mq message");
            return Outcome::Duplicate;
        }
        let id = msg.id.clone();
        let topic_len = msg.topic.len();
        let incoming = Incoming {
            from,
            id: msg.id,
            seq: msg.seq,
            topic: msg.topic,
            payload: msg.payload,
        };
        let taken = tokio::select! {
            taken = self.subs.deliver(incoming) => taken,
            () = cancel.cancelled() => return Outcome::Stopping,
        };
        if taken == 0 {
            tracing::debug!(%from, %id, topic_len, "mq message matched no subscription");
        }
        seen.insert(id);
        Outcome::Delivered
    }
}

/// Accepts MQ streams until cancelled, one handler task per stream, at most
/// `max_inbound_streams` at once.
pub(crate) async fn accept_loop(
    mut incoming: libp2p_stream::IncomingStreams,
    receiver: Receiver,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(receiver.config.max_inbound_streams));
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            () = cancel.cancelled() => break,
        };
        let Some((peer, stream)) = next else { break };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many mq streams open; refusing a new one");
            drop(stream);
            continue;
        };
        let receiver = receiver.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            handle_stream(peer, stream, &receiver, &cancel).await;
            drop(permit);
        });
    }
}

async fn handle_stream(peer: PeerId, stream: Stream, rx: &Receiver, cancel: &CancellationToken) {
    let (read, mut write) = stream.split();
    let mut reader = LineReader::new(read, rx.config.max_frame_bytes);
    let mut out = Answers::default();
    let idle = rx.config.inbound_idle;
    // Looked up once per stream; holding it also keeps this sender's ids from being evicted.
    let seen = rx.seen_ids(peer);
    loop {
        // Answers go out in batches: whatever is pending is written before waiting for input.
        if (!reader.has_line() || out.bytes.len() >= ACK_FLUSH_BYTES)
            && !out.is_empty()
            && let Err(error) = tokio::select! {
                result = write_all(&mut write, &mut out) => result,
                () = cancel.cancelled() => return,
            }
        {
            tracing::debug!(%peer, %error, "mq stream closed while acknowledging");
            return;
        }
        // Idle means nothing arrived for `idle`; a long message on a slow link is still
        // arriving (`next` is cancel-safe, so waking up to look loses nothing).
        let line = loop {
            let before = reader.received();
            tokio::select! {
                line = reader.next() => break Some(line),
                () = tokio::time::sleep(idle) => {
                    if reader.received() == before {
                        tracing::debug!(%peer, "closing idle mq stream");
                        break None;
                    }
                }
                () = cancel.cancelled() => break None,
            }
        };
        let Some(line) = line else { break };
        match line {
            Ok(Line::Frame(bytes)) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if !on_frame(peer, &seen, &bytes, rx, cancel, &mut out).await {
                    break;
                }
            }
            Ok(Line::TooLong { prefix, len }) => {
                let (id, seq) = proto::sniff_id_and_seq(&prefix);
                tracing::warn!(
                    %peer,
                    id = id.as_ref().map(|id| id.as_str()),
                    len,
                    max = rx.config.max_frame_bytes,
                    "refused oversized mq message"
                );
                out.nack(NackFrame {
                    id,
                    seq,
                    code: proto::NACK_TOO_LARGE.to_owned(),
                    message: format!(
                        "message of {len} bytes exceeds the receiver's limit of {} bytes",
                        rx.config.max_frame_bytes
                    ),
                });
            }
            Ok(Line::Eof) => break,
            Err(error) => {
                tracing::debug!(%peer, %error, "mq stream read failed");
                return;
            }
        }
    }
    if !out.is_empty() {
        let _ = write_all(&mut write, &mut out).await;
    }
    let _ = write.close().await;
}

/// Handles one line; returns `false` when the stream should end.
async fn on_frame(
    peer: PeerId,
    seen: &tokio::sync::Mutex<SeenIds>,
    bytes: &[u8],
    rx: &Receiver,
    cancel: &CancellationToken,
    out: &mut Answers,
) -> bool {
    match Frame::decode(bytes) {
        Ok(Frame::Msg(msg)) => {
            let ack = AckFrame {
                id: msg.id.clone(),
                seq: msg.seq,
            };
            match rx.deliver(peer, seen, msg, cancel).await {
                Outcome::Delivered | Outcome::Duplicate => {
                    out.ack(ack);
                    true
                }
                Outcome::Stopping => {
                    out.nack(NackFrame {
                        id: Some(ack.id),
                        seq: Some(ack.seq),
                        code: proto::NACK_UNAVAILABLE.to_owned(),
                        message: "the receiver is shutting down".to_owned(),
                    });
                    false
                }
            }
        }
        Ok(Frame::Ack(_) | Frame::Nack(_)) => {
            tracing::warn!(%peer, "refused mq frame: an ack or nack is not a message");
            nack_malformed(bytes, "expected a msg frame, got an ack or nack", out);
            true
        }
        Err(error) => {
            tracing::warn!(%peer, %error, "refused malformed mq frame");
            nack_malformed(bytes, &error.to_string(), out);
            true
        }
    }
}

fn nack_malformed(bytes: &[u8], why: &str, out: &mut Answers) {
    let (id, seq) = proto::sniff_id_and_seq(&bytes[..bytes.len().min(4096)]);
    out.nack(NackFrame {
        id,
        seq,
        code: proto::NACK_MALFORMED.to_owned(),
        message: why.to_owned(),
    });
}

/// Answers waiting to be written. Acks are cumulative: of a run of acks only the last is
/// written (the sender reads an ack as covering every earlier message on the stream), which
/// is also the only one a Goop² sender, with one message per stream, ever waits for.
#[derive(Default)]
struct Answers {
    bytes: Vec<u8>,
    last_ack: Option<AckFrame>,
}

impl Answers {
    fn ack(&mut self, ack: AckFrame) {
        self.last_ack = Some(ack);
    }

    fn nack(&mut self, nack: NackFrame) {
        // Order matters: the messages before the refused one are acknowledged first.
        self.settle();
        Frame::Nack(nack).encode_into(&mut self.bytes);
    }

    fn settle(&mut self) {
        if let Some(ack) = self.last_ack.take() {
            Frame::Ack(ack).encode_into(&mut self.bytes);
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.last_ack.is_none()
    }
}

async fn write_all<W: futures::AsyncWrite + Unpin>(
    write: &mut W,
    out: &mut Answers,
) -> std::io::Result<()> {
    // Bounded so a peer that never reads its acks cannot hold the handler forever.
    const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    out.settle();
    let bytes = &out.bytes;
    let result = tokio::time::timeout(WRITE_TIMEOUT, async {
        write.write_all(bytes).await?;
        write.flush().await
    })
    .await;
    out.bytes.clear();
    match result {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "writing acks timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> MsgId {
        MsgId::new(&n.to_string()).unwrap()
    }

    proptest::proptest! {
        /// Within the window, an id is taken once however often it repeats; ids older than
        /// the window are forgotten, oldest first.
        #[test]
        fn seen_ids_keep_exactly_the_last_window(ids in proptest::collection::vec(0u32..50, 0..300), cap in 1usize..60) {
            let mut seen = SeenIds::new(cap);
            let mut model: VecDeque<u32> = VecDeque::new();
            for n in ids {
                let was_seen = seen.contains(&id(n));
                proptest::prop_assert_eq!(was_seen, model.contains(&n));
                if !was_seen {
                    seen.insert(id(n));
                    model.push_back(n);
                    if model.len() > cap {
                        model.pop_front();
                    }
                }
                proptest::prop_assert_eq!(seen.set.len(), model.len());
            }
        }
    }
}
