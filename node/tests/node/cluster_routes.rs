//! The cluster's role routes over real HTTP between `goop node` processes: create (a new group,
//! an existing one, an invite-only one), join, binary, pause, resume, leave, delete, clear and
//! types, each with its bad input; and the role ending whichever way its group goes (closed or
//! left through the generic group routes, a worker kicked or refused), restarts included.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::{
    Host, echo_executor, fixture_executor, host, logs, start_node, worker_command, worker_info,
};
use super::support::{
    Answer, Peer, assert_error, cli_any, dial, get, goop_with, ok, post, restart_killed,
    stderr_log_path, temp_dir, until,
};

/// Where a worker keeps its settings in its data directory.
const WORKER_FILE: &str = "cluster-worker.json";

/// A plain `goop node` that knows where `host` is.
async fn node_near(host: &Host) -> Peer {
    let peer = start_node(temp_dir("node"), "/ip4/127.0.0.1/tcp/0").await;
    dial(&peer, &host.peer).await;
    peer
}

fn join_body(host: &Host, extra: Value) -> String {
    let mut body = json!({ "host_peer_id": host.peer.ready.peer_id, "group_id": host.group });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body.to_string()
}

fn executor_path(executor: &Path) -> &str {
    executor.to_str().expect("a utf-8 path")
}

/// `POST /api/cluster/join` from `peer` with `extra` fields.
async fn join_answer(peer: &Peer, host: &Host, extra: Value) -> Answer {
    post(
        &peer.ready.api,
        "/api/cluster/join",
        &join_body(host, extra),
    )
    .await
}

/// `POST /api/cluster/join` from `peer` with `extra` fields; the answer must be `joined`.
async fn join(peer: &Peer, host: &Host, extra: Value) {
    let answer = ok(&join_answer(peer, host, extra).await);
    assert_eq!(answer["status"], "joined", "{answer}");
    assert_eq!(answer["group_id"], host.group.as_str(), "{answer}");
}

/// `node` made the host of a cluster by `POST /api/cluster/create` with `body`.
async fn created(node: Peer, body: &str) -> Host {
    let answer = post(&node.ready.api, "/api/cluster/create", body).await;
    let group = ok(&answer)["group_id"]
        .as_str()
        .expect("group id")
        .to_owned();
    Host { peer: node, group }
}

/// Waits until `host` lists `peer` as a verified worker.
async fn until_verified(host: &Host, peer: &Peer) {
    let id = peer.ready.peer_id.clone();
    until(30, "the host lists the worker as verified", async || {
        worker_info(host.api(), &id)
            .await
            .is_some_and(|w| w["verified"] == true)
    })
    .await;
}

/// `peer` joined with the echo executor in daemon mode, verified by `host`.
async fn worker_node(host: &Host) -> Peer {
    let peer = node_near(host).await;
    let executor = echo_executor();
    join(
        &peer,
        host,
        json!({ "executor": executor_path(&executor), "mode": "daemon" }),
    )
    .await;
    until_verified(host, &peer).await;
    peer
}

async fn status(api: &str) -> Value {
    ok(&get(api, "/api/cluster/status").await)
}

