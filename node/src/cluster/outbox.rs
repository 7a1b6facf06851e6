//! An outbox: sends one peer's cluster messages in order over the link, one send at a time.
//!
//! Whatever queued while a send was in flight goes out as one `batch` message, so light load
//! gets a message per event and heavy load large batches, with no timer. What happens when a
//! send fails depends on the side: the host gives up on the worker (its attempts are requeued),
//! the worker keeps its reports and sends them again once the host is back.

use std::time::Duration;

use proto::cluster::{ClusterMessage, MAX_BATCH, cluster_topic};
use proto::{GroupId, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Link;

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
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => return,
            first = messages.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match messages.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let message = match batch.len() {
            1 => batch.pop().unwrap_or(ClusterMessage::Batch(Vec::new())),
            _ => ClusterMessage::Batch(std::mem::take(&mut batch)),
        };
        let topic = cluster_topic(&group, message.msg_type());
        let payload = message.encode_payload();
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
