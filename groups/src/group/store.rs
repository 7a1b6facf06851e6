//! The group tables in the peer's SQLite database: hosted groups, their members, invitations
//! and bans, and this peer's subscriptions to remote groups.
//!
//! rusqlite blocks, so the connection lives on a thread of its own and the async side talks to
//! it through a bounded channel; each request is one transaction. Volatile groups never reach
//! the store. Migrations are versioned in code, per component, in `_migrations`, because other
//! components (the job store) share the database file and its `user_version`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use proto::{Admission, GroupId, PeerId};
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

/// The component name of these tables in `_migrations`.
const COMPONENT: &str = "groups";

/// The migrations, in order; the version is the index plus one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE IF NOT EXISTS _groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    group_type TEXT NOT NULL DEFAULT '',
    group_context TEXT NOT NULL DEFAULT '',
    max_members INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL DEFAULT 0,
    host_joined_at INTEGER,
    default_role TEXT NOT NULL DEFAULT 'viewer',
    roles TEXT NOT NULL DEFAULT '[]',
    admission TEXT NOT NULL DEFAULT 'open'
);
CREATE TABLE IF NOT EXISTS _group_members (
    group_id TEXT NOT NULL REFERENCES _groups(id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'viewer',
    joined_at INTEGER NOT NULL DEFAULT 0,
    present INTEGER NOT NULL DEFAULT 1,
    authored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, peer_id)
);
CREATE TABLE IF NOT EXISTS _group_invites (
    group_id TEXT NOT NULL REFERENCES _groups(id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL,
    invited_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, peer_id)
);
CREATE TABLE IF NOT EXISTS _group_subscriptions (
    host_peer_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    group_name TEXT NOT NULL DEFAULT '',
    group_type TEXT NOT NULL DEFAULT '',
    group_context TEXT NOT NULL DEFAULT '',
    max_members INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL DEFAULT 'member',
    subscribed_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (host_peer_id, group_id)
);
",
    r"
CREATE TABLE IF NOT EXISTS _group_bans (
    group_id TEXT NOT NULL REFERENCES _groups(id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL,
    banned_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, peer_id)
);
",
    r"
CREATE TABLE IF NOT EXISTS _group_requests (
    group_id TEXT NOT NULL REFERENCES _groups(id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL,
    requested_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, peer_id)
);
",
];

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// SQLite returned an error.
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// A row holds a value that does not parse (an id, a role list).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store thread is gone.
    #[error("group store closed")]
    Closed,
    /// The store thread could not start.
    #[error("cannot start the group store thread: {0}")]
    Thread(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error.to_string())
    }
}

/// A hosted group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// The host (this peer).
    pub owner: PeerId,
    /// Its type.
    pub group_type: String,
    /// Its context.
    pub group_context: String,
    /// Member limit, 0 for none.
    pub max_members: u32,
    /// Who may join.
    pub admission: Admission,
    /// The role of new joiners.
    pub default_role: String,
    /// The known roles.
    pub roles: Vec<String>,
    /// When the host joined its own group (Unix ms), if it has.
    pub host_joined_at: Option<i64>,
    /// When the group was created (Unix ms).
    pub created_at: i64,
}

/// A member of a hosted group as stored. `present` is false for a member that was lost (not
/// one that left): its role is kept for when it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member.
    pub peer: PeerId,
    /// Its role.
    pub role: String,
    /// When it joined (Unix ms).
    pub joined_at: i64,
    /// Whether it is a member now.
    pub present: bool,
    /// Whether relays to it carry their author (it asked for the `author` feature), so a
    /// restarted host keeps relaying to it in the form it reads.
    pub authored: bool,
}

