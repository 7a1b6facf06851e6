//! Starting `goop node` processes and talking HTTP/1.1 to them with a minimal client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The ready line `--print-ready` prints.
#[derive(Debug, Deserialize)]
pub(crate) struct Ready {
    pub(crate) event: String,
    pub(crate) peer_id: String,
    pub(crate) listen: Vec<String>,
    pub(crate) api: String,
}

/// A running `goop node`, killed when dropped.
pub(crate) struct Peer {
    pub(crate) child: Child,
    pub(crate) ready: Ready,
    pub(crate) data_dir: PathBuf,
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "goop-node-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn goop(data_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_goop"));
    cmd.arg("node")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--print-ready",
        ])
        .args(extra)
        .env_remove("GOOP_API_TOKEN")
        .env("GOOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `goop <command…>` with the node flags of [`goop`], listening for peers on `listen`: a worker
/// (`["worker", "--join", …]`), or a node that must come back on the port it had before.
pub(crate) fn goop_with(
    command: &[&str],
    data_dir: &Path,
    listen: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_goop"));
    cmd.args(command)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            listen,
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--print-ready",
        ])
        .args(extra)
        .env_remove("GOOP_API_TOKEN")
        .env_remove("GOOP_API")
        .env("GOOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr_log(data_dir))
        .kill_on_drop(true);
    cmd
}

/// Where a [`goop_with`] process logs: a file in its data directory rather than a pipe nobody
/// reads, which would stop a process that logs much once the pipe is full.
pub(crate) fn stderr_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("stderr.log")
}

fn stderr_log(data_dir: &Path) -> Stdio {
    std::fs::create_dir_all(data_dir).expect("create data dir");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log_path(data_dir))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Starts a peer and waits for its ready line.
pub(crate) async fn start_in(data_dir: PathBuf, extra: &[&str]) -> Peer {
    spawn_ready(goop(&data_dir, extra), data_dir).await
}

/// Spawns `cmd` (a `goop` with `--print-ready` and `--data-dir data_dir`) and waits for its
/// ready line.
pub(crate) async fn spawn_ready(mut cmd: Command, data_dir: PathBuf) -> Peer {
    let mut child = cmd.spawn().expect("spawn goop");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let _ = child.kill().await;
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err).await;
        }
        panic!("goop node did not become ready: {err}");
    }
    let ready: Ready = serde_json::from_str(&line).expect("ready line is json");
    assert_eq!(ready.event, "ready");
    Peer {
        child,
        ready,
        data_dir,
    }
}

pub(crate) async fn start(extra: &[&str]) -> Peer {
    start_in(temp_dir("peer"), extra).await
}

impl Peer {
    /// Kills the process and leaves its data directory in place, for a restart.
    pub(crate) async fn kill_keeping_data(mut self) {
        let _ = self.child.kill().await;
        self.data_dir = PathBuf::new();
    }

    /// Kills the process (SIGKILL) and returns what it logged on stderr.
    pub(crate) async fn kill_and_logs(mut self) -> String {
        let _ = self.child.kill().await;
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err).await;
        }
        err
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// The status line and the headers.
    pub(crate) head: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on a fresh connection (`Connection: close`).
pub(crate) async fn http(
    api: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(api).await.expect("connect to api");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    // Host is this API unless the caller names another.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {api}\r\n"));
    }
    request.push_str("Connection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        // JSON unless the caller names a type.
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    if let Some(body) = body {
        request.push_str(body);
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    parse_answer(&raw)
}

/// A POST whose body the server may refuse before reading it all (a body over its limit): the
/// body is written while the answer is read, and a write cut short is not an error.
pub(crate) async fn post_large(api: &str, path: &str, body: &str) -> Answer {
    let stream = TcpStream::connect(api).await.expect("connect to api");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(body.as_bytes()).await;
    };
    let read = async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        // A reset after the answer arrived still leaves the answer in `raw`.
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        raw
    };
    let ((), raw) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(write, read) })
            .await
            .expect("answer in time");
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Answer {
        status,
        body: body.to_owned(),
        head: head.to_owned(),
    }
}

pub(crate) async fn get(api: &str, path: &str) -> Answer {
    http(api, "GET", path, &[], None).await
}

pub(crate) async fn post(api: &str, path: &str, body: &str) -> Answer {
    http(api, "POST", path, &[], Some(body)).await
}

/// An open `GET /api/mq/events` stream, read as raw text.
pub(crate) struct Events {
    stream: TcpStream,
    pub(crate) seen: String,
}

impl Events {
    pub(crate) async fn open(api: &str) -> Self {
        Self::open_path(api, "/api/mq/events").await
    }

    /// Opens another event stream of the API, such as `/api/groups/events`.
    pub(crate) async fn open_path(api: &str, path: &str) -> Self {
        let mut stream = TcpStream::connect(api).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Self {
            stream,
            seen: String::new(),
        };
        events.wait_for("event: connected").await;
        events
    }

    /// Reads until `needle` has been seen, failing after a deadline.
    pub(crate) async fn wait_for(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        while !self.seen.contains(needle) {
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.seen))
                .unwrap();
            assert!(n > 0, "event stream ended: {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

/// Polls `check` until it holds, failing with `what` after `secs`.
pub(crate) async fn until(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects `from` to `to` over the API, so later sends know where `to` is.
pub(crate) async fn dial(from: &Peer, to: &Peer) {
    let body = serde_json::json!({ "addr": to.ready.listen[0] }).to_string();
    let answer = post(&from.ready.api, "/api/peers/dial", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// `(item[a], item[b])` of each item of a JSON array of objects with those two string fields.
pub(crate) fn pairs(items: &serde_json::Value, a: &str, b: &str) -> Vec<(String, String)> {
    items
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| {
            let field = |key: &str| item[key].as_str().expect("a string field").to_owned();
            (field(a), field(b))
        })
        .collect()
}

/// The JSON body of an answer that must be 200.
pub(crate) fn ok(answer: &Answer) -> serde_json::Value {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

/// An answer that must be an API error with this status and code.
pub(crate) fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], code, "{answer:?}");
}

/// Kills the peer (SIGKILL) and starts it again on the same data directory and listen port,
/// with `extra` flags.
pub(crate) async fn restart_killed(peer: Peer, extra: &[&str]) -> Peer {
    let port = peer.ready.listen[0]
        .split('/')
        .nth(4)
        .expect("a tcp listen address")
        .to_owned();
    let data_dir = peer.data_dir.clone();
    peer.kill_keeping_data().await;
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(extra);
    start_in(data_dir, &args).await
}

/// Runs `goop <args>` against `api`: exit status, stdout, stderr.
pub(crate) async fn cli_any(api: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_goop"))
            .args(args)
            .arg("--api")
            .arg(format!("http://{api}"))
            .env_remove("GOOP_API_TOKEN")
            .env_remove("GOOP_API")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("goop {args:?} did not finish"))
    .expect("run goop");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
