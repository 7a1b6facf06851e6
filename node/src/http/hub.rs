//! The event hub behind `GET /api/mq/events`: MQ messages turned into SSE events, kept in a
//! bounded ring with increasing ids.
//!
//! Every listener reads the same ring through its own cursor, so a slow listener never slows
//! the MQ bus and never steals events from another listener (Goop²'s shared inbox did both).
//! A listener that falls more than the ring's length behind is told how many events it missed.
//! Events that arrive while nobody listens are replayed to the next listener that connects
//! without a `Last-Event-ID` (Goop²'s inbox), once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use groups::{Incoming, Mq};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Events kept for replay and for slow listeners.
pub(crate) const RING_CAPACITY: usize = 4096;

/// Topics that reach subscribers but are not shown as raw messages: their owning subsystems
/// publish their own events (Goop² §1.4 step 7). `mq.ack` becomes a `delivered` event.
/// Cluster traffic is suppressed too, which Goop² did not do (its bug 31): `/api/cluster/events`
/// carries what it means, and a busy cluster's batches would fill the ring and cost a copy each.
fn suppressed(topic: &str) -> bool {
    topic == "group.invite"
        || topic.starts_with("group:")
        || topic.starts_with("cluster:")
        || topic.starts_with("chat.room:")
        || topic == "identity"
        || topic == "identity.response"
}

#[derive(Serialize)]
struct WireMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    seq: i64,
    topic: &'a str,
    payload: &'a RawValue,
}

/// The SSE event shapes of Goop² §1.7.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum SseEvent<'a> {
    Message {
        msg: WireMsg<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    Delivered {
        msg_id: &'a str,
    },
}

struct Ring {
    events: VecDeque<(u64, Arc<str>)>,
    next_id: u64,
    listeners: usize,
    /// The first event published while nobody listened, replayed to the next listener.
    backlog_from: Option<u64>,
}

/// Shared by the HTTP handlers and the task that feeds it.
pub(crate) struct Hub {
    ring: Mutex<Ring>,
    latest: watch::Sender<u64>,
}

/// What a listener reads next.
pub(crate) enum Read {
    /// Events after the cursor, in order.
    Events(Vec<(u64, Arc<str>)>),
    /// The listener fell behind; `missed` events are gone. The cursor moves past them.
    Lagged { missed: u64 },
}

/// Decrements the listener count when an SSE stream ends.
pub(crate) struct ListenerGuard(Arc<Hub>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let mut ring = self.0.lock();
        ring.listeners = ring.listeners.saturating_sub(1);
    }
}

impl Hub {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next_id: 1,
                listeners: 0,
                backlog_from: None,
            }),
            latest: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event (already JSON) and wakes the listeners.
    pub(crate) fn publish(&self, json: String) {
        let id = {
            let mut ring = self.lock();
            let id = ring.next_id;
            ring.next_id += 1;
            if ring.listeners == 0 && ring.backlog_from.is_none() {
                ring.backlog_from = Some(id);
            }
            ring.events.push_back((id, json.into()));
            while ring.events.len() > RING_CAPACITY {
                ring.events.pop_front();
            }
            id
        };
        self.latest.send_replace(id);
    }

    /// A local `delivered` event for `msg_id`.
    pub(crate) fn delivered(&self, msg_id: &str) {
        if let Ok(json) = serde_json::to_string(&SseEvent::Delivered { msg_id }) {
            self.publish(json);
        }
    }

    /// Registers a listener and returns where its cursor starts: after `last_event_id` when
    /// the client gave one, else before the unseen backlog, else at the newest event.
    pub(crate) fn listen(
        self: &Arc<Self>,
        last_event_id: Option<u64>,
    ) -> (u64, ListenerGuard, watch::Receiver<u64>) {
        let mut ring = self.lock();
        ring.listeners += 1;
        let newest = ring.next_id - 1;
        let cursor = match last_event_id {
            Some(id) => id.min(newest),
            None => match ring.backlog_from.take() {
                Some(first) => first - 1,
                None => newest,
            },
        };
        drop(ring);
        (cursor, ListenerGuard(self.clone()), self.latest.subscribe())
    }

    /// What comes after `cursor`.
    pub(crate) fn read(&self, cursor: u64) -> Read {
        let ring = self.lock();
        let oldest = ring.events.front().map_or(ring.next_id, |(id, _)| *id);
        if cursor + 1 < oldest {
            return Read::Lagged {
                missed: oldest - cursor - 1,
            };
        }
        let skip = (cursor + 1 - oldest) as usize;
        Read::Events(ring.events.iter().skip(skip).cloned().collect())
    }
}

