//! A `goop node` and a peer on another libp2p implementation: js-libp2p on Node.js, running
//! the bundle `tests/interop/dist/goop2-peer.mjs` (its sources and how to rebuild it are in
//! `tests/interop/`). The peer speaks Goop²'s wire: TCP, Noise and Yamux, one MQ message per
//! stream on `/goop/mq/1.0.0` acknowledged with an `ack` line, the `identity` exchange, and a
//! Goop² member's `join`, `welcome` and `ping`/`pong`. It prints what it saw as JSON lines,
//! which the test holds against what goop's API says.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::support::{get, ok, post, start, temp_dir};

/// The peer's bundle, built from `tests/interop` by `tests/interop/build.sh`.
const BUNDLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/interop/dist/goop2-peer.mjs"
);
const HOST_LABEL: &str = "goop interop host";
const JS_NAME: &str = "js-libp2p peer";
/// The group host's ping period: a member that stops answering is dropped after three.
const PING_MS: &str = "300";

/// The js-libp2p peer as a child process, killed when dropped.
struct JsPeer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every event it printed so far, in order.
    events: Vec<Value>,
    /// Where its stderr goes (read on failure), in a directory removed on drop.
    dir: PathBuf,
}

impl JsPeer {
    async fn spawn(args: &[&str]) -> Self {
        let bundle = Path::new(BUNDLE);
        assert!(
            bundle.is_file(),
            "the interop peer {} is missing: run tests/interop/build.sh",
            bundle.display()
        );
        let dir = temp_dir("js-peer");
        std::fs::create_dir_all(&dir).expect("create the js peer's directory");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr log");
        let spawned = Command::new("node")
            .arg(bundle)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the interop test runs a js-libp2p peer on Node.js, and `node` is not on PATH: \
                 install Node.js 18 or newer (`apt-get install nodejs` on Debian) and run it again"
            ),
            Err(e) => panic!("cannot start node: {e}"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
            events: Vec::new(),
            dir,
        }
    }

    /// The first event (seen already or still to come) named `name` for which `check` holds;
    /// fails after `secs` or when the peer stops printing.
    async fn wait_for(&mut self, secs: u64, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        let matches = |event: &Value| event["event"] == name && check(event);
        if let Some(found) = self.events.iter().find(|e| matches(e)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => self.fail(&format!("the js peer ended before a {name:?} event")),
                Ok(Err(e)) => self.fail(&format!("cannot read the js peer's output: {e}")),
                Err(_) => self.fail(&format!(
                    "no {name:?} event from the js peer within {secs} s"
                )),
            };
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| self.fail(&format!("a line that is not JSON ({e}): {line}")));
            if event["event"] == "failed" {
                self.fail("the js peer failed");
            }
            self.events.push(event.clone());
            if matches(&event) {
                return event;
            }
        }
    }

    /// Closes the peer's stdin, which asks it to say goodbye and stop; returns its `bye`.
    async fn stop(&mut self) -> Value {
        drop(self.child.stdin.take());
        let bye = self.wait_for(10, "bye", |_| true).await;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| self.fail("the js peer did not exit after its bye"))
            .expect("wait for the js peer");
        if !status.success() {
            self.fail(&format!("the js peer exited with {status}"));
        }
        bye
    }

    fn fail(&self, why: &str) -> ! {
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        panic!(
            "{why}\nevents: {}\nstderr: {stderr}",
            serde_json::to_string_pretty(&self.events).unwrap_or_default()
        );
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A send of the js peer (Goop²'s `Send`, one stream per attempt) that goop acknowledged at
/// the first attempt, with an `ack` naming the message's id and seq.
#[track_caller]
fn assert_acked(send: &Value, topic: &str) {
    assert_eq!(send["topic"], topic, "{send:#}");
    assert_eq!(send["acked"], true, "{send:#}");
    let attempts = send["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "acknowledged at the first attempt: {send:#}"
    );
    let attempt = &attempts[0];
    assert_eq!(
        attempt["ack"],
        json!({ "type": "ack", "id": attempt["id"], "seq": attempt["seq"] }),
        "{send:#}"
    );
}

/// A message goop sent: Goop²'s `msg` frame, from the goop node.
#[track_caller]
fn assert_msg_from(seen: &Value, host: &str, topic: &str) {
    assert_eq!(seen["from"], host, "{seen:#}");
    let frame = &seen["frame"];
    assert_eq!(frame["type"], "msg", "{seen:#}");
    assert_eq!(frame["topic"], topic, "{seen:#}");
    assert!(
        frame["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{seen:#}"
    );
    assert!(frame["seq"].is_i64(), "{seen:#}");
}

#[tokio::test]
async fn a_js_libp2p_peer_on_goop2s_wire_connects_names_itself_and_joins_a_group() {
    let host = start(&["--label", HOST_LABEL, "--group-ping-ms", PING_MS]).await;
    let api = host.ready.api.clone();
    let host_id = host.ready.peer_id.clone();
    let created = ok(&post(&api, "/api/groups", r#"{"name":"interop"}"#).await);
    let group = created["id"].as_str().expect("group id").to_owned();
    let addr = host
        .ready
        .listen
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
        .expect("a tcp listen address")
        .clone();
    assert!(addr.ends_with(&format!("/p2p/{host_id}")), "{addr}");

    let mut js = JsPeer::spawn(&[
        "--dial",
        &addr,
        "--name",
        JS_NAME,
        "--group",
        &group,
        "--timeout-ms",
        "20000",
    ])
    .await;
    let report = js.wait_for(60, "report", |_| true).await;
    assert_eq!(report["errors"], json!([]), "{report:#}");
    let js_id = report["peer_id"]
        .as_str()
        .expect("the js peer's id")
        .to_owned();

    // 1. One connection, TCP with Noise and Yamux, to the peer the address names.
    let connection = &report["connection"];
    assert_eq!(connection["remote_peer"], host_id.as_str(), "{report:#}");
    assert_eq!(connection["encryption"], "/noise", "{report:#}");
    assert_eq!(connection["multiplexer"], "/yamux/1.0.0", "{report:#}");
    assert_eq!(connection["status"], "open", "{report:#}");
    assert!(
        connection["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "{report:#}"
    );
    // Identify both ways: each side knows the other's agent, and js-libp2p goop's protocols.
    let identify = &report["identify"];
    assert!(
        identify["agent_version"]
            .as_str()
            .is_some_and(|a| a.starts_with("goop/")),
        "{report:#}"
    );
    assert!(
        identify["protocols"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("/goop/mq/1.0.0"))),
        "{report:#}"
    );
    // goop lists the peer, with the agent identify told it and the name the peer gave (the
    // name arrives a moment after the connection, hence the wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (listed, peers) = loop {
        let peers = ok(&get(&api, "/api/peers").await);
        let listed = peers
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["id"] == js_id.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        if listed["name"] == JS_NAME || Instant::now() >= deadline {
            break (listed, peers);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed["name"], JS_NAME, "goop's peers: {peers:#}");
    assert!(
        listed["agent_version"]
            .as_str()
            .is_some_and(|a| a.starts_with("js-libp2p/")),
        "{listed:#}"
    );

    // 2. The identity exchange both ways, every message acknowledged.
    assert_acked(&report["identity_request"], "identity");
    let response = &report["identity_response"];
    assert_msg_from(response, &host_id, "identity.response");
    assert_eq!(
        response["frame"]["payload"],
        json!({ "peerID": host_id, "content": HOST_LABEL, "reachable": true }),
        "{report:#}"
    );
    let asked = &report["asked"];
    assert_msg_from(asked, &host_id, "identity");
    assert_eq!(asked["frame"]["payload"], Value::Null, "{report:#}");
    assert_acked(&report["identity_answer"], "identity.response");

    // 3. A Goop² member's join: acknowledged, welcomed, listed with its name.
    assert_acked(&report["join"], &format!("group:{group}:join"));
    let welcome = &report["welcome"];
    assert_eq!(welcome["from"], host_id.as_str(), "{report:#}");
    assert_eq!(welcome["kind"], "welcome", "{report:#}");
    assert_eq!(welcome["payload"]["group_name"], "interop", "{report:#}");
    assert!(
        welcome["payload"]["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["peer_id"] == js_id.as_str())),
        "{report:#}"
    );
    let members_path = format!("/api/groups/members?group_id={group}");
    let members = ok(&get(&api, &members_path).await);
    let member = members
        .as_array()
        .and_then(|m| m.iter().find(|m| m["peer_id"] == js_id.as_str()))
        .unwrap_or_else(|| panic!("goop lists the js peer as a member: {members:#}"));
    assert_eq!(member["name"], JS_NAME, "{members:#}");

    // Liveness over Goop²'s ping and pong: five answered pings span more than the three
    // periods after which goop drops a silent member, and the peer is still a member.
    let pong = js
        .wait_for(20, "pong", |e| e["count"].as_u64().is_some_and(|n| n >= 5))
        .await;
    assert_eq!(pong["acked"], true, "{pong:#}");
    let members = ok(&get(&api, &members_path).await);
    assert!(
        members
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["peer_id"] == js_id.as_str())),
        "the js peer is still a member after answering pings: {members:#}"
    );

    // The host's group message reaches the Goop² member bare, as Goop² relays it.
    let body = json!({ "group_id": group, "payload": { "text": "from goop" } }).to_string();
    ok(&post(&api, "/api/groups/send", &body).await);
    let relayed = js.wait_for(10, "group_msg", |_| true).await;
    assert_eq!(relayed["from"], host_id.as_str(), "{relayed:#}");
    assert_eq!(relayed["payload"]["text"], "from goop", "{relayed:#}");

    let bye = js.stop().await;
    assert_eq!(bye["errors"], json!([]), "{bye:#}");
    assert_eq!(bye["pongs_acked"], bye["pongs"], "{bye:#}");
}