/// A subscription of this peer to a remote group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The host.
    pub host: PeerId,
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub group_name: String,
    /// Its type.
    pub group_type: String,
    /// Its context.
    pub group_context: String,
    /// Its member limit.
    pub max_members: u32,
    /// This peer's role in it, as the host last said.
    pub role: String,
    /// When this peer joined (Unix ms).
    pub subscribed_at: i64,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or replace a hosted group.
    PutGroup(GroupRecord),
    /// Delete a hosted group with its members and invitations.
    DeleteGroup(GroupId),
    /// Insert or replace a member.
    PutMember {
        /// The group.
        group: GroupId,
        /// The member.
        member: MemberRecord,
    },
    /// Delete a member.
    DeleteMember {
        /// The group.
        group: GroupId,
        /// The member.
        peer: PeerId,
    },
    /// Record an invitation.
    PutInvite {
        /// The group.
        group: GroupId,
        /// The invited peer.
        peer: PeerId,
        /// When (Unix ms).
        invited_at: i64,
    },
    /// Withdraw an invitation.
    DeleteInvite {
        /// The group.
        group: GroupId,
        /// The peer.
        peer: PeerId,
    },
    /// Record a ban: the peer was kicked and may not join again.
    PutBan {
        /// The group.
        group: GroupId,
        /// The banned peer.
        peer: PeerId,
        /// When (Unix ms).
        banned_at: i64,
    },
    /// Lift a ban.
    DeleteBan {
        /// The group.
        group: GroupId,
        /// The peer.
        peer: PeerId,
    },
    /// Record a request to join a group that admits by approval.
    PutRequest {
        /// The group.
        group: GroupId,
        /// The peer asking.
        peer: PeerId,
        /// When it first asked (Unix ms).
        requested_at: i64,
    },
    /// Forget a request (approved, denied, dropped, or the group no longer asks).
    DeleteRequest {
        /// The group.
        group: GroupId,
        /// The peer.
        peer: PeerId,
    },
    /// Insert or replace a subscription.
    PutSubscription(SubscriptionRecord),
    /// Delete a subscription.
    DeleteSubscription {
        /// The host.
        host: PeerId,
        /// The group.
        group: GroupId,
    },
    /// Replace every row with this state (after a failed write, memory is written back whole).
    ReplaceAll(Box<StoreSnapshot>),
}

/// Everything the store holds, read at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Hosted groups, oldest first.
    pub groups: Vec<GroupRecord>,
    /// Members of hosted groups.
    pub members: Vec<(GroupId, MemberRecord)>,
    /// Invitations of hosted groups.
    pub invites: Vec<(GroupId, PeerId)>,
    /// Bans of hosted groups, with when each was made (Unix ms), oldest first.
    pub bans: Vec<(GroupId, PeerId, i64)>,
    /// Requests to join hosted groups that admit by approval, with when each peer first
    /// asked (Unix ms), oldest first.
    pub requests: Vec<(GroupId, PeerId, i64)>,
    /// Subscriptions to remote groups, oldest first.
    pub subscriptions: Vec<SubscriptionRecord>,
}

enum Request {
    Apply(
        Vec<StoreOp>,
        Option<oneshot::Sender<Result<(), StoreError>>>,
    ),
    Load(oneshot::Sender<Result<StoreSnapshot, StoreError>>),
}

/// The group tables, served by a thread of their own.
pub struct GroupStore {
    requests: Option<mpsc::Sender<Request>>,
    /// Set by the store thread when a write failed, so the owner can write its state back.
    failed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for GroupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupStore")
            .field("path", &self.path)
            .finish()
    }
}

