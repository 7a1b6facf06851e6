//! The `files` group type: each peer shares files with the groups of that type it is in, and
//! serves them to the other members over `/goop/docs/1.0.0`.
//!
//! Mends Goop²'s files (reference `goop2-handlers.md` §2 and §7):
//! - A file name that is not a plain name is refused, never silently rewritten; group ids map
//!   to directories one to one (see `store`).
//! - A peer serves a group's files only to that group's members as it knows them: the host to
//!   its members, a member to its host and the members the host listed; a group the peer has
//!   left is not served at all.
//! - A file travels in chunks from disk to the stream and from the stream to the HTTP answer;
//!   neither side holds it whole, and a transfer that gets no byte for 30 s fails. Lists reuse
//!   hashes until a file changes.
//! - A missing file is "not found" everywhere (404 over HTTP).
//!
//! Transport encryption is libp2p's (Noise); Goop²'s `ENC:` requests are answered with an
//! error.
//!
//! The protocol: one request per stream, a JSON line `{"op":"list"|"get","group_id","file"?}`.
//! A list is answered with `{"ok":true,"files":[DocInfo...]}` and a line end; a file with
//! `OK <mime> <size>` and a line end, then exactly `size` bytes; an error with
//! `{"ok":false,"error":"..."}` and a line end.

mod store;

use std::sync::Arc;
use std::time::Duration;

use futures::AsyncRead;
use futures::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use libp2p::StreamProtocol;
use proto::{GroupId, PeerId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::group::{GroupError, GroupHandle};
use crate::net::IdleTimeout;
use crate::net::NodeHandle;

pub use self::store::{DocInfo, DocStore, MAX_NAME_BYTES, check_name};

/// The group type of file-sharing groups.
pub const FILES_TYPE: &str = "files";
/// The largest file a peer stores or sends, in bytes (50 MiB).
pub const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// The protocol files travel on.
pub const PROTOCOL: &str = "/goop/docs/1.0.0";
/// The longest request or header line.
const LINE_MAX: u64 = 4096;
/// How long a peer has to answer a list, and to start answering a file.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take to arrive once a stream is open.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a file from another peer may go without a byte before its transfer fails.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a files operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Not a plain file name.
    #[error(
        "invalid file name {0:?}: it must be 1 to 255 bytes, without `/`, `\\` or control characters, not start with `.` or space, and not end with space"
    )]
    InvalidName(String),
    /// No such file.
    #[error("file not found: {0}")]
    NotFound(String),
    /// Over [`MAX_FILE_BYTES`].
    #[error("file exceeds the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// This peer neither hosts nor has joined a files group of that id.
    #[error("group {0} is not a files group this peer hosts or has joined")]
    UnknownGroup(GroupId),
    /// The disk refused.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The other peer answered with an error.
    #[error("peer {peer}: {message}")]
    Remote {
        /// The peer.
        peer: PeerId,
        /// What it said.
        message: String,
    },
    /// The other peer refused: this peer is not a member of the group there.
    #[error("peer {peer} refused: {message}")]
    Denied {
        /// The peer.
        peer: PeerId,
        /// What it said.
        message: String,
    },
    /// The other peer could not be reached or broke the protocol.
    #[error("peer {peer}: {message}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        message: String,
    },
    /// The group layer failed.
    #[error(transparent)]
    Group(#[from] GroupError),
}

impl FilesError {
    fn io(what: &'static str, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

/// Where a files group comes from, for this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// This peer hosts it.
    Hosted,
    /// This peer has joined it.
    Subscribed,
    /// Neither any more: this peer's files of it are still on disk.
    Local,
}

/// A files group this peer is in.
#[derive(Debug, Clone)]
pub struct FilesGroup {
    /// The group.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Hosted or joined.
    pub source: Source,
    /// Its host.
    pub host: PeerId,
}

/// A file coming from another peer: its type and size, and the bytes to read.
pub struct RemoteFile {
    /// The MIME type the other peer gave.
    pub mime: String,
    /// Its size in bytes.
    pub size: u64,
    /// Exactly `size` bytes.
    pub body: Box<dyn AsyncRead + Send + Unpin>,
}

/// The files side of a peer.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: DocStore,
    groups: GroupHandle,
    node: NodeHandle,
    control: libp2p_stream::Control,
    tracker: TaskTracker,
}

