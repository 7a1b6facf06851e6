//! Peer names: Goop²'s `identity` exchange on the MQ bus.
//!
//! A peer asks another for its display name with an `identity` message (payload `null`) and
//! gets `identity.response` `{"peerID", "content", "reachable"}` back, `content` being the
//! name (the node's `--label`). An answer is filed under the peer that sent it, the
//! authenticated remote of its stream, never under the `peerID` it claims; a name is cleaned
//! ([`clean_name`]) before it is kept. Goop² peers ask and answer the same way, so their names
//! show here and ours there.
//!
//! A peer is asked when it connects, and again when an answer of the API needs its name while
//! the name is unknown or older than [`REFRESH_AFTER_MS`]; each peer is asked at most once per
//! [`ASK_INTERVAL_MS`] and answered at most once per [`ANSWER_INTERVAL_MS`]. The table holds
//! at most [`NamesConfig::max_peers`] peers (the least recently heard of go first). Sends
//! are fire-and-forget, bounded by [`SEND_TIMEOUT`], at most [`MAX_SENDS_IN_FLIGHT`] at once
//! (beyond that an ask or an answer is skipped, and the next need asks again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mq::{Incoming, Mq};
use crate::net::{PeerEvent, peer_to_proto, proto_to_peer};

/// The request topic (payload `null`).
pub const IDENTITY_TOPIC: &str = "identity";
/// The answer topic.
pub const IDENTITY_RESPONSE_TOPIC: &str = "identity.response";
/// The longest name kept, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// A peer is asked at most once in this many milliseconds.
pub const ASK_INTERVAL_MS: u64 = 30_000;
/// A peer is answered at most once in this many milliseconds.
pub const ANSWER_INTERVAL_MS: u64 = 1_000;
/// A name older than this (milliseconds) is asked for again when it is needed.
pub const REFRESH_AFTER_MS: u64 = 10 * 60_000;
/// How long one ask or answer may take to be delivered.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Asks and answers on their way at once.
pub const MAX_SENDS_IN_FLIGHT: usize = 64;

/// A display name as kept and shown: trimmed, without control characters, at most
/// [`MAX_NAME_CHARS`] characters.
pub fn clean_name(name: &str) -> String {
    let kept: String = name.chars().filter(|c| !c.is_control()).collect();
    let cut: String = kept.trim().chars().take(MAX_NAME_CHARS).collect();
    // Cleaning a clean name changes nothing, so a cut ending in a space is trimmed too.
    cut.trim_end().to_owned()
}

/// `identity.response`, Goop²'s field names (the fields Goop² adds beyond these are optional
/// and not sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityResponse {
    /// The answering peer, as it says (not trusted: the stream's remote is).
    #[serde(rename = "peerID", default)]
    pub peer_id: String,
    /// Its display name.
    #[serde(default)]
    pub content: String,
    /// Always true from a peer that answers.
    #[serde(default)]
    pub reachable: bool,
}

/// What the table knows of one peer.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// The cleaned name and when it was learned; `None` before the first answer.
    name: Option<(String, u64)>,
    asked_at: Option<u64>,
    answered_at: Option<u64>,
    /// The last time anything happened with this peer (eviction order).
    touched: u64,
}

/// The names known, and when each peer was last asked and answered: a pure state machine,
/// the time passed in (milliseconds).
#[derive(Debug)]
pub struct NameTable {
    entries: HashMap<PeerId, Entry>,
    max_peers: usize,
}

