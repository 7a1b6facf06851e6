//! Local subscriptions by topic prefix, each with its own bounded queue.

use std::sync::{Mutex, PoisonError};

use libp2p::PeerId;
use proto::MsgId;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// A message received from the network.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The authenticated remote peer of the stream it came on (never a field of the message).
    pub from: PeerId,
    /// The message id.
    pub id: MsgId,
    /// The sender's `seq`, informational.
    pub seq: i64,
    /// The topic.
    pub topic: String,
    /// The payload, verbatim.
    pub payload: Box<RawValue>,
}

/// A subscription: messages whose topic starts with its prefix. Drop it to unsubscribe.
#[derive(Debug)]
pub struct Subscription {
    prefix: String,
    rx: mpsc::Receiver<Incoming>,
}

impl Subscription {
    /// The next message, or `None` once the bus has stopped.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The prefix this subscription matches.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The receiving end, for callers that want to `select!` on it directly.
    pub fn receiver(&mut self) -> &mut mpsc::Receiver<Incoming> {
        &mut self.rx
    }
}

#[derive(Default)]
pub(crate) struct Subscriptions {
    list: Mutex<Vec<(String, mpsc::Sender<Incoming>)>>,
}

impl Subscriptions {
    pub(crate) fn subscribe(&self, prefix: &str, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.lock().push((prefix.to_owned(), tx));
        Subscription {
            prefix: prefix.to_owned(),
            rx,
        }
    }

    /// Queues `message` for every matching subscription, waiting for space in each, and
    /// returns how many took it. Subscriptions that were dropped are removed here, by
    /// identity rather than by a remembered index.
    pub(crate) async fn deliver(&self, message: Incoming) -> usize {
        let targets: Vec<mpsc::Sender<Incoming>> = {
            let mut list = self.lock();
            list.retain(|(_, tx)| !tx.is_closed());
            list.iter()
                .filter(|(prefix, _)| message.topic.starts_with(prefix.as_str()))
                .map(|(_, tx)| tx.clone())
                .collect()
        };
        let mut taken = 0;
        let last = targets.len().saturating_sub(1);
        let mut message = Some(message);
        for (i, tx) in targets.into_iter().enumerate() {
            let copy = if i == last {
                message.take()
            } else {
                message.clone()
            };
            if let Some(copy) = copy
                && tx.send(copy).await.is_ok()
            {
                taken += 1;
            }
        }
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, mpsc::Sender<Incoming>)>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
