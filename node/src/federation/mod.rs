//! The `data-federation` group type: members offer data tables to the group, and each member's
//! GraphQL engine serves the tables others offer, asking every contributor over
//! `/goop/data/1.0.0` and merging the answers (see `graphql::engine`).
//!
//! Mends Goop²'s data federation (reference `goop2-handlers.md` §4.3 and §7):
//! - Every member knows the contributions, not only the host: offers are group messages every
//!   member sees (with their true author), and the host sends a joiner the full list
//!   (`schema-sync`, taken from the host only). A member can offer through the API.
//! - A query is typed (filters, order, page), never a SQL fragment, and a peer answers only
//!   members of the group, only for tables it offered there, and only what the table's read
//!   policy allows the asker (`owner`: its own rows, `group`: by its role in the group). A
//!   table whose read policy is `local` is never offered (Goop²'s offer route sent it).
//! - Rows are ordered and paged across peers, and a peer that fails is named in the GraphQL
//!   errors instead of being dropped silently.
//! - Offers outlive a restart (Goop² kept them in memory only): a peer keeps the names of the
//!   tables it offers in `datafed-offers.json` and offers them again when it starts, and a
//!   member tells its host again what it offers each time it is welcomed back, to which the
//!   host answers with the contributions it knows (`schema-sync`, as after every offer).
//!
//! The wire: group `msg`s `{"group_type":"data-federation","data-federation":{"action":
//! "schema-offer"|"schema-withdraw"|"schema-sync", "tables"?, "contributions"?,
//! "relationships"?}}` (relationships: a list in an offer, a list by peer in a sync); the query
//! stream: one JSON line `{"group_id","table","op"?,"find"?,"object"?,"id"?}` (`op`: `query`,
//! the default, `insert`, `update` or `delete`), answered with `{"ok":true,"rows":[...],
//! "affected"?}` or `{"ok":false,"error":"...","code":"access_denied"|"not_found"|
//! "invalid_request"}`.

mod merge;
mod protocol;