#[derive(Serialize, Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    group_id: String,
    #[serde(default)]
    file: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files: Option<Vec<DocInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What a refusal for a non-member says, so the asking side can tell it apart.
const DENIED: &str = "access denied: not a group member";

impl Files {
    /// Opens the shared directory `root`, and serves its files on [`PROTOCOL`] until
    /// `cancel`.
    pub fn start(
        root: std::path::PathBuf,
        groups: GroupHandle,
        node: NodeHandle,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, FilesError> {
        let control = node.stream_control();
        let files = Self {
            inner: Arc::new(Inner {
                store: DocStore::open(root)?,
                groups,
                node: node.clone(),
                control,
                tracker: tracker.clone(),
            }),
        };
        let server = files.clone();
        crate::net::serve_protocol(&node, PROTOCOL, tracker, cancel, move |peer, stream| {
            let server = server.clone();
            async move {
                if let Err(error) = server.serve(&peer, stream).await {
                    tracing::debug!(%peer, %error, "files request ended early");
                }
            }
        })
        .map_err(|e| FilesError::io("registering the files protocol", std::io::Error::other(e)))?;
        Ok(files)
    }

    /// The files groups this peer hosts or has joined.
    pub async fn groups(&self) -> Result<Vec<FilesGroup>, FilesError> {
        let me = self.inner.groups.peer_id().clone();
        let mut out: Vec<FilesGroup> = self
            .inner
            .groups
            .hosted_groups()
            .await?
            .into_iter()
            .filter(|g| g.group_type == FILES_TYPE)
            .map(|g| FilesGroup {
                id: g.id,
                name: g.name,
                source: Source::Hosted,
                host: me.clone(),
            })
            .collect();
        for s in self.inner.groups.subscriptions().await? {
            if s.group_type == FILES_TYPE && !out.iter().any(|g| g.id == s.group) {
                out.push(FilesGroup {
                    id: s.group,
                    name: s.group_name,
                    source: Source::Subscribed,
                    host: s.host,
                });
            }
        }
        Ok(out)
    }

    /// The files group `group`, when this peer is in it.
    pub async fn group(&self, group: &GroupId) -> Result<FilesGroup, FilesError> {
        self.groups()
            .await?
            .into_iter()
            .find(|g| &g.id == group)
            .ok_or_else(|| FilesError::UnknownGroup(group.clone()))
    }

    /// The other peers of a files group this peer is in: its members and its host.
    pub async fn peers(&self, group: &GroupId) -> Result<Vec<PeerId>, FilesError> {
        let info = self.group(group).await?;
        self.peers_of(info).await
    }

    async fn peers_of(&self, info: FilesGroup) -> Result<Vec<PeerId>, FilesError> {
        let group = &info.id;
        let me = self.inner.groups.peer_id().clone();
        let mut peers = vec![info.host];
        for member in self.inner.groups.members(group.clone()).await? {
            if !peers.contains(&member.peer_id) {
                peers.push(member.peer_id);
            }
        }
        peers.retain(|p| p != &me);
        Ok(peers)
    }

    /// Whether `peer` may read this peer's files of `group`.
    async fn allowed(&self, group: &GroupId, peer: &PeerId) -> bool {
        match self.group(group).await {
            Ok(info) if info.source == Source::Hosted => self
                .inner
                .groups
                .is_member(group.clone(), peer.clone())
                .await
                .unwrap_or(false),
            Ok(info) => self.peers_of(info).await.is_ok_and(|p| p.contains(peer)),
            Err(_) => false,
        }
    }

    /// The groups this peer has files of on disk but neither hosts nor has joined (any
    /// more), with those files; groups without files are left out.
    pub async fn local_groups(&self) -> Result<Vec<(GroupId, Vec<DocInfo>)>, FilesError> {
        let known: Vec<GroupId> = self.groups().await?.into_iter().map(|g| g.id).collect();
        self.on_disk(move |store| {
            let mut out = Vec::new();
            for group in store.groups_on_disk()? {
                if known.contains(&group) {
                    continue;
                }
                let files = store.list(&group)?;
                if !files.is_empty() {
                    out.push((group, files));
                }
            }
            Ok(out)
        })
        .await
    }

    /// The group, when this peer is in it; `None` when it is not but has files of it on disk
    /// (a group it left), which it may still list, read and delete.
    async fn own_files(&self, group: &GroupId) -> Result<Option<FilesGroup>, FilesError> {
        match self.group(group).await {
            Ok(info) => Ok(Some(info)),
            Err(FilesError::UnknownGroup(_)) if self.inner.store.has_dir(group) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// This peer's files of a group it is in, or has files of on disk.
    pub async fn list(&self, group: &GroupId) -> Result<Vec<DocInfo>, FilesError> {
        self.own_files(group).await?;
        self.blocking(group.clone(), move |store, group| store.list(&group))
            .await
    }

    /// Stores a file in a group this peer is in, read from `content` (blocking reads), and
    /// tells the group (`{"action":"doc-added","file":{name,size,hash}}`).
    pub async fn save(
        &self,
        group: &GroupId,
        name: String,
        mut content: impl std::io::Read + Send + 'static,
    ) -> Result<DocInfo, FilesError> {
        check_name(&name)?;
        self.group(group).await?;
        let info = self
            .blocking(group.clone(), move |store, group| {
                store.save(&group, &name, &mut content)
            })
            .await?;
        self.announce(
            group,
            serde_json::json!({
                "action": "doc-added",
                "file": {"name": info.name, "size": info.size, "hash": info.hash},
            }),
        );
        Ok(info)
    }

    /// Deletes a file of this peer, and tells the group (`{"action":"doc-removed","file"}`)
    /// when this peer is in it.
    pub async fn delete(&self, group: &GroupId, name: String) -> Result<(), FilesError> {
        let member = self.own_files(group).await?.is_some();
        let removed = name.clone();
        self.blocking(group.clone(), move |store, group| {
            store.delete(&group, &name)
        })
        .await?;
        if member {
            self.announce(
                group,
                serde_json::json!({"action": "doc-removed", "file": removed}),
            );
        }
        Ok(())
    }

    /// Opens one of this peer's files of a group it is in, or has files of on disk, with its
    /// size.
    pub async fn open(
        &self,
        group: &GroupId,
        name: &str,
    ) -> Result<(tokio::fs::File, u64), FilesError> {
        self.own_files(group).await?;
        let name = name.to_owned();
        let (file, size) = self
            .blocking(group.clone(), move |store, group| {
                store.open_file(&group, &name)
            })
            .await?;
        Ok((tokio::fs::File::from_std(file), size))
    }

    /// Another peer's files of `group`.
    pub async fn list_remote(
        &self,
        peer: &PeerId,
        group: &GroupId,
    ) -> Result<Vec<DocInfo>, FilesError> {
        let request = Request {
            op: "list".into(),
            group_id: group.to_string(),
            file: String::new(),
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let mut reader = self.ask(peer, &request).await?;
            let line = read_line(&mut reader)
                .await
                .map_err(|e| unreachable(peer, &e))?;
            serde_json::from_str::<Answer>(&line).map_err(|e| unreachable(peer, &e))
        })
        .await
        .map_err(|_| unreachable(peer, &"no answer in time"))??;
        match answer {
            Answer {
                ok: true,
                files: Some(files),
                ..
            } => Ok(files),
            Answer { error, .. } => Err(refusal(peer, error)),
        }
    }

    /// One of another peer's files of `group`, to read as it arrives.
    pub async fn fetch_remote(
        &self,
        peer: &PeerId,
        group: &GroupId,
        name: &str,
    ) -> Result<RemoteFile, FilesError> {
        check_name(name)?;
        let request = Request {
            op: "get".into(),
            group_id: group.to_string(),
            file: name.to_owned(),
        };
        tokio::time::timeout(ANSWER_TIMEOUT, async {
            let mut reader = self.ask(peer, &request).await?;
            let line = read_line(&mut reader)
                .await
                .map_err(|e| unreachable(peer, &e))?;
            if line.starts_with('{') {
                let answer: Answer =
                    serde_json::from_str(&line).map_err(|e| unreachable(peer, &e))?;
                return Err(refusal(peer, answer.error));
            }
            let header = line
                .strip_prefix("OK ")
                .and_then(|rest| rest.rsplit_once(' '))
                .and_then(|(mime, size)| Some((mime.to_owned(), size.parse::<u64>().ok()?)));
            let Some((mime, size)) = header else {
                return Err(unreachable(peer, &format!("malformed answer {line:?}")));
            };
            if size > MAX_FILE_BYTES {
                return Err(unreachable(
                    peer,
                    &format!("announces {size} bytes, over the limit"),
                ));
            }
            Ok(RemoteFile {
                mime,
                size,
                body: Box::new(IdleTimeout::new(reader.take(size), BODY_IDLE_TIMEOUT)),
            })
        })
        .await
        .map_err(|_| unreachable(peer, &"no answer in time"))?
    }

    /// Opens a stream to `peer` and sends `request`.
    async fn ask(
        &self,
        peer: &PeerId,
        request: &Request,
    ) -> Result<BufReader<libp2p::Stream>, FilesError> {
        let to = crate::net::proto_to_peer(peer).map_err(|e| unreachable(peer, &e))?;
        self.inner
            .node
            .connect(to)
            .await
            .map_err(|e| unreachable(peer, &e))?;
        let mut control = self.inner.control.clone();
        let mut stream = control
            .open_stream(to, StreamProtocol::new(PROTOCOL))
            .await
            .map_err(|e| unreachable(peer, &e))?;
        let mut line = serde_json::to_vec(request).map_err(|e| unreachable(peer, &e))?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|e| unreachable(peer, &e))?;
        stream.flush().await.map_err(|e| unreachable(peer, &e))?;
        Ok(BufReader::new(stream))
    }

    /// Answers one request on a stream from `peer`.
    async fn serve(&self, peer: &PeerId, stream: libp2p::Stream) -> Result<(), std::io::Error> {
        let mut stream = BufReader::new(stream);
        let line = tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut stream))
            .await
            .map_err(|_| std::io::Error::other("no request in time"))??;
        let answer = self.answer(peer, &line).await;
        let stream = stream.get_mut();
        match answer {
            Ok(Served::List(files)) => {
                let answer = Answer {
                    ok: true,
                    files: Some(files),
                    error: None,
                };
                write_json_line(stream, &answer).await?;
            }
            Ok(Served::File(mut file, size, mime)) => {
                stream
                    .write_all(format!("OK {mime} {size}\n").as_bytes())
                    .await?;
                let mut buf = vec![0u8; 64 * 1024];
                let mut left = size;
                while left > 0 {
                    let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("the file shrank while it was sent"));
                    }
                    let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                    stream.write_all(&buf[..n]).await?;
                    left -= n as u64;
                }
            }
            Err(message) => {
                let answer = Answer {
                    ok: false,
                    files: None,
                    error: Some(message),
                };
                write_json_line(stream, &answer).await?;
            }
        }
        stream.flush().await?;
        stream.close().await
    }

    /// What to send for a request line, or the error to tell.
    async fn answer(&self, peer: &PeerId, line: &str) -> Result<Served, String> {
        if line.starts_with("ENC:") {
            return Err("encrypted requests are not supported: the transport is encrypted".into());
        }
        let request: Request = serde_json::from_str(line).map_err(|_| "bad request".to_owned())?;
        if request.group_id.is_empty() {
            return Err("missing group_id".into());
        }
        let group: GroupId = request
            .group_id
            .parse()
            .map_err(|_| "invalid group_id".to_owned())?;
        if !self.allowed(&group, peer).await {
            tracing::warn!(%group, %peer, "refusing files to a peer that is not a member");
            return Err(DENIED.into());
        }
        match request.op.as_str() {
            "list" => self
                .blocking(group, |store, group| store.list(&group))
                .await
                .map(Served::List)
                .map_err(|e| e.to_string()),
            "get" => {
                if request.file.is_empty() {
                    return Err("missing file".into());
                }
                let mime = mime_of(&request.file).to_owned();
                let name = request.file.clone();
                match self
                    .blocking(group, move |store, group| store.open_file(&group, &name))
                    .await
                {
                    Ok((file, size)) => {
                        Ok(Served::File(tokio::fs::File::from_std(file), size, mime))
                    }
                    Err(FilesError::NotFound(_) | FilesError::InvalidName(_)) => {
                        Err("not found".into())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            other => Err(format!("unknown op: {other}")),
        }
    }

    /// Runs disk work on one group on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        group: GroupId,
        work: impl FnOnce(&DocStore, GroupId) -> Result<T, FilesError> + Send + 'static,
    ) -> Result<T, FilesError> {
        self.on_disk(move |store| work(store, group)).await
    }

    /// Runs disk work on the blocking pool.
    async fn on_disk<T: Send + 'static>(
        &self,
        work: impl FnOnce(&DocStore) -> Result<T, FilesError> + Send + 'static,
    ) -> Result<T, FilesError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner.store))
            .await
            .map_err(|e| {
                FilesError::io("running disk work", std::io::Error::other(e.to_string()))
            })?
    }

    /// Tells the group about a change, in a task: a member waits for its host.
    fn announce(&self, group: &GroupId, payload: serde_json::Value) {
        let groups = self.inner.groups.clone();
        let group = group.clone();
        self.inner.tracker.spawn(async move {
            if let Err(error) = groups.send_json(group.clone(), &payload).await {
                tracing::debug!(%group, %error, "cannot tell the group about a file");
            }
        });
    }
}

