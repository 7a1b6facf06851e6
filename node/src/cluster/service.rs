//! The cluster role of one peer: none, host of a cluster group, or worker in one. It routes the
//! MQ bus's `cluster:` messages and the group layer's membership hooks to the running actor, and
//! keeps the role across restarts (a host finds its cluster among its hosted groups; a worker's
//! settings live in `cluster-worker.json` in the data directory).
//!
//! A role lasts as long as its group: whichever way the group goes away (`POST
//! /api/cluster/leave`, the generic group routes, the host closing it or kicking this worker, or
//! the host refusing the worker's join for good), the role ends the same way, in
//! [`Cluster::end_role`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use groups::group::LeaveReason as GroupLeave;
use groups::{GroupError, GroupHandle, GroupSpec, Mq, TypeHandler};
use proto::api::ClusterStatus;
use proto::cluster::parse_cluster_topic;
use proto::{Admission, BinaryMode, ErrorCode, GroupEvent, GroupEventKind, GroupId, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use store::{JobStore, StoreConfig};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use worker::ExecutorConfig;

use super::host::{self, HostConfig, HostError, HostHandle, Limits, MemberEvent};
use super::member::{self, HostEvent, MemberConfig};
use super::{Incoming, Link};

/// The group type of cluster groups.
pub(crate) const CLUSTER_TYPE: &str = "cluster";
/// Where a worker keeps its settings, in the data directory.
const WORKER_FILE: &str = "cluster-worker.json";

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// This peer hosts no cluster.
    #[error("not a cluster host")]
    NotHost,
    /// This peer works in no cluster.
    #[error("not a cluster worker")]
    NotWorker,
    /// This peer already has a role.
    #[error("already {0}")]
    Busy(String),
    /// The role was ended (its group left or closed, or `/api/cluster/leave`) while it started.
    #[error("the worker role was ended while it started")]
    EndedWhileStarting,
    /// A cluster was asked for on a group this peer does not host.
    #[error("group {0} is not hosted by this peer")]
    NotHosted(GroupId),
    /// A cluster was asked for on a hosted group of another type.
    #[error("group {group} is a {group_type:?} group, not a cluster group")]
    NotClusterGroup {
        /// The group.
        group: GroupId,
        /// Its type.
        group_type: String,
    },
    /// The group layer refused.
    #[error("group: {0}")]
    Group(#[from] groups::GroupError),
    /// The host actor refused.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The executor could not be started or checked.
    #[error(transparent)]
    Executor(#[from] worker::StartError),
    /// Saving or reading the worker settings failed.
    #[error("worker settings {path}: {reason}")]
    Settings {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How the first try of a worker's join went, once it has: see [`FirstJoin::outcome`].
#[derive(Debug)]
pub(crate) enum JoinTry {
    /// The host welcomed this peer.
    Joined,
    /// Not yet (the host is unreachable, slow, or its group is full): the worker keeps trying.
    NotYet(GroupError),
    /// The host refused this peer for good (not invited, banned, no such group): the worker
    /// role has ended.
    Refused(GroupError),
    /// The role ended (a leave) before the first try was over.
    Ended,
}

/// The first try of a worker's join, still under way when [`Cluster::start_worker`] returns.
#[derive(Debug)]
pub(crate) struct FirstJoin(tokio::sync::oneshot::Receiver<JoinTry>);

impl FirstJoin {
    /// How the first try went. The group layer bounds a try by its join timeout.
    pub(crate) async fn outcome(self) -> JoinTry {
        self.0.await.unwrap_or(JoinTry::Ended)
    }
}

/// A worker's settings, kept so a restarted worker comes back by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSettings {
    /// The cluster group.
    pub group: GroupId,
    /// Its host.
    pub host: PeerId,
    /// The executor binary.
    pub executor: PathBuf,
    /// `oneshot` or `daemon`.
    pub mode: BinaryMode,
    /// A capacity that overrides the executor's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// Where messages and hooks for the current role go.
#[derive(Default)]
struct Routes {
    host: Option<(GroupId, mpsc::Sender<Incoming>, mpsc::Sender<MemberEvent>)>,
    worker: Option<(
        GroupId,
        PeerId,
        mpsc::Sender<Incoming>,
        mpsc::Sender<HostEvent>,
    )>,
}

/// The group type handler of cluster groups: passes joins and leaves to the host actor,
/// welcomes to the worker actor, and the end of the role's group (closed, left, or this worker
/// kicked) to [`Cluster::end_role`]. Hooks must not block, so everything goes through
/// `try_send`.
pub(crate) struct ClusterHandler {
    routes: Arc<RwLock<Routes>>,
    /// This peer, to tell its own leave from others'.
    me: PeerId,
    /// Groups whose end ends this peer's role.
    gone: mpsc::Sender<GroupId>,
}

impl ClusterHandler {
    /// Passes on the end of `group` when it is the group of this peer's role.
    fn group_gone(&self, group: &GroupId, how: &'static str) {
        let ours = self.routes.read().is_ok_and(|routes| {
            routes.host.as_ref().is_some_and(|(g, _, _)| g == group)
                || routes
                    .worker
                    .as_ref()
                    .is_some_and(|(g, _, _, _)| g == group)
        });
        if ours && self.gone.try_send(group.clone()).is_err() {
            tracing::warn!(%group, how, "cluster busy; the end of its group not passed on");
        }
    }
}

impl TypeHandler for ClusterHandler {
    fn host_can_join(&self) -> bool {
        false
    }

    fn on_join(&self, group: &GroupId, peer: &PeerId, is_host: bool) {
        if is_host {
            return;
        }
        if let Ok(routes) = self.routes.read()
            && let Some((hosted, _, members)) = &routes.host
            && hosted == group
            && members.try_send(MemberEvent::Joined(peer.clone())).is_err()
        {
            tracing::warn!(%group, %peer, "cluster host busy; join not passed on");
        }
    }

    fn on_leave(&self, group: &GroupId, peer: &PeerId, is_host: bool, reason: GroupLeave) {
        if is_host {
            return;
        }
        let reason = match reason {
            GroupLeave::Left => dispatcher::LeaveReason::Left,
            GroupLeave::Kicked => dispatcher::LeaveReason::Kicked,
            GroupLeave::Lost => dispatcher::LeaveReason::HeartbeatLost,
        };
        if let Ok(routes) = self.routes.read()
            && let Some((hosted, _, members)) = &routes.host
            && hosted == group
            && members
                .try_send(MemberEvent::Left(peer.clone(), reason))
                .is_err()
        {
            tracing::warn!(%group, %peer, "cluster host busy; leave not passed on");
        }
    }

    /// The host closed its group (any way: `/api/groups/close` too), or the host of the
    /// group this peer works in closed it, kicked this peer, or no longer admits it.
    fn on_close(&self, group: &GroupId) {
        self.group_gone(group, "closed");
    }

    fn on_event(&self, event: &GroupEvent) {
        match event.kind {
            GroupEventKind::Welcome => {
                if let Ok(routes) = self.routes.read()
                    && let Some((group, _, _, host_events)) = &routes.worker
                    && *group == event.group
                {
                    let _ = host_events.try_send(HostEvent::Welcomed);
                }
            }
            // This peer left a joined group (`/api/groups/leave`, `/subscriptions/remove`): a
            // member's own leave fires no other hook.
            GroupEventKind::Leave if event.from.as_ref() == Some(&self.me) => {
                self.group_gone(&event.group, "left");
            }
            _ => {}
        }
    }
}

/// Sends cluster messages over the MQ bus.
#[derive(Clone)]
struct MqLink {
    mq: Mq,
}

impl Link for MqLink {
    async fn send(&self, to: PeerId, topic: String, payload: Box<RawValue>) -> Result<(), String> {
        let peer = groups::net::proto_to_peer(&to).map_err(|e| e.to_string())?;
        self.mq
            .send(peer, &topic, payload)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// How a cluster this peer hosts runs: its scheduling settings and its limits.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostSettings {
    /// Scheduling settings.
    pub dispatcher: dispatcher::Config,
    /// Submit, memory and retention limits.
    pub limits: Limits,
}

/// The cluster side of a peer.
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    /// How a cluster this peer hosts runs.
    hosting: HostSettings,
    mq: Mq,
    groups: GroupHandle,
    routes: Arc<RwLock<Routes>>,
    host: RwLock<Option<HostHandle>>,
    worker: RwLock<Option<WorkerSettings>>,
    store: RwLock<Option<Arc<JobStore>>>,
    /// Stops the running role's actors; a child of `cancel`.
    role: RwLock<Option<CancellationToken>>,
    /// An executor set with `POST /api/cluster/binary` before joining.
    binary: RwLock<Option<(PathBuf, BinaryMode)>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Cluster {
    /// The handler to register for [`CLUSTER_TYPE`] before the peer `me` starts, and the
    /// routes it shares with the cluster made by [`Cluster::start`].
    pub(crate) fn handler(me: PeerId) -> (Arc<ClusterHandler>, ClusterRoutes) {
        let routes = Arc::new(RwLock::new(Routes::default()));
        // One role at a time, so a few ends queued at once is already more than happens.
        let (gone, gone_rx) = mpsc::channel(16);
        (
            Arc::new(ClusterHandler {
                routes: routes.clone(),
                me,
                gone,
            }),
            ClusterRoutes {
                routes,
                gone: gone_rx,
            },
        )
    }

    /// Starts routing `cluster:` messages and brings back the role this peer had: the cluster
    /// it hosts, or the one it works for.
    pub(crate) async fn start(
        routes: ClusterRoutes,
        data_dir: &Path,
        hosting: HostSettings,
        mq: Mq,
        groups: GroupHandle,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, ClusterError> {
        let cluster = Self {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_owned(),
                hosting,
                mq: mq.clone(),
                groups,
                routes: routes.routes,
                host: RwLock::new(None),
                worker: RwLock::new(None),
                store: RwLock::new(None),
                role: RwLock::new(None),
                binary: RwLock::new(None),
                tracker: tracker.clone(),
                cancel: cancel.clone(),
            }),
        };
        tracker.spawn(route_messages(
            mq.subscribe("cluster:"),
            cluster.inner.routes.clone(),
            cancel.clone(),
        ));
        tracker.spawn(cluster.clone().end_roles(routes.gone, cancel));
        let hosted = cluster.inner.groups.hosted_groups().await?;
        if let Some(group) = hosted.into_iter().find(|g| g.group_type == CLUSTER_TYPE) {
            tracing::info!(group = %group.id, "resuming as the cluster host");
            cluster.start_host(group.id).await?;
        } else if let Some(settings) = cluster.load_worker_settings()? {
            tracing::info!(group = %settings.group, host = %settings.host, "resuming as a cluster worker");
            // Not waited for: the host may be down for a while, and the join keeps trying.
            drop(cluster.start_worker(settings).await?);
        }
        Ok(cluster)
    }

    /// The host handle, when this peer hosts a cluster.
    pub(crate) fn host(&self) -> Option<HostHandle> {
        self.inner.host.read().ok().and_then(|h| h.clone())
    }

    /// The worker settings, when this peer works for a cluster.
    pub(crate) fn worker(&self) -> Option<WorkerSettings> {
        self.inner.worker.read().ok().and_then(|w| w.clone())
    }

    /// `GET /api/cluster/status`.
    pub(crate) async fn status(&self) -> ClusterStatus {
        if let Some(host) = self.host() {
            let stats = host.stats().await.ok();
            return ClusterStatus {
                role: "host".into(),
                group_id: host.group().to_string(),
                stats,
                binary_path: None,
                binary_mode: None,
                worker_status: None,
            };
        }
        if let Some(worker) = self.worker() {
            return ClusterStatus {
                role: "worker".into(),
                group_id: worker.group.to_string(),
                stats: None,
                binary_path: Some(worker.executor.display().to_string()),
                binary_mode: Some(worker.mode.as_str().to_owned()),
                worker_status: Some("running".into()),
            };
        }
        // As in Goop², an idle peer shows the executor a join without one would use.
        let binary = self.binary();
        ClusterStatus {
            role: String::new(),
            group_id: String::new(),
            stats: None,
            binary_path: binary.as_ref().map(|(path, _)| path.display().to_string()),
            binary_mode: binary.map(|(_, mode)| mode.as_str().to_owned()),
            worker_status: None,
        }
    }

    fn busy(&self) -> Option<String> {
        if let Some(host) = self.host() {
            return Some(format!("the host of cluster {}", host.group()));
        }
        self.worker()
            .map(|w| format!("a worker in cluster {}", w.group))
    }

    /// Creates a cluster group and hosts it. `admission` is the group layer's: an `invite`
    /// cluster takes only the workers its host invited.
    pub(crate) async fn create(
        &self,
        name: String,
        max_members: u32,
        admission: Admission,
    ) -> Result<GroupId, ClusterError> {
        if let Some(role) = self.busy() {
            return Err(ClusterError::Busy(role));
        }
        let spec = GroupSpec {
            id: None,
            name: name.clone(),
            group_type: CLUSTER_TYPE.into(),
            group_context: name.clone(),
            max_members,
            volatile: false,
            admission,
            roles: Vec::new(),
            default_role: None,
        };
        let group = self.inner.groups.create(spec).await?;
        self.start_host(group.clone()).await?;
        Ok(group)
    }

    /// Hosts `group`, a cluster group this peer already hosts in the group layer (made with
    /// `POST /api/groups` and type `cluster`, which starts no host by itself).
    pub(crate) async fn host_existing(&self, group: GroupId) -> Result<(), ClusterError> {
        if let Some(role) = self.busy() {
            return Err(ClusterError::Busy(role));
        }
        let hosted = self.inner.groups.hosted_groups().await?;
        match hosted.into_iter().find(|g| g.id == group) {
            Some(g) if g.group_type == CLUSTER_TYPE => self.start_host(group).await,
            Some(g) => Err(ClusterError::NotClusterGroup {
                group,
                group_type: g.group_type,
            }),
            None => Err(ClusterError::NotHosted(group)),
        }
    }

    async fn start_host(&self, group: GroupId) -> Result<(), ClusterError> {
        let store = self.store()?;
        let (incoming_tx, incoming) = mpsc::channel(16_384);
        let (members_tx, members) = mpsc::channel(1024);
        let config = HostConfig {
            group: group.clone(),
            dispatcher: self.inner.hosting.dispatcher.clone(),
            seed: rand_seed(),
            limits: self.inner.hosting.limits.clone(),
            take_back_every: host::TAKE_BACK_EVERY,
        };
        let link = MqLink {
            mq: self.inner.mq.clone(),
        };
        let role = self.role_token();
        let handle = host::spawn(
            config,
            store,
            link,
            incoming,
            members,
            &self.inner.tracker,
            role,
        )
        .await?;
        if let Ok(mut routes) = self.inner.routes.write() {
            routes.host = Some((group.clone(), incoming_tx, members_tx));
        }
        if let Ok(mut host) = self.inner.host.write() {
            *host = Some(handle);
        }
        // Members that were in the group before this host started are told to the actor now;
        // later ones arrive through the handler's hooks.
        if let Ok(members) = self.inner.groups.members(group.clone()).await
            && let Ok(routes) = self.inner.routes.read()
            && let Some((_, _, events)) = &routes.host
        {
            let me = groups::net::peer_to_proto(&self.inner.mq.local_peer_id());
            for member in members.into_iter().filter(|m| m.peer_id != me) {
                let _ = events.try_send(MemberEvent::Joined(member.peer_id));
            }
        }
        tracing::info!(%group, "cluster host started");
        Ok(())
    }

    fn store(&self) -> Result<Arc<JobStore>, ClusterError> {
        let mut slot = self.inner.store.write().map_err(|_| HostError::Stopped)?;
        if let Some(store) = &*slot {
            return Ok(store.clone());
        }
        let path = self.inner.data_dir.join(crate::peer::DATABASE_FILE);
        let store =
            Arc::new(JobStore::open(&path, StoreConfig::default()).map_err(HostError::from)?);
        *slot = Some(store.clone());
        Ok(store)
    }

    /// Joins `group` hosted by `host` as a worker running `settings.executor`; the executor is
    /// checked first. The settings are saved so a restart comes back by itself. The join runs
    /// in the background (the host may not be up yet); the answer tells how its first try went.
    pub(crate) async fn start_worker(
        &self,
        settings: WorkerSettings,
    ) -> Result<FirstJoin, ClusterError> {
        if let Some(role) = self.busy() {
            return Err(ClusterError::Busy(role));
        }
        let (incoming_tx, incoming) = mpsc::channel(16_384);
        let (host_events_tx, host_events) = mpsc::channel(16);
        if let Ok(mut routes) = self.inner.routes.write() {
            routes.worker = Some((
                settings.group.clone(),
                settings.host.clone(),
                incoming_tx,
                host_events_tx,
            ));
        }
        let mut executor = ExecutorConfig::new(settings.executor.clone(), settings.mode);
        executor.capacity_override = settings.capacity.and_then(std::num::NonZeroU32::new);
        let config = MemberConfig {
            group: settings.group.clone(),
            host: settings.host.clone(),
            executor,
            heartbeat: Duration::from_secs(5),
        };
        let link = MqLink {
            mq: self.inner.mq.clone(),
        };
        let role = self.role_token();
        let started = member::spawn(
            config,
            link,
            incoming,
            host_events,
            &self.inner.tracker,
            role.clone(),
        )
        .await
        .map_err(ClusterError::from)
        .and_then(|()| {
            // Ended while its executor was being checked: nothing of it may stay.
            if role.is_cancelled() {
                Err(ClusterError::EndedWhileStarting)
            } else {
                self.save_worker_settings(&settings)
            }
        });
        if let Err(error) = started {
            // Nothing of this role runs on: what it started stops with the token.
            role.cancel();
            if let Ok(mut routes) = self.inner.routes.write() {
                routes.worker = None;
            }
            return Err(error);
        }
        if let Ok(mut worker) = self.inner.worker.write() {
            *worker = Some(settings.clone());
        }
        // A later join without an executor uses this one (Goop² bug 8.1 item 12).
        if let Ok(mut binary) = self.inner.binary.write() {
            *binary = Some((settings.executor.clone(), settings.mode));
        }
        let (first_tx, first) = tokio::sync::oneshot::channel();
        self.inner.tracker.spawn(self.clone().join_group(
            settings.host,
            settings.group,
            role,
            first_tx,
        ));
        Ok(FirstJoin(first))
    }

    /// Joins the worker's group in the background: the host may not be up yet; once joined,
    /// the group layer keeps the subscription and rejoins by itself. A refusal that will stand
    /// (the group is gone, this peer is not invited or not allowed) ends the role, so a
    /// restart does not try again; so does a leave of the group while the join waits. How the
    /// first try went goes to `first`.
    async fn join_group(
        self,
        host: PeerId,
        group: GroupId,
        cancel: CancellationToken,
        first: tokio::sync::oneshot::Sender<JoinTry>,
    ) {
        let mut first = Some(first);
        let mut report = |outcome: JoinTry| {
            if let Some(first) = first.take() {
                // Nobody may be waiting (a restart's join): that is fine.
                let _ = first.send(outcome);
            }
        };
        // Never below the host's refusal interval (500 ms), within which a join refused again
        // (waiting for approval or for room) gets no answer and waits for its timeout.
        let mut backoff = Duration::from_secs(1);
        // An invitation from the host (a group that admits by approval, approving this peer)
        // ends the wait before the next try at once.
        let mut events = self.inner.groups.events();
        loop {
            let joined = self.inner.groups.join(host.clone(), group.clone()).await;
            if cancel.is_cancelled() {
                return;
            }
            match joined {
                Ok(_) => {
                    tracing::info!(%group, %host, "joined the cluster");
                    report(JoinTry::Joined);
                    return;
                }
                Err(error) if join_ends_the_role(&error) => {
                    tracing::warn!(%group, %host, %error, "cannot ever join the cluster; leaving the worker role");
                    if let Err(error) = self.end_role(Some(&group)).await {
                        tracing::warn!(%group, %error, "ending the worker role");
                    }
                    report(JoinTry::Refused(error));
                    return;
                }
                Err(error) => {
                    tracing::warn!(%group, %error, retry_in = ?backoff, "cannot join the cluster yet");
                    report(JoinTry::NotYet(error));
                }
            }
            let invited = async {
                loop {
                    match events.recv().await {
                        Ok(event)
                            if event.kind == GroupEventKind::Invite
                                && event.group == group
                                && event.from.as_ref() == Some(&host) =>
                        {
                            return;
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        // No more events: only the timer is left.
                        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    }
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
                () = invited => tracing::info!(%group, %host, "invited by the host; joining now"),
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// A fresh token for the role about to start, cancelled by [`Cluster::end_role`].
    fn role_token(&self) -> CancellationToken {
        let token = self.inner.cancel.child_token();
        if let Ok(mut role) = self.inner.role.write() {
            *role = Some(token.clone());
        }
        token
    }

    /// Ends this peer's role (`POST /api/cluster/leave`): a host closes its cluster group (its
    /// workers are told), a worker leaves it and forgets its settings. Stored jobs stay in the
    /// database.
    pub(crate) async fn leave(&self) -> Result<(), ClusterError> {
        self.end_role(None).await
    }

    /// Ends the role whatever its group (`None`), or only when it is the role in `gone`, a
    /// group that went away without this service: closed or left through the generic group
    /// routes, closed by its host, this worker kicked or refused. Either way the actor stops,
    /// the routes go, the group is closed or left if it is still there, and a worker forgets
    /// its settings.
    async fn end_role(&self, gone: Option<&GroupId>) -> Result<(), ClusterError> {
        let ours = |group: &GroupId| gone.is_none_or(|g| g == group);
        let host = self
            .inner
            .host
            .write()
            .ok()
            .and_then(|mut h| h.take_if(|h| ours(h.group())));
        let worker = self
            .inner
            .worker
            .write()
            .ok()
            .and_then(|mut w| w.take_if(|w| ours(&w.group)));
        if gone.is_some() && host.is_none() && worker.is_none() {
            // A worker role still starting (its routes are set before its executor is
            // checked) stops there; otherwise another role, or this one already ended.
            let starting = self.inner.routes.read().is_ok_and(|routes| {
                routes
                    .worker
                    .as_ref()
                    .is_some_and(|(group, ..)| gone.is_some_and(|g| g == group))
            });
            if starting && let Some(token) = self.inner.role.read().ok().and_then(|r| r.clone()) {
                token.cancel();
            }
            return Ok(());
        }
        if let Some(token) = self.inner.role.write().ok().and_then(|mut r| r.take()) {
            token.cancel();
        }
        if let Ok(mut routes) = self.inner.routes.write() {
            *routes = Routes::default();
        }
        // A group already gone (what ended the role, or something that raced this leave) is
        // the end asked for, not an error.
        let still_there = |result: Result<(), GroupError>| match result {
            Err(GroupError::UnknownGroup(_) | GroupError::NotJoined(_)) => Ok(()),
            result => result,
        };
        if let Some(host) = host {
            let group = host.group().clone();
            tracing::info!(%group, "cluster host stopped; closing its group");
            still_there(self.inner.groups.close(group).await)?;
        }
        if let Some(worker) = worker {
            tracing::info!(group = %worker.group, "cluster worker stopped; leaving its group");
            // Both, whichever fails: settings left behind would rejoin at the next start, and
            // a membership left behind would keep this peer an idle worker at the host.
            let left = still_there(self.inner.groups.leave(worker.group).await);
            let path = self.settings_path();
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(settings_error(&path, e));
            }
            left?;
        }
        Ok(())
    }

    /// Ends the role of each group the handler reports gone, until `cancel`.
    async fn end_roles(self, mut gone: mpsc::Receiver<GroupId>, cancel: CancellationToken) {
        loop {
            let group = tokio::select! {
                () = cancel.cancelled() => return,
                group = gone.recv() => match group {
                    Some(group) => group,
                    None => return,
                },
            };
            if let Err(error) = self.end_role(Some(&group)).await {
                tracing::warn!(%group, %error, "ending the cluster role of a group that went away");
            }
        }
    }

    /// Pauses or resumes this worker (the host stops or starts giving it jobs).
    pub(crate) fn pause_self(&self, pause: bool) -> Result<(), ClusterError> {
        let routes = self.inner.routes.read().map_err(|_| HostError::Stopped)?;
        let Some((_, _, _, events)) = &routes.worker else {
            return Err(ClusterError::NotWorker);
        };
        events
            .try_send(HostEvent::Pause(pause))
            .map_err(|_| HostError::Stopped)?;
        Ok(())
    }

    /// Remembers the executor a later join without one uses (Goop²'s `/api/cluster/binary`).
    pub(crate) fn set_binary(&self, path: PathBuf, mode: BinaryMode) -> Result<(), ClusterError> {
        if let Some(worker) = self.worker() {
            return Err(ClusterError::Busy(format!(
                "a worker in cluster {} with executor {}: leave and join again to change it",
                worker.group,
                worker.executor.display()
            )));
        }
        if let Ok(mut binary) = self.inner.binary.write() {
            *binary = Some((path, mode));
        }
        Ok(())
    }

    /// The executor set with [`Cluster::set_binary`].
    pub(crate) fn binary(&self) -> Option<(PathBuf, BinaryMode)> {
        self.inner.binary.read().ok().and_then(|b| b.clone())
    }

    fn settings_path(&self) -> PathBuf {
        self.inner.data_dir.join(WORKER_FILE)
    }

    fn load_worker_settings(&self) -> Result<Option<WorkerSettings>, ClusterError> {
        let path = self.settings_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(settings_error(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| settings_error(&path, e))
    }

    fn save_worker_settings(&self, settings: &WorkerSettings) -> Result<(), ClusterError> {
        let path = self.settings_path();
        let text = serde_json::to_string_pretty(settings).map_err(|e| settings_error(&path, e))?;
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, text).map_err(|e| settings_error(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| settings_error(&path, e))
    }
}

/// What the cluster handler shares with the cluster: the routes, and the groups whose end
/// ends the role.
pub(crate) struct ClusterRoutes {
    routes: Arc<RwLock<Routes>>,
    gone: mpsc::Receiver<GroupId>,
}

/// Whether a failed join ends the worker role rather than being tried again: the host no
/// longer has the group or does not admit this peer, this peer cannot join it at all (it is
/// the host), or a leave through the group routes cancelled the join.
fn join_ends_the_role(error: &GroupError) -> bool {
    match error {
        GroupError::Rejected { code, .. } => matches!(
            code,
            ErrorCode::UnknownGroup | ErrorCode::NotInvited | ErrorCode::Forbidden
        ),
        GroupError::HostedHere(_) | GroupError::SelfTarget | GroupError::Cancelled(_) => true,
        _ => false,
    }
}

fn settings_error(path: &Path, reason: impl std::fmt::Display) -> ClusterError {
    ClusterError::Settings {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Passes each `cluster:` message to the actor of its group; messages for other groups are
/// dropped and logged (only the worker actor checks the sender is its host; the host actor's
/// dispatcher checks the sender holds the attempt).
async fn route_messages(
    mut subscription: groups::Subscription,
    routes: Arc<RwLock<Routes>>,
    cancel: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => return,
            message = subscription.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Some((group, msg_type)) = parse_cluster_topic(&message.topic) else {
            tracing::warn!(topic = %message.topic, "dropped a message with a malformed cluster topic");
            continue;
        };
        let from = groups::net::peer_to_proto(&message.from);
        let target = routes.read().ok().and_then(|routes| {
            if let Some((hosted, incoming, _)) = &routes.host
                && *hosted == group
            {
                return Some(incoming.clone());
            }
            if let Some((joined, _, incoming, _)) = &routes.worker
                && *joined == group
            {
                return Some(incoming.clone());
            }
            None
        });
        let Some(target) = target else {
            tracing::debug!(%group, %from, msg_type, "dropped a message for a cluster this peer is not in");
            continue;
        };
        let msg_type = msg_type.to_owned();
        let payload = String::from(Box::<str>::from(message.payload));
        let incoming = Incoming {
            from,
            msg_type,
            payload,
        };
        if target.send(incoming).await.is_err() {
            tracing::debug!(%group, "cluster actor stopped; message dropped");
        }
    }
}