impl NameTable {
    /// An empty table holding at most `max_peers` peers (at least one).
    pub fn new(max_peers: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_peers: max_peers.max(1),
        }
    }

    /// The peers the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no peer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `peer`'s name, when it gave one that is not empty.
    pub fn name(&self, peer: &PeerId) -> Option<&str> {
        let (name, _) = self.entries.get(peer)?.name.as_ref()?;
        (!name.is_empty()).then_some(name.as_str())
    }

    /// Whether to ask `peer` for its name now: its name is unknown or older than
    /// [`REFRESH_AFTER_MS`], and it was not asked in the last [`ASK_INTERVAL_MS`]. A yes is
    /// recorded as an ask.
    pub fn should_ask(&mut self, now: u64, peer: &PeerId) -> bool {
        let entry = self.entry(now, peer);
        let stale = entry
            .name
            .as_ref()
            .is_none_or(|(_, at)| now.saturating_sub(*at) >= REFRESH_AFTER_MS);
        let due = entry
            .asked_at
            .is_none_or(|at| now.saturating_sub(at) >= ASK_INTERVAL_MS);
        if stale && due {
            entry.asked_at = Some(now);
        }
        stale && due
    }

    /// Whether to answer `peer`'s ask now: it was not answered in the last
    /// [`ANSWER_INTERVAL_MS`]. A yes is recorded as an answer.
    pub fn should_answer(&mut self, now: u64, peer: &PeerId) -> bool {
        let entry = self.entry(now, peer);
        let due = entry
            .answered_at
            .is_none_or(|at| now.saturating_sub(at) >= ANSWER_INTERVAL_MS);
        if due {
            entry.answered_at = Some(now);
        }
        due
    }

    /// Files `name` (cleaned) as `peer`'s.
    pub fn learn(&mut self, now: u64, peer: &PeerId, name: &str) {
        self.entry(now, peer).name = Some((clean_name(name), now));
    }

    /// `peer`'s entry, made when new (after making room), and marked as touched at `now`.
    fn entry(&mut self, now: u64, peer: &PeerId) -> &mut Entry {
        if !self.entries.contains_key(peer) && self.entries.len() >= self.max_peers {
            self.evict();
        }
        let entry = self.entries.entry(peer.clone()).or_default();
        entry.touched = entry.touched.max(now);
        entry
    }

    /// Drops the least recently touched peer, preferring those that never gave a name.
    fn evict(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(peer, e)| (e.name.is_some(), e.touched, (*peer).clone()))
            .map(|(peer, _)| peer.clone());
        if let Some(peer) = oldest {
            self.entries.remove(&peer);
        }
    }
}

/// The settings of [`Names`].
#[derive(Debug, Clone)]
pub struct NamesConfig {
    /// This peer's name, sent to whoever asks (cleaned first).
    pub label: String,
    /// The most peers whose names are kept (default 10,000).
    pub max_peers: usize,
}

impl NamesConfig {
    /// The defaults, with this peer's name.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            max_peers: 10_000,
        }
    }
}

/// Peer names for the API: a cheap handle to the table that the exchange task keeps.
#[derive(Clone)]
pub struct Names {
    inner: Arc<Inner>,
}

struct Inner {
    me: PeerId,
    label: String,
    mq: Mq,
    table: Mutex<NameTable>,
    sends: Arc<Semaphore>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    started: std::time::Instant,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("label", &self.inner.label)
            .finish_non_exhaustive()
    }
}

