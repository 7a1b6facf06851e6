//! `GET /api/openapi.json` on a running peer: the stored document, as JSON, behind the token.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::support::{get, start};

/// The document the node is built with.
const DOCUMENT: &str = include_str!("../../src/http/openapi.json");

/// One GET with a bearer token, answering the status line, the headers and the body.
async fn get_with_token(api: &str, path: &str, token: &str) -> (String, String) {
    let mut stream = TcpStream::connect(api).await.expect("connect to api");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("http head");
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_node_serves_its_openapi_document_behind_the_token() {
    let token = "openapi-token-0123456789";
    let a = start(&["--api-token", token]).await;
    let api = &a.ready.api;

    let refused = get(api, "/api/openapi.json").await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "unauthorized");

    let (head, body) = get_with_token(api, "/api/openapi.json", token).await;
    let status = head.split_whitespace().nth(1);
    assert_eq!(status, Some("200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim())
        })
        .expect("a content-type");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(
        body.len(),
        DOCUMENT.len(),
        "the body is not the stored document"
    );
    assert!(body == DOCUMENT, "the body is not the stored document");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1."))
    );
}
