//! The `/api/docs/*` routes of the `files` group type: Goop²'s paths, bodies and success
//! answers (reference `goop2-handlers.md` §2.4), with JSON errors whose code says why, 404 for a
//! missing file, files streamed both ways, and `Content-Disposition` names encoded (RFC 6266).

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use groups::files::{DocInfo, FilesError, FilesGroup, MAX_FILE_BYTES, Source, mime_of};
use proto::{GroupId, PeerId};
use serde::{Deserialize, Serialize};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tokio_util::io::ReaderStream;

use super::api::{JsonBody, QueryParams};
use super::groups::{Status, group_id, ok, peer_id};
use super::{ApiError, AppState};

impl From<FilesError> for ApiError {
    fn from(error: FilesError) -> Self {
        let (status, code) = match &error {
            FilesError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            FilesError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            FilesError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            FilesError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
            FilesError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
            FilesError::Denied { .. } => (StatusCode::FORBIDDEN, "access_denied"),
            FilesError::Remote { .. } | FilesError::Unreachable { .. } => {
                (StatusCode::BAD_GATEWAY, "unreachable")
            }
            FilesError::Group(e) => {
                return super::groups::failed(StatusCode::INTERNAL_SERVER_ERROR, "files", e);
            }
        };
        Self::new(status, code, error.to_string())
    }
}

#[derive(Serialize)]
pub(crate) struct GroupFiles {
    group_id: GroupId,
    group_name: String,
    source: Source,
    files: Vec<DocInfo>,
}

#[derive(Serialize)]
pub(crate) struct GroupsAnswer {
    groups: Vec<GroupFiles>,
}

/// `GET /api/docs/groups`: the files groups this peer hosts or has joined, with its own files
/// in each, then the groups it is no longer in that it still has files of (`local`).
pub(crate) async fn groups(State(state): State<AppState>) -> Result<Json<GroupsAnswer>, ApiError> {
    let mut groups = Vec::new();
    for FilesGroup {
        id, name, source, ..
    } in state.files.groups().await?
    {
        let files = state.files.list(&id).await?;
        groups.push(GroupFiles {
            group_id: id,
            group_name: name,
            source,
            files,
        });
    }
    for (id, files) in state.files.local_groups().await? {
        groups.push(GroupFiles {
            group_id: id,
            group_name: String::new(),
            source: Source::Local,
            files,
        });
    }
    Ok(Json(GroupsAnswer { groups }))
}

#[derive(Deserialize)]
pub(crate) struct GroupQuery {
    group_id: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct MyFiles {
    files: Vec<DocInfo>,
    peer_id: PeerId,
}

/// `GET /api/docs/my?group_id=`: this peer's files of a group.
pub(crate) async fn my(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<GroupQuery>,
) -> Result<Json<MyFiles>, ApiError> {
    let group = group_id(query.group_id, "missing group_id")?;
    let files = state.files.list(&group).await?;
    Ok(Json(MyFiles {
        files,
        peer_id: state.groups.peer_id().clone(),
    }))
}

#[derive(Serialize)]
pub(crate) struct Uploaded {
    status: &'static str,
    filename: String,
    size: u64,
    hash: String,
}

impl From<DocInfo> for Uploaded {
    fn from(info: DocInfo) -> Self {
        Self {
            status: "uploaded",
            filename: info.name,
            size: info.size,
            hash: info.hash,
        }
    }
}

/// `POST /api/docs/upload`, a multipart form with `group_id` and `file` (its file name is the
/// stored name).
pub(crate) async fn upload(
    State(state): State<AppState>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Uploaded>, ApiError> {
    // Not a multipart form at all (no boundary): the API's JSON error, not axum's text.
    let mut form = form
        .map_err(|e| ApiError::bad_request("bad_form", format!("bad form: {}", e.body_text())))?;
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        // A body that breaks off is the sender's fault, though axum calls it a 500.
        let status = match e.status() {
            status if status.is_server_error() => StatusCode::BAD_REQUEST,
            status => status,
        };
        ApiError::new(status, "bad_form", format!("bad form: {}", e.body_text()))
    };
    let mut group = None;
    let mut saved = None;
    while let Some(mut field) = form.next_field().await.map_err(bad_form)? {
        match field.name() {
            Some("group_id") => group = Some(field.text().await.map_err(bad_form)?),
            Some("file") => {
                let name = field.file_name().unwrap_or_default().to_owned();
                let Some(group) = group.clone() else {
                    // The file before the group: held (up to the file limit) until it comes.
                    let mut bytes = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
                        if (bytes.len() + chunk.len()) as u64 > MAX_FILE_BYTES {
                            return Err(FilesError::TooLarge {
                                max: MAX_FILE_BYTES,
                            }
                            .into());
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    saved = Some(Upload::Held(name, bytes));
                    continue;
                };
                // The usual order: the file goes to disk as it arrives.
                let group = group_id(Some(group), "missing group_id")?;
                let (chunks, incoming) = Incoming::channel();
                let feed = async move {
                    loop {
                        let chunk = match field.chunk().await {
                            Ok(Some(chunk)) => chunk,
                            Ok(None) => return Ok(()),
                            Err(e) => {
                                let broken = std::io::Error::other("the form broke off");
                                let _ = chunks.send(Err(broken)).await;
                                return Err(bad_form(e));
                            }
                        };
                        // A store that stopped reading has its answer already.
                        if chunks.send(Ok(chunk)).await.is_err() {
                            return Ok(());
                        }
                    }
                };
                let (info, fed) = tokio::join!(state.files.save(&group, name, incoming), feed);
                fed?;
                saved = Some(Upload::Saved(info?));
            }
            _ => {}
        }
    }
    let info = match saved {
        Some(Upload::Saved(info)) => info,
        Some(Upload::Held(name, bytes)) => {
            let group = group_id(group, "missing group_id")?;
            state
                .files
                .save(&group, name, std::io::Cursor::new(bytes))
                .await?
        }
        None => {
            group_id(group, "missing group_id")?;
            return Err(ApiError::bad_request("bad_request", "missing file"));
        }
    };
    Ok(Json(info.into()))
}

/// A form's file: saved while it arrived, or held because it came before the group.
enum Upload {
    Saved(DocInfo),
    Held(String, Vec<u8>),
}

/// A form's file as a blocking reader, fed chunk by chunk while the request arrives: the store
/// reads it on the blocking pool, so an upload is never held in memory whole. A form that
/// breaks off is an error, never the end of the file.
struct Incoming {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<axum::body::Bytes>>,
    current: axum::body::Bytes,
}

impl Incoming {
    fn channel() -> (
        tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
        Self,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (
            tx,
            Self {
                chunks: rx,
                current: axum::body::Bytes::new(),
            },
        )
    }
}

impl std::io::Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[derive(Deserialize)]
pub(crate) struct UploadLocalBody {
    group_id: Option<String>,
    path: Option<String>,
}

/// `POST /api/docs/upload-local {group_id, path}`: shares a file of this machine, under its
/// base name.
pub(crate) async fn upload_local(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<UploadLocalBody>,
) -> Result<Json<Uploaded>, ApiError> {
    let message = "missing group_id or path";
    let group = group_id(body.group_id, message)?;
    let path = std::path::PathBuf::from(
        body.path
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::bad_request("bad_request", message))?,
    );
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_request("bad_request", format!("{} names no file", path.display()))
        })?;
    let cannot_read = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(
            "cannot_read",
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let file = std::fs::File::open(&path).map_err(|e| cannot_read(&e))?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(cannot_read(&"not a regular file")),
        Err(e) => return Err(cannot_read(&e)),
    }
    let info = state.files.save(&group, name, file).await?;
    Ok(Json(info.into()))
}

