//! The cluster end to end: a host `goop node` and `goop worker` processes with real executors on
//! loopback, driven over HTTP and the command line. Priority order over thousands of jobs, a
//! worker or the host killed with SIGKILL mid-batch, timeouts, cancel, a poison job, exact
//! numbers, bad HTTP input, and the CLI.
//!
//! The tests are independent and run in parallel; every wait polls a condition with a deadline.
//! Workers run the SDK's `echo-executor` when the workspace built it, else the Python fixture in
//! `tests/fixtures/`, which behaves the same; the poison test always uses the fixture, whose
//! `{"exit":1}` kills the executor process. Tests marked `ignore` pin known product bugs: each
//! says which, and passes once it is fixed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::JobStatus;
use proto::api::ClusterEvent;
use proto::cluster::{AttemptOutcome, JobState};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::support::{
    Answer, Peer, cli_any, get, goop_with, post, post_large, spawn_ready, stderr_log_path,
    temp_dir, until,
};

/// Quick liveness, so a killed peer is noticed within seconds.
const PING: &[&str] = &["--group-ping-ms", "1000"];
/// Where test peers listen unless a test says otherwise.
const TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// The executor written for these tests (always present): echo, `sleep_ms`, `fail`, `exit`.
pub(super) fn fixture_executor() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster_executor.py")
}

/// The SDK's echo executor when the workspace built it (`target/<profile>/echo-executor`, next
/// to the `deps` folder of this test binary), else the fixture, which echoes the same way.
pub(super) fn echo_executor() -> PathBuf {
    let sdk = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("echo-executor")));
    match sdk {
        Some(path) if path.is_file() => path,
        _ => fixture_executor(),
    }
}

/// A cluster host.
pub(super) struct Host {
    pub(super) peer: Peer,
    pub(super) group: String,
}

impl Host {
    pub(super) fn api(&self) -> &str {
        &self.peer.ready.api
    }

    /// The multiaddr workers dial.
    pub(super) fn addr(&self) -> &str {
        &self.peer.ready.listen[0]
    }
}

pub(super) async fn start_node(data_dir: PathBuf, listen: &str) -> Peer {
    spawn_ready(goop_with(&["node"], &data_dir, listen, PING), data_dir).await
}

/// A fresh node made a cluster host over the API.
pub(super) async fn host() -> Host {
    host_with(&[]).await
}

/// A fresh node with these extra flags, made a cluster host over the API.
async fn host_with(flags: &[&str]) -> Host {
    host_on(TCP, flags).await
}

