//! An outbox: sends one peer's cluster messages in order over the link, one send at a time.
//!
//! Whatever queued while a send was in flight goes out as one `batch` message, so light load
//! gets a message per event and heavy load large batches, with no timer. What happens when a
//! send fails depends on the side: the host gives up on the worker (its attempts are requeued),
//! the worker keeps its reports and sends them again once the host is back.

use std::time::Duration;

use proto::cluster::{ClusterMessage, MAX_BATCH, cluster_topic};
use proto::{GroupId, PeerId};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Link;

/// The most bytes of encoded messages one batch carries, well within the MQ bus's frame limit
/// (16 MiB by default): a batch of large jobs is split, and a message larger than this goes
/// alone.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One message, encoded.
struct Part {
    msg_type: &'static str,
    payload: Box<RawValue>,
}

impl Part {
    fn of(message: &ClusterMessage) -> Self {
        Self {
            msg_type: message.msg_type(),
            payload: message.encode_payload(),
        }
    }

    /// What it adds to a batch: its payload, its type and the batch's framing.
    fn bytes(&self) -> usize {
        self.payload.get().len() + self.msg_type.len() + 24
    }
}

/// What an outbox does when the link cannot deliver.
pub(crate) enum OnFailure {
    /// Stop, and say so on this channel (the host, about a worker).
    Report(mpsc::Sender<(PeerId, String)>),
    /// Wait and send the same batch again, up to this backoff (the worker, to its host).
    Retry { max_backoff: Duration },
}

/// Runs an outbox until its sender is dropped, `cancel` fires, or (with
/// [`OnFailure::Report`]) a send fails.
pub(crate) async fn run<L: Link>(
    link: L,
    group: GroupId,
    peer: PeerId,
    mut messages: mpsc::Receiver<ClusterMessage>,
    on_failure: OnFailure,
    cancel: CancellationToken,
) {
    let mut parts: Vec<Part> = Vec::new();
    // A message that did not fit the last batch: it opens the next one.
    let mut carried: Option<Part> = None;
    loop {
        let first = match carried.take() {
            Some(part) => part,
            None => tokio::select! {
                () = cancel.cancelled() => return,
                first = messages.recv() => match first {
                    Some(first) => Part::of(&first),
                    None => return,
                },
            },
        };
        let mut bytes = first.bytes();
        parts.push(first);
        while parts.len() < MAX_BATCH {
            let Ok(message) = messages.try_recv() else {
                break;
            };
            let part = Part::of(&message);
            if bytes + part.bytes() > BATCH_BYTES {
                carried = Some(part);
                break;
            }
            bytes += part.bytes();
            parts.push(part);
        }
        let (msg_type, payload) = if parts.len() == 1 {
            let part = parts.swap_remove(0);
            (part.msg_type, part.payload)
        } else {
            let batch =
                ClusterMessage::batch_payload(parts.iter().map(|p| (p.msg_type, &*p.payload)));
            parts.clear();
            ("batch", batch)
        };
        let topic = cluster_topic(&group, msg_type);
        let mut backoff = Duration::from_millis(100);
        loop {
            let Err(error) = link
                .send(peer.clone(), topic.clone(), payload.clone())
                .await
            else {
                break;
            };
            match &on_failure {
                OnFailure::Report(failures) => {
                    let _ = failures.send((peer, error)).await;
                    return;
                }
                OnFailure::Retry { max_backoff } => {
                    tracing::warn!(%peer, %error, retry_in = ?backoff, "cannot reach peer; sending again");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(*max_backoff);
                }
            }
        }
    }
}