#[derive(Deserialize)]
pub(crate) struct DeleteBody {
    group_id: Option<String>,
    filename: Option<String>,
}

/// `POST /api/docs/delete {group_id, filename}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Json<Status>, ApiError> {
    let message = "missing group_id or filename";
    let group = group_id(body.group_id, message)?;
    let name = body
        .filename
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad_request("bad_request", message))?;
    state.files.delete(&group, name).await?;
    Ok(ok("deleted"))
}

#[derive(Serialize)]
pub(crate) struct PeerFiles {
    peer_id: PeerId,
    label: String,
    files: Vec<DocInfo>,
    #[serde(rename = "self")]
    is_self: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Browse {
    group_id: GroupId,
    peers: Vec<PeerFiles>,
}

/// `GET /api/docs/browse?group_id=`: this peer's files, then every other member's, asked in
/// parallel (a peer that does not answer in 5 s shows `"error"` and no files).
pub(crate) async fn browse(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<GroupQuery>,
) -> Result<Json<Browse>, ApiError> {
    let group = group_id(query.group_id, "missing group_id")?;
    let mut peers = vec![PeerFiles {
        peer_id: state.groups.peer_id().clone(),
        label: if state.names.label().is_empty() {
            "Me".to_owned()
        } else {
            state.names.label().to_owned()
        },
        files: state.files.list(&group).await?,
        is_self: true,
        error: None,
    }];
    let others = state.files.peers(&group).await?;
    let asked = others.into_iter().map(|peer| {
        let files = state.files.clone();
        let group = group.clone();
        let names = state.names.clone();
        async move {
            let answer = files.list_remote(&peer, &group).await;
            let (files, error) = match answer {
                Ok(files) => (files, None),
                Err(error) => (Vec::new(), Some(error.to_string())),
            };
            PeerFiles {
                label: names.resolve(&peer).unwrap_or_else(|| peer.to_string()),
                peer_id: peer,
                files,
                is_self: false,
                error,
            }
        }
    });
    peers.extend(futures::future::join_all(asked).await);
    Ok(Json(Browse {
        group_id: group,
        peers,
    }))
}

#[derive(Deserialize)]
pub(crate) struct DownloadQuery {
    group_id: Option<String>,
    file: Option<String>,
    peer_id: Option<String>,
    inline: Option<String>,
}

/// `GET /api/docs/download?group_id=&file=&peer_id=&inline=1`: a file of this peer (no
/// `peer_id`, or this peer's) or of another member, streamed.
pub(crate) async fn download(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<DownloadQuery>,
) -> Result<Response, ApiError> {
    let message = "missing group_id or file";
    let group = group_id(query.group_id, message)?;
    let name = query
        .file
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad_request("bad_request", message))?;
    let peer = match query.peer_id.filter(|p| !p.is_empty()) {
        Some(p) => Some(peer_id(Some(p), message)?),
        None => None,
    };
    let inline = query.inline.as_deref() == Some("1");
    let (mime, size, body) = match peer.filter(|p| p != state.groups.peer_id()) {
        None => {
            let (file, size) = state.files.open(&group, &name).await?;
            let body = Body::from_stream(ReaderStream::new(file));
            (mime_of(&name).to_owned(), size, body)
        }
        Some(peer) => {
            let remote = state.files.fetch_remote(&peer, &group, &name).await?;
            let reader = remote.body.compat();
            (
                remote.mime,
                remote.size,
                Body::from_stream(ReaderStream::new(reader)),
            )
        }
    };
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        percent_encode(&name)
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (key, value) in [
        (header::CONTENT_TYPE, mime),
        (header::CONTENT_LENGTH, size.to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(key, value);
        }
    }
    Ok(response)
}

/// A file name for `filename*=`: every byte outside RFC 5987's `attr-char` as `%XX`.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