impl GroupStore {
    /// Opens (creating if needed) the database at `path`, runs the migrations and starts the
    /// store thread. Blocking: call it from `spawn_blocking` or before the runtime is busy.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        crate::migrate::migrate(&conn, COMPONENT, MIGRATIONS)?;
        let (requests, mut rx) = mpsc::channel::<Request>(64);
        let failed = Arc::new(AtomicBool::new(false));
        let failed_flag = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("group-store".to_owned())
            .spawn(move || {
                let mut conn = conn;
                while let Some(request) = rx.blocking_recv() {
                    match request {
                        Request::Apply(ops, reply) => {
                            let result = apply(&mut conn, &ops);
                            if let Err(error) = &result {
                                tracing::error!(%error, ops = ops.len(), "group store write failed");
                                failed_flag.store(true, Ordering::SeqCst);
                            }
                            if let Some(reply) = reply {
                                let _ = reply.send(result);
                            }
                        }
                        Request::Load(reply) => {
                            let _ = reply.send(load(&conn));
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            requests: Some(requests),
            failed,
            thread: Some(thread),
            path: path.to_owned(),
        })
    }

    /// [`GroupStore::open`] on the blocking pool.
    pub async fn open_async(path: PathBuf) -> Result<Self, StoreError> {
        tokio::task::spawn_blocking(move || Self::open(&path))
            .await
            .map_err(|e| StoreError::Thread(e.to_string()))?
    }

    /// Reads every table.
    pub async fn load(&self) -> Result<StoreSnapshot, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Request::Load(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes `ops` in one transaction and waits until it is committed.
    pub async fn apply(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Request::Apply(ops, Some(tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `ops` as one transaction without waiting for the commit (writes stay in order).
    pub async fn submit(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        self.sender()?
            .send(Request::Apply(ops, None))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Whether a write failed since the last call (and clears the flag): the tables may
    /// lag behind memory until a [`StoreOp::ReplaceAll`] succeeds.
    pub fn take_failed(&self) -> bool {
        self.failed.swap(false, Ordering::SeqCst)
    }

    /// Finishes the queued writes and stops the store thread.
    pub async fn close(mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn sender(&self) -> Result<&mpsc::Sender<Request>, StoreError> {
        self.requests.as_ref().ok_or(StoreError::Closed)
    }
}

fn apply(conn: &mut Connection, ops: &[StoreOp]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    write(&tx, ops)?;
    tx.commit()?;
    Ok(())
}

fn write(tx: &rusqlite::Transaction<'_>, ops: &[StoreOp]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            StoreOp::PutGroup(g) => {
                let roles = serde_json::to_string(&g.roles).map_err(|e| StoreError::Corrupt {
                    table: "_groups",
                    reason: e.to_string(),
                })?;
                tx.execute(
                    "INSERT INTO _groups (id, name, owner, group_type, group_context, max_members,
                        created_at, host_joined_at, default_role, roles, admission)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, owner = excluded.owner,
                        group_type = excluded.group_type, group_context = excluded.group_context,
                        max_members = excluded.max_members, created_at = excluded.created_at,
                        host_joined_at = excluded.host_joined_at,
                        default_role = excluded.default_role, roles = excluded.roles,
                        admission = excluded.admission",
                    params![
                        g.id.as_str(),
                        g.name,
                        g.owner.as_str(),
                        g.group_type,
                        g.group_context,
                        g.max_members,
                        g.created_at,
                        g.host_joined_at,
                        g.default_role,
                        roles,
                        g.admission.as_str(),
                    ],
                )?;
            }
            StoreOp::DeleteGroup(id) => {
                tx.execute(
                    "DELETE FROM _group_members WHERE group_id = ?1",
                    [id.as_str()],
                )?;
                tx.execute(
                    "DELETE FROM _group_invites WHERE group_id = ?1",
                    [id.as_str()],
                )?;
                tx.execute("DELETE FROM _group_bans WHERE group_id = ?1", [id.as_str()])?;
                tx.execute(
                    "DELETE FROM _group_requests WHERE group_id = ?1",
                    [id.as_str()],
                )?;
                tx.execute("DELETE FROM _groups WHERE id = ?1", [id.as_str()])?;
            }
            StoreOp::PutMember { group, member } => {
                tx.execute(
                    "INSERT OR REPLACE INTO _group_members
                        (group_id, peer_id, role, joined_at, present, authored)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        group.as_str(),
                        member.peer.as_str(),
                        member.role,
                        member.joined_at,
                        member.present,
                        member.authored,
                    ],
                )?;
            }
            StoreOp::DeleteMember { group, peer } => {
                delete_peer(tx, "_group_members", group, peer)?;
            }
            StoreOp::PutInvite {
                group,
                peer,
                invited_at,
            } => put_timed_peer(tx, "_group_invites", "invited_at", group, peer, *invited_at)?,
            StoreOp::DeleteInvite { group, peer } => {
                delete_peer(tx, "_group_invites", group, peer)?;
            }
            StoreOp::PutBan {
                group,
                peer,
                banned_at,
            } => put_timed_peer(tx, "_group_bans", "banned_at", group, peer, *banned_at)?,
            StoreOp::DeleteBan { group, peer } => delete_peer(tx, "_group_bans", group, peer)?,
            StoreOp::PutRequest {
                group,
                peer,
                requested_at,
            } => put_timed_peer(
                tx,
                "_group_requests",
                "requested_at",
                group,
                peer,
                *requested_at,
            )?,
            StoreOp::DeleteRequest { group, peer } => {
                delete_peer(tx, "_group_requests", group, peer)?;
            }
            StoreOp::PutSubscription(s) => {
                tx.execute(
                    "INSERT OR REPLACE INTO _group_subscriptions (host_peer_id, group_id,
                        group_name, group_type, group_context, max_members, role, subscribed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        s.host.as_str(),
                        s.group.as_str(),
                        s.group_name,
                        s.group_type,
                        s.group_context,
                        s.max_members,
                        s.role,
                        s.subscribed_at,
                    ],
                )?;
            }
            StoreOp::DeleteSubscription { host, group } => {
                tx.execute(
                    "DELETE FROM _group_subscriptions WHERE host_peer_id = ?1 AND group_id = ?2",
                    [host.as_str(), group.as_str()],
                )?;
            }
            StoreOp::ReplaceAll(snapshot) => {
                tx.execute_batch(
                    "DELETE FROM _group_members; DELETE FROM _group_invites;
                     DELETE FROM _group_bans; DELETE FROM _group_requests; DELETE FROM _groups;
                     DELETE FROM _group_subscriptions;",
                )?;
                let mut ops: Vec<StoreOp> = Vec::new();
                ops.extend(snapshot.groups.iter().cloned().map(StoreOp::PutGroup));
                ops.extend(
                    snapshot
                        .members
                        .iter()
                        .cloned()
                        .map(|(group, member)| StoreOp::PutMember { group, member }),
                );
                ops.extend(
                    snapshot
                        .bans
                        .iter()
                        .cloned()
                        .map(|(group, peer, banned_at)| StoreOp::PutBan {
                            group,
                            peer,
                            banned_at,
                        }),
                );
                ops.extend(
                    snapshot
                        .requests
                        .iter()
                        .cloned()
                        .map(|(group, peer, requested_at)| StoreOp::PutRequest {
                            group,
                            peer,
                            requested_at,
                        }),
                );
                ops.extend(snapshot.invites.iter().cloned().map(|(group, peer)| {
                    StoreOp::PutInvite {
                        group,
                        peer,
                        invited_at: 0,
                    }
                }));
                ops.extend(
                    snapshot
                        .subscriptions
                        .iter()
                        .cloned()
                        .map(StoreOp::PutSubscription),
                );
                write(tx, &ops)?;
            }
        }
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(table: &'static str, value: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

fn load(conn: &Connection) -> Result<StoreSnapshot, StoreError> {
    let mut snapshot = StoreSnapshot::default();
    let mut stmt = conn.prepare(
        "SELECT id, name, owner, group_type, group_context, max_members, created_at,
            host_joined_at, default_role, roles, admission
         FROM _groups ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, u32>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, Option<i64>>(7)?,
            row.get::<_, String>(8)?,
            row.get::<_, String>(9)?,
            row.get::<_, String>(10)?,
        ))
    })?;
    for row in rows {
        let (
            id,
            name,
            owner,
            group_type,
            group_context,
            max_members,
            created_at,
            host,
            dr,
            roles,
            adm,
        ) = row?;
        let roles: Vec<String> = serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt {
            table: "_groups",
            reason: format!("roles: {e}"),
        })?;
        let admission = match adm.as_str() {
            "invite" => Admission::Invite,
            "approval" => Admission::Approval,
            _ => Admission::Open,
        };
        snapshot.groups.push(GroupRecord {
            id: parse("_groups", &id)?,
            name,
            owner: parse("_groups", &owner)?,
            group_type,
            group_context,
            max_members,
            admission,
            default_role: dr,
            roles,
            host_joined_at: host,
            created_at,
        });
    }
    let mut stmt = conn.prepare(
        "SELECT group_id, peer_id, role, joined_at, present, authored FROM _group_members
         ORDER BY group_id, joined_at, peer_id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, bool>(4)?,
            row.get::<_, bool>(5)?,
        ))
    })?;
    for row in rows {
        let (group, peer, role, joined_at, present, authored) = row?;
        snapshot.members.push((
            parse("_group_members", &group)?,
            MemberRecord {
                peer: parse("_group_members", &peer)?,
                role,
                joined_at,
                present,
                authored,
            },
        ));
    }
    let mut stmt =
        conn.prepare("SELECT group_id, peer_id FROM _group_invites ORDER BY invited_at")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (group, peer) = row?;
        snapshot.invites.push((
            parse("_group_invites", &group)?,
            parse("_group_invites", &peer)?,
        ));
    }
    snapshot.bans = timed_peers(conn, "_group_bans", "banned_at")?;
    snapshot.requests = timed_peers(conn, "_group_requests", "requested_at")?;
    let mut stmt = conn.prepare(
        "SELECT host_peer_id, group_id, group_name, group_type, group_context, max_members,
            role, subscribed_at
         FROM _group_subscriptions ORDER BY subscribed_at, group_id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, u32>(5)?,
            row.get::<_, String>(6)?,
            row.get::<_, i64>(7)?,
        ))
    })?;
    for row in rows {
        let (host, group, group_name, group_type, group_context, max_members, role, at) = row?;
        snapshot.subscriptions.push(SubscriptionRecord {
            host: parse("_group_subscriptions", &host)?,
            group: parse("_group_subscriptions", &group)?,
            group_name,
            group_type,
            group_context,
            max_members,
            role,
            subscribed_at: at,
        });
    }
    Ok(snapshot)
}

