//! One peer's parts wired together: the libp2p node, the MQ bus, and the group manager on top
//! of the bus with its tables in the peer's database.
//!
//! [`Peer::start`] is what `goop node` calls; other components (the cluster host and worker)
//! hook in by registering their type handlers and startup groups in [`PeerParts`] and by
//! calling the [`GroupHandle`] and the [`Mq`] it returns.

use std::path::PathBuf;

use anyhow::Context as _;
use groups::{
    GroupConfig, GroupHandle, GroupManagerParts, GroupSpec, GroupStore, HandlerRegistry, Mq, Node,
    NodeConfig, NodeHandle,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The database file in the data directory, shared by every component of the peer (each
/// versions its own tables).
pub const DATABASE_FILE: &str = "goop.db";

/// Events queued between the MQ bus and the group manager.
const GROUP_INCOMING_CAPACITY: usize = 4096;

/// What a peer is built from.
pub struct PeerParts {
    /// The libp2p node's settings (key, listen addresses, MQ settings...).
    pub node: NodeConfig,
    /// The data directory, where the database lives.
    pub data_dir: PathBuf,
    /// The group manager's settings. Their `seed` is mixed with fresh randomness at start:
    /// group ids and a restarted host's epoch must differ between peers and between runs.
    pub groups: GroupConfig,
    /// The group types; a group whose type has no handler still works (it relays).
    pub registry: HandlerRegistry,
    /// Groups to create at start when they do not exist yet (see `GroupManagerParts`).
    pub startup_groups: Vec<GroupSpec>,
}

impl std::fmt::Debug for PeerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerParts")
            .field("node", &self.node)
            .field("data_dir", &self.data_dir)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// 64 random bits from the standard library's per-process hash keys (which it takes from
/// the operating system), mixed with the time and the process id.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A running peer.
pub struct Peer {
    node: Node,
    /// The MQ bus.
    pub mq: Mq,
    /// The group manager.
    pub groups: GroupHandle,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("peer_id", &self.node.handle().local_peer_id())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// Starts the node and the bus, opens the database, restores the hosted groups and the
    /// subscriptions (their members and hosts come back by themselves) and starts the group
    /// manager.
    pub async fn start(parts: PeerParts) -> anyhow::Result<Self> {
        let PeerParts {
            node,
            data_dir,
            mut groups,
            registry,
            startup_groups,
        } = parts;
        groups.seed ^= fresh_seed();
        let path = data_dir.join(DATABASE_FILE);
        let store = GroupStore::open_async(path.clone())
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        let node = Node::start(node).await?;
        let mq = node.mq();
        let me = groups::net::peer_to_proto(&mq.local_peer_id());
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let (transport, incoming) =
            groups::mq_transport(&mq, GROUP_INCOMING_CAPACITY, &tasks, cancel.clone());
        let parts = GroupManagerParts {
            me,
            config: groups,
            registry,
            transport,
            incoming,
            store: Some(store),
            startup_groups,
        };
        let handle = match groups::spawn_group_manager(parts, &tasks, cancel.clone()).await {
            Ok(handle) => handle,
            Err(e) => {
                cancel.cancel();
                tasks.close();
                tasks.wait().await;
                node.shutdown().await;
                return Err(e).context("cannot start the group manager");
            }
        };
        Ok(Self {
            node,
            mq,
            groups: handle,
            tasks,
            cancel,
        })
    }

    /// The handle to the libp2p node.
    pub fn node(&self) -> NodeHandle {
        self.node.handle()
    }

    /// Stops the group manager (its queued writes are committed), then the node.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.node.shutdown().await;
    }
}