impl Names {
    /// Starts answering and asking on `mq`: asks each peer that connects, answers each ask,
    /// files each answer.
    pub fn start(
        mq: &Mq,
        config: NamesConfig,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let names = Self {
            inner: Arc::new(Inner {
                me: peer_to_proto(&mq.local_peer_id()),
                label: clean_name(&config.label),
                mq: mq.clone(),
                table: Mutex::new(NameTable::new(config.max_peers)),
                sends: Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT)),
                tasks: tasks.clone(),
                cancel,
                started: std::time::Instant::now(),
            }),
        };
        // Subscribed before the task starts, so nothing that arrives in between is missed;
        // the prefix takes both topics.
        let subscription = mq.subscribe(IDENTITY_TOPIC);
        let events = mq.peer_events();
        tasks.spawn(names.clone().run(subscription, events));
        names
    }

    /// `peer`'s display name: this peer's label for itself, else the name `peer` gave when
    /// asked (`None` while unknown or empty). Asks `peer` when its name is unknown or old.
    pub fn resolve(&self, peer: &PeerId) -> Option<String> {
        if *peer == self.inner.me {
            return (!self.inner.label.is_empty()).then(|| self.inner.label.clone());
        }
        let now = self.now();
        let (name, ask) = {
            let mut table = self.table();
            let ask = table.should_ask(now, peer);
            (table.name(peer).map(str::to_owned), ask)
        };
        if ask {
            self.ask(peer);
        }
        name
    }

    /// This peer's own name (cleaned; may be empty).
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Gives each member without a name the one [`Self::resolve`] finds.
    pub fn fill(&self, members: &mut [proto::MemberInfo]) {
        for member in members.iter_mut().filter(|m| m.name.is_none()) {
            member.name = self.resolve(&member.peer_id);
        }
    }

    /// The names of those of `peers` whose name is known, as [`Self::resolve`] gives them.
    pub fn resolve_all<'a>(
        &self,
        peers: impl IntoIterator<Item = &'a PeerId>,
    ) -> HashMap<PeerId, String> {
        peers
            .into_iter()
            .filter_map(|peer| Some((peer.clone(), self.resolve(peer)?)))
            .collect()
    }

    async fn run(
        self,
        mut subscription: crate::mq::Subscription,
        mut events: tokio::sync::broadcast::Receiver<PeerEvent>,
    ) {
        let cancel = self.inner.cancel.clone();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                message = subscription.recv() => match message {
                    Some(message) => self.on_message(message),
                    None => return,
                },
                event = events.recv() => match event {
                    Ok(PeerEvent::Connected { peer, .. }) => {
                        let peer = peer_to_proto(&peer);
                        if self.table().should_ask(self.now(), &peer) {
                            self.ask(&peer);
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // Connections are no longer reported; asks and answers go on.
                        events = tokio::sync::broadcast::channel(1).1;
                    }
                },
            }
        }
    }

    fn on_message(&self, message: Incoming) {
        let peer = peer_to_proto(&message.from);
        let now = self.now();
        match message.topic.as_str() {
            // Asked too often: not answered again so soon.
            IDENTITY_TOPIC if !self.table().should_answer(now, &peer) => {}
            IDENTITY_TOPIC => {
                let answer = IdentityResponse {
                    peer_id: self.inner.me.to_string(),
                    content: self.inner.label.clone(),
                    reachable: true,
                };
                self.send(&peer, IDENTITY_RESPONSE_TOPIC, &answer);
            }
            IDENTITY_RESPONSE_TOPIC => {
                match serde_json::from_str::<IdentityResponse>(message.payload.get()) {
                    Ok(answer) => self.table().learn(now, &peer, &answer.content),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "ignored a malformed identity answer");
                    }
                }
            }
            // Another topic under the prefix (`identityX`): not ours.
            _ => {}
        }
    }

    fn ask(&self, peer: &PeerId) {
        self.send(peer, IDENTITY_TOPIC, &serde_json::Value::Null);
    }

    /// Sends in the background, bounded in time and in number; a send that finds no room is
    /// skipped.
    fn send<T: Serialize>(&self, peer: &PeerId, topic: &'static str, payload: &T) {
        let Ok(to) = proto_to_peer(peer) else {
            return;
        };
        let Ok(permit) = self.inner.sends.clone().try_acquire_owned() else {
            tracing::debug!(%peer, topic, "too many identity messages on their way; skipped");
            return;
        };
        let Ok(payload) = serde_json::value::to_raw_value(payload) else {
            return;
        };
        let mq = self.inner.mq.clone();
        let peer = peer.clone();
        self.inner.tasks.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(SEND_TIMEOUT, mq.send(to, topic, payload)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, topic, error = %e, "identity message not delivered")
                }
                Err(_) => tracing::debug!(%peer, topic, "identity message not delivered in time"),
            }
        });
    }

    fn now(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, NameTable> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(n: u8) -> PeerId {
        format!("peer{n}").parse().unwrap()
    }

    #[test]
    fn names_are_trimmed_cut_and_rid_of_control_characters() {
        assert_eq!(clean_name("  Ada\u{7}\n Lovelace "), "Ada Lovelace");
        assert_eq!(clean_name(&"é".repeat(100)).chars().count(), MAX_NAME_CHARS);
        assert_eq!(clean_name("\t\n"), "");
    }

    #[test]
    fn a_peer_is_asked_once_per_interval_until_it_answers_then_when_its_name_is_old() {
        let mut table = NameTable::new(10);
        let a = peer(1);
        assert!(table.should_ask(0, &a));
        assert!(!table.should_ask(ASK_INTERVAL_MS - 1, &a));
        assert!(table.should_ask(ASK_INTERVAL_MS, &a));
        table.learn(ASK_INTERVAL_MS + 5, &a, " Ada ");
        assert_eq!(table.name(&a), Some("Ada"));
        // Known and fresh: not asked, however long since the last ask.
        assert!(!table.should_ask(ASK_INTERVAL_MS * 3, &a));
        // Old: asked again, and the old name stays until the answer.
        let old = ASK_INTERVAL_MS + 5 + REFRESH_AFTER_MS;
        assert!(table.should_ask(old, &a));
        assert_eq!(table.name(&a), Some("Ada"));
        table.learn(old + 1, &a, "Ada L.");
        assert_eq!(table.name(&a), Some("Ada L."));
    }

    #[test]
    fn an_empty_name_is_known_but_not_shown() {
        let mut table = NameTable::new(10);
        table.learn(0, &peer(1), "   ");
        assert_eq!(table.name(&peer(1)), None);
        assert!(!table.should_ask(ASK_INTERVAL_MS, &peer(1)));
    }

    #[test]
    fn answers_are_rate_limited_per_peer() {
        let mut table = NameTable::new(10);
        assert!(table.should_answer(0, &peer(1)));
        assert!(!table.should_answer(ANSWER_INTERVAL_MS - 1, &peer(1)));
        assert!(table.should_answer(0, &peer(2)));
        assert!(table.should_answer(ANSWER_INTERVAL_MS, &peer(1)));
    }

    #[test]
    fn a_full_table_drops_peers_without_a_name_first_then_the_least_recently_touched() {
        let mut table = NameTable::new(2);
        table.learn(0, &peer(1), "one");
        assert!(table.should_ask(1, &peer(2)));
        // Peer 2 never answered: it goes, though peer 1 is older.
        table.learn(2, &peer(3), "three");
        assert_eq!(table.len(), 2);
        assert_eq!(table.name(&peer(1)), Some("one"));
        assert_eq!(table.name(&peer(3)), Some("three"));
        // Both named: the least recently touched goes.
        table.learn(3, &peer(4), "four");
        assert_eq!(table.name(&peer(1)), None);
        assert_eq!(table.name(&peer(3)), Some("three"));
        assert_eq!(table.name(&peer(4)), Some("four"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ask(u8),
        Answer(u8),
        Learn(u8, String),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..12u8).prop_map(Op::Ask),
            (0..12u8).prop_map(Op::Answer),
            (0..12u8, ".{0,80}").prop_map(|(p, n)| Op::Learn(p, n)),
            (0..2 * REFRESH_AFTER_MS).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Whatever happens: the table stays within its size; a name shown is clean, not
        /// empty, and the last one its peer gave; and while no peer can be dropped (room for
        /// all twelve), none is asked twice within the ask interval or answered twice within
        /// the answer interval.
        #[test]
        fn the_table_keeps_its_bounds_and_its_rate_limits(
            max_peers in 1..16usize,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut table = NameTable::new(max_peers);
            let roomy = max_peers >= 12;
            let mut now = 0u64;
            let mut asked: HashMap<PeerId, u64> = HashMap::new();
            let mut answered: HashMap<PeerId, u64> = HashMap::new();
            let mut given: HashMap<PeerId, String> = HashMap::new();
            for op in ops {
                match op {
                    Op::Ask(p) => {
                        if table.should_ask(now, &peer(p))
                            && let Some(at) = asked.insert(peer(p), now)
                        {
                            prop_assert!(!roomy || now - at >= ASK_INTERVAL_MS);
                        }
                    }
                    Op::Answer(p) => {
                        if table.should_answer(now, &peer(p))
                            && let Some(at) = answered.insert(peer(p), now)
                        {
                            prop_assert!(!roomy || now - at >= ANSWER_INTERVAL_MS);
                        }
                    }
                    Op::Learn(p, name) => {
                        table.learn(now, &peer(p), &name);
                        given.insert(peer(p), clean_name(&name));
                    }
                    Op::Wait(ms) => now += ms,
                }
                prop_assert!(table.len() <= max_peers);
                for p in 0..12u8 {
                    if let Some(name) = table.name(&peer(p)) {
                        prop_assert_eq!(Some(name), given.get(&peer(p)).map(String::as_str));
                        prop_assert_eq!(name, clean_name(name));
                        prop_assert!(!name.is_empty());
                    }
                }
            }
        }
    }
}