/// Waits until `peer` has no cluster role and has forgotten its worker settings.
async fn until_no_role(peer: &Peer, what: &str) {
    let api = peer.ready.api.clone();
    let settings = peer.data_dir.join(WORKER_FILE);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(&api).await;
        if status["role"] == "" && !settings.exists() {
            assert_eq!(status["group_id"], "", "{status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} after 20 s (settings saved: {}); log:\n{}",
            settings.exists(),
            logs(peer)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_message(answer: &Answer, part: &str) {
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains(part), "{part:?} not in {answer:?}");
}

#[tokio::test]
async fn closing_the_cluster_group_through_the_group_routes_ends_every_role() {
    let host = host().await;
    let (kicked, stays, offline) =
        tokio::join!(worker_node(&host), worker_node(&host), worker_node(&host));
    let group = json!({ "group_id": host.group }).to_string();
    let offline_dir = offline.data_dir.clone();
    offline.kill_keeping_data().await;

    // A kicked worker is out of the cluster, and of the worker role.
    let kick = json!({ "group_id": host.group, "peer_id": kicked.ready.peer_id }).to_string();
    ok(&post(host.api(), "/api/groups/kick", &kick).await);
    until_no_role(&kicked, "the kicked worker").await;
    assert_eq!(status(&stays.ready.api).await["role"], "worker");
    // And banned: a join is refused for good (502 with the host's reason), which ends the role
    // again at once, until the host lifts the ban.
    let echo = echo_executor();
    let banned = join_answer(
        &kicked,
        &host,
        json!({ "executor": executor_path(&echo), "mode": "daemon" }),
    )
    .await;
    assert_error(&banned, 502, "forbidden");
    assert_message(&banned, "join group: ");
    assert_message(&banned, "removed from this group by its host");
    assert_eq!(status(&kicked.ready.api).await["role"], "", "{banned:?}");
    until_no_role(&kicked, "the banned worker").await;
    assert!(
        worker_info(host.api(), &kicked.ready.peer_id)
            .await
            .is_none()
    );
    ok(&post(host.api(), "/api/groups/unban", &kick).await);
    join(
        &kicked,
        &host,
        json!({ "executor": executor_path(&echo), "mode": "daemon" }),
    )
    .await;
    until_verified(&host, &kicked).await;

    // Closing the group the generic way stops the host like `/api/cluster/leave` does.
    ok(&post(host.api(), "/api/groups/close", &group).await);
    until_no_role(&host.peer, "the host of the closed group").await;
    until_no_role(&stays, "the worker of the closed group").await;
    until_no_role(&kicked, "the worker let back in").await;
    let submit = post(host.api(), "/api/cluster/submit", r#"{"type":"echo"}"#).await;
    assert_error(&submit, 409, "not_host");
    assert_message(&submit, "not a cluster host");
    let batch = post(
        host.api(),
        "/api/cluster/jobs",
        r#"{"jobs":[{"type":"echo"}]}"#,
    )
    .await;
    assert_error(&batch, 409, "not_host");

    // A worker that was down meanwhile comes back, is told the group is unknown, and stops
    // trying.
    let offline = start_node(offline_dir, "/ip4/127.0.0.1/tcp/0").await;
    assert_eq!(status(&offline.ready.api).await["role"], "worker");
    dial(&offline, &host.peer).await;
    until_no_role(
        &offline,
        "the worker whose group was closed while it was down",
    )
    .await;

    // Nothing comes back after a restart.
    let data_dir = host.peer.data_dir.clone();
    host.peer.kill_keeping_data().await;
    let restarted = start_node(data_dir, "/ip4/127.0.0.1/tcp/0").await;
    assert_eq!(status(&restarted.ready.api).await["role"], "");
}

#[tokio::test]
async fn a_worker_that_leaves_through_the_group_routes_stays_out_after_a_restart() {
    let host = host().await;
    let worker = worker_node(&host).await;
    assert!(worker.data_dir.join(WORKER_FILE).exists());

    let group = json!({ "group_id": host.group }).to_string();
    ok(&post(&worker.ready.api, "/api/groups/leave", &group).await);
    until_no_role(&worker, "the worker that left").await;
    let id = worker.ready.peer_id.clone();
    until(20, "the host drops the worker", async || {
        worker_info(host.api(), &id).await.is_none()
    })
    .await;

    let data_dir = worker.data_dir.clone();
    worker.kill_keeping_data().await;
    let restarted = start_node(data_dir, "/ip4/127.0.0.1/tcp/0").await;
    let status = status(&restarted.ready.api).await;
    assert_eq!(status["role"], "", "{status}");
    let subscriptions = ok(&get(&restarted.ready.api, "/api/groups/subscriptions").await);
    assert!(
        subscriptions["subscriptions"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{subscriptions}"
    );
}

#[tokio::test]
async fn an_invite_only_cluster_takes_only_the_workers_its_host_invited() {
    let node = start_node(temp_dir("host"), "/ip4/127.0.0.1/tcp/0").await;
    let bad = post(
        &node.ready.api,
        "/api/cluster/create",
        r#"{"admission":"closed"}"#,
    )
    .await;
    assert_error(&bad, 400, "invalid_json");
    let host = created(node, r#"{"name":"private","admission":"invite"}"#).await;
    let groups = ok(&get(host.api(), "/api/groups").await);
    assert_eq!(groups[0]["admission"], "invite", "{groups}");

    // Not invited: the join is refused for good (502 with the host's reason), which ends the
    // role.
    let worker = node_near(&host).await;
    let executor = echo_executor();
    let body = json!({ "executor": executor_path(&executor), "mode": "daemon" });
    let refused = join_answer(&worker, &host, body.clone()).await;
    assert_error(&refused, 502, "not_invited");
    until_no_role(&worker, "the worker that was not invited").await;
    assert!(
        worker_info(host.api(), &worker.ready.peer_id)
            .await
            .is_none()
    );
    assert!(logs(&worker).contains("not_invited"), "{}", logs(&worker));
    // `goop worker` stops with the host's reason rather than running on without a role.
    let data_dir = temp_dir("uninvited");
    let command = worker_command(&host, &executor, "oneshot", 1);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let exit = tokio::time::timeout(
        Duration::from_secs(30),
        goop_with(&command, &data_dir, "/ip4/127.0.0.1/tcp/0", &[]).status(),
    )
    .await
    .expect("goop worker stops within 30 s")
    .expect("goop worker ran");
    let log = std::fs::read_to_string(stderr_log_path(&data_dir)).unwrap_or_default();
    assert!(!exit.success(), "{exit}: {log}");
    assert!(log.contains("the host refused"), "{log}");
    assert!(log.contains("not_invited"), "{log}");
    assert!(!data_dir.join(WORKER_FILE).exists(), "{log}");

    // Invited, it joins.
    let invite = json!({ "group_id": host.group, "peer_id": worker.ready.peer_id }).to_string();
    ok(&post(host.api(), "/api/groups/invite", &invite).await);
    join(&worker, &host, body).await;
    until_verified(&host, &worker).await;
}

#[tokio::test]
async fn an_approval_cluster_takes_the_workers_its_host_approves() {
    let node = start_node(temp_dir("host"), "/ip4/127.0.0.1/tcp/0").await;
    let host = created(node, r#"{"name":"vetted","admission":"approval"}"#).await;
    let executor = echo_executor();
    let body = json!({ "executor": executor_path(&executor), "mode": "daemon" });
    let requests =
        async |host: &Host| ok(&get(host.api(), "/api/groups").await)[0]["requests"].clone();
    let decide = async |host: &Host, route: &str, peer: &Peer| {
        let body = json!({ "group_id": host.group, "peer_id": peer.ready.peer_id }).to_string();
        post(host.api(), route, &body).await
    };

    // Asked: the worker waits (202, saying why) and the host lists its request.
    let (approved, denied) = tokio::join!(node_near(&host), node_near(&host));
    let answer = join_answer(&approved, &host, body.clone()).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let answer = answer.json();
    assert_eq!(answer["status"], "joining", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("pending_approval")),
        "{answer}"
    );
    assert_eq!(requests(&host).await, json!([approved.ready.peer_id]));
    // Only a peer that asked can be approved or denied.
    for route in ["/api/groups/approve", "/api/groups/deny"] {
        assert_error(&decide(&host, route, &denied).await, 404, "no_request");
    }

    // The request outlives a restart of the host (killed, so nothing is written on the way
    // out): it is still listed and can still be answered.
    let Host { peer, group } = host;
    let host = Host {
        peer: restart_killed(peer, &["--group-ping-ms", "1000"]).await,
        group,
    };
    assert_eq!(requests(&host).await, json!([approved.ready.peer_id]));

    // Approved, it gets in by itself.
    let answer = ok(&decide(&host, "/api/groups/approve", &approved).await);
    assert_eq!(answer, json!({ "status": "approved" }));
    until_verified(&host, &approved).await;
    assert_eq!(requests(&host).await, Value::Null);

    // Denied, it is banned, and its worker role ends.
    assert_eq!(join_answer(&denied, &host, body).await.status, 202);
    assert_eq!(requests(&host).await, json!([denied.ready.peer_id]));
    let answer = ok(&decide(&host, "/api/groups/deny", &denied).await);
    assert_eq!(answer, json!({ "status": "denied" }));
    until_no_role(&denied, "the denied worker").await;
    let groups = ok(&get(host.api(), "/api/groups").await);
    assert_eq!(
        groups[0]["banned"],
        json!([denied.ready.peer_id]),
        "{groups}"
    );
    assert!(
        worker_info(host.api(), &denied.ready.peer_id)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_join_the_host_cannot_take_yet_is_answered_joining_and_goes_on() {
    let node = start_node(temp_dir("host"), "/ip4/127.0.0.1/tcp/0").await;
    let host = created(node, r#"{"name":"small","max_members":1}"#).await;
    let first = worker_node(&host).await;

    // The group is full: 202 `joining`, saying why; the peer is a worker waiting for room.
    let second = node_near(&host).await;
    let executor = echo_executor();
    let body = json!({ "executor": executor_path(&executor), "mode": "daemon" });
    let answer = join_answer(&second, &host, body).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let answer = answer.json();
    assert_eq!(answer["status"], "joining", "{answer}");
    assert_eq!(answer["group_id"], host.group.as_str(), "{answer}");
    let reason = answer["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("join group: "), "{answer}");
    assert!(reason.contains("full"), "{answer}");
    assert_eq!(status(&second.ready.api).await["role"], "worker");
    assert!(
        worker_info(host.api(), &second.ready.peer_id)
            .await
            .is_none()
    );

    // Room made, it gets in by itself.
    ok(&post(&first.ready.api, "/api/cluster/leave", "").await);
    until_verified(&host, &second).await;
}

#[tokio::test]
async fn create_hosts_an_existing_cluster_group_and_refuses_any_other_id() {
    let node = start_node(temp_dir("host"), "/ip4/127.0.0.1/tcp/0").await;
    let api = node.ready.api.clone();
    let make = async |body: Value| {
        let answer = ok(&post(&api, "/api/groups", &body.to_string()).await);
        answer["id"].as_str().expect("group id").to_owned()
    };
    // A cluster group made the generic way runs no cluster until it is asked for.
    let cluster = make(json!({ "name": "later", "group_type": "cluster" })).await;
    let chat = make(json!({ "name": "room", "group_type": "chat" })).await;
    assert_eq!(status(&api).await["role"], "");

    let create = async |body: Value| post(&api, "/api/cluster/create", &body.to_string()).await;
    let unknown = create(json!({ "group_id": "00000000deadbeef" })).await;
    assert_error(&unknown, 400, "invalid_group_id");
    assert_message(&unknown, "group_id: group 00000000deadbeef is not hosted");
    let not_cluster = create(json!({ "group_id": chat })).await;
    assert_error(&not_cluster, 400, "invalid_group_id");
    assert_message(&not_cluster, "not a cluster group");
    let with_admission = create(json!({ "group_id": cluster, "admission": "invite" })).await;
    assert_error(&with_admission, 400, "invalid_request");
    assert_error(
        &create(json!({ "group_id": "a:b" })).await,
        400,
        "invalid_json",
    );
    assert_eq!(status(&api).await["role"], "");

    let hosted = ok(&create(json!({ "group_id": cluster })).await);
    assert_eq!(hosted, json!({ "status": "created", "group_id": cluster }));
    let now = status(&api).await;
    assert_eq!(
        (&now["role"], &now["group_id"]),
        (&json!("host"), &json!(cluster))
    );
    // Again, with or without the id: the cluster there is; another id: this peer is busy.
    let again = ok(&create(json!({})).await);
    assert_eq!(again["group_id"], cluster.as_str());
    let with_admission = create(json!({ "group_id": cluster, "admission": "open" })).await;
    assert_error(&with_admission, 400, "invalid_request");
    assert_error(&create(json!({ "group_id": chat })).await, 409, "conflict");

    // The command line makes an invite-only cluster with `--admission`.
    let other = start_node(temp_dir("cli"), "/ip4/127.0.0.1/tcp/0").await;
    let (code, out, err) = cli_any(
        &other.ready.api,
        &["cluster", "create", "--name", "c", "--admission", "invite"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let groups = ok(&get(&other.ready.api, "/api/groups").await);
    assert_eq!(groups[0]["id"], out.trim(), "{groups}");
    assert_eq!(groups[0]["admission"], "invite", "{groups}");
    // Asked again, it is the same cluster, unless asked for with another admission.
    for same in [
        &["cluster", "create"][..],
        &["cluster", "create", "--admission", "invite"],
    ] {
        let (code, again, err) = cli_any(&other.ready.api, same).await;
        assert_eq!((code, again.trim()), (0, out.trim()), "{err}");
    }
    let (code, _, err) = cli_any(
        &other.ready.api,
        &["cluster", "create", "--admission", "open"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("another admission"), "{err}");
    let (code, _, err) = cli_any(
        &other.ready.api,
        &["cluster", "create", "--admission", "closed"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("must be open, invite or approval"), "{err}");
}

#[tokio::test]
async fn the_worker_routes_answer_with_their_codes_and_effects() {
    let host = host().await;
    let peer = node_near(&host).await;
    let api = peer.ready.api.clone();
    let echo = echo_executor();
    let echo = executor_path(&echo);

    // No role yet.
    for route in ["/api/cluster/pause", "/api/cluster/resume"] {
        assert_error(&post(&api, route, "").await, 409, "not_worker");
    }
    assert_eq!(
        ok(&post(&api, "/api/cluster/leave", "").await),
        json!({ "status": "ok" })
    );

    // Bad joins change nothing.
    let join_answer = async |body: String| post(&api, "/api/cluster/join", &body).await;
    let bad_joins = [
        ("{}".to_owned(), 400, "missing_field"),
        ("{nope".to_owned(), 400, "invalid_json"),
        (
            json!({ "host_peer_id": "a b", "group_id": host.group, "executor": echo }).to_string(),
            400,
            "invalid_peer_id",
        ),
        (
            json!({ "host_peer_id": host.peer.ready.peer_id, "group_id": "a:b", "executor": echo })
                .to_string(),
            400,
            "invalid_group_id",
        ),
        (
            join_body(&host, json!({ "executor": echo, "mode": "fast" })),
            400,
            "invalid_mode",
        ),
        (join_body(&host, json!({})), 400, "missing_field"),
        (
            join_body(&host, json!({ "executor": "/nonexistent/executor" })),
            400,
            "executor",
        ),
    ];
    for (body, code, error) in bad_joins {
        let answer = join_answer(body.clone()).await;
        assert_error(&answer, code, error);
        assert_eq!(status(&api).await["role"], "", "after {body}");
    }

    // A join with an executor: a worker, verified by the host.
    join(&peer, &host, json!({ "executor": echo, "mode": "daemon" })).await;
    until_verified(&host, &peer).await;
    let now = status(&api).await;
    assert_eq!(now["role"], "worker", "{now}");
    assert_eq!(now["binary_path"], echo, "{now}");
    assert_eq!(now["binary_mode"], "daemon", "{now}");
    assert_error(
        &join_answer(join_body(&host, json!({ "executor": echo }))).await,
        409,
        "conflict",
    );
    let binary = json!({ "path": echo }).to_string();
    assert_error(
        &post(&api, "/api/cluster/binary", &binary).await,
        409,
        "conflict",
    );

    // Pause and resume reach the host.
    let id = peer.ready.peer_id.clone();
    let host_sees = async |wanted: &str| {
        let wanted = wanted.to_owned();
        until(
            20,
            &format!("the host sees the worker {wanted}"),
            async || {
                worker_info(host.api(), &id)
                    .await
                    .is_some_and(|w| w["status"] == wanted.as_str())
            },
        )
        .await;
    };
    assert_eq!(
        ok(&post(&api, "/api/cluster/pause", "").await),
        json!({ "status": "paused" })
    );
    host_sees("paused").await;
    assert_eq!(
        ok(&post(&api, "/api/cluster/resume", "").await),
        json!({ "status": "resumed" })
    );
    host_sees("idle").await;

    // Leave, then join again without an executor: the one given at the first join is used.
    assert_eq!(
        ok(&post(&api, "/api/cluster/leave", "").await),
        json!({ "status": "ok" })
    );
    until_no_role(&peer, "the worker that left").await;
    let idle = status(&api).await;
    assert_eq!(idle["binary_path"], echo, "{idle}");
    join(&peer, &host, json!({})).await;
    until_verified(&host, &peer).await;
    let now = status(&api).await;
    assert_eq!(
        (&now["role"], &now["binary_path"], &now["binary_mode"]),
        (&json!("worker"), &json!(echo), &json!("daemon")),
        "{now}"
    );
    ok(&post(&api, "/api/cluster/leave", "").await);
    until_no_role(&peer, "the worker that left again").await;

    // `binary`: bad input refused; then the executor a join without one uses.
    let binary = async |body: &str| post(&api, "/api/cluster/binary", body).await;
    assert_error(&binary("{}").await, 400, "missing_field");
    assert_error(&binary(r#"{"path":""}"#).await, 400, "missing_field");
    assert_error(&binary("{nope").await, 400, "invalid_json");
    assert_error(
        &binary(r#"{"path":"/x","mode":"fast"}"#).await,
        400,
        "invalid_mode",
    );
    let fixture = fixture_executor();
    let fixture = executor_path(&fixture);
    let set = json!({ "path": fixture, "mode": "oneshot" }).to_string();
    assert_eq!(
        ok(&binary(&set).await),
        json!({ "status": "ok", "path": fixture, "mode": "oneshot" })
    );
    let idle = status(&api).await;
    assert_eq!(
        (&idle["role"], &idle["binary_path"], &idle["binary_mode"]),
        (&json!(""), &json!(fixture), &json!("oneshot")),
        "{idle}"
    );
    join(&peer, &host, json!({})).await;
    let now = status(&api).await;
    assert_eq!(
        (&now["role"], &now["binary_path"], &now["binary_mode"]),
        (&json!("worker"), &json!(fixture), &json!("oneshot")),
        "{now}"
    );
}

#[tokio::test]
async fn delete_clear_and_types_answer_with_their_codes_and_effects() {
    let idle = start_node(temp_dir("idle"), "/ip4/127.0.0.1/tcp/0").await;
    let job = r#"{"job_id":"0000000000000001"}"#;
    assert_error(
        &post(&idle.ready.api, "/api/cluster/delete", job).await,
        409,
        "not_host",
    );
    assert_error(
        &post(&idle.ready.api, "/api/cluster/clear", "").await,
        409,
        "not_host",
    );
    let types = ok(&get(&idle.ready.api, "/api/cluster/types").await);
    let names: Vec<&str> = types
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| t["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["calculate", "transform", "custom"]);
    assert!(types[0]["template"].is_string() && types[0]["help"].is_string());

    // A host with no worker: its jobs stay pending.
    let host = host().await;
    let api = host.api().to_owned();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let submitted = ok(&post(&api, "/api/cluster/submit", r#"{"type":"echo"}"#).await);
        ids.push(submitted["job_id"].as_str().expect("job id").to_owned());
    }
    let delete = async |body: &str| post(&api, "/api/cluster/delete", body).await;
    let pending = json!({ "job_id": ids[0] }).to_string();
    assert_error(&delete(&pending).await, 409, "conflict");
    assert_error(&delete("{}").await, 400, "invalid_json");
    assert_error(&delete(r#"{"job_id":"xyz"}"#).await, 400, "invalid_json");
    assert_error(
        &delete(r#"{"job_id":"00000000deadbeef"}"#).await,
        404,
        "not_found",
    );
    let live = post(&api, "/api/cluster/clear", "").await;
    assert_error(&live, 400, "invalid_request");
    assert_eq!(ok(&get(&api, "/api/cluster/stats").await)["pending"], 2);

    for id in &ids {
        ok(&post(
            &api,
            "/api/cluster/cancel",
            &json!({ "job_id": id }).to_string(),
        )
        .await);
    }
    assert_eq!(
        ok(&delete(&pending).await),
        json!({ "status": "deleted", "job_id": ids[0] })
    );
    assert_error(
        &get(&api, &format!("/api/cluster/jobs/{}", ids[0])).await,
        404,
        "not_found",
    );
    assert_eq!(
        ok(&post(&api, "/api/cluster/clear", "").await),
        json!({ "status": "cleared" })
    );
    assert_eq!(ok(&get(&api, "/api/cluster/jobs").await), json!([]));
}