pub(crate) use protocol::{Refusal, Write};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use graphql::engine::{Remote, RemoteRows, RemoteWrite, RemoteWritten, Written};
use graphql::model::{Operation, Policy};
use graphql::store::Find;
use graphql::{Data, Relationship, Table};
use groups::NodeHandle;
use groups::group::{GroupHandle, LeaveReason, TypeHandler};
use proto::{GroupEvent, GroupEventKind, GroupId, PeerId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The group type of data federations.
pub(crate) const FEDERATION_TYPE: &str = "data-federation";
/// The protocol queries travel on.
const PROTOCOL: &str = "/goop/data/1.0.0";
/// How long a peer has to answer a query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest answer line (16 MiB).
const ANSWER_MAX: u64 = 16 * 1024 * 1024;
/// The most rows a peer answers one query with.
const MAX_ROWS: u32 = 10_000;
/// The longest request line a peer reads (64 KiB).
const REQUEST_MAX: u64 = 64 * 1024;
// A relationship's batched lookup (`graphql::engine::Lookups`) asks each peer for one row more
// than it takes, to see it overflow: a peer must not cut the answer before. Its values must
// leave room in a request line for the rest of the query.
const _: () = assert!(graphql::engine::BATCH_ROWS < MAX_ROWS);
const _: () = assert!(2 * graphql::engine::BATCH_BYTES as u64 <= REQUEST_MAX);
/// Where a peer keeps the names of the tables it offers, by group, to offer them again after a
/// restart.
const OFFERS_FILE: &str = "datafed-offers.json";

/// Why a federation operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FederationError {
    /// This peer neither hosts nor has joined a federation group of that id.
    #[error("group {0} is not a data-federation group this peer is in")]
    UnknownGroup(GroupId),
    /// A relationship is not from one of the offered tables, or names no table or column.
    #[error("invalid relationship: {0}")]
    BadRelationship(String),
    /// None of the names is a table of this peer in context.
    #[error("no matching tables in context: {0}")]
    NoTables(String),
    /// Tables whose read policy is `local`: they are never offered.
    #[error("tables never leave this peer (access read: local): {0}")]
    LocalTables(String),
    /// The peer that has the table refused the request.
    #[error("{0}")]
    Refused(Refusal),
    /// The peer that has the table could not be asked.
    #[error("{0}")]
    Unreachable(String),
    /// The group layer failed.
    #[error(transparent)]
    Group(#[from] groups::GroupError),
    /// The data tables failed.
    #[error(transparent)]
    Data(#[from] graphql::DataError),
}

/// What one peer offers one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Offer {
    /// The tables' schemas.
    pub(crate) tables: Vec<Table>,
    /// Links from the rows of these tables to rows of any served table.
    pub(crate) relationships: Vec<Relationship>,
}

/// What a peer keeps of its own offer to a group, for the next start.
#[derive(Serialize, Deserialize)]
struct SavedOffer {
    tables: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    relationships: Vec<Relationship>,
}

/// Contributions by group, then by peer.
type Contributions = HashMap<GroupId, BTreeMap<PeerId, Offer>>;

struct Inner {
    me: PeerId,
    /// [`OFFERS_FILE`] in the data directory.
    offers_file: std::path::PathBuf,
    groups: GroupHandle,
    node: NodeHandle,
    data: Data,
    contributions: Mutex<Contributions>,
    /// Held by each rebuild from reading the contributions to handing them to the engine, so
    /// the last rebuild to run serves the newest ones.
    rebuild: Mutex<()>,
    tracker: TaskTracker,
}

/// The [`TypeHandler`] of [`FEDERATION_TYPE`]; it acts once [`Federation::start`] ran.
#[derive(Default)]
pub(crate) struct FederationHandler {
    inner: Arc<OnceLock<Arc<Inner>>>,
}

/// The federation side of a peer.
#[derive(Clone)]
pub(crate) struct Federation {
    inner: Arc<Inner>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    group_type: String,
    #[serde(rename = "data-federation")]
    message: Message,
}

#[derive(Serialize, Deserialize, Default)]
struct Message {
    action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tables: Vec<Table>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    contributions: BTreeMap<PeerId, Vec<Table>>,
    /// Goop²'s shape: a list in an offer, a list by peer in a sync.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    relationships: serde_json::Value,
}

impl Message {
    fn offer(offer: Offer) -> Self {
        Self {
            action: "schema-offer".into(),
            tables: offer.tables,
            relationships: serde_json::to_value(offer.relationships).unwrap_or_default(),
            ..Self::default()
        }
    }

    fn withdraw() -> Self {
        Self {
            action: "schema-withdraw".into(),
            ..Self::default()
        }
    }
}

impl FederationHandler {
    fn with(&self, f: impl FnOnce(&Federation)) {
        if let Some(inner) = self.inner.get() {
            f(&Federation {
                inner: inner.clone(),
            });
        }
    }
}

impl TypeHandler for FederationHandler {
    fn on_join(&self, group: &GroupId, _peer: &PeerId, is_host: bool) {
        if !is_host {
            self.with(|f| f.sync(group));
        }
    }

    fn on_leave(&self, group: &GroupId, peer: &PeerId, is_host: bool, _: LeaveReason) {
        if !is_host {
            self.with(|f| {
                f.set(group, peer, None);
                f.sync(group);
            });
        }
    }

    fn on_close(&self, group: &GroupId) {
        self.with(|f| f.forget(group));
    }

    fn on_event(&self, event: &GroupEvent) {
        match event.kind {
            GroupEventKind::Msg => self.with(|f| f.message(event)),
            // Joined or rejoined (the host restarted, or this peer did): the host may not know
            // this peer's offer any more.
            GroupEventKind::Welcome => self.with(|f| f.offer_again(&event.group)),
            GroupEventKind::Leave => self.with(|f| {
                if event.from.as_ref() == Some(&f.inner.me) {
                    // This peer left: forgotten unless it still hosts the group (a host
                    // leaving its own group as a member). Looked up on a task: hooks must not
                    // wait for the group layer.
                    let (f, group) = (f.clone(), event.group.clone());
                    f.inner.tracker.clone().spawn(async move {
                        if f.check_group(&group).await.is_err() {
                            f.forget(&group);
                        }
                    });
                }
            }),
            _ => {}
        }
    }
}

/// Where the handler finds the running [`Federation`].
pub(crate) struct FederationSlot(Arc<OnceLock<Arc<Inner>>>);

/// The handler to register before the peer starts, and the slot [`Federation::start`] fills.
pub(crate) fn handler() -> (Arc<FederationHandler>, FederationSlot) {
    let handler = FederationHandler::default();
    let slot = FederationSlot(handler.inner.clone());
    (Arc::new(handler), slot)
}

impl Federation {
    /// Serves queries on [`PROTOCOL`], lets the handler act, and offers again what this peer
    /// offered before it stopped (kept in `data_dir`).
    pub(crate) fn start(
        slot: FederationSlot,
        data_dir: &std::path::Path,
        groups: GroupHandle,
        node: NodeHandle,
        data: Data,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, groups::NodeError> {
        let federation = Self {
            inner: Arc::new(Inner {
                me: groups.peer_id().clone(),
                offers_file: data_dir.join(OFFERS_FILE),
                groups,
                node: node.clone(),
                data,
                contributions: Mutex::new(HashMap::new()),
                rebuild: Mutex::new(()),
                tracker: tracker.clone(),
            }),
        };
        let server = federation.clone();
        groups::net::serve_protocol(&node, PROTOCOL, tracker, cancel, move |peer, stream| {
            let server = server.clone();
            async move {
                if let Err(error) = server.serve(&peer, stream).await {
                    tracing::debug!(%peer, %error, "data query ended early");
                }
            }
        })?;
        let _ = slot.0.set(federation.inner.clone());
        let weak = Arc::downgrade(&federation.inner);
        federation.inner.data.on_tables_changed(move || {
            if let Some(inner) = weak.upgrade() {
                Federation { inner }.tables_changed();
            }
        });
        let restoring = federation.clone();
        tracker.spawn(async move { restoring.restore().await });
        Ok(federation)
    }

    /// Offers again the tables this peer offered before it stopped, to the groups it is
    /// still in.
    async fn restore(&self) {
        let path = &self.inner.offers_file;
        let saved: BTreeMap<GroupId, SavedOffer> = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring an unreadable list of data offers");
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the list of data offers");
                return;
            }
        };
        for (group, saved) in saved {
            match self
                .share(group.clone(), &saved.tables, saved.relationships)
                .await
            {
                Ok(count) => {
                    tracing::info!(%group, tables = count, "offering the data tables again")
                }
                Err(error) => tracing::warn!(%group, %error, "cannot offer the data tables again"),
            }
        }
        self.save_offers();
    }

    /// Tells `group` again what this peer offers (a withdrawal when nothing): the host answers
    /// with the contributions it knows (`schema-sync`).
    fn offer_again(&self, group: &GroupId) {
        let mine = self
            .lock()
            .get(group)
            .and_then(|g| g.get(&self.inner.me).cloned());
        let message = match mine {
            Some(offer) => Message::offer(offer),
            None => Message::withdraw(),
        };
        self.send(group, message);
    }

    /// As the host of `group`, sends every member the contributions (after one changed).
    fn sync_if_host(&self, group: &GroupId) {
        let (this, group) = (self.clone(), group.clone());
        self.inner.tracker.spawn(async move {
            if this.check_group(&group).await.ok().as_ref() == Some(&this.inner.me) {
                this.sync(&group);
            }
        });
    }

    /// A table of this peer was created, changed or deleted (on a blocking thread): what it
    /// offers follows its tables (a deleted table, or one no longer served or made local, is
    /// withdrawn; a changed one is offered again as it is now), and the merge is done again.
    fn tables_changed(&self) {
        let current: Vec<Table> = self
            .inner
            .data
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.context && t.policy(Operation::Read) != Policy::Local)
            .collect();
        let mut changed = Vec::new();
        {
            let mut all = self.lock();
            for (group, peers) in all.iter_mut() {
                let Some(mine) = peers.get_mut(&self.inner.me) else {
                    continue;
                };
                let tables: Vec<Table> = current
                    .iter()
                    .filter(|t| mine.tables.iter().any(|m| m.name == t.name))
                    .cloned()
                    .collect();
                let relationships = mine
                    .relationships
                    .iter()
                    .filter(|r| tables.iter().any(|t| t.name == r.from_table))
                    .cloned()
                    .collect();
                let now = Offer {
                    tables,
                    relationships,
                };
                if &now != mine {
                    if now.tables.is_empty() {
                        peers.remove(&self.inner.me);
                        changed.push((group.clone(), None));
                    } else {
                        *mine = now.clone();
                        changed.push((group.clone(), Some(now)));
                    }
                }
            }
        }
        let any = !changed.is_empty();
        for (group, offer) in changed {
            self.send(&group, offer.map_or_else(Message::withdraw, Message::offer));
        }
        if any {
            self.save_offers();
        }
        self.rebuild();
    }

    /// Drops what this peer knew of a group it is no longer in.
    fn forget(&self, group: &GroupId) {
        let removed = self.lock().remove(group).is_some();
        if removed {
            self.save_offers();
            self.rebuild();
        }
    }

    /// Keeps the names of the tables this peer offers, by group, in [`OFFERS_FILE`].
    fn save_offers(&self) {
        let offers: BTreeMap<GroupId, SavedOffer> = self
            .lock()
            .iter()
            .filter_map(|(group, peers)| {
                let mine = peers.get(&self.inner.me)?;
                let saved = SavedOffer {
                    tables: mine.tables.iter().map(|t| t.name.clone()).collect(),
                    relationships: mine.relationships.clone(),
                };
                Some((group.clone(), saved))
            })
            .collect();
        let path = &self.inner.offers_file;
        let temp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&offers)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temp, bytes))
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot save the list of data offers");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contributions> {
        self.inner
            .contributions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records (or, with `None`, removes) a peer's contribution and rebuilds the engine.
    fn set(&self, group: &GroupId, peer: &PeerId, offer: Option<Offer>) {
        {
            let mut all = self.lock();
            let group = all.entry(group.clone()).or_default();
            match offer {
                Some(offer) => group.insert(peer.clone(), offer),
                None => group.remove(peer),
            };
        }
        self.rebuild();
    }

    /// The host sends every member the contributions it knows.
    fn sync(&self, group: &GroupId) {
        let offers = self.lock().get(group).cloned().unwrap_or_default();
        let mut contributions = BTreeMap::new();
        let mut relationships = BTreeMap::new();
        for (peer, offer) in offers {
            if !offer.relationships.is_empty() {
                relationships.insert(peer.clone(), offer.relationships);
            }
            contributions.insert(peer, offer.tables);
        }
        self.send(
            group,
            Message {
                action: "schema-sync".into(),
                contributions,
                relationships: serde_json::to_value(relationships).unwrap_or_default(),
                ..Message::default()
            },
        );
    }

    fn send(&self, group: &GroupId, message: Message) {
        let envelope = Envelope {
            group_type: FEDERATION_TYPE.into(),
            message,
        };
        let groups = self.inner.groups.clone();
        let group = group.clone();
        self.inner.tracker.spawn(async move {
            if let Err(error) = groups.send_json(group.clone(), &envelope).await {
                tracing::debug!(%group, %error, "cannot send a federation message");
            }
        });
    }

    /// A group message of a federation group.
    fn message(&self, event: &GroupEvent) {
        let (Some(from), Some(payload)) = (&event.from, &event.payload) else {
            return;
        };
        let Ok(envelope) = serde_json::from_str::<Envelope>(payload.get()) else {
            return;
        };
        if envelope.group_type != FEDERATION_TYPE {
            return;
        }
        // What another peer sends is checked like what this peer's API takes; what breaks a
        // rule is left out.
        let valid = |tables: Vec<Table>, relationships: Vec<Relationship>| -> Offer {
            let tables: Vec<Table> = tables
                .into_iter()
                .filter(|t| t.validate().is_ok())
                .collect();
            let relationships = relationships
                .into_iter()
                .filter(|r| r.validate().is_ok() && tables.iter().any(|t| t.name == r.from_table))
                .collect();
            Offer {
                tables,
                relationships,
            }
        };
        let message = envelope.message;
        match message.action.as_str() {
            "schema-offer" => {
                let relationships =
                    serde_json::from_value(message.relationships).unwrap_or_default();
                self.set(
                    &event.group,
                    from,
                    Some(valid(message.tables, relationships)),
                );
                self.sync_if_host(&event.group);
            }
            "schema-withdraw" => {
                self.set(&event.group, from, None);
                self.sync_if_host(&event.group);
            }
            // The host's own sync, seen as a local event, may be older than what it knows now.
            "schema-sync" if from == &self.inner.me => {}
            "schema-sync" => {
                let mut relationships: BTreeMap<PeerId, Vec<Relationship>> =
                    serde_json::from_value(message.relationships).unwrap_or_default();
                let all: BTreeMap<PeerId, Offer> = message
                    .contributions
                    .into_iter()
                    .map(|(peer, tables)| {
                        let links = relationships.remove(&peer).unwrap_or_default();
                        (peer, valid(tables, links))
                    })
                    .collect();
                // Taken from the host only; the host is looked up on a task (hooks must not
                // wait for the group layer).
                let (this, group, from) = (self.clone(), event.group.clone(), from.clone());
                self.inner.tracker.spawn(async move {
                    match this.check_group(&group).await {
                        Ok(host) if host == from => this.replace(&group, all),
                        _ => tracing::warn!(%group, %from, "ignoring a schema-sync not from the host"),
                    }
                });
            }
            _ => {}
        }
    }

    /// Takes the host's list of a group's contributions, keeping this peer's own.
    fn replace(&self, group: &GroupId, mut all: BTreeMap<PeerId, Offer>) {
        {
            let mut contributions = self.lock();
            let mine = contributions
                .get(group)
                .and_then(|g| g.get(&self.inner.me).cloned());
            // What this peer offers, it knows better than anyone.
            match mine {
                Some(mine) => all.insert(self.inner.me.clone(), mine),
                None => all.remove(&self.inner.me),
            };
            contributions.insert(group.clone(), all);
        }
        self.rebuild();
    }

    /// Offers this peer's context tables named `names` to a federation group it is in, and
    /// keeps the offer for the next start.
    pub(crate) async fn offer(
        &self,
        group: GroupId,
        names: &[String],
        relationships: Vec<Relationship>,
    ) -> Result<usize, FederationError> {
        let count = self.share(group, names, relationships).await?;
        self.save_offers();
        Ok(count)
    }

    /// Offers this peer's context tables named `names` to a federation group it is in, with
    /// relationships from them.
    async fn share(
        &self,
        group: GroupId,
        names: &[String],
        relationships: Vec<Relationship>,
    ) -> Result<usize, FederationError> {
        for relation in &relationships {
            relation
                .validate()
                .map_err(|e| FederationError::BadRelationship(e.to_string()))?;
            if !names.contains(&relation.from_table) {
                return Err(FederationError::BadRelationship(format!(
                    "{}.{} -> {}.{}: {} is not one of the tables offered",
                    relation.from_table,
                    relation.from_column,
                    relation.to_table,
                    relation.to_column,
                    relation.from_table
                )));
            }
        }
        self.check_group(&group).await?;
        let data = self.inner.data.clone();
        let tables: Vec<Table> = tokio::task::spawn_blocking(move || data.list())
            .await
            .map_err(|e| graphql::DataError::InvalidSchema(e.to_string()))??
            .into_iter()
            .filter(|t| t.context && names.contains(&t.name))
            .collect();
        if tables.is_empty() {
            return Err(FederationError::NoTables(names.join(", ")));
        }
        let local: Vec<&str> = tables
            .iter()
            .filter(|t| t.policy(Operation::Read) == Policy::Local)
            .map(|t| t.name.as_str())
            .collect();
        if !local.is_empty() {
            return Err(FederationError::LocalTables(local.join(", ")));
        }
        let count = tables.len();
        let offer = Offer {
            tables,
            relationships,
        };
        self.set(&group, &self.inner.me.clone(), Some(offer.clone()));
        self.send(&group, Message::offer(offer));
        Ok(count)
    }

    /// Withdraws this peer's tables from a federation group.
    pub(crate) async fn withdraw(&self, group: GroupId) -> Result<(), FederationError> {
        self.check_group(&group).await?;
        self.set(&group, &self.inner.me.clone(), None);
        self.save_offers();
        self.send(&group, Message::withdraw());
        Ok(())
    }

    /// The contributions to one group.
    pub(crate) fn contributions(&self, group: &GroupId) -> BTreeMap<PeerId, Offer> {
        self.lock().get(group).cloned().unwrap_or_default()
    }

    /// Whether this peer offers `table` to `group` (looked up without copying the offers: every
    /// query asks).
    fn offers(&self, group: &GroupId, table: &str) -> bool {
        self.lock()
            .get(group)
            .and_then(|peers| peers.get(&self.inner.me))
            .is_some_and(|offer| offer.tables.iter().any(|t| t.name == table))
    }

    /// Every group with its contributions.
    pub(crate) fn all(&self) -> Vec<(GroupId, BTreeMap<PeerId, Offer>)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(g, c)| (g.clone(), c.clone()))
            .collect();
        all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        all
    }

    /// Fails unless this peer hosts or has joined federation group `group`; remembers its host.
    async fn check_group(&self, group: &GroupId) -> Result<PeerId, FederationError> {
        let groups = &self.inner.groups;
        let host = if groups
            .hosted_groups()
            .await?
            .iter()
            .any(|g| &g.id == group && g.group_type == FEDERATION_TYPE)
        {
            Some(self.inner.me.clone())
        } else {
            groups
                .subscriptions()
                .await?
                .into_iter()
                .find(|s| &s.group == group && s.group_type == FEDERATION_TYPE)
                .map(|s| s.host)
        };
        host.ok_or_else(|| FederationError::UnknownGroup(group.clone()))
    }

    /// Hands the engine the tables other peers offer, merged by name.
    fn rebuild(&self) {
        let this = self.clone();
        let remote = self.remote();
        // Reading the local schemas touches SQLite: off the hook's task.
        self.inner.tracker.spawn_blocking(move || {
            let _rebuild = this
                .inner
                .rebuild
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Read here, not when the task was spawned: tasks may run in any order.
            let contributions = this.lock().clone();
            let (data, me) = (&this.inner.data, &this.inner.me);
            let local: Vec<Table> = data
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.context)
                .collect();
            let federated = merge::merge(&contributions, &local, me);
            let relationships = merge::relationships(&contributions);
            if let Err(error) = data.federate(federated, relationships, remote) {
                tracing::warn!(%error, "cannot serve the federated tables");
            }
        });
    }

    /// How the GraphQL engine reads and writes other peers' rows: through this federation.
    fn remote(&self) -> Remote {
        let this = self.clone();
        let query = Arc::new(
            move |peer: String, group: String, table: String, find: Find| {
                let this = this.clone();
                Box::pin(async move {
                    let (peer, group) = peer_and_group(&peer, &group)?;
                    tokio::time::timeout(QUERY_TIMEOUT, this.ask(&peer, group, table, find))
                        .await
                        .map_err(|_| "no answer in time".to_owned())?
                }) as RemoteRows
            },
        );
        let this = self.clone();
        let write: RemoteWrite = Arc::new(
            move |peer: String, group: String, table: String, write: Write| {
                let this = this.clone();
                Box::pin(async move {
                    let (peer, group) = peer_and_group(&peer, &group)?;
                    let delete = matches!(write, Write::Delete(_));
                    // Bounded by the federation's own answer timeout.
                    let (rows, affected) = this
                        .write(group, &peer, table, write)
                        .await
                        .map_err(|e| e.to_string())?;
                    if delete {
                        return Ok(Written::Deleted(affected.unwrap_or(0)));
                    }
                    rows.into_iter()
                        .next()
                        .map(Written::Row)
                        .ok_or_else(|| "the peer answered the write with no row".to_owned())
                }) as RemoteWritten
            },
        );
        Remote {
            query,
            write: Some(write),
        }
    }
}

/// A peer id and a group id as the GraphQL engine passes them.
fn peer_and_group(peer: &str, group: &str) -> Result<(PeerId, GroupId), String> {
    let peer: PeerId = peer
        .parse()
        .map_err(|_| format!("invalid peer id {peer}"))?;
    let group: GroupId = group
        .parse()
        .map_err(|_| format!("invalid group {group}"))?;
    Ok((peer, group))
}