/// Records `peer` in `table` (invites, bans, requests) for `group`, as of `at` in `column`.
fn put_timed_peer(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
    group: &GroupId,
    peer: &PeerId,
    at: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table} (group_id, peer_id, {column}) VALUES (?1, ?2, ?3)"
    ))?
    .execute(params![group.as_str(), peer.as_str(), at])?;
    Ok(())
}

/// Removes the row of `peer` in `group` from `table`.
fn delete_peer(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    group: &GroupId,
    peer: &PeerId,
) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "DELETE FROM {table} WHERE group_id = ?1 AND peer_id = ?2"
    ))?
    .execute([group.as_str(), peer.as_str()])?;
    Ok(())
}

/// The `(group, peer, time)` rows of `table` (bans, requests), oldest first.
fn timed_peers(
    conn: &Connection,
    table: &'static str,
    at: &str,
) -> Result<Vec<(GroupId, PeerId, i64)>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT group_id, peer_id, {at} FROM {table} ORDER BY {at}, group_id, peer_id"
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (group, peer, at) = row?;
        out.push((parse(table, &group)?, parse(table, &peer)?, at));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "goop-group-store-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("data.db")
    }

    #[tokio::test]
    async fn every_table_round_trips_and_survives_reopening() {
        let path = temp_db("roundtrip");
        let g: GroupId = "g1".parse().unwrap();
        let host: PeerId = "12D3KooWHost".parse().unwrap();
        let member: PeerId = "12D3KooWMember".parse().unwrap();
        let group = GroupRecord {
            id: g.clone(),
            name: "Chess".to_owned(),
            owner: host.clone(),
            group_type: "chat".to_owned(),
            group_context: "ctx".to_owned(),
            max_members: 3,
            admission: Admission::Invite,
            default_role: "viewer".to_owned(),
            roles: vec!["viewer".to_owned(), "editor".to_owned()],
            host_joined_at: Some(5),
            created_at: 1,
        };
        let m = MemberRecord {
            peer: member.clone(),
            role: "editor".to_owned(),
            joined_at: 7,
            present: false,
            authored: true,
        };
        let sub = SubscriptionRecord {
            host: host.clone(),
            group: "remote".parse().unwrap(),
            group_name: "R".to_owned(),
            group_type: String::new(),
            group_context: String::new(),
            max_members: 0,
            role: "viewer".to_owned(),
            subscribed_at: 9,
        };
        let store = GroupStore::open(&path).unwrap();
        store
            .apply(vec![
                StoreOp::PutGroup(group.clone()),
                StoreOp::PutMember {
                    group: g.clone(),
                    member: m.clone(),
                },
                StoreOp::PutInvite {
                    group: g.clone(),
                    peer: member.clone(),
                    invited_at: 3,
                },
                StoreOp::PutBan {
                    group: g.clone(),
                    peer: host.clone(),
                    banned_at: 4,
                },
                StoreOp::PutBan {
                    group: g.clone(),
                    peer: "12D3KooWGone".parse().unwrap(),
                    banned_at: 6,
                },
                StoreOp::DeleteBan {
                    group: g.clone(),
                    peer: "12D3KooWGone".parse().unwrap(),
                },
                StoreOp::PutRequest {
                    group: g.clone(),
                    peer: "12D3KooWAsks".parse().unwrap(),
                    requested_at: 8,
                },
                StoreOp::PutRequest {
                    group: g.clone(),
                    peer: "12D3KooWAnswered".parse().unwrap(),
                    requested_at: 2,
                },
                StoreOp::DeleteRequest {
                    group: g.clone(),
                    peer: "12D3KooWAnswered".parse().unwrap(),
                },
                StoreOp::PutSubscription(sub.clone()),
            ])
            .await
            .unwrap();
        store.close().await;

        let store = GroupStore::open(&path).unwrap();
        let snapshot = store.load().await.unwrap();
        assert_eq!(snapshot.groups, vec![group]);
        assert_eq!(snapshot.members, vec![(g.clone(), m)]);
        assert_eq!(snapshot.invites, vec![(g.clone(), member)]);
        assert_eq!(snapshot.bans, vec![(g.clone(), host.clone(), 4)]);
        assert_eq!(
            snapshot.requests,
            vec![(g.clone(), "12D3KooWAsks".parse().unwrap(), 8)]
        );
        assert_eq!(snapshot.subscriptions, vec![sub.clone()]);

        // Replacing everything with what was loaded changes nothing.
        store
            .apply(vec![StoreOp::ReplaceAll(Box::new(snapshot.clone()))])
            .await
            .unwrap();
        assert_eq!(store.load().await.unwrap(), snapshot);
        assert!(!store.take_failed());

        store
            .apply(vec![
                StoreOp::DeleteGroup(g),
                StoreOp::DeleteSubscription {
                    host: sub.host,
                    group: sub.group,
                },
            ])
            .await
            .unwrap();
        assert_eq!(store.load().await.unwrap(), StoreSnapshot::default());
        store.close().await;
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
