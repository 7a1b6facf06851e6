//! The host and worker actors together over an in-memory link, with a real job store (SQLite
//! file) and a real executor process (the Python example executor, in daemon mode). The link is
//! the only stand-in: libp2p is tested in `groups` and end to end in `node/tests`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::api::{ClusterEvent, SubmitJob};
use proto::cluster::{ClusterMessage, JobAssign, JobRef, parse_cluster_topic};
use proto::{Attempt, BinaryMode, GroupId, JobId, JobMode, JobStatus, PeerId};
use serde_json::value::RawValue;
use store::{JobStore, StoreConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use worker::ExecutorConfig;

use super::host::{self, HostConfig, HostError, HostHandle, Limits, MemberEvent};
use super::member::{self, HostEvent, MemberConfig};
use super::{Incoming, Link};

/// Delivers cluster messages between actors in one process, in order.
#[derive(Clone)]
struct MemLink {
    me: PeerId,
    routes: Arc<Mutex<HashMap<PeerId, mpsc::Sender<Incoming>>>>,
}

impl Link for MemLink {
    async fn send(&self, to: PeerId, topic: String, payload: Box<RawValue>) -> Result<(), String> {
        let route = self
            .routes
            .lock()
            .map_err(|_| "poisoned")?
            .get(&to)
            .cloned();
        let route = route.ok_or_else(|| format!("no route to {to}"))?;
        let (_, msg_type) = parse_cluster_topic(&topic).ok_or("not a cluster topic")?;
        let incoming = Incoming {
            from: self.me.clone(),
            msg_type: msg_type.to_owned(),
            payload: payload.get().to_owned(),
        };
        route
            .send(incoming)
            .await
            .map_err(|_| format!("{to} is gone"))
    }
}

struct Cluster {
    host: HostHandle,
    members: mpsc::Sender<MemberEvent>,
    routes: Arc<Mutex<HashMap<PeerId, mpsc::Sender<Incoming>>>>,
    host_peer: PeerId,
    group: GroupId,
    tracker: TaskTracker,
    cancel: CancellationToken,
    limits: Limits,
    dispatcher: dispatcher::Config,
    dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python_executor() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python/executor.py")
}

async fn start_host(name: &str) -> Cluster {
    start_host_with(name, Limits::default()).await
}

async fn start_host_with(name: &str, limits: Limits) -> Cluster {
    start_in(fresh_dir(name), limits, dispatcher::Config::default()).await
}

fn fresh_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("goop-cluster-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A host on the store in `dir`, new or left by an earlier host.
async fn start_in(dir: TempDir, limits: Limits, dispatcher: dispatcher::Config) -> Cluster {
    let store = Arc::new(JobStore::open(&dir.0.join("goop.db"), StoreConfig::default()).unwrap());
    let host_peer: PeerId = "12D3KooWhost".parse().unwrap();
    let group: GroupId = "cluster1".parse().unwrap();
    let routes = Arc::new(Mutex::new(HashMap::new()));
    let (incoming_tx, incoming) = mpsc::channel(1024);
    routes
        .lock()
        .unwrap()
        .insert(host_peer.clone(), incoming_tx);
    let (members, members_rx) = mpsc::channel(64);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let config = HostConfig {
        group: group.clone(),
        dispatcher: dispatcher.clone(),
        seed: 7,
        limits: limits.clone(),
        take_back_every: TAKE_BACK_EVERY,
    };
    let link = MemLink {
        me: host_peer.clone(),
        routes: routes.clone(),
    };
    let host = host::spawn(
        config,
        store,
        link,
        incoming,
        members_rx,
        &tracker,
        cancel.clone(),
    )
    .await
    .unwrap();
    Cluster {
        host,
        members,
        routes,
        host_peer,
        group,
        tracker,
        cancel,
        limits,
        dispatcher,
        dir,
    }
}

impl Cluster {
    async fn add_worker(&self, name: &str, capacity: u32) -> PeerId {
        let mut executor = ExecutorConfig::new(python_executor(), BinaryMode::Daemon);
        executor.capacity_override = std::num::NonZeroU32::new(capacity);
        self.add_worker_with(name, executor).await
    }

    /// A worker running `executor`, joined and started (its first check passed).
    async fn add_worker_with(&self, name: &str, executor: ExecutorConfig) -> PeerId {
        let peer: PeerId = format!("12D3KooW{name}").parse().unwrap();
        let (incoming_tx, incoming) = mpsc::channel(1024);
        self.routes
            .lock()
            .unwrap()
            .insert(peer.clone(), incoming_tx);
        let (_host_events_tx, host_events) = mpsc::channel::<HostEvent>(8);
        let config = MemberConfig {
            group: self.group.clone(),
            host: self.host_peer.clone(),
            executor,
            heartbeat: Duration::from_secs(5),
        };
        let link = MemLink {
            me: peer.clone(),
            routes: self.routes.clone(),
        };
        self.joined(&peer).await;
        member::spawn(
            config,
            link,
            incoming,
            host_events,
            &self.tracker,
            self.cancel.clone(),
        )
        .await
        .unwrap();
        peer
    }

    /// The group layer reports that `peer` joined.
    async fn joined(&self, peer: &PeerId) {
        self.members
            .send(MemberEvent::Joined(peer.clone()))
            .await
            .unwrap();
    }

    /// A peer whose messages the test sends and whose inbox it reads: what the host sends it
    /// arrives on the returned channel.
    fn fake_peer(&self, peer: &PeerId) -> mpsc::Receiver<Incoming> {
        let (to_peer, at_peer) = mpsc::channel(64);
        self.routes.lock().unwrap().insert(peer.clone(), to_peer);
        at_peer
    }

    /// `peer` tells the host its executor passed the check.
    async fn verified_by(&self, peer: &PeerId) {
        let host_route = self.routes.lock().unwrap()[&self.host_peer].clone();
        host_route
            .send(Incoming {
                from: peer.clone(),
                msg_type: "worker:verified".into(),
                payload: r#"{"ok":true,"types":[],"capacity":1}"#.into(),
            })
            .await
            .unwrap();
    }

    /// `peer` sends `message` to the host.
    async fn send_as(&self, peer: &PeerId, message: ClusterMessage) {
        let host_route = self.routes.lock().unwrap()[&self.host_peer].clone();
        host_route
            .send(Incoming {
                from: peer.clone(),
                msg_type: message.msg_type().to_owned(),
                payload: message.encode_payload().get().to_owned(),
            })
            .await
            .unwrap();
    }

    /// The host's view of `peer`, if it counts it as a worker.
    async fn worker(&self, peer: &PeerId) -> Option<proto::cluster::WorkerInfo> {
        let workers = self.host.workers().await.unwrap();
        workers.into_iter().find(|w| w.peer_id == *peer)
    }

    /// Waits until `check` holds of the host's view of `peer` (`None`: not a worker).
    async fn until_worker(
        &self,
        peer: &PeerId,
        what: &str,
        check: impl Fn(Option<&proto::cluster::WorkerInfo>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let worker = self.worker(peer).await;
            if check(worker.as_ref()) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {worker:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Stops everything, then starts a new host on the same store (without workers).
    async fn restart(self) -> Self {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        start_in(self.dir, self.limits, self.dispatcher).await
    }
}

fn echo(payload: &str, priority: i32) -> SubmitJob {
    let mut job = SubmitJob::new("echo");
    job.payload = Some(RawValue::from_string(payload.to_owned()).unwrap().into());
    job.priority = priority;
    job
}

/// A dispatcher that keeps the statuses of only two finished jobs in memory.
fn two_finished() -> dispatcher::Config {
    dispatcher::Config {
        max_finished: 2,
        ..dispatcher::Config::default()
    }
}

/// A job the example executor fails: a division by zero.
fn failing() -> SubmitJob {
    let mut job = SubmitJob::new("calculate");
    job.payload = Some(
        RawValue::from_string(r#"{"expression":"1/0"}"#.to_owned())
            .unwrap()
            .into(),
    );
    job
}

/// The job as the store has it now (without a flush).
fn stored(host: &HostHandle, id: JobId) -> proto::cluster::JobState {
    host.store()
        .reader()
        .unwrap()
        .get(id)
        .unwrap()
        .expect("the job is stored")
        .state
}

/// Submits `jobs` one at a time, each waited for until it is terminal, so they are submitted
/// and finish in this order; returns their ids.
async fn one_by_one(
    host: &HostHandle,
    jobs: impl IntoIterator<Item = SubmitJob>,
    within: Duration,
) -> Vec<JobId> {
    let mut ids = Vec::new();
    for job in jobs {
        let id = host.submit(vec![job]).await.unwrap()[0];
        wait_all(host, &[id], within).await;
        ids.push(id);
    }
    ids
}

/// Waits until every job in `ids` is terminal, reading the store.
async fn wait_all(
    host: &HostHandle,
    ids: &[JobId],
    within: Duration,
) -> Vec<proto::cluster::JobState> {
    let deadline = Instant::now() + within;
    loop {
        host.flush().await.unwrap();
        let reader = host.store().reader().unwrap();
        let states: Vec<_> = ids
            .iter()
            .map(|id| reader.get(*id).unwrap().unwrap().state)
            .collect();
        if states.iter().all(|s| s.status.is_terminal()) {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not finished in time: {:?}",
            states.iter().map(|s| s.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flow_from_submit_to_stored_result_with_exact_numbers() {
    let cluster = start_host("flow").await;
    let mut events = cluster.host.subscribe();
    cluster.add_worker("workerA", 4).await;
    let jobs: Vec<_> = (0..200)
        .map(|i| echo(&format!(r#"{{"i":{i},"big":12345678901234567890}}"#), i % 3))
        .collect();
    let ids = cluster.host.submit(jobs).await.unwrap();
    assert_eq!(ids.len(), 200);
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(60)).await;
    for (i, state) in states.iter().enumerate() {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(
            state.result.as_ref().unwrap().get(),
            format!(r#"{{"i":{i},"big":12345678901234567890}}"#)
        );
        assert_eq!(state.attempts.len(), 1);
        assert_eq!(state.attempts[0].worker_id.as_str(), "12D3KooWworkerA");
    }
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.completed, stats.pending, stats.running), (200, 0, 0));
    let workers = cluster.host.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert!(workers[0].verified);
    assert_eq!(workers[0].capacity, 4);
    // Each job is heard of once as pending (its submit), and that comes first.
    let mut heard = std::collections::HashMap::new();
    while let Ok(event) = events.try_recv() {
        if let ClusterEvent::Job(job) = event {
            heard
                .entry(job.job_id)
                .or_insert_with(Vec::new)
                .push(job.status);
        }
    }
    assert_eq!(heard.len(), 200);
    for statuses in heard.values() {
        assert_eq!(statuses.first(), Some(&JobStatus::Pending), "{statuses:?}");
        assert_eq!(statuses.last(), Some(&JobStatus::Completed), "{statuses:?}");
        let pending = statuses
            .iter()
            .filter(|s| **s == JobStatus::Pending)
            .count();
        assert_eq!(pending, 1, "{statuses:?}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_stays_cancelled() {
    let cluster = start_host("cancel").await;
    cluster.add_worker("workerB", 2).await;
    let ids = cluster
        .host
        .submit(vec![echo(r#"{"sleep_ms":60000}"#, 0)])
        .await
        .unwrap();
    let id = ids[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        cluster.host.flush().await.unwrap();
        let state = stored(&cluster.host, id);
        if state.status == JobStatus::Running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job never ran: {:?}",
            state.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.host.cancel(id).await.unwrap();
    // The worker's report about the killed attempt arrives after the cancel and changes nothing.
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(10)).await;
    assert_eq!(states[0].status, JobStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.host.flush().await.unwrap();
    let state = stored(&cluster.host, id);
    assert_eq!(
        state.status,
        JobStatus::Cancelled,
        "a late report must not move a cancelled job"
    );
    let err = cluster.host.cancel(id).await.unwrap_err();
    assert!(err.to_string().contains("terminal"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_keeps_its_error_and_a_user_retry_runs_it_again() {
    let cluster = start_host("retry").await;
    cluster.add_worker("workerC", 2).await;
    let ids = cluster.host.submit(vec![failing()]).await.unwrap();
    let first = wait_all(&cluster.host, &ids, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(first.status, JobStatus::Failed);
    let error = first.error.clone().unwrap_or_default();
    assert!(error.contains("zero"), "{error}");
    cluster.host.retry(ids[0]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let state = wait_all(&cluster.host, &ids, Duration::from_secs(20))
            .await
            .remove(0);
        if state.attempts.len() == 2 {
            break state;
        }
        assert!(Instant::now() < deadline, "the retry never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(second.status, JobStatus::Failed);
    assert_eq!(
        second
            .attempts
            .iter()
            .map(|a| a.attempt.0)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let err = cluster.host.retry(JobId::from_u64(99)).await.unwrap_err();
    assert!(err.to_string().contains("unknown job"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submits_are_refused_whole() {
    let cluster = start_host("bad").await;
    let mut empty = SubmitJob::new("");
    empty.priority = 1;
    let err = cluster
        .host
        .submit(vec![echo("{}", 0), empty])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("job 1: missing job type"), "{err}");
    let mut dependent = SubmitJob::new("echo");
    dependent.after = vec![JobId::from_u64(42)];
    let err = cluster.host.submit(vec![dependent]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("waits for unknown job 000000000000002a"),
        "{err}"
    );
    // The dispatcher's own limit on type names is checked before anything is stored.
    let long = SubmitJob::new("t".repeat(257));
    let err = cluster.host.submit(vec![long]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("job type of 257 bytes is over the limit of 256"),
        "{err}"
    );
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!(
        stats.pending + stats.failed,
        0,
        "nothing was queued or stored"
    );
    cluster.host.flush().await.unwrap();
    let reader = cluster.host.store().reader().unwrap();
    assert_eq!(
        reader.stats(&cluster.group).unwrap(),
        proto::cluster::QueueStats::default()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_states_reach_the_store_on_their_own_and_at_once_on_a_flush() {
    let cluster = start_host("held").await;
    cluster.add_worker("workerH", 2).await;
    let mut events = cluster.host.subscribe();
    let running = async |events: &mut tokio::sync::broadcast::Receiver<ClusterEvent>, id| {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(ClusterEvent::Job(job)) = events.recv().await
                    && job.job_id == id
                    && job.status == JobStatus::Running
                {
                    return;
                }
            }
        })
        .await
        .expect("the job runs");
    };

    // Nobody reads: the running state still reaches the store, once its hold is over.
    let first = cluster
        .host
        .submit(vec![echo(r#"{"sleep_ms":60000}"#, 0)])
        .await
        .unwrap()[0];
    running(&mut events, first).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored(&cluster.host, first).status != JobStatus::Running {
        assert!(
            Instant::now() < deadline,
            "the running state was never written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = stored(&cluster.host, first);
    assert!(
        state.worker_id.is_some() && state.started_at.is_some(),
        "{state:?}"
    );

    // A flush writes what is held at once: a read after it sees the job as the host does.
    let second = cluster
        .host
        .submit(vec![echo(r#"{"sleep_ms":60000}"#, 0)])
        .await
        .unwrap()[0];
    running(&mut events, second).await;
    cluster.host.flush().await.unwrap();
    assert_eq!(stored(&cluster.host, second).status, JobStatus::Running);

    // The final state replaces a held one and keeps what it said (worker, start).
    cluster.host.cancel(second).await.unwrap();
    cluster.host.flush().await.unwrap();
    let state = stored(&cluster.host, second);
    assert_eq!(state.status, JobStatus::Cancelled);
    assert!(
        state.worker_id.is_some() && state.started_at.is_some(),
        "{state:?}"
    );
    cluster.host.cancel(first).await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_payloads_are_bounded_and_the_room_comes_back_when_jobs_end() {
    let limits = Limits {
        max_live_payload_bytes: 100,
        ..Limits::default()
    };
    let cluster = start_host_with("payload-budget", limits).await;
    let sixty = format!(r#"{{"pad":"{}"}}"#, "x".repeat(50));
    assert_eq!(sixty.len(), 60);
    let first = cluster.host.submit(vec![echo(&sixty, 0)]).await.unwrap()[0];

    // No worker runs it, so its 60 bytes stay: 60 more would pass the 100.
    let refused = cluster
        .host
        .submit(vec![echo(&sixty, 0)])
        .await
        .unwrap_err();
    assert!(matches!(refused, HostError::Busy(_)), "{refused}");
    assert!(refused.to_string().contains("queue full"), "{refused}");
    // Jobs without a payload take no room.
    cluster
        .host
        .submit(vec![SubmitJob::new("echo")])
        .await
        .unwrap();

    // The first one ends: its room comes back.
    cluster.host.cancel(first).await.unwrap();
    cluster.host.submit(vec![echo(&sixty, 0)]).await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_counts_only_once_its_peer_has_joined() {
    let cluster = start_host("early").await;
    let peer: PeerId = "12D3KooWearly".parse().unwrap();
    let mut at_peer = cluster.fake_peer(&peer);
    // The verification overtakes the join, as it may over the MQ bus.
    cluster.verified_by(&peer).await;
    let id = cluster.host.submit(vec![echo("[1]", 0)]).await.unwrap()[0];
    // Not a member: no job goes to it.
    let early = tokio::time::timeout(Duration::from_millis(500), at_peer.recv()).await;
    assert!(early.is_err(), "a job went to a peer that is not a member");

    // Its join arrives: the verification it sent before counts, and the job goes to it.
    cluster.joined(&peer).await;
    let message = tokio::time::timeout(Duration::from_secs(10), at_peer.recv())
        .await
        .expect("the job is assigned once the peer has joined")
        .unwrap();
    assert!(message.msg_type == "job:assign" || message.msg_type == "batch");
    assert!(
        message.payload.contains(&id.to_string()),
        "{}",
        message.payload
    );
    let workers = cluster.host.workers().await.unwrap();
    assert!(
        workers.iter().any(|w| w.peer_id == peer && w.verified),
        "{workers:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_join_undid_its_verification_is_asked_for_another() {
    let cluster = start_host("rejoin").await;
    let peer = cluster.add_worker("workerR", 2).await;
    let verified = async || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let workers = cluster.host.workers().await.unwrap();
            if workers.iter().any(|w| w.peer_id == peer && w.verified) {
                return;
            }
            assert!(Instant::now() < deadline, "not verified: {workers:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    verified().await;
    // A join without a leave, as from a worker that restarted: the host takes back the
    // verification, and asks the worker for a new one rather than wait for it.
    cluster.joined(&peer).await;
    verified().await;
    let ids = cluster.host.submit(vec![echo("[7]", 0)]).await.unwrap();
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(20)).await;
    assert_eq!(states[0].status, JobStatus::Completed, "{:?}", states[0]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_asks_an_unverified_member_to_verify() {
    let cluster = start_host("verify-ask").await;
    let peer: PeerId = "12D3KooWasked".parse().unwrap();
    let mut at_peer = cluster.fake_peer(&peer);
    let asked = async |at_peer: &mut mpsc::Receiver<Incoming>| {
        let message = tokio::time::timeout(Duration::from_secs(10), at_peer.recv())
            .await
            .expect("the host asks for a verification")
            .unwrap();
        assert_eq!(message.msg_type, "worker:verify", "{}", message.payload);
    };
    // Joined, not verified yet: asked.
    cluster.joined(&peer).await;
    asked(&mut at_peer).await;
    cluster.verified_by(&peer).await;
    // A join without a leave undoes the verification: asked again.
    cluster.joined(&peer).await;
    asked(&mut at_peer).await;
    cluster.stop().await;
}

/// The messages of one delivery, batches opened.
fn flatten(message: ClusterMessage, into: &mut Vec<ClusterMessage>) {
    match message {
        ClusterMessage::Batch(messages) => {
            for message in messages {
                flatten(message, into);
            }
        }
        other => into.push(other),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_in_the_batch_that_assigned_it_never_runs() {
    // A worker alone, its host played by the test.
    let host: PeerId = "12D3KooWplayedhost".parse().unwrap();
    let worker: PeerId = "12D3KooWworkerC".parse().unwrap();
    let routes = Arc::new(Mutex::new(HashMap::new()));
    let (to_host, mut at_host) = mpsc::channel(1024);
    routes.lock().unwrap().insert(host.clone(), to_host);
    let (to_worker, incoming) = mpsc::channel(64);
    let (_host_events_tx, host_events) = mpsc::channel::<HostEvent>(8);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let config = MemberConfig {
        group: "cluster1".parse().unwrap(),
        host: host.clone(),
        executor: ExecutorConfig::new(python_executor(), BinaryMode::Daemon),
        heartbeat: Duration::from_secs(60),
    };
    let link = MemLink {
        me: worker.clone(),
        routes,
    };
    member::spawn(
        config,
        link,
        incoming,
        host_events,
        &tracker,
        cancel.clone(),
    )
    .await
    .unwrap();
    let assign = |id: u64, payload: &str| {
        ClusterMessage::JobAssign(JobAssign {
            job_id: JobId::from_u64(id),
            job_type: "echo".into(),
            payload: Some(RawValue::from_string(payload.to_owned()).unwrap().into()),
            timeout_s: 0,
            attempt: Attempt(1),
            mode: JobMode::Oneshot,
            priority: 0,
        })
    };
    let parts = [
        assign(1, "[1]"),
        ClusterMessage::JobCancel(JobRef {
            job_id: JobId::from_u64(1),
            attempt: Attempt(1),
        }),
        assign(2, r#"{"sleep_ms":200}"#),
    ];
    let payload = ClusterMessage::Batch(Vec::from(parts)).encode_payload();
    to_worker
        .send(Incoming {
            from: host,
            msg_type: "batch".into(),
            payload: payload.get().to_owned(),
        })
        .await
        .unwrap();
    // Job 1 comes before job 2 in the batch and runs in no time: had it reached the
    // executor, its result would come before job 2's.
    let mut heard = Vec::new();
    while !heard
        .iter()
        .any(|m| matches!(m, ClusterMessage::JobResult(r) if r.job_id == JobId::from_u64(2)))
    {
        let message = tokio::time::timeout(Duration::from_secs(20), at_host.recv())
            .await
            .expect("the worker reports job 2")
            .unwrap();
        flatten(
            ClusterMessage::decode(&message.msg_type, &message.payload).unwrap(),
            &mut heard,
        );
    }
    let reports: Vec<(&str, u64)> = heard
        .iter()
        .filter_map(|m| match m {
            ClusterMessage::JobAck(r) => Some(("ack", r.job_id.as_u64())),
            ClusterMessage::JobResult(r) => Some(("result", r.job_id.as_u64())),
            _ => None,
        })
        .collect();
    assert_eq!(reports, [("ack", 1), ("ack", 2), ("result", 2)]);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_past_the_memory_limit_are_found_in_the_store() {
    let cluster = start_in(fresh_dir("evict"), Limits::default(), two_finished()).await;
    cluster.add_worker("workerE", 2).await;
    let within = Duration::from_secs(20);
    let failed = cluster.host.submit(vec![failing()]).await.unwrap()[0];
    wait_all(&cluster.host, &[failed], within).await;
    // One at a time, so they finish in this order and the first ones are evicted.
    let done = one_by_one(
        &cluster.host,
        (0..5).map(|i| echo(&i.to_string(), 0)),
        within,
    )
    .await;
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!(
        (stats.completed, stats.failed),
        (5, 1),
        "evicted jobs still count"
    );

    // Named in `after`, an evicted job is found in the store and counts as completed.
    let mut waiter = echo(r#""after""#, 0);
    waiter.after = vec![done[0]];
    let waiter = cluster.host.submit(vec![waiter]).await.unwrap()[0];
    let state = wait_all(&cluster.host, &[waiter], within).await.remove(0);
    assert_eq!(state.status, JobStatus::Completed, "{state:?}");

    // An evicted failed job can be retried; an evicted completed one cannot be cancelled.
    cluster.host.retry(failed).await.unwrap();
    let deadline = Instant::now() + within;
    while stored(&cluster.host, failed).attempts.len() < 2
        || stored(&cluster.host, failed).status != JobStatus::Failed
    {
        assert!(Instant::now() < deadline, "the retry never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
        cluster.host.flush().await.unwrap();
    }
    let err = cluster.host.cancel(done[1]).await.unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Refused(dispatcher::StepError::AlreadyTerminal { .. })
        ),
        "{err}"
    );

    // An evicted job can be deleted; it is then gone for good.
    cluster.host.delete(done[1]).await.unwrap();
    cluster.host.flush().await.unwrap();
    assert!(
        cluster
            .host
            .store()
            .reader()
            .unwrap()
            .get(done[1])
            .unwrap()
            .is_none()
    );
    let mut orphan = echo("1", 0);
    orphan.after = vec![done[1]];
    let err = cluster.host.submit(vec![orphan]).await.unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Refused(dispatcher::StepError::UnknownDependency { .. })
        ),
        "{err}"
    );
    assert!(matches!(
        cluster.host.cancel(done[1]).await,
        Err(HostError::Refused(dispatcher::StepError::UnknownJob(_)))
    ));
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!(
        (stats.completed, stats.failed),
        (5, 1),
        "one deleted, one more completed"
    );

    // A restarted host loads only the newest finished jobs, counts the others, and finds them
    // when named.
    let cluster = cluster.restart().await;
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.completed, stats.failed), (5, 1));
    cluster.add_worker("workerF", 2).await;
    let mut waiter = echo(r#""again""#, 0);
    waiter.after = vec![done[2], done[0]];
    let waiter = cluster.host.submit(vec![waiter]).await.unwrap()[0];
    let state = wait_all(&cluster.host, &[waiter], within).await.remove(0);
    assert_eq!(state.status, JobStatus::Completed, "{state:?}");
    assert_eq!(cluster.host.clear().await.unwrap(), 7);
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.completed, stats.failed), (0, 0));
    cluster.stop().await;
}

/// A job waiting for a worker after its dependency completed must still be waiting after a
/// restart, whether the dependency is among the finished jobs the restore loaded, one it left
/// in the store, or one the user deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_jobs_whose_finished_dependencies_it_did_not_load() {
    let cluster = start_in(fresh_dir("restore-deps"), Limits::default(), two_finished()).await;
    cluster.add_worker("workerR", 2).await;
    let within = Duration::from_secs(20);
    let deps = cluster
        .host
        .submit(vec![echo("1", 0), echo("2", 0)])
        .await
        .unwrap();
    wait_all(&cluster.host, &deps, within).await;
    // No worker runs this type: the waiters stay pending once their dependency is done.
    let waiter = |dep: JobId| {
        let mut job = SubmitJob::new("nobody-runs-this");
        job.after = vec![dep];
        job
    };
    let waiters = cluster
        .host
        .submit(vec![waiter(deps[0]), waiter(deps[1])])
        .await
        .unwrap();
    // Enough later jobs that the restore loads neither dependency.
    one_by_one(
        &cluster.host,
        (0..3).map(|i| echo(&i.to_string(), 0)),
        within,
    )
    .await;
    cluster.host.delete(deps[1]).await.unwrap();
    let cluster = cluster.restart().await;
    cluster.host.flush().await.unwrap();
    for id in &waiters {
        let state = stored(&cluster.host, *id);
        assert_eq!(state.status, JobStatus::Pending, "{state:?}");
    }
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.pending, stats.completed, stats.failed), (2, 4, 0));
    cluster.stop().await;
}

/// A restarted host skips the attempt number a held assignment may have used, and stores the
/// skip before it is running: a second crash soon after finds the skipped number, not the old
/// one, so no number is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_restart_stores_the_attempt_number_it_skipped() {
    let cluster = start_in(fresh_dir("restore-skip"), Limits::default(), two_finished()).await;
    let ids = cluster
        .host
        .submit(vec![
            SubmitJob::new("nobody-runs-this"),
            SubmitJob::new("nobody-runs-this"),
        ])
        .await
        .unwrap();
    cluster.host.flush().await.unwrap();
    for id in &ids {
        assert_eq!(stored(&cluster.host, *id).attempt, Attempt(0));
    }
    let mut cluster = cluster;
    for restart in 1..=2 {
        cluster = cluster.restart().await;
        // No flush asked: the start itself stored the skip.
        for id in &ids {
            let state = stored(&cluster.host, *id);
            assert_eq!(
                (state.status, state.attempt),
                (JobStatus::Pending, Attempt(restart)),
                "after restart {restart}: {state:?}"
            );
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_past_their_keep_time_leave_the_store_and_the_counts() {
    let limits = Limits {
        keep_finished: Some(Duration::from_millis(1_500)),
        ..Limits::default()
    };
    // Most of those pruned were evicted from memory first.
    let cluster = start_in(fresh_dir("prune"), limits, two_finished()).await;
    cluster.add_worker("workerP", 2).await;
    let within = Duration::from_secs(20);
    let mut jobs = vec![failing()];
    jobs.extend((0..5).map(|i| echo(&i.to_string(), 0)));
    let finished = cluster.host.submit(jobs).await.unwrap();
    wait_all(&cluster.host, &finished, within).await;
    // Live jobs are never pruned, however old.
    let waiting = cluster
        .host
        .submit(vec![SubmitJob::new("nobody-runs-this")])
        .await
        .unwrap()[0];
    let deadline = Instant::now() + within;
    loop {
        cluster.host.flush().await.unwrap();
        let reader = cluster.host.store().reader().unwrap();
        let left = finished
            .iter()
            .filter(|id| reader.get(**id).unwrap().is_some())
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} finished jobs never pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.completed, stats.failed),
        (1, 0, 0),
        "pruned jobs leave the counts, evicted or not"
    );
    assert_eq!(stored(&cluster.host, waiting).status, JobStatus::Pending);
    // A pruned job is gone: it cannot be waited for, retried or deleted.
    let mut orphan = echo("1", 0);
    orphan.after = vec![finished[5]];
    assert!(matches!(
        cluster.host.submit(vec![orphan]).await,
        Err(HostError::Refused(
            dispatcher::StepError::UnknownDependency { .. }
        ))
    ));
    assert!(cluster.host.retry(finished[0]).await.is_err());
    assert!(cluster.host.delete(finished[1]).await.is_err());
    // A restart counts what is left.
    let cluster = cluster.restart().await;
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.pending, stats.completed, stats.failed), (1, 0, 0));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_most_finished_jobs_kept_the_oldest_leave_the_store() {
    let limits = Limits {
        keep_finished: None,
        keep_finished_jobs: Some(3),
        ..Limits::default()
    };
    let cluster = start_in(
        fresh_dir("keep-count"),
        limits,
        dispatcher::Config::default(),
    )
    .await;
    cluster.add_worker("workerK", 2).await;
    let within = Duration::from_secs(20);
    // One at a time, so they are submitted and finish in this order.
    let jobs = [
        failing(),
        echo("1", 0),
        echo("2", 0),
        echo("3", 0),
        echo("4", 0),
    ];
    let done = one_by_one(&cluster.host, jobs, within).await;
    let deadline = Instant::now() + within;
    loop {
        cluster.host.flush().await.unwrap();
        let reader = cluster.host.store().reader().unwrap();
        let kept: Vec<bool> = done
            .iter()
            .map(|id| reader.get(*id).unwrap().is_some())
            .collect();
        if kept == [false, false, true, true, true] {
            break;
        }
        assert!(Instant::now() < deadline, "kept {kept:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.completed, stats.failed), (3, 0));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_past_the_live_job_limit_is_refused_before_it_is_stored() {
    let limit = dispatcher::Config {
        max_live_jobs: 3,
        ..dispatcher::Config::default()
    };
    let cluster = start_in(fresh_dir("full"), Limits::default(), limit).await;
    let two = || vec![echo("1", 0), echo("2", 0)];
    // Submitted together, the second batch counts the first while that one is being stored.
    let (first, second) = tokio::join!(cluster.host.submit(two()), cluster.host.submit(two()));
    let (kept, refused) = match (first, second) {
        (Ok(ids), Err(err)) | (Err(err), Ok(ids)) => (ids, err),
        other => panic!("one batch fits, not both: {other:?}"),
    };
    assert_eq!(kept.len(), 2);
    assert!(
        matches!(
            refused,
            HostError::Refused(dispatcher::StepError::QueueFull { live: 2, max: 3 })
        ),
        "{refused}"
    );
    cluster.host.flush().await.unwrap();
    let stored = cluster
        .host
        .store()
        .reader()
        .unwrap()
        .stats(&cluster.group)
        .unwrap();
    assert_eq!(
        (stored.pending, stored.failed),
        (2, 0),
        "the refused batch left nothing"
    );
    cluster.host.submit(vec![echo("3", 0)]).await.unwrap();
    let err = cluster.host.submit(vec![echo("4", 0)]).await.unwrap_err();
    assert!(err.to_string().contains("queue full"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finished_while_the_store_fails_are_stored_once_it_writes_again() {
    let cluster = start_host("failing-store").await;
    cluster.add_worker("workerA", 4).await;
    let db = cluster.dir.0.join("goop.db");
    // From here every state update fails, and so does every transaction holding one. The
    // submit below holds none, so it is stored.
    store::testing::fail_job_updates(&db, true).unwrap();
    let jobs: Vec<_> = (0..20)
        .map(|i| echo(&format!(r#"{{"i":{i}}}"#), 0))
        .collect();
    let ids = cluster.host.submit(jobs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.host.stats().await.unwrap().completed < 20 {
        assert!(Instant::now() < deadline, "the jobs did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // They ran, but the store could not record it, and takes no new job meanwhile.
    assert!(
        ids.iter()
            .all(|id| stored(&cluster.host, *id).status == JobStatus::Pending)
    );
    let refused = cluster.host.submit(vec![echo("{}", 0)]).await;
    assert!(
        matches!(
            refused,
            Err(HostError::Store(store::StoreError::RolledBack(_)))
        ),
        "{refused:?}"
    );

    // Once writes pass again, the host's store catches up by itself.
    store::testing::fail_job_updates(&db, false).unwrap();
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(30)).await;
    for (i, state) in states.iter().enumerate() {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(
            state.result.as_ref().unwrap().get(),
            format!(r#"{{"i":{i}}}"#)
        );
    }
    // And a restarted host finds them finished: nothing runs twice.
    let cluster = cluster.restart().await;
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.completed, stats.pending), (20, 0), "{stats:?}");
    cluster.stop().await;
}

/// Writes an executable script `name` into `dir` (made if needed).
fn script(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A daemon executor that passes its first check, dies on its first job, and fails every
/// check after that, so that the runtime gives up on it. Each check adds a line to `checks`
/// beside it.
const BROKEN_DAEMON: &str = include_str!("../../tests/fixtures/broken-daemon.sh");

/// How often a member the dispatcher dropped is taken back in these tests: long enough to
/// see a second drop throttled, short enough to wait out.
const TAKE_BACK_EVERY: dispatcher::Millis = dispatcher::Millis(4_000);

/// A oneshot executor that passes its check and answers every job with `"ran"`.
const ONESHOT: &str = r##"#!/bin/sh
read -r line
case "$line" in
  *'"__check__"'*) echo '{"job_id":"__check__","status":"done","result":{"capacity":2}}' ;;
  *) echo '{"status":"done","result":"ran"}' ;;
esac
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_executor_is_unusable_takes_no_jobs_and_fails_none() {
    let cluster = start_host("unusable").await;
    let dir = cluster.dir.0.join("broken");
    let mut executor =
        ExecutorConfig::new(script(&dir, "broken.sh", BROKEN_DAEMON), BinaryMode::Daemon);
    // Quick restarts, so that it is given up on within a second.
    executor.restart_backoff = Duration::from_millis(20);
    executor.max_restart_backoff = Duration::from_millis(100);
    let checks_to_give_up = 1 + executor.max_failed_restarts as usize;
    let broken = cluster.add_worker_with("broken", executor).await;
    cluster
        .until_worker(&broken, "the worker is verified at first", |w| {
            w.is_some_and(|w| w.verified)
        })
        .await;

    let ids = cluster
        .host
        .submit((0..20).map(|i| echo(&format!("[{i}]"), 0)).collect())
        .await
        .unwrap();
    // It dies on the first job it gets, then fails every check until it is given up on.
    let checks = dir.join("checks");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&checks)
        .unwrap_or_default()
        .lines()
        .count()
        < checks_to_give_up
    {
        assert!(
            Instant::now() < deadline,
            "the executor was not given up on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The worker told the host its executor is down: the jobs wait, rather than come back
    // lost again and again from a worker that stays the least loaded, until the crash limit
    // fails them all.
    cluster
        .until_worker(&broken, "the host counts the worker unverified", |w| {
            w.is_some_and(|w| !w.verified && w.running_jobs == 0)
        })
        .await;
    let stats = cluster.host.stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (20, 0), "{stats:?}");

    // A healthy worker runs them all.
    let healthy = cluster.add_worker("healthy", 2).await;
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(60)).await;
    for state in &states {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(state.worker_id.as_ref(), Some(&healthy), "{state:?}");
        assert!(state.losses <= 1, "{state:?}");
    }
    assert_eq!(cluster.host.stats().await.unwrap().failed, 0);
    let broken = cluster.worker(&broken).await.expect("still a member");
    assert!(!broken.verified, "{broken:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_oneshot_executor_that_cannot_start_gives_its_jobs_back_at_no_cost() {
    let cluster = start_host("oneshot-gone").await;
    let dir = cluster.dir.0.join("oneshot");
    let path = script(&dir, "executor.sh", ONESHOT);
    let mut executor = ExecutorConfig::new(path.clone(), BinaryMode::Oneshot);
    // Checked again quickly, and not given up on while the binary is away.
    executor.restart_backoff = Duration::from_millis(20);
    executor.max_restart_backoff = Duration::from_millis(100);
    executor.max_failed_restarts = u32::MAX;
    let worker = cluster.add_worker_with("oneshot", executor).await;
    cluster
        .until_worker(&worker, "the worker is verified", |w| {
            w.is_some_and(|w| w.verified)
        })
        .await;
    // The binary goes away after its check, as during a redeploy.
    let away = dir.join("executor.sh.away");
    std::fs::rename(&path, &away).unwrap();
    let ids = cluster
        .host
        .submit((0..6).map(|i| echo(&format!("[{i}]"), 0)).collect())
        .await
        .unwrap();
    cluster
        .until_worker(&worker, "the host counts the worker unverified", |w| {
            w.is_some_and(|w| !w.verified && w.running_jobs == 0)
        })
        .await;
    // The jobs it could not start came back not started, which spends neither a retry nor a
    // loss (the crash limit is for jobs that kill their executor).
    cluster.host.flush().await.unwrap();
    let mut tried = 0;
    for id in &ids {
        let state = stored(&cluster.host, *id);
        assert_eq!(state.status, JobStatus::Pending, "{state:?}");
        assert_eq!((state.retries, state.losses), (0, 0), "{state:?}");
        tried += state
            .attempts
            .iter()
            .filter(|a| a.outcome == Some(proto::cluster::AttemptOutcome::Lost))
            .count();
    }
    assert!(tried > 0, "no job was tried");
    assert_eq!(cluster.host.stats().await.unwrap().failed, 0);

    // Back in place, the binary passes its next check, and the worker takes jobs again.
    std::fs::rename(&away, &path).unwrap();
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(30)).await;
    for state in &states {
        assert_eq!(state.status, JobStatus::Completed, "{state:?}");
        assert_eq!(state.result.as_ref().unwrap().get(), r#""ran""#);
        assert_eq!((state.retries, state.losses), (0, 0), "{state:?}");
    }
    cluster.stop().await;
}

/// The next message from the host to a peer the test plays, batches opened.
async fn next_messages(at_peer: &mut mpsc::Receiver<Incoming>) -> Vec<ClusterMessage> {
    let message = tokio::time::timeout(Duration::from_secs(10), at_peer.recv())
        .await
        .expect("the host sends the peer a message")
        .unwrap();
    let mut messages = Vec::new();
    flatten(
        ClusterMessage::decode(&message.msg_type, &message.payload).unwrap(),
        &mut messages,
    );
    messages
}

/// Waits for the host to ask a peer the test plays to verify.
async fn asked_to_verify(at_peer: &mut mpsc::Receiver<Incoming>) {
    let messages = next_messages(at_peer).await;
    assert!(
        matches!(messages[..], [ClusterMessage::WorkerVerify(_)]),
        "{messages:?}"
    );
}

/// Waits for the host to assign `job` to a peer the test plays; returns the attempt.
async fn assigned(at_peer: &mut mpsc::Receiver<Incoming>, job: JobId) -> Attempt {
    loop {
        for message in next_messages(at_peer).await {
            if let ClusterMessage::JobAssign(assign) = message
                && assign.job_id == job
            {
                return assign.attempt;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_dispatcher_dropped_is_registered_again_when_heard_from() {
    // A lease shorter than the group layer's member timeout: the dispatcher drops a silent
    // worker that the group still counts, so no join will bring it back.
    let config = dispatcher::Config {
        lease: Some(dispatcher::Millis(1_000)),
        ..dispatcher::Config::default()
    };
    let cluster = start_in(fresh_dir("take-back"), Limits::default(), config).await;
    let peer: PeerId = "12D3KooWdropped".parse().unwrap();
    let mut at_peer = cluster.fake_peer(&peer);
    cluster.joined(&peer).await;
    asked_to_verify(&mut at_peer).await;
    cluster.verified_by(&peer).await;
    cluster
        .until_worker(&peer, "the worker is verified", |w| {
            w.is_some_and(|w| w.verified)
        })
        .await;
    cluster
        .until_worker(&peer, "its lease expires", |w| w.is_none())
        .await;

    // Its next heartbeat, refused before, registers it again and asks it to verify.
    let heartbeat = || {
        ClusterMessage::WorkerHeartbeat(proto::cluster::WorkerHeartbeat {
            running: Vec::new(),
        })
    };
    cluster.send_as(&peer, heartbeat()).await;
    asked_to_verify(&mut at_peer).await;
    cluster
        .until_worker(&peer, "the worker is registered again", |w| {
            w.is_some_and(|w| !w.verified)
        })
        .await;

    // Dropped again before it answered: its heartbeats do not ask it again at once.
    cluster
        .until_worker(&peer, "its lease expires again", |w| w.is_none())
        .await;
    cluster.send_as(&peer, heartbeat()).await;
    let asked = tokio::time::timeout(Duration::from_millis(500), at_peer.recv()).await;
    assert!(asked.is_err(), "asked again at once: {asked:?}");

    // Nor does its verification: a worker whose sends keep failing would otherwise be taken
    // back, given jobs and dropped again at the speed of a round trip. It is kept for later.
    cluster.verified_by(&peer).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster.worker(&peer).await.is_none(), "taken back at once");
    // Past the interval, its next message takes it back, with the verification it sent: it
    // is a worker again without being asked, and gets jobs.
    tokio::time::sleep(Duration::from_millis(TAKE_BACK_EVERY.0)).await;
    cluster.send_as(&peer, heartbeat()).await;
    cluster
        .until_worker(&peer, "the worker is verified again", |w| {
            w.is_some_and(|w| w.verified)
        })
        .await;
    cluster.send_as(&peer, heartbeat()).await;
    let id = cluster.host.submit(vec![echo("[1]", 0)]).await.unwrap()[0];
    assert_eq!(assigned(&mut at_peer, id).await, Attempt(1));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_back_in_the_queue_starts_again_from_no_progress() {
    let cluster = start_host("progress").await;
    let peer: PeerId = "12D3KooWprogress".parse().unwrap();
    let mut at_peer = cluster.fake_peer(&peer);
    cluster.joined(&peer).await;
    cluster.verified_by(&peer).await;
    let id = cluster.host.submit(vec![echo("[1]", 0)]).await.unwrap()[0];
    let progress = async |attempt: Attempt, percent: f64| {
        cluster
            .send_as(
                &peer,
                ClusterMessage::JobProgress(proto::cluster::JobProgress {
                    job_id: id,
                    attempt,
                    percent,
                    message: format!("at {percent}"),
                }),
            )
            .await;
    };
    let result = async |attempt: Attempt, status: proto::cluster::ResultStatus| {
        cluster
            .send_as(
                &peer,
                ClusterMessage::JobResult(proto::cluster::JobResult {
                    job_id: id,
                    attempt,
                    status,
                    result: Some(RawValue::from_string("1".into()).unwrap().into()),
                    error: Some("went wrong".into()),
                    elapsed_ms: None,
                }),
            )
            .await;
    };
    // What the job detail shows: the store, once the host wrote what it holds.
    let shown = async || {
        cluster.host.flush().await.unwrap();
        let state = stored(&cluster.host, id);
        (state.status, state.progress, state.progress_msg)
    };
    let until_shown = async |status: JobStatus| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = shown().await;
            if now.0 == status {
                return now;
            }
            assert!(Instant::now() < deadline, "{now:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let first = assigned(&mut at_peer, id).await;
    progress(first, 40.0).await;
    let at = until_shown(JobStatus::Running).await;
    assert_eq!((at.1, at.2.as_deref()), (40.0, Some("at 40")));
    // Its worker loses it: back in the queue (and out again at once, to the same worker),
    // with no progress.
    result(first, proto::cluster::ResultStatus::Lost).await;
    let second = assigned(&mut at_peer, id).await;
    assert_eq!(shown().await, (JobStatus::Assigned, 0.0, None));
    progress(second, 70.0).await;
    let at = until_shown(JobStatus::Running).await;
    assert_eq!(at.1, 70.0);
    // It fails for good, keeping the progress it reached; a user retry starts it afresh.
    result(second, proto::cluster::ResultStatus::Failed).await;
    assert_eq!(
        until_shown(JobStatus::Failed).await,
        (JobStatus::Failed, 70.0, Some("at 70".into()))
    );
    cluster.host.retry(id).await.unwrap();
    let third = assigned(&mut at_peer, id).await;
    assert_eq!(shown().await, (JobStatus::Assigned, 0.0, None));
    progress(third, 10.0).await;
    result(third, proto::cluster::ResultStatus::Completed).await;
    assert_eq!(
        until_shown(JobStatus::Completed).await,
        (JobStatus::Completed, 100.0, None)
    );
    cluster.stop().await;
}

/// A oneshot executor that writes each job's line to `ran` beside it, then answers `"ran"`.
const RECORDING: &str = r##"#!/bin/sh
read -r line
case "$line" in
  *'"__check__"'*) echo '{"job_id":"__check__","status":"done","result":{"capacity":2}}' ;;
  *) echo "$line" >> "$(dirname "$0")/ran"; echo '{"status":"done","result":"ran"}' ;;
esac
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_only_the_jobs_its_host_assigns() {
    let cluster = start_host("impostor").await;
    let dir = cluster.dir.0.join("recording");
    let executor = ExecutorConfig::new(script(&dir, "executor.sh", RECORDING), BinaryMode::Oneshot);
    let worker = cluster.add_worker_with("recording", executor).await;
    cluster
        .until_worker(&worker, "the worker is verified", |w| {
            w.is_some_and(|w| w.verified)
        })
        .await;
    // Another member of the group sends the worker a job of its own.
    let forged: JobId = "00000000000000ff".parse().unwrap();
    let assign = ClusterMessage::JobAssign(JobAssign {
        job_id: forged,
        job_type: "echo".into(),
        payload: None,
        timeout_s: 0,
        attempt: Attempt(1),
        mode: JobMode::Oneshot,
        priority: 0,
    });
    let worker_route = cluster.routes.lock().unwrap()[&worker].clone();
    worker_route
        .send(Incoming {
            from: "12D3KooWimpostor".parse().unwrap(),
            msg_type: assign.msg_type().to_owned(),
            payload: assign.encode_payload().get().to_owned(),
        })
        .await
        .unwrap();
    // The host's job, sent after it, runs; by then the forged one was looked at and dropped.
    let ids = cluster.host.submit(vec![echo("[1]", 0)]).await.unwrap();
    let states = wait_all(&cluster.host, &ids, Duration::from_secs(20)).await;
    assert_eq!(states[0].status, JobStatus::Completed, "{:?}", states[0]);
    let ran = std::fs::read_to_string(dir.join("ran")).unwrap();
    assert_eq!(ran.lines().count(), 1, "{ran}");
    assert!(ran.contains(&ids[0].to_string()), "{ran}");
    assert!(!ran.contains(&forged.to_string()), "{ran}");
    cluster.stop().await;
}