/// A fresh node listening for peers on `listen`, with these extra flags, made a cluster host.
async fn host_on(listen: &str, flags: &[&str]) -> Host {
    let command = [&["node"], flags].concat();
    let data_dir = temp_dir("host");
    let peer = spawn_ready(goop_with(&command, &data_dir, listen, PING), data_dir).await;
    let answer = post(
        &peer.ready.api,
        "/api/cluster/create",
        r#"{"name":"demo","max_members":0}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = answer.json();
    assert_eq!(answer["status"], "created", "{answer}");
    let group = answer["group_id"].as_str().expect("group id").to_owned();
    Host { peer, group }
}

/// A `goop worker` in daemon mode joined to `host`, once the host lists it as verified.
async fn worker(host: &Host, executor: &Path, capacity: u32) -> Peer {
    worker_in_mode(host, executor, "daemon", capacity).await
}

/// A `goop worker` running `executor` in `mode` (`daemon` or `oneshot`).
async fn worker_in_mode(host: &Host, executor: &Path, mode: &str, capacity: u32) -> Peer {
    worker_in(host, executor, mode, capacity, temp_dir("worker"), TCP).await
}

/// The arguments of a `goop worker` joining `host` with `executor` in `mode` (`daemon` or
/// `oneshot`) at `capacity`.
pub(super) fn worker_command(
    host: &Host,
    executor: &Path,
    mode: &str,
    capacity: u32,
) -> Vec<String> {
    let executor = executor.to_str().expect("utf-8 path");
    [
        "worker",
        "--join",
        host.addr(),
        "--group",
        &host.group,
        "--executor",
        executor,
        "--mode",
        mode,
        "--capacity",
        &capacity.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A `goop worker` with data directory `data_dir` (an earlier worker's, for a restart),
/// listening for peers on `listen`.
async fn worker_in(
    host: &Host,
    executor: &Path,
    mode: &str,
    capacity: u32,
    data_dir: PathBuf,
    listen: &str,
) -> Peer {
    let command = worker_command(host, executor, mode, capacity);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut cmd = goop_with(&command, &data_dir, listen, PING);
    cmd.env("ECHO_CAPACITY", "64").env("FIXTURE_CAPACITY", "64");
    let peer = spawn_ready(cmd, data_dir).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker_info(host.api(), &peer.ready.peer_id)
        .await
        .is_some_and(|w| w["verified"] == true)
    {
        assert!(
            Instant::now() < deadline,
            "the host does not list the worker as verified within 30 s; worker log:\n{}",
            logs(&peer)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peer
}

/// The host's record of worker `id`.
/// Waits until the host counts no running job on `worker`.
async fn until_idle(host: &Host, worker: &Peer) {
    let id = worker.ready.peer_id.clone();
    until(20, "the worker is idle again", async || {
        worker_info(host.api(), &id)
            .await
            .is_some_and(|w| w["running_jobs"] == 0)
    })
    .await;
}

pub(super) async fn worker_info(api: &str, id: &str) -> Option<Value> {
    let answer = get(api, "/api/cluster/workers").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
        .json()
        .as_array()
        .expect("workers array")
        .iter()
        .find(|w| w["peer_id"] == id)
        .cloned()
}

/// Submits `jobs` in one batch and returns their ids in order.
async fn submit(api: &str, jobs: &[Value]) -> Vec<String> {
    let body = json!({ "jobs": jobs }).to_string();
    let answer = post_large(api, "/api/cluster/jobs", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ids: Vec<String> = answer.json()["job_ids"]
        .as_array()
        .expect("job_ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), jobs.len());
    ids
}

async fn job_answer(api: &str, id: &str) -> Answer {
    let answer = get(api, &format!("/api/cluster/jobs/{id}")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
}

async fn job(api: &str, id: &str) -> JobState {
    let answer = job_answer(api, id).await;
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body))
}

async fn stats(api: &str) -> Value {
    let answer = get(api, "/api/cluster/stats").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

async fn completed(api: &str) -> u64 {
    stats(api).await["completed"].as_u64().expect("completed")
}

/// Every job of the host, oldest first, following `x-next-cursor`.
async fn all_jobs(api: &str) -> Vec<JobState> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/cluster/jobs?limit=1000".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let answer = get(api, &path).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let page: Vec<JobState> =
            serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
        let next = answer.header("x-next-cursor").map(str::to_owned);
        let empty = page.is_empty();
        jobs.extend(page);
        match next {
            Some(next) if !empty => cursor = Some(next),
            _ => return jobs,
        }
    }
}

/// Waits until every job in `ids` is terminal and returns their states.
async fn wait_terminal(api: &str, ids: &[String], secs: u64) -> Vec<JobState> {
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let jobs: Vec<JobState> = all_jobs(api)
            .await
            .into_iter()
            .filter(|j| wanted.contains(j.job.id.to_string().as_str()))
            .collect();
        if jobs.len() == ids.len() && jobs.iter().all(|j| j.status.is_terminal()) {
            return jobs;
        }
        if Instant::now() >= deadline {
            let open: Vec<String> = jobs
                .iter()
                .filter(|j| !j.status.is_terminal())
                .map(|j| format!("{} {}", j.job.id, j.status.as_str()))
                .take(20)
                .collect();
            panic!(
                "{} of {} jobs listed, not yet terminal within {secs} s: {open:?}",
                jobs.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn logs(peer: &Peer) -> String {
    std::fs::read_to_string(stderr_log_path(&peer.data_dir)).unwrap_or_default()
}

fn outcomes(state: &JobState) -> Vec<Option<AttemptOutcome>> {
    state.attempts.iter().map(|a| a.outcome).collect()
}

/// `GET /api/cluster/events`, read raw and split into `(event name, data)` as it arrives.
struct ClusterEvents {
    stream: TcpStream,
    /// Text read but not yet split into whole lines.
    partial: String,
    name: Option<String>,
    events: Vec<(String, Value)>,
    /// `job` events with status `completed` so far.
    completed: usize,
    lagged: bool,
}

impl ClusterEvents {
    /// Opens the stream; the host subscribes before it answers, so nothing after this is missed.
    async fn open(api: &str) -> Self {
        let mut stream = TcpStream::connect(api).await.expect("connect to api");
        let request = format!("GET /api/cluster/events HTTP/1.1\r\nHost: {api}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Self {
            stream,
            partial: String::new(),
            name: None,
            events: Vec::new(),
            completed: 0,
            lagged: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !events.partial.contains("\r\n\r\n") {
            events.read_raw(deadline).await;
        }
        let (head, rest) = events.partial.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        events.partial = rest.to_owned();
        events
    }

    async fn read_raw(&mut self, deadline: Instant) {
        let mut buf = [0u8; 16 * 1024];
        let n = tokio::time::timeout_at(deadline.into(), self.stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "event stream still open at the deadline: {} events, {} completed",
                    self.events.len(),
                    self.completed
                )
            })
            .expect("read events");
        assert!(n > 0, "the event stream ended");
        self.partial.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    /// Reads what arrives next and records the whole events in it.
    async fn read(&mut self, deadline: Instant) {
        self.read_raw(deadline).await;
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event: ") {
                self.name = Some(name.to_owned());
                self.lagged |= name == "lagged";
            } else if let Some(data) = line.strip_prefix("data: ")
                && let Some(name) = self.name.take()
            {
                if let Err(error) = ClusterEvent::decode(&name, data) {
                    panic!("event {name} does not decode ({error}): {data}");
                }
                let data: Value =
                    serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
                if name == "job" && data["status"] == "completed" {
                    self.completed += 1;
                }
                self.events.push((name, data));
            }
        }
    }
}

/// Where a job belongs in the run order: minus its priority, then its submission index.
type OrderKey = (i32, usize);

/// A deterministic mix of priorities.
fn priority_of(index: usize) -> i32 {
    [0, 7, -3, 2, 7, 0, 11][(index * 5 + index / 7) % 7]
}

#[tokio::test]
async fn thousands_complete_in_priority_order_on_one_slot() {
    const JOBS: usize = 2000;
    let host = host().await;
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| json!({ "type": "echo", "payload": { "i": i }, "priority": priority_of(i) }))
        .collect();
    // Submitted while no worker is attached, so the order they run in is the dispatcher's alone.
    let ids = submit(host.api(), &jobs).await;
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    assert_eq!(stats(host.api()).await["pending"], JOBS);

    let mut events = ClusterEvents::open(host.api()).await;
    let worker = worker(&host, &echo_executor(), 1).await;
    let deadline = Instant::now() + Duration::from_secs(110);
    while events.completed < JOBS && !events.lagged {
        events.read(deadline).await;
    }
    let api = host.api().to_owned();
    until(30, "every job completes", async || {
        completed(&api).await == JOBS as u64
    })
    .await;

    // Order key of a job: higher priority first, then submission order.
    let key = |id: &str| {
        let i = index[id];
        (-priority_of(i), i)
    };
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_by_key(|id| key(id));

    // The live events say exactly in which order the jobs were handed out.
    if events.lagged {
        eprintln!("the event stream lagged: the order is checked from started_at alone");
    } else {
        let mut assigned: Vec<&str> = Vec::with_capacity(JOBS);
        let mut seen = HashSet::new();
        for (name, data) in &events.events {
            if name == "job" && data["status"] == "assigned" {
                let id = data["job_id"].as_str().expect("job_id");
                assert!(seen.insert(id.to_owned()), "{id} assigned twice");
                assigned.push(index.get_key_value(id).expect("a job of the batch").0);
            }
            if name == "job" && data["status"] == "completed" {
                assert!(data["latency_ms"].is_u64(), "no latency: {data}");
            }
        }
        assert_eq!(assigned.len(), JOBS);
        if let Some(at) = (0..JOBS).find(|&n| assigned[n] != expected[n]) {
            panic!(
                "assignment #{at} is {} (priority {}, submitted #{}), expected {} (priority {}, \
                 submitted #{})",
                assigned[at],
                -key(assigned[at]).0,
                key(assigned[at]).1,
                expected[at],
                -key(expected[at]).0,
                key(expected[at]).1
            );
        }
    }

    let states = all_jobs(host.api()).await;
    assert_eq!(states.len(), JOBS);
    let mut started: Vec<(i64, OrderKey)> = Vec::with_capacity(JOBS);
    for state in &states {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(state.retries, 0, "{state:?}");
        let at = state.started_at.expect("started_at of a completed job");
        started.push((at.as_unix_ms(), key(&state.job.id.to_string())));
    }
    // Timestamps have millisecond resolution: jobs started in the same millisecond are not
    // ordered by them, but every job of an earlier millisecond must come before every job of a
    // later one.
    started.sort_unstable();
    // (millisecond, lowest key, highest key) of the jobs started in that millisecond.
    let mut groups: Vec<(i64, OrderKey, OrderKey)> = Vec::new();
    for (at, key) in started {
        match groups.last_mut() {
            Some((ms, low, high)) if *ms == at => {
                *low = (*low).min(key);
                *high = (*high).max(key);
            }
            _ => groups.push((at, key, key)),
        }
    }
    for pair in groups.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(
            earlier.2 < later.1,
            "a job (priority {}, submitted #{}) started at {} after one (priority {}, #{}) \
             that should have run later, started at {}",
            -later.1.0,
            later.1.1,
            later.0,
            -earlier.2.0,
            earlier.2.1,
            earlier.0
        );
    }
    assert!(
        groups.len() > JOBS / 4,
        "too few distinct start times ({}) to show an order",
        groups.len()
    );

    // The results are the payloads, exactly.
    for i in [0, 1, JOBS / 2, JOBS - 1] {
        let state = job(host.api(), &ids[i]).await;
        assert_eq!(
            state.result.as_deref().map(|r| r.get()),
            Some(format!(r#"{{"i":{i}}}"#).as_str())
        );
        assert_eq!(outcomes(&state), [Some(AttemptOutcome::Completed)]);
        assert_eq!(
            state.attempts[0].worker_id.as_str(),
            worker.ready.peer_id,
            "{state:?}"
        );
    }
}

/// A host and a worker that listen on QUIC only: the join, the jobs and the results all go
/// over it.
#[tokio::test]
async fn a_cluster_runs_over_quic() {
    const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
    let host = host_on(QUIC, &[]).await;
    assert!(
        host.addr().contains("/udp/") && host.addr().contains("/quic-v1/"),
        "{}",
        host.addr()
    );
    let worker = worker_in(
        &host,
        &echo_executor(),
        "daemon",
        8,
        temp_dir("worker"),
        QUIC,
    )
    .await;
    let jobs: Vec<Value> = (0..500)
        .map(|i| json!({ "type": "echo", "payload": { "n": i }, "priority": i % 3 }))
        .collect();
    let ids = submit(host.api(), &jobs).await;
    let number: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for state in wait_terminal(host.api(), &ids, 60).await {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        let n = number[state.job.id.to_string().as_str()];
        let result = state.result.as_ref().expect("a result").get();
        assert_eq!(result, format!(r#"{{"n":{n}}}"#), "{state:?}");
        assert_eq!(
            state.worker_id.as_ref().map(|w| w.as_str()),
            Some(worker.ready.peer_id.as_str())
        );
    }
}

/// `GET /metrics` as name-with-labels → value, checking the content type.
async fn metrics(api: &str) -> HashMap<String, u64> {
    let answer = get(api, "/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    answer
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("a sample line");
            (name.to_owned(), value.parse().expect("an integer value"))
        })
        .collect()
}

/// The metrics of a host say what its stats and workers say, and count what happened: jobs
/// accepted, finished by status, attempts by outcome. A worker's say only what it is.
#[tokio::test]
async fn metrics_count_the_jobs_attempts_and_workers_of_a_host() {
    let host = host().await;
    let worker = worker(&host, &echo_executor(), 4).await;
    let mut jobs: Vec<Value> = (0..20)
        .map(|i| json!({ "type": "echo", "payload": i }))
        .collect();
    jobs.extend(
        (0..3).map(|_| json!({ "type": "echo", "payload": { "fail": "no" }, "max_retry": 0 })),
    );
    let ids = submit(host.api(), &jobs).await;
    wait_terminal(host.api(), &ids, 30).await;

    let m = metrics(host.api()).await;
    let peer = &worker.ready.peer_id;
    let info = format!(
        r#"goop_info{{version="{}",peer_id="{}",role="host"}}"#,
        env!("CARGO_PKG_VERSION"),
        host.peer.ready.peer_id
    );
    let expected = [
        (info.as_str(), 1),
        (r#"goop_cluster_jobs{status="completed"}"#, 20),
        (r#"goop_cluster_jobs{status="failed"}"#, 3),
        (r#"goop_cluster_jobs{status="pending"}"#, 0),
        (r#"goop_cluster_jobs{status="running"}"#, 0),
        ("goop_cluster_jobs_submitted_total", 23),
        (
            r#"goop_cluster_jobs_finished_total{status="completed"}"#,
            20,
        ),
        (r#"goop_cluster_jobs_finished_total{status="failed"}"#, 3),
        (r#"goop_cluster_jobs_finished_total{status="cancelled"}"#, 0),
        (r#"goop_cluster_attempts_total{outcome="completed"}"#, 20),
        (r#"goop_cluster_attempts_total{outcome="failed"}"#, 3),
        (r#"goop_cluster_attempts_total{outcome="lost"}"#, 0),
        ("goop_cluster_workers", 1),
        (
            &format!(r#"goop_cluster_worker_capacity{{worker="{peer}"}}"#),
            4,
        ),
        (
            &format!(r#"goop_cluster_worker_running_jobs{{worker="{peer}"}}"#),
            0,
        ),
    ];
    for (name, value) in expected {
        assert_eq!(m.get(name), Some(&value), "{name} in {m:#?}");
    }
    assert!(m["goop_peers_connected"] >= 1, "{m:#?}");
    let stats = stats(host.api()).await;
    assert_eq!(
        m[r#"goop_cluster_jobs{status="completed"}"#],
        stats["completed"]
    );

    let m = metrics(&worker.ready.api).await;
    let info = format!(
        r#"goop_info{{version="{}",peer_id="{peer}",role="worker"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(info.as_str()), Some(&1), "{m:#?}");
    assert!(!m.keys().any(|k| k.starts_with("goop_cluster")), "{m:#?}");
}

#[tokio::test]
async fn a_finished_job_names_the_worker_that_ran_it() {
    let host = host().await;
    let worker = worker(&host, &echo_executor(), 1).await;
    let ids = submit(
        host.api(),
        &[
            json!({ "type": "echo", "payload": 1 }),
            json!({ "type": "echo", "payload": { "fail": "no" } }),
        ],
    )
    .await;
    for state in wait_terminal(host.api(), &ids, 20).await {
        let detail = job(host.api(), &state.job.id.to_string()).await;
        // Goop²: `worker_id` is the current or last assignee, cleared only when re-queued.
        for view in [&state, &detail] {
            assert_eq!(
                view.worker_id.as_ref().map(|w| w.as_str()),
                Some(worker.ready.peer_id.as_str()),
                "{view:?}"
            );
        }
    }
}

#[tokio::test]
async fn finished_jobs_past_the_memory_limit_are_named_from_the_store() {
    let host = host_with(&["--max-finished-jobs", "10000"]).await;
    let api = host.api();
    let _worker = worker(&host, &echo_executor(), 64).await;
    let failed = submit(
        api,
        &[json!({ "type": "echo", "payload": { "fail": "first" } })],
    )
    .await;
    wait_terminal(api, &failed, 20).await;
    let first = submit(api, &[json!({ "type": "echo", "payload": 0 })]).await;
    wait_terminal(api, &first, 20).await;
    // Enough jobs after them that both are evicted from the host's memory.
    for batch in 0..10 {
        let jobs: Vec<Value> = (0..1000)
            .map(|i| json!({ "type": "echo", "payload": batch * 1000 + i }))
            .collect();
        submit(api, &jobs).await;
    }
    until(120, "10,001 jobs completed", async || {
        completed(api).await == 10_001
    })
    .await;
    assert_eq!(stats(api).await["failed"], 1, "evicted jobs still count");

    // Named in `after`, an evicted job is read from the store; a failed one can be retried,
    // and a completed one cannot be cancelled.
    let waiter = submit(
        api,
        &[json!({ "type": "echo", "payload": "after", "after": [first[0]] })],
    )
    .await;
    let state = wait_terminal(api, &waiter, 20).await.remove(0);
    assert_eq!(state.status, JobStatus::Completed, "{state:?}");
    let body = json!({ "job_id": failed[0] }).to_string();
    let answer = post(api, "/api/cluster/retry", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    until(20, "the retried job failed again", async || {
        job(api, &failed[0]).await.attempts.len() == 2
            && job(api, &failed[0]).await.status == JobStatus::Failed
    })
    .await;
    let body = json!({ "job_id": first[0] }).to_string();
    let answer = post(api, "/api/cluster/cancel", &body).await;
    assert_eq!(answer.status, 409, "{answer:?}");
}

#[tokio::test]
async fn finished_jobs_past_the_keep_time_are_deleted_from_the_store() {
    let host = host_with(&["--keep-finished-s", "1"]).await;
    let api = host.api();
    let _worker = worker(&host, &echo_executor(), 8).await;
    let jobs: Vec<Value> = (0..20)
        .map(|i| json!({ "type": "echo", "payload": i }))
        .collect();
    let ids = submit(api, &jobs).await;
    // Not to run before 2099: it stays pending, and so stays in the store.
    let later = json!({ "type": "echo", "not_before": "2099-01-01T00:00:00Z" });
    let waiting = submit(api, &[later]).await;
    let found = async |id: &str| get(api, &format!("/api/cluster/jobs/{id}")).await.status;
    until(30, "the finished jobs deleted", async || {
        found(&ids[19]).await == 404
    })
    .await;
    for id in &ids {
        assert_eq!(found(id).await, 404, "{id}");
    }
    assert_eq!(job(api, &waiting[0]).await.status, JobStatus::Pending);
    let stats = stats(api).await;
    assert_eq!(
        (&stats["pending"], &stats["completed"]),
        (&json!(1), &json!(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn jobs_go_only_to_workers_that_serve_their_type() {
    let host = host().await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    // The Python example serves `echo` and `calculate` (daemon); the Bash one `echo` and
    // `word-count`, one process per job.
    let (python, bash) = (
        examples.join("python/executor.py"),
        examples.join("bash/executor.sh"),
    );
    let (python, bash) = tokio::join!(
        worker_in_mode(&host, &python, "daemon", 4),
        worker_in_mode(&host, &bash, "oneshot", 2)
    );
    // First in line, a job nobody serves: it must not hold up the others.
    let mut jobs = vec![json!({ "type": "render", "payload": {}, "priority": 100 })];
    for i in 0..6 {
        jobs.push(json!({
            "type": "calculate",
            "payload": { "expression": "(a+b)*2", "parameters": { "a": i, "b": 2 } },
        }));
        jobs.push(json!({ "type": "word-count", "payload": { "text": "a b\nc" } }));
    }
    let ids = submit(host.api(), &jobs).await;
    wait_terminal(host.api(), &ids[1..], 30).await;
    for (i, id) in ids.iter().enumerate().skip(1) {
        let state = job(host.api(), id).await;
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        let result: Value = serde_json::from_str(state.result.as_ref().expect("result").get())
            .expect("result is json");
        let ran_on = state.attempts[0].worker_id.as_str();
        if state.job.job_type == "calculate" {
            assert_eq!(ran_on, python.ready.peer_id, "{state:?}");
            assert_eq!(result["value"], (i - 1) / 2 * 2 + 4, "{state:?}");
        } else {
            assert_eq!(ran_on, bash.ready.peer_id, "{state:?}");
            assert_eq!(
                result,
                json!({ "lines": 2, "words": 3, "bytes": 5 }),
                "{state:?}"
            );
        }
    }
    let unserved = job(host.api(), &ids[0]).await;
    assert_eq!(unserved.status, JobStatus::Pending, "{unserved:?}");
    assert!(unserved.attempts.is_empty(), "{unserved:?}");
}

#[tokio::test]
async fn killing_a_worker_loses_nothing_and_fails_nothing() {
    let host = host().await;
    let executor = echo_executor();
    let (doomed, survivor) = tokio::join!(worker(&host, &executor, 4), worker(&host, &executor, 4));
    let jobs: Vec<Value> = (0..24)
        .map(|i| json!({ "type": "echo", "payload": { "sleep_ms": 400, "i": i } }))
        .collect();
    let ids = submit(host.api(), &jobs).await;
    let doomed_id = doomed.ready.peer_id.clone();
    until(20, "the doomed worker runs jobs", async || {
        worker_info(host.api(), &doomed_id)
            .await
            .is_some_and(|w| w["running_jobs"].as_u64() > Some(0))
    })
    .await;
    let doomed_dir = doomed.data_dir.clone();
    doomed.kill_keeping_data().await;

    let states = wait_terminal(host.api(), &ids, 90).await;
    let mut lost = 0;
    for state in &states {
        let detail = job(host.api(), &state.job.id.to_string()).await;
        assert_eq!(detail.status, JobStatus::Completed, "{detail:?}");
        assert_eq!(detail.retries, 0, "{detail:?}");
        for attempt in &detail.attempts {
            match attempt.outcome {
                Some(AttemptOutcome::Completed) => {}
                Some(AttemptOutcome::Lost) => {
                    assert_eq!(attempt.worker_id.to_string(), doomed_id, "{detail:?}");
                    lost += 1;
                }
                other => panic!("attempt ended {other:?}: {detail:?}"),
            }
        }
        let last = detail.attempts.last().expect("an attempt");
        assert_eq!(last.outcome, Some(AttemptOutcome::Completed), "{detail:?}");
    }
    assert!(lost > 0, "no attempt was lost with the killed worker");
    let gone = worker_info(host.api(), &doomed_id).await;
    assert!(
        gone.as_ref().is_none_or(|w| w["status"] == "offline"),
        "the killed worker is still listed as usable: {gone:?}"
    );

    // Restarted on its data dir, the worker comes back with its identity and takes jobs: with
    // the survivor paused, they can only run there.
    let back = worker_in(&host, &executor, "daemon", 4, doomed_dir, TCP).await;
    assert_eq!(back.ready.peer_id, doomed_id);
    let pause = json!({ "peer_id": survivor.ready.peer_id }).to_string();
    let answer = post(host.api(), "/api/cluster/worker/pause", &pause).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let more: Vec<Value> = (0..8)
        .map(|i| json!({ "type": "echo", "payload": { "again": i } }))
        .collect();
    let more = submit(host.api(), &more).await;
    for state in wait_terminal(host.api(), &more, 30).await {
        let detail = job(host.api(), &state.job.id.to_string()).await;
        assert_eq!(detail.status, JobStatus::Completed, "{detail:?}");
        assert_eq!(detail.attempts.len(), 1, "{detail:?}");
        assert_eq!(
            detail.attempts[0].worker_id.as_str(),
            doomed_id,
            "{detail:?}"
        );
    }
    let answer = post(host.api(), "/api/cluster/worker/resume", &pause).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let survivor_info = worker_info(host.api(), &survivor.ready.peer_id).await;
    assert!(
        survivor_info
            .as_ref()
            .is_some_and(|w| w["status"] == "idle"),
        "{survivor_info:?}"
    );
}

/// A daemon executor that passes its first check, dies on its first job and fails every check
/// after that: the worker runtime gives up on it after its restarts (about 3 s by default).
const BROKEN_DAEMON: &str = include_str!("../fixtures/broken-daemon.sh");

#[tokio::test]
async fn a_worker_whose_executor_breaks_gets_no_more_jobs_and_none_fail() {
    use std::os::unix::fs::PermissionsExt as _;
    let host = host().await;
    let dir = temp_dir("broken-executor");
    std::fs::create_dir_all(&dir).expect("executor dir");
    let broken_executor = dir.join("broken.sh");
    std::fs::write(&broken_executor, BROKEN_DAEMON).expect("executor");
    std::fs::set_permissions(&broken_executor, std::fs::Permissions::from_mode(0o755))
        .expect("executable");
    let healthy_executor = echo_executor();
    let (broken, healthy) = tokio::join!(
        worker(&host, &broken_executor, 2),
        worker(&host, &healthy_executor, 2)
    );
    let jobs: Vec<Value> = (0..30)
        .map(|i| json!({ "type": "echo", "payload": { "sleep_ms": 100, "i": i } }))
        .collect();
    let ids = submit(host.api(), &jobs).await;

    // The broken worker's executor dies on its first job and never passes a check again: the
    // host stops sending it jobs (before, it stayed verified and the least loaded, took every
    // job and lost it at once until the crash limit failed the whole queue).
    let broken_id = broken.ready.peer_id.clone();
    until(
        30,
        "the host counts the broken worker unverified",
        async || {
            worker_info(host.api(), &broken_id)
                .await
                .is_some_and(|w| w["verified"] == false)
        },
    )
    .await;
    let states = wait_terminal(host.api(), &ids, 90).await;
    let healthy_id = healthy.ready.peer_id.clone();
    for state in &states {
        let detail = job(host.api(), &state.job.id.to_string()).await;
        assert_eq!(detail.status, JobStatus::Completed, "{detail:?}");
        assert_eq!(detail.retries, 0, "{detail:?}");
        let last = detail.attempts.last().expect("an attempt");
        assert_eq!(last.worker_id.as_str(), healthy_id, "{detail:?}");
        assert!(detail.losses <= 1, "{detail:?}");
    }
    assert_eq!(stats(host.api()).await["failed"], 0);
    let info = worker_info(host.api(), &broken_id).await;
    assert!(
        info.as_ref().is_some_and(|w| w["verified"] == false),
        "{info:?}\nworker log:\n{}",
        logs(&broken)
    );
}

#[tokio::test]
async fn restarting_a_killed_host_loses_nothing() {
    let host = host().await;
    let worker = worker(&host, &echo_executor(), 2).await;
    let first: Vec<Value> = (0..40)
        .map(|i| json!({ "type": "echo", "payload": { "sleep_ms": 150, "i": i } }))
        .collect();
    let mut ids = submit(host.api(), &first).await;
    let api = host.api().to_owned();
    until(30, "some jobs complete before the crash", async || {
        completed(&api).await >= 4
    })
    .await;
    // Acknowledged means durable: this batch is answered, then the host dies at once.
    let second: Vec<Value> = (0..10)
        .map(|i| json!({ "type": "echo", "payload": { "late": i } }))
        .collect();
    // Jobs not to start before 2100: one cancelled, one left waiting.
    let later = json!({ "type": "echo", "not_before": "2100-01-01T00:00:00.000Z" });
    let parked = submit(host.api(), &[later.clone(), later]).await;
    let cancel = json!({ "job_id": parked[0] }).to_string();
    let answer = post(host.api(), "/api/cluster/cancel", &cancel).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let before = completed(host.api()).await;
    assert!(
        before < ids.len() as u64,
        "the batch finished before the crash"
    );
    ids.extend(submit(host.api(), &second).await);

    // The same data dir and the same port, so the worker finds the host where it was.
    let listen = host
        .addr()
        .split("/p2p/")
        .next()
        .expect("listen address")
        .to_owned();
    let data_dir = host.peer.data_dir.clone();
    let group = host.group.clone();
    host.peer.kill_keeping_data().await;
    let restarted = Host {
        peer: start_node(data_dir, &listen).await,
        group,
    };

    // Jobs submitted to the restarted host run too: the worker is back with it.
    let third: Vec<Value> = (0..5)
        .map(|i| json!({ "type": "echo", "payload": { "after_restart": i } }))
        .collect();
    ids.extend(submit(restarted.api(), &third).await);
    let states = wait_terminal(restarted.api(), &ids, 90).await;
    assert_eq!(states.len(), 55);
    for state in &states {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(state.retries, 0, "{state:?}");
        assert!(state.result.is_some(), "{state:?}");
    }
    assert_eq!(
        job(restarted.api(), &parked[0]).await.status,
        JobStatus::Cancelled
    );
    assert_eq!(
        job(restarted.api(), &parked[1]).await.status,
        JobStatus::Pending
    );
    let status = get(restarted.api(), "/api/cluster/status").await.json();
    assert_eq!(status["role"], "host", "{status}");
    assert_eq!(status["group_id"], restarted.group.as_str(), "{status}");
    let id = worker.ready.peer_id.clone();
    until(30, "the worker registers again", async || {
        worker_info(restarted.api(), &id)
            .await
            .is_some_and(|w| w["verified"] == true)
    })
    .await;
}

#[tokio::test]
async fn a_timed_out_job_is_retried_then_fails() {
    let host = host().await;
    let _worker = worker(&host, &echo_executor(), 2).await;
    let ids = submit(
        host.api(),
        &[json!({
            "type": "echo",
            "payload": { "sleep_ms": 10_000 },
            "timeout_s": 1,
            "max_retry": 1,
        })],
    )
    .await;
    wait_terminal(host.api(), &ids, 40).await;
    let state = job(host.api(), &ids[0]).await;
    assert_eq!(state.status, JobStatus::Failed, "{state:?}");
    assert_eq!(state.attempts.len(), 2, "{state:?}");
    for attempt in &state.attempts {
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
            "{state:?}"
        );
    }
    assert!(
        state
            .error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{state:?}"
    );
    assert!(state.done_at.is_some(), "{state:?}");
}

#[tokio::test]
async fn a_timed_out_attempt_is_recorded_as_timed_out() {
    let host = host().await;
    let _worker = worker(&host, &echo_executor(), 1).await;
    let ids = submit(
        host.api(),
        &[json!({ "type": "echo", "payload": { "sleep_ms": 10_000 }, "timeout_s": 1 })],
    )
    .await;
    wait_terminal(host.api(), &ids, 20).await;
    let state = job(host.api(), &ids[0]).await;
    assert_eq!(state.status, JobStatus::Failed, "{state:?}");
    assert_eq!(
        outcomes(&state),
        [Some(AttemptOutcome::TimedOut)],
        "{state:?}"
    );
}

#[tokio::test]
async fn a_job_run_twice_reports_its_last_attempt() {
    let host = host().await;
    let _worker = worker(&host, &echo_executor(), 1).await;
    let ids = submit(
        host.api(),
        &[json!({ "type": "echo", "payload": { "fail": "again" }, "max_retry": 1 })],
    )
    .await;
    wait_terminal(host.api(), &ids, 20).await;
    let state = job(host.api(), &ids[0]).await;
    assert_eq!(state.status, JobStatus::Failed, "{state:?}");
    assert_eq!(state.attempts.len(), 2, "{state:?}");
    let last = &state.attempts[1];
    assert_eq!(state.started_at, Some(last.started_at), "{state:?}");
    let done = state.done_at.expect("done_at").as_unix_ms();
    assert_eq!(
        state.elapsed_ms,
        u64::try_from(done - last.started_at.as_unix_ms()).ok(),
        "{state:?}"
    );
}

#[tokio::test]
async fn a_cancelled_running_job_stays_cancelled() {
    let host = host().await;
    let worker = worker(&host, &echo_executor(), 1).await;
    let ids = submit(
        host.api(),
        &[json!({ "type": "echo", "payload": { "sleep_ms": 30_000 } })],
    )
    .await;
    let id = ids[0].clone();
    until(20, "the job runs", async || {
        job(host.api(), &id).await.status == JobStatus::Running
    })
    .await;

    let body = json!({ "job_id": id }).to_string();
    let answer = post(host.api(), "/api/cluster/cancel", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(job(host.api(), &id).await.status, JobStatus::Cancelled);

    // The worker stops the attempt and frees its only slot: a job after it runs.
    until_idle(&host, &worker).await;
    let next = submit(host.api(), &[json!({ "type": "echo", "payload": [1] })]).await;
    let done = wait_terminal(host.api(), &next, 20).await;
    assert_eq!(done[0].status, JobStatus::Completed, "{:?}", done[0]);

    // Whatever the worker reported after the cancel changed nothing.
    let state = job(host.api(), &id).await;
    assert_eq!(state.status, JobStatus::Cancelled, "{state:?}");
    assert!(state.result.is_none(), "{state:?}");
    assert_eq!(
        state.attempts.last().and_then(|a| a.outcome),
        Some(AttemptOutcome::Cancelled),
        "{state:?}"
    );

    let again = post(host.api(), "/api/cluster/cancel", &body).await;
    assert!((400..500).contains(&again.status), "{again:?}");
    assert_error_body(&again);
    assert!(again.body.contains("terminal"), "{again:?}");
    assert_eq!(job(host.api(), &id).await.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn continuous_jobs_stream_outputs_until_cancelled_or_ended_by_the_executor() {
    let host = host().await;
    let worker = worker(&host, &fixture_executor(), 2).await;
    let mut events = ClusterEvents::open(host.api()).await;
    let ids = submit(
        host.api(),
        &[
            json!({ "type": "ticker", "mode": "continuous", "payload": { "stream_ms": 20 } }),
            json!({ "type": "ticker", "mode": "continuous", "payload": { "stream_ms": 5, "count": 4 } }),
        ],
    )
    .await;
    let (endless, ended) = (ids[0].clone(), ids[1].clone());
    let outputs_of = |events: &ClusterEvents, id: &str| -> Vec<Value> {
        events
            .events
            .iter()
            .filter(|(name, data)| name == "output" && data["job_id"] == id)
            .map(|(_, data)| data["data"].clone())
            .collect()
    };

    // Outputs reach the host's event stream in order, while the job keeps running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while outputs_of(&events, &endless).len() < 3 || outputs_of(&events, &ended).len() < 4 {
        events.read(deadline).await;
    }
    let streamed = outputs_of(&events, &endless);
    for (i, data) in streamed.iter().enumerate() {
        assert_eq!(data, &json!({ "i": i }), "{streamed:?}");
    }
    assert_eq!(job(host.api(), &endless).await.status, JobStatus::Running);

    // The executor ended the other one: it completed with its result, after its four outputs.
    let done = wait_terminal(host.api(), std::slice::from_ref(&ended), 20).await;
    assert_eq!(done[0].status, JobStatus::Completed, "{:?}", done[0]);
    assert_eq!(
        done[0].result.as_ref().map(|r| r.get()),
        Some(r#"{"outputs":4}"#)
    );
    assert_eq!(
        outputs_of(&events, &ended),
        (0..4).map(|i| json!({ "i": i })).collect::<Vec<_>>()
    );

    // A cancel ends the endless one for good and frees its slot on the worker.
    let body = json!({ "job_id": endless }).to_string();
    let answer = post(host.api(), "/api/cluster/cancel", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    until_idle(&host, &worker).await;
    let state = job(host.api(), &endless).await;
    assert_eq!(state.status, JobStatus::Cancelled, "{state:?}");
    assert!(state.result.is_none(), "{state:?}");
}

#[tokio::test]
async fn a_poison_job_fails_after_the_crash_limit_while_the_others_finish() {
    let host = host().await;
    // One slot, so the poison job (first by priority) runs alone each time: the jobs behind it
    // are not lost with it and must not wait for it forever.
    let _worker = worker(&host, &fixture_executor(), 1).await;
    let mut jobs = vec![json!({ "type": "echo", "payload": { "exit": 1 }, "priority": 5 })];
    jobs.extend((0..12).map(|i| json!({ "type": "echo", "payload": { "sleep_ms": 50, "i": i } })));
    let ids = submit(host.api(), &jobs).await;
    wait_terminal(host.api(), &ids, 90).await;

    let poison = job(host.api(), &ids[0]).await;
    assert_eq!(poison.status, JobStatus::Failed, "{poison:?}");
    assert_eq!(poison.losses, 3, "{poison:?}");
    assert_eq!(
        outcomes(&poison),
        [Some(AttemptOutcome::Lost); 3],
        "{poison:?}"
    );
    assert!(poison.error.is_some(), "{poison:?}");
    for id in &ids[1..] {
        let state = job(host.api(), id).await;
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(state.retries, 0, "{state:?}");
    }
}

#[tokio::test]
async fn big_numbers_come_back_byte_exact() {
    let host = host().await;
    let _worker = worker(&host, &echo_executor(), 4).await;
    let payload = r#"{"a":12345678901234567890,"b":99999999999999999999,"f":3.141592653589793238462643,"n":[-12345678901234567890,0.1000000000000000000000001]}"#;
    let body = format!(r#"{{"jobs":[{{"type":"echo","payload":{payload}}}]}}"#);
    let answer = post(host.api(), "/api/cluster/jobs", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer.json()["job_ids"][0].as_str().expect("id").to_owned();
    let done = wait_terminal(host.api(), std::slice::from_ref(&id), 20).await;
    assert_eq!(done[0].status, JobStatus::Completed, "{:?}", done[0]);
    let detail = job_answer(host.api(), &id).await;
    assert!(
        detail.body.contains(&format!(r#""payload":{payload}"#)),
        "payload changed: {}",
        detail.body
    );
    assert!(
        detail.body.contains(&format!(r#""result":{payload}"#)),
        "result is not the payload byte for byte: {}",
        detail.body
    );
}

fn assert_error_body(answer: &Answer) {
    let body: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("error body is not json ({e}): {answer:?}"));
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && !message.is_empty(),
        "no error code and message: {answer:?}"
    );
}

#[tokio::test]
async fn bad_http_input_changes_nothing() {
    let host = host().await;
    let api = host.api();
    let kept = submit(
        api,
        &[json!({ "type": "echo", "payload": { "keep": true } })],
    )
    .await;
    let stats_before = stats(api).await;

    let one = |extra: Value| {
        let mut job = json!({ "type": "echo", "payload": {} });
        for (k, v) in extra.as_object().expect("object") {
            job[k] = v.clone();
        }
        json!({ "jobs": [job] }).to_string()
    };
    let too_many = json!({
        "jobs": (0..10_001).map(|_| json!({ "type": "echo" })).collect::<Vec<_>>()
    })
    .to_string();
    let huge = format!(
        r#"{{"jobs":[{{"type":"echo","payload":"{}"}}]}}"#,
        "x".repeat(16 * 1024 * 1024 + 16)
    );
    // Past what the batch route reads at all (64 MiB).
    let body_over_limit = format!(
        r#"{{"jobs":[{{"type":"echo","payload":"{}"}}]}}"#,
        "x".repeat(65 * 1024 * 1024)
    );
    let missing_type = json!({ "jobs": [{ "payload": {} }] }).to_string();
    let unknown_top = json!({ "jobs": [{ "type": "echo" }], "urgent": true }).to_string();
    let cases: Vec<(&str, &str, String)> = vec![
        ("not json", "/api/cluster/jobs", "{jobs: nope".to_owned()),
        ("not an object", "/api/cluster/jobs", "[1,2]".to_owned()),
        (
            "priority as text",
            "/api/cluster/jobs",
            one(json!({ "priority": "high" })),
        ),
        (
            "negative timeout",
            "/api/cluster/jobs",
            one(json!({ "timeout_s": -1 })),
        ),
        (
            "negative max_retry",
            "/api/cluster/jobs",
            one(json!({ "max_retry": -2 })),
        ),
        (
            "priority over i32",
            "/api/cluster/jobs",
            one(json!({ "priority": 3_000_000_000_i64 })),
        ),
        (
            "unknown job field",
            "/api/cluster/jobs",
            one(json!({ "colour": "red" })),
        ),
        (
            "type over 256 bytes",
            "/api/cluster/jobs",
            json!({ "jobs": [{ "type": "t".repeat(257) }] }).to_string(),
        ),
        ("unknown batch field", "/api/cluster/jobs", unknown_top),
        ("no jobs", "/api/cluster/jobs", r#"{"jobs":[]}"#.to_owned()),
        ("missing type", "/api/cluster/jobs", missing_type),
        (
            "empty type",
            "/api/cluster/jobs",
            one(json!({ "type": "" })),
        ),
        (
            "blank type",
            "/api/cluster/jobs",
            one(json!({ "type": "  " })),
        ),
        (
            "unknown mode",
            "/api/cluster/jobs",
            one(json!({ "mode": "forever" })),
        ),
        (
            "bad dependency id",
            "/api/cluster/jobs",
            one(json!({ "after": ["zz"] })),
        ),
        (
            "unknown dependency",
            "/api/cluster/jobs",
            one(json!({ "after": ["00000000deadbeef"] })),
        ),
        ("over 10,000 jobs", "/api/cluster/jobs", too_many),
        ("payload over the limit", "/api/cluster/jobs", huge),
        (
            "body over the route's limit",
            "/api/cluster/jobs",
            body_over_limit,
        ),
        (
            "single submit with priority as text",
            "/api/cluster/submit",
            r#"{"type":"echo","priority":"high"}"#.to_owned(),
        ),
        (
            "single submit not json",
            "/api/cluster/submit",
            "}".to_owned(),
        ),
        (
            "single submit without type",
            "/api/cluster/submit",
            r#"{"payload":{}}"#.to_owned(),
        ),
        (
            "cancel a short id",
            "/api/cluster/cancel",
            r#"{"job_id":"1234"}"#.to_owned(),
        ),
        (
            "cancel a non-hex id",
            "/api/cluster/cancel",
            r#"{"job_id":"0123456789abcdeg"}"#.to_owned(),
        ),
        (
            "cancel a number",
            "/api/cluster/cancel",
            r#"{"job_id":42}"#.to_owned(),
        ),
        (
            "retry a non-hex id",
            "/api/cluster/retry",
            r#"{"job_id":"not-an-id-at-all"}"#.to_owned(),
        ),
        // A struct read from an array would take its items as the fields in order.
        (
            "single submit as an array",
            "/api/cluster/submit",
            r#"["echo"]"#.to_owned(),
        ),
        (
            "batch as an array",
            "/api/cluster/jobs",
            r#"[[{"type":"echo"}]]"#.to_owned(),
        ),
        (
            "a job of a batch as an array",
            "/api/cluster/jobs",
            r#"{"jobs":[["echo"]]}"#.to_owned(),
        ),
        (
            "cancel as an array",
            "/api/cluster/cancel",
            format!(r#"["{}"]"#, kept[0]),
        ),
        // A date that does not exist, and an offset beyond a day, are refused, not moved.
        (
            "not_before on the 30th of February",
            "/api/cluster/jobs",
            r#"{"jobs":[{"type":"echo","not_before":"2026-02-30T00:00:00Z"}]}"#.to_owned(),
        ),
        (
            "not_before with an offset of +99:99",
            "/api/cluster/jobs",
            r#"{"jobs":[{"type":"echo","not_before":"2026-04-06T10:00:00+99:99"}]}"#.to_owned(),
        ),
        (
            "join a host whose id is not a peer id",
            "/api/cluster/join",
            r#"{"host_peer_id":"0","group_id":"g1","executor":"/bin/true"}"#.to_owned(),
        ),
    ];
    for (what, path, body) in &cases {
        let answer = post_large(api, path, body).await;
        assert!(
            (400..500).contains(&answer.status),
            "{what}: {} {}",
            answer.status,
            answer.body.chars().take(300).collect::<String>()
        );
        assert_error_body(&answer);
    }

    for path in [
        "/api/cluster/jobs/xyz",
        "/api/cluster/jobs/0123456789abcdeg",
        "/api/cluster/jobs/0123456789abcdef0",
        "/api/cluster/jobs/%ff%fe",
    ] {
        let answer = get(api, path).await;
        assert!((400..500).contains(&answer.status), "{path}: {answer:?}");
        assert_error_body(&answer);
    }
    let unknown = get(api, "/api/cluster/jobs/00000000deadbeef").await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_error_body(&unknown);
    for path in ["/api/cluster/cancel", "/api/cluster/retry"] {
        let answer = post(api, path, r#"{"job_id":"00000000deadbeef"}"#).await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
        assert_error_body(&answer);
    }

    assert_eq!(stats(api).await, stats_before);
    let jobs = all_jobs(api).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].job.id.to_string(), kept[0]);
    assert_eq!(jobs[0].status, JobStatus::Pending);
}

/// Runs `goop <args>` against `api`, expecting it to succeed, and returns its exit status and
/// stdout.
async fn cli(api: &str, args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = cli_any(api, args).await;
    assert_eq!(code, 0, "goop {args:?} failed: {stdout}{stderr}");
    (code, stdout)
}

#[tokio::test]
async fn the_command_line_submits_waits_lists_and_shows_workers() {
    let peer = start_node(temp_dir("cli-host"), "/ip4/127.0.0.1/tcp/0").await;
    let api = peer.ready.api.clone();
    let (_, group) = cli(&api, &["cluster", "create", "--name", "cli"]).await;
    let host = Host {
        peer,
        group: group.trim().to_owned(),
    };
    let status = get(&api, "/api/cluster/status").await.json();
    assert_eq!(status["role"], "host", "{status}");
    assert_eq!(status["group_id"], host.group.as_str(), "{group:?}");
    let worker = worker(&host, &echo_executor(), 4).await;

    let (code, out) = cli(
        &api,
        &[
            "job",
            "submit",
            "--type",
            "echo",
            "--payload",
            r#"{"x":1}"#,
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let line: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(line["status"], "completed", "{out}");
    assert_eq!(line["result"], json!({ "x": 1 }), "{out}");
    let id = line["job_id"].as_str().expect("job id").to_owned();
    assert!(
        out.trim().contains(r#""result":{"x":1}"#),
        "result not printed exactly: {out}"
    );

    let (_, listed) = cli(&api, &["job", "list"]).await;
    let row = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
    assert!(row.contains("completed"), "{row}");
    assert!(row.contains("echo"), "{row}");

    let (_, workers) = cli(&api, &["cluster", "workers"]).await;
    assert!(workers.contains(&worker.ready.peer_id), "{workers}");
    let (_, json) = cli(&api, &["cluster", "workers", "--json"]).await;
    let json: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(json[0]["peer_id"], worker.ready.peer_id.as_str(), "{json}");
    assert_eq!(json[0]["capacity"], 4, "{json}");

    // A job that fails: --wait prints it and exits 1.
    let (code, out, err) = cli_any(
        &api,
        &[
            "job",
            "submit",
            "--type",
            "echo",
            "--payload",
            r#"{"fail":"boom"}"#,
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(line["status"], "failed", "{out}");
    assert!(
        line["error"].as_str().is_some_and(|e| e.contains("boom")),
        "{out}"
    );

    // --wait-timeout ends the wait even while the event stream says nothing at all.
    let (code, out, err) = cli_any(
        &api,
        &[
            "job",
            "submit",
            "--type",
            "echo",
            "--not-before",
            "2100-01-01T00:00:00Z",
            "--wait",
            "--wait-timeout",
            "1",
        ],
    )
    .await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("jobs not finished in time: 1 of 1"),
        "{out}{err}"
    );

    // A file whose third job the node refuses, sent one job per request: the ids of the two
    // it took are printed all the same, and the error says how far it got.
    let dir = temp_dir("cli-partial");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jobs.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"type":"echo","payload":{"n":1},"not_before":"2100-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"type":"echo","payload":{"n":2},"not_before":"2100-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"type":"echo","after":["ffffffffffffffff"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let (code, out, err) = cli_any(
        &api,
        &[
            "job",
            "submit",
            "-f",
            &file.to_string_lossy(),
            "--batch",
            "1",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("the node took the first 2 of the 3 jobs"),
        "{out}{err}"
    );
    let taken: Vec<&str> = out.lines().collect();
    assert_eq!(taken.len(), 2, "{out}");
    for id in taken {
        assert_eq!(job(&api, id).await.status, JobStatus::Pending, "{id}");
    }

    // An idempotency key given twice names one job.
    let keyed = ["job", "submit", "--type", "echo", "--key", "nightly-1"];
    let (_, first) = cli(&api, &keyed).await;
    let (_, second) = cli(&api, &keyed).await;
    assert_eq!(first.trim().len(), 16, "{first}");
    assert_eq!(first, second);

    let (_, shown) = cli(&api, &["job", "show", &id]).await;
    let shown: Value = serde_json::from_str(&shown).unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert_eq!(shown["status"], "completed", "{shown}");
}

#[tokio::test]
async fn the_command_line_cancels_retries_and_watches_jobs() {
    let host = host().await;
    let _worker = worker(&host, &echo_executor(), 4).await;
    let api = host.api();

    // Cancel a running job; cancelling it again is refused, naming the job once.
    let slow = submit(
        api,
        &[json!({ "type": "echo", "payload": { "sleep_ms": 30_000 } })],
    )
    .await;
    let slow = slow[0].clone();
    until(20, "the job runs", async || {
        job(api, &slow).await.status == JobStatus::Running
    })
    .await;
    let (code, out, err) = cli_any(api, &["job", "cancel", &slow]).await;
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(answer["status"], "cancelled", "{out}");
    assert_eq!(job(api, &slow).await.status, JobStatus::Cancelled);
    let (code, out, err) = cli_any(api, &["job", "cancel", &slow]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("terminal state cancelled"), "{err}");
    assert_eq!(err.matches(slow.as_str()).count(), 1, "{err}");

    // Retry a failed job: it runs again, in a second attempt.
    let failing = submit(
        api,
        &[json!({ "type": "echo", "payload": { "fail": "boom" } })],
    )
    .await;
    assert_eq!(
        wait_terminal(api, &failing, 20).await[0].status,
        JobStatus::Failed
    );
    let (code, out, err) = cli_any(api, &["job", "retry", &failing[0]]).await;
    assert_eq!(code, 0, "{out}{err}");
    until(20, "the retried job fails again", async || {
        let state = job(api, &failing[0]).await;
        state.status == JobStatus::Failed && state.attempts.len() == 2
    })
    .await;

    // Watch two jobs while a third runs: the outcome of each watched job on stdout, and on
    // stderr (not a terminal here) the events of the watched jobs and no others.
    let ids = submit(
        api,
        &[
            json!({ "type": "echo", "payload": { "sleep_ms": 300, "n": 1 } }),
            json!({ "type": "echo", "payload": { "sleep_ms": 2000, "n": 2 } }),
            json!({ "type": "echo", "payload": { "sleep_ms": 1500, "n": 3 } }),
        ],
    )
    .await;
    let (code, out, err) = cli_any(api, &["job", "watch", &ids[0], &ids[1]]).await;
    assert_eq!(code, 0, "{out}{err}");
    let outcomes: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(outcomes.len(), 2, "{out}");
    for (outcome, (id, n)) in outcomes.iter().zip([(&ids[0], 1), (&ids[1], 2)]) {
        assert_eq!(outcome["job_id"], id.as_str(), "{out}");
        assert_eq!(outcome["status"], "completed", "{out}");
        assert_eq!(outcome["result"]["n"], n, "{out}");
    }
    assert!(err.contains(&ids[1]), "no event of the watched job: {err}");
    assert!(
        !err.contains(&ids[2]),
        "an unwatched job's event was shown: {err}"
    );
}

#[tokio::test]
async fn jobs_with_large_payloads_run_and_are_waited_for_page_by_page() {
    let host = host().await;
    let _worker = worker(&host, &echo_executor(), 4).await;
    // Three jobs of 9 MiB: their assigns do not fit one MQ message together, and a job with its
    // result (18 MiB) fills a page of the job list on its own.
    let dir = temp_dir("large-payloads");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jobs.jsonl");
    let big = "x".repeat(9 * 1024 * 1024);
    let lines: Vec<String> = (0..3)
        .map(|i| json!({ "type": "echo", "payload": { "i": i, "pad": big } }).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = cli_any(
        host.api(),
        &["job", "submit", "-f", &file.to_string_lossy(), "--wait"],
    )
    .await;
    assert_eq!(code, 0, "{}", err.chars().take(2000).collect::<String>());
    let finished: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(finished.len(), 3);
    for (i, line) in finished.iter().enumerate() {
        assert_eq!(line["status"], "completed");
        assert_eq!(line["result"]["i"], i);
        assert_eq!(
            line["result"]["pad"].as_str().map(str::len),
            Some(big.len())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_result_too_large_to_send_fails_its_job_and_the_worker_goes_on() {
    let host = host().await;
    let _worker = worker(&host, &fixture_executor(), 2).await;
    // Within the executor's 16 MiB line, beyond what one MQ message carries back.
    let too_large = 16 * 1024 * 1024 - 1024;
    let ids = submit(
        host.api(),
        &[
            json!({ "type": "echo", "payload": { "result_bytes": too_large } }),
            json!({ "type": "echo", "payload": { "result_bytes": 1024 * 1024 } }),
        ],
    )
    .await;
    let states = wait_terminal(host.api(), &ids, 60).await;
    assert_eq!(states[0].status, JobStatus::Failed, "{:?}", states[0].error);
    let error = states[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("result too large"), "{error}");
    assert_eq!(
        states[1].status,
        JobStatus::Completed,
        "{:?}",
        states[1].error
    );
    assert_eq!(
        states[1].result.as_ref().map(|r| r.get().len()),
        Some(1024 * 1024)
    );
}