/// Moves MQ messages into the hub until cancelled. It drains its subscription at once, so
/// SSE never backpressures the bus.
pub(crate) async fn feed(hub: Arc<Hub>, mq: Mq, cancel: CancellationToken) {
    let mut sub = mq.subscribe("");
    loop {
        let message = tokio::select! {
            m = sub.recv() => m,
            () = cancel.cancelled() => break,
        };
        let Some(message) = message else { break };
        on_message(&hub, &message);
    }
}

fn on_message(hub: &Hub, m: &Incoming) {
    if m.topic == "mq.ack" {
        #[derive(serde::Deserialize)]
        struct AckPayload {
            msg_id: Option<String>,
        }
        if let Ok(AckPayload {
            msg_id: Some(msg_id),
        }) = serde_json::from_str(m.payload.get())
            && !msg_id.is_empty()
        {
            hub.delivered(&msg_id);
        }
        return;
    }
    if suppressed(&m.topic) {
        return;
    }
    let event = SseEvent::Message {
        msg: WireMsg {
            kind: "msg",
            id: m.id.as_str(),
            seq: m.seq,
            topic: &m.topic,
            payload: &m.payload,
        },
        from: Some(m.from.to_base58()),
    };
    match serde_json::to_string(&event) {
        Ok(json) => hub.publish(json),
        Err(error) => tracing::warn!(%error, "cannot encode an sse event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(read: Read) -> Vec<u64> {
        match read {
            Read::Events(e) => e.into_iter().map(|(id, _)| id).collect(),
            Read::Lagged { missed } => panic!("lagged {missed}"),
        }
    }

    #[test]
    fn events_before_any_listener_are_replayed_once() {
        let hub = Hub::new();
        hub.publish("1".into());
        hub.publish("2".into());
        let (cursor, guard, _) = hub.listen(None);
        assert_eq!(ids(hub.read(cursor)), [1, 2]);
        drop(guard);
        let (cursor, _guard, _) = hub.listen(None);
        assert_eq!(ids(hub.read(cursor)), Vec::<u64>::new());
    }

    #[test]
    fn listeners_have_their_own_cursors_and_resume_by_id() {
        let hub = Hub::new();
        let (a, _ga, _) = hub.listen(None);
        let (b, _gb, _) = hub.listen(None);
        hub.publish("1".into());
        hub.publish("2".into());
        assert_eq!(ids(hub.read(a)), [1, 2]);
        assert_eq!(ids(hub.read(b)), [1, 2]);
        let (c, _gc, _) = hub.listen(Some(1));
        assert_eq!(ids(hub.read(c)), [2]);
    }

    #[test]
    fn a_listener_that_falls_behind_is_told_what_it_missed() {
        let hub = Hub::new();
        let (cursor, _g, _) = hub.listen(None);
        for i in 0..RING_CAPACITY + 10 {
            hub.publish(i.to_string());
        }
        assert!(matches!(hub.read(cursor), Read::Lagged { missed: 10 }));
        assert_eq!(hub.read(10).len_for_test(), RING_CAPACITY);
    }

    impl Read {
        fn len_for_test(&self) -> usize {
            match self {
                Read::Events(e) => e.len(),
                Read::Lagged { .. } => 0,
            }
        }
    }

    #[test]
    fn suppressed_topics_are_goop2s_and_cluster_traffic() {
        for t in [
            "group.invite",
            "group:1:msg",
            "cluster:1:job:assign",
            "cluster:1:batch",
            "chat.room:1:msg",
            "identity",
            "identity.response",
        ] {
            assert!(suppressed(t), "{t}");
        }
        for t in [
            "chat",
            "chat.broadcast",
            "call:1",
            "custom:x",
            "groups",
            "clusters",
        ] {
            assert!(!suppressed(t), "{t}");
        }
    }
}
