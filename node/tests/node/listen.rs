//! Listening groups between real `goop node` processes on loopback: a host plays a queue of
//! MP3 files, a listener follows its state and pulls the audio; bad input; the queue comes back
//! after a restart.

use serde_json::{Value, json};

use super::support::{
    Peer, assert_error, dial, get, ok, post, restart_killed, start, temp_dir, until,
};

const FAST_PINGS: [&str; 2] = ["--group-ping-ms", "300"];

/// An MP3 file: an optional ID3 tag, one MPEG-1 Layer III 128 kbit/s frame header, then
/// `text` repeated to `seconds` of audio (16,000 bytes a second).
fn mp3(dir: &std::path::Path, name: &str, tagged: bool, seconds: usize, text: &str) -> String {
    let mut bytes = Vec::new();
    if tagged {
        bytes.extend(b"ID3\x04\x00\x00\x00\x00\x00\x0a");
        bytes.extend([0u8; 10]);
    }
    let start = bytes.len();
    bytes.extend([0xff, 0xfb, 0x90, 0x00]);
    while bytes.len() < start + 16_000 * seconds {
        bytes.extend(text.as_bytes());
    }
    bytes.truncate(start + 16_000 * seconds);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    path.to_string_lossy().into_owned()
}

/// The body of a chunked answer, without its framing.
fn dechunk(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

async fn state(peer: &Peer) -> Value {
    ok(&get(&peer.ready.api, "/api/listen/state").await)["group"].clone()
}

async fn control(peer: &Peer, body: Value) {
    ok(&post(&peer.ready.api, "/api/listen/control", &body.to_string()).await);
}

#[tokio::test]
async fn a_listener_follows_the_host_and_hears_its_track() {
    let dir = temp_dir("listen-files");
    std::fs::create_dir_all(&dir).unwrap();
    let a = mp3(&dir, "a.mp3", false, 2, "first-track ");
    let b = mp3(&dir, "b.mp3", true, 1, "second-track ");
    let host = start(&FAST_PINGS).await;
    let listener = start(&[FAST_PINGS[0], FAST_PINGS[1], "--label", "Lee"]).await;
    let created = ok(&post(&host.ready.api, "/api/listen/create", r#"{"name":"radio"}"#).await);
    let group = created["id"].as_str().unwrap().to_owned();
    assert!(group.starts_with("listen-"), "{created}");
    assert_eq!(created["role"], "host");
    dial(&listener, &host).await;
    let join = json!({"host_peer_id": host.ready.peer_id, "group_id": group}).to_string();
    ok(&post(&listener.ready.api, "/api/listen/join", &join).await);

    let track = ok(&post(
        &host.ready.api,
        "/api/listen/load",
        &json!({"file_paths": [a, b]}).to_string(),
    )
    .await);
    assert_eq!(track["name"], "a.mp3");
    assert_eq!(track["bitrate"], 128_000);
    assert_eq!(track["duration"], 2.0);
    until(10, "the listener has the track and the queue", async || {
        let s = state(&listener).await;
        s["track"]["name"] == "a.mp3" && s["queue_total"] == 2
    })
    .await;
    let s = state(&listener).await;
    assert_eq!(s["role"], "listener");
    // The host names its listeners (Goop²'s `listener_names`, always `{}` there).
    until(10, "the host names its listener", async || {
        let answer = ok(&get(&host.ready.api, "/api/listen/state").await);
        answer["listener_names"] == json!({ listener.ready.peer_id.clone(): "Lee" })
    })
    .await;
    assert_eq!(s["queue"], json!(["a.mp3", "b.mp3"]));
    assert_eq!(s["play_state"]["playing"], false);

    control(&host, json!({"action": "play"})).await;
    until(10, "the listener sees it play", async || {
        state(&listener).await["play_state"]["playing"] == true
    })
    .await;
    // A message without the queue leaves it as it was.
    assert_eq!(state(&listener).await["queue"], json!(["a.mp3", "b.mp3"]));
    // The listener pulls the audio from the host, from where the track plays now (a moment
    // in) to its end: the whole 2 s track fits in the lead.
    let audio = get(&listener.ready.api, "/api/listen/stream").await;
    assert_eq!(audio.status, 200, "{}", audio.head);
    assert_eq!(audio.header("content-type"), Some("audio/mpeg"));
    assert_eq!(audio.header("transfer-encoding"), Some("chunked"));
    let body = dechunk(&audio.body);
    let heard = body.matches("first-track").count();
    let whole = (32_000 - 4) / 12;
    assert!(
        heard <= whole && heard > whole - 16_000 / 12,
        "{heard} of {whole} pieces, more than a second off"
    );
    assert!(!body.contains("second-track"));
    assert!(body.ends_with("track firs"), "the track was cut short");

    control(&host, json!({"action": "pause"})).await;
    until(10, "the listener sees it pause", async || {
        state(&listener).await["play_state"]["playing"] == false
    })
    .await;
    control(&host, json!({"action": "next"})).await;
    until(10, "the listener sees the next track", async || {
        state(&listener).await["track"]["name"] == "b.mp3"
    })
    .await;
    assert_eq!(state(&listener).await["queue_index"], 1);
    // The last track (1 s) plays to its end; the host's clock stops the player and says so.
    control(&host, json!({"action": "play"})).await;
    until(10, "the listener hears that the queue ended", async || {
        let s = state(&listener).await;
        s["track"]["name"] == "b.mp3"
            && s["play_state"]["playing"] == false
            && s["play_state"]["position"].as_f64() >= Some(1.0)
    })
    .await;

    // The host comes back with its queue where it was, paused.
    let host = restart_killed(host, &FAST_PINGS).await;
    let s = state(&host).await;
    assert_eq!(s["id"], group.as_str(), "{s}");
    assert_eq!(s["track"]["name"], "b.mp3", "{s}");
    assert_eq!(s["play_state"]["playing"], false, "{s}");

    // Closing ends the group for the listener too.
    ok(&post(&host.ready.api, "/api/listen/close", "").await);
    assert_eq!(state(&host).await, Value::Null);
    until(15, "the listener loses the closed group", async || {
        state(&listener).await == Value::Null
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_listen_input_is_refused() {
    let dir = temp_dir("listen-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let noise = dir.join("noise.mp3");
    std::fs::write(&noise, [0x12u8; 100]).unwrap();
    let host = start(&[]).await;
    let api = &host.ready.api;
    let load = |body: Value| {
        let api = api.clone();
        async move { post(&api, "/api/listen/load", &body.to_string()).await }
    };
    assert_error(
        &load(json!({"file_path": "/x.mp3"})).await,
        409,
        "not_hosting",
    );
    assert_error(
        &post(api, "/api/listen/leave", "").await,
        409,
        "not_listening",
    );
    ok(&post(api, "/api/listen/create", "{}").await);
    assert_error(&post(api, "/api/listen/create", "{}").await, 409, "busy");
    assert_error(&load(json!({})).await, 400, "bad_request");
    assert_error(
        &load(json!({"file_path": "http://radio.example/stream"})).await,
        400,
        "invalid_request",
    );
    assert_error(
        &load(json!({"file_path": noise})).await,
        400,
        "invalid_request",
    );
    assert_error(
        &post(api, "/api/listen/control", r#"{"action":"play"}"#).await,
        400,
        "invalid_request",
    );
    assert_error(
        &post(api, "/api/listen/control", r#"{"action":"dance"}"#).await,
        400,
        "invalid_request",
    );
    let s = state(&host).await;
    assert_eq!(s["role"], "host");
    assert!(s.get("track").is_none(), "{s}");
    let _ = std::fs::remove_dir_all(dir);
}