enum Served {
    List(Vec<DocInfo>),
    File(tokio::fs::File, u64, String),
}

async fn read_line<R: futures::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<String, std::io::Error> {
    let mut line = String::new();
    let n = reader.take(LINE_MAX + 1).read_line(&mut line).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the stream ended",
        ));
    }
    if !line.ends_with('\n') {
        return Err(std::io::Error::other("line too long"));
    }
    Ok(line.trim_end().to_owned())
}

async fn write_json_line<W: futures::AsyncWrite + Unpin>(
    out: &mut W,
    value: &impl Serialize,
) -> Result<(), std::io::Error> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await
}

fn unreachable(peer: &PeerId, error: &dyn std::fmt::Display) -> FilesError {
    FilesError::Unreachable {
        peer: peer.clone(),
        message: error.to_string(),
    }
}

fn refusal(peer: &PeerId, error: Option<String>) -> FilesError {
    let message = error.unwrap_or_else(|| "refused".to_owned());
    match message.as_str() {
        DENIED => FilesError::Denied {
            peer: peer.clone(),
            message,
        },
        "not found" => FilesError::NotFound(message),
        _ => FilesError::Remote {
            peer: peer.clone(),
            message,
        },
    }
}

/// The MIME type of a file name, by its extension.
pub fn mime_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_extension() {
        assert_eq!(mime_of("a.TXT"), "text/plain; charset=utf-8");
        assert_eq!(mime_of("report.pdf"), "application/pdf");
        assert_eq!(mime_of("noext"), "application/octet-stream");
    }
}
