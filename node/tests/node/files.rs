//! Shared files between real `goop node` processes on loopback, over HTTP and
//! `/goop/docs/1.0.0`: uploads, lists, a member browsing and downloading another's file byte
//! for byte, a stranger refused, deletes, and bad input.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::support::{Answer, Peer, assert_error, dial, get, http, ok, post, start, temp_dir};

const BOUNDARY: &str = "goop-test-boundary";

/// A form of a group id and a file, in that order or with the file first.
fn form(group: &str, name: &str, content: &str, file_first: bool) -> String {
    let group = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"group_id\"\r\n\r\n{group}\r\n"
    );
    let file = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{content}\r\n"
    );
    let (first, second) = if file_first {
        (file, group)
    } else {
        (group, file)
    };
    format!("{first}{second}--{BOUNDARY}--\r\n")
}

/// `POST /api/docs/upload` as a browser form sends it.
async fn upload(peer: &Peer, group: &str, name: &str, content: &str) -> Answer {
    upload_form(peer, &form(group, name, content, false)).await
}

async fn upload_form(peer: &Peer, body: &str) -> Answer {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    http(
        &peer.ready.api,
        "POST",
        "/api/docs/upload",
        &[("Content-Type", &content_type)],
        Some(body),
    )
    .await
}

/// `(name, size)` of a file list.
fn names(files: &Value) -> Vec<(String, u64)> {
    files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn members_share_files_and_strangers_are_refused() {
    let (host, member, stranger) = (start(&[]).await, start(&[]).await, start(&[]).await);
    dial(&member, &host).await;
    dial(&stranger, &host).await;
    let created = ok(&post(
        &host.ready.api,
        "/api/groups",
        &json!({"name": "docs", "group_type": "files"}).to_string(),
    )
    .await);
    let group = created["id"].as_str().unwrap().to_owned();
    let join = json!({"host_peer_id": host.ready.peer_id, "group_id": group}).to_string();
    ok(&post(&member.ready.api, "/api/groups/join", &join).await);

    // The host uploads through a form, the member shares a file of its machine.
    let uploaded = ok(&upload(&host, &group, "notes 1.txt", "hello notes").await);
    assert_eq!(uploaded["status"], "uploaded");
    assert_eq!(uploaded["filename"], "notes 1.txt");
    assert_eq!(uploaded["size"], 11);
    assert!(uploaded["hash"].as_str().unwrap().starts_with("sha256:"));
    let dir = temp_dir("files-local");
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("data.csv");
    std::fs::write(&local, "a,b\n1,2\n").unwrap();
    let body = json!({"group_id": group, "path": local}).to_string();
    ok(&post(&member.ready.api, "/api/docs/upload-local", &body).await);

    let mine = ok(&get(&host.ready.api, &format!("/api/docs/my?group_id={group}")).await);
    assert_eq!(names(&mine["files"]), [("notes 1.txt".to_owned(), 11)]);
    assert_eq!(mine["peer_id"], host.ready.peer_id.as_str());
    let groups = ok(&get(&member.ready.api, "/api/docs/groups").await);
    assert_eq!(groups["groups"][0]["source"], "subscribed", "{groups}");
    assert_eq!(groups["groups"][0]["group_name"], "docs", "{groups}");

    // The member sees both peers' files, and downloads the host's byte for byte.
    let browsed = ok(&get(
        &member.ready.api,
        &format!("/api/docs/browse?group_id={group}"),
    )
    .await);
    let peers = browsed["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{browsed}");
    assert_eq!(peers[0]["self"], true);
    assert_eq!(names(&peers[0]["files"]), [("data.csv".to_owned(), 8)]);
    assert_eq!(peers[1]["peer_id"], host.ready.peer_id.as_str());
    assert_eq!(names(&peers[1]["files"]), [("notes 1.txt".to_owned(), 11)]);
    let path = format!(
        "/api/docs/download?group_id={group}&file=notes%201.txt&peer_id={}",
        host.ready.peer_id
    );
    let got = get(&member.ready.api, &path).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, "hello notes");
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(got.header("content-length"), Some("11"));
    assert_eq!(
        got.header("content-disposition"),
        Some("attachment; filename*=UTF-8''notes%201.txt")
    );
    // And the host reads the member's the same way; a missing file is 404.
    let path = format!(
        "/api/docs/download?group_id={group}&file=data.csv&peer_id={}&inline=1",
        member.ready.peer_id
    );
    let got = get(&host.ready.api, &path).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, "a,b\n1,2\n"),
        "{got:?}"
    );
    assert!(
        got.header("content-disposition")
            .unwrap()
            .starts_with("inline;")
    );
    let path = format!(
        "/api/docs/download?group_id={group}&file=nothing.txt&peer_id={}",
        host.ready.peer_id
    );
    assert_error(&get(&member.ready.api, &path).await, 404, "not_found");

    // A larger file travels in chunks and arrives whole.
    let large: String = (0..200_000).map(|i| format!("{i:015}\n")).collect();
    let big = dir.join("large.txt");
    std::fs::write(&big, &large).unwrap();
    let body = json!({"group_id": group, "path": big}).to_string();
    ok(&post(&member.ready.api, "/api/docs/upload-local", &body).await);
    let path = format!(
        "/api/docs/download?group_id={group}&file=large.txt&peer_id={}",
        member.ready.peer_id
    );
    let got = get(&host.ready.api, &path).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert_eq!(got.body.len(), large.len());
    assert!(got.body == large, "the large file arrived changed");

    // A peer outside the group is refused by the host, whatever it asks.
    let path = format!(
        "/api/docs/download?group_id={group}&file=notes%201.txt&peer_id={}",
        host.ready.peer_id
    );
    assert_error(&get(&stranger.ready.api, &path).await, 403, "access_denied");

    // Deletes: once, then not found; the member's browse no longer shows it.
    let body = json!({"group_id": group, "filename": "notes 1.txt"}).to_string();
    assert_eq!(
        ok(&post(&host.ready.api, "/api/docs/delete", &body).await)["status"],
        "deleted"
    );
    assert_error(
        &post(&host.ready.api, "/api/docs/delete", &body).await,
        404,
        "not_found",
    );
    let browsed = ok(&get(
        &member.ready.api,
        &format!("/api/docs/browse?group_id={group}"),
    )
    .await);
    assert_eq!(browsed["peers"][1]["files"], json!([]), "{browsed}");

    // The member leaves: its files of the group stay on its disk, listed as `local`, and it
    // may still read and delete them, but serves them to nobody.
    let leave = json!({"group_id": group}).to_string();
    ok(&post(&member.ready.api, "/api/groups/leave", &leave).await);
    let groups = ok(&get(&member.ready.api, "/api/docs/groups").await);
    let listed = groups["groups"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{groups}");
    assert_eq!(listed[0]["group_id"], group.as_str());
    assert_eq!(listed[0]["source"], "local");
    assert_eq!(listed[0]["group_name"], "");
    assert_eq!(
        names(&listed[0]["files"]),
        [
            ("data.csv".to_owned(), 8),
            ("large.txt".to_owned(), large.len() as u64)
        ]
    );
    let got = get(
        &member.ready.api,
        &format!("/api/docs/download?group_id={group}&file=data.csv"),
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, "a,b\n1,2\n"));
    let path = format!(
        "/api/docs/download?group_id={group}&file=data.csv&peer_id={}",
        member.ready.peer_id
    );
    assert_error(&get(&host.ready.api, &path).await, 403, "access_denied");
    let body = json!({"group_id": group, "filename": "large.txt"}).to_string();
    ok(&post(&member.ready.api, "/api/docs/delete", &body).await);
    let mine = ok(&get(&member.ready.api, &format!("/api/docs/my?group_id={group}")).await);
    assert_eq!(names(&mine["files"]), [("data.csv".to_owned(), 8)]);
    // A group it never had files of is still unknown.
    assert_error(
        &get(&member.ready.api, "/api/docs/my?group_id=never-here").await,
        404,
        "unknown_group",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_file_input_is_refused_and_stores_nothing() {
    let host = start(&[]).await;
    let api = &host.ready.api;
    let created = ok(&post(
        api,
        "/api/groups",
        &json!({"name": "docs", "group_type": "files"}).to_string(),
    )
    .await);
    let group = created["id"].as_str().unwrap().to_owned();
    for bad in ["../escape.txt", ".hidden", "a\\\\b"] {
        assert_error(&upload(&host, &group, bad, "x").await, 400, "invalid_name");
    }
    // Not a multipart form at all: the API's JSON error.
    let json_body = post(api, "/api/docs/upload", r#"{"group_id":"x"}"#).await;
    assert_error(&json_body, 400, "bad_form");
    // A group this peer is not in, or not a files group.
    assert_error(
        &upload(&host, "0123456789abcdef", "a.txt", "x").await,
        404,
        "unknown_group",
    );
    let chat = ok(&post(
        api,
        "/api/groups",
        &json!({"name": "talk", "group_type": "chat"}).to_string(),
    )
    .await);
    let chat = chat["id"].as_str().unwrap();
    assert_error(
        &upload(&host, chat, "a.txt", "x").await,
        404,
        "unknown_group",
    );
    // A file over 50 MiB, shared from disk (sparse, so quick to make).
    let dir = temp_dir("files-big");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(50 * 1024 * 1024 + 1)
        .unwrap();
    let body = json!({"group_id": group, "path": big}).to_string();
    assert_error(
        &post(api, "/api/docs/upload-local", &body).await,
        413,
        "too_large",
    );
    for path in [dir.join("missing"), dir.clone()] {
        let body = json!({"group_id": group, "path": path}).to_string();
        assert_error(
            &post(api, "/api/docs/upload-local", &body).await,
            400,
            "cannot_read",
        );
    }
    assert_error(
        &post(api, "/api/docs/delete", "{}").await,
        400,
        "bad_request",
    );
    assert_error(
        &get(api, "/api/docs/download?group_id=x").await,
        400,
        "bad_request",
    );
    // A form that breaks off in the middle of its file stores nothing.
    let whole = form(&group, "cut.txt", &"x".repeat(100_000), false);
    let mut stream = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /api/docs/upload HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        whole.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&whole.as_bytes()[..60_000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_form"), "{answer}");
    let mine = ok(&get(api, &format!("/api/docs/my?group_id={group}")).await);
    assert_eq!(mine["files"], json!([]), "{mine}");
    // The file may come before the group in the form.
    let late = ok(&upload_form(&host, &form(&group, "late.txt", "group second", true)).await);
    assert_eq!(
        (late["filename"].as_str(), late["size"].as_u64()),
        (Some("late.txt"), Some(12))
    );
    let mine = ok(&get(api, &format!("/api/docs/my?group_id={group}")).await);
    assert_eq!(names(&mine["files"]), [("late.txt".to_owned(), 12)]);
    let _ = std::fs::remove_dir_all(dir);
}
