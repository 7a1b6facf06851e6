//! The cluster host: one actor that owns the dispatcher, feeds it requests from the HTTP API,
//! reports from workers and membership changes, and carries out what it decides.
//!
//! A submit is answered only after the job store committed it, and only then does the
//! dispatcher see the job, so a job a client was told about is never lost and a job the store
//! refused never runs. Messages to a worker go through that worker's outbox task, which sends
//! whatever queued up while the previous send was in flight as one `batch` message: light load
//! gets one message per job, heavy load gets large batches, and no timer is involved.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dispatcher::{
    AttemptEnd, Dispatcher, Input, LeaveReason, Millis, NewJob, Output, Report, RestoredJob,
    RetryJob, StepError,
};
use proto::api::{
    ClusterEvent, JobEvent, LogEvent, OutputEvent, ProgressEvent, SubmitJob, WorkerEvent,
};
use proto::cluster::{
    AttemptOutcome, AttemptRecord, ClusterMessage, JobAssign, JobRef, Json, QueueStats,
    ResultStatus, Sender, WorkerAction, WorkerInfo, WorkerStatus, WorkerVerified,
};
use proto::{Attempt, GroupId, IdMap, JobId, JobStatus, PeerId};
use store::{JobStore, NewJob as StoredNew, StateRow, StoreError, Submitted, Write};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::counters::Counters;
use super::ids::IdMaker;
use super::outbox::{self, OnFailure};
use super::time::{millis, now, stamp};
use super::{Incoming, Link};

/// How long the state of a job that was assigned or started is held back from the store. Most
/// jobs of a busy cluster finish sooner, and their final state then replaces it, which spares the
/// store one or two row updates per job (its busiest work). A list read from the store may show
/// such a job one status behind for this long. Nothing a restart needs is held: a restarted host
/// puts in-flight jobs back to pending whatever their stored status, skips the attempt number a
/// held assignment may have used (and stores the skip before it hands out another), and changes
/// that count retries or losses are never held.
const HOLD: Duration = Duration::from_millis(50);

/// The most peers whose verification may wait for their join.
const MAX_EARLY: usize = 1024;

/// The least time between two registrations of a member the dispatcher dropped (the default
/// of [`HostConfig::take_back_every`]): a worker that keeps being dropped (it cannot be
/// reached) is not registered again on every message.
pub(crate) const TAKE_BACK_EVERY: Millis = Millis(10_000);

/// Limits on what a submit may carry, beyond what the dispatcher checks.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// The largest payload, in bytes of JSON text.
    pub max_payload_bytes: usize,
    /// The most payload bytes the host keeps in memory for live jobs (they stay in the
    /// dispatcher until the job ends); submits beyond it are refused with `queue_full`.
    pub max_live_payload_bytes: usize,
    /// The most labels per job.
    pub max_labels: usize,
    /// The longest label or idempotency key.
    pub max_text_len: usize,
    /// The most `after` entries per job.
    pub max_after: usize,
    /// The most messages an outbox holds before the host waits for it.
    pub outbox: usize,
    /// How long finished jobs stay in the store after they were submitted and finished;
    /// `None` keeps them for ever. See [`Host::prune`].
    pub keep_finished: Option<Duration>,
    /// The most finished jobs the store keeps, whatever their age; past it the oldest go.
    pub keep_finished_jobs: Option<usize>,
}

/// How long finished jobs stay in the store by default: a week.
pub(crate) const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most finished jobs the store keeps by default: about 20 GB of database for small jobs
/// (a no-op job takes ~200 bytes).
pub(crate) const KEEP_FINISHED_JOBS: usize = 100_000_000;

/// The oldest jobs of each finished status one prune looks at: one prune holds the store's
/// writer for some tens of milliseconds at most.
const PRUNE_WINDOW: usize = 10_000;

/// How often the host looks for finished jobs past their keep time, when the last look found
/// fewer than a window of them (a quarter of the keep time when that is shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The pause between two prunes while there is more to delete, so that other writes go in
/// between.
const PRUNE_AGAIN: Duration = Duration::from_millis(50);

impl Default for Limits {
    fn default() -> Self {
        Self {
            // An assign carries the payload in one MQ message, which holds 16 MiB by default.
            max_payload_bytes: proto::DEFAULT_MAX_FRAME_BYTES - 64 * 1024,
            max_live_payload_bytes: 1024 * 1024 * 1024,
            max_labels: 32,
            max_text_len: 256,
            max_after: 1000,
            outbox: 65_536,
            keep_finished: Some(KEEP_FINISHED),
            keep_finished_jobs: Some(KEEP_FINISHED_JOBS),
        }
    }
}

/// The host's settings.
#[derive(Clone, Debug)]
pub(crate) struct HostConfig {
    /// The cluster's group.
    pub group: GroupId,
    /// Scheduling settings.
    pub dispatcher: dispatcher::Config,
    /// Seed of the dispatcher's jitter.
    pub seed: u64,
    /// Submit limits.
    pub limits: Limits,
    /// The least time between two registrations of a member the dispatcher dropped.
    pub take_back_every: Millis,
}

/// Why a host request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// The dispatcher refused it (404 for an unknown job, 409 otherwise).
    #[error(transparent)]
    Refused(#[from] StepError),
    /// The job store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host has no room for it now (503).
    #[error("{0}")]
    Busy(String),
    /// The host is shutting down (503).
    #[error("the cluster host has stopped")]
    Stopped,
}

/// A peer joined or left the cluster group.
#[derive(Debug)]
pub(crate) enum MemberEvent {
    /// It joined (or came back).
    Joined(PeerId),
    /// It left, was kicked, or vanished.
    Left(PeerId, LeaveReason),
}

/// What the dispatcher carries through for the shell without looking inside.
#[derive(Clone, Debug)]
pub(crate) enum Carried {
    /// A result or a piece of output.
    Json(Option<Json>),
    /// A progress report.
    Progress { percent: f64, message: String },
}

type Payload = Option<Json>;

enum Request {
    Submit {
        jobs: Vec<SubmitJob>,
        reply: oneshot::Sender<Result<Vec<JobId>, HostError>>,
    },
    Cancel {
        id: JobId,
        reply: oneshot::Sender<Result<(), HostError>>,
    },
    Retry {
        id: JobId,
        reply: oneshot::Sender<Result<(), HostError>>,
    },
    Delete {
        id: JobId,
        reply: oneshot::Sender<Result<(), HostError>>,
    },
    Clear {
        reply: oneshot::Sender<Result<u64, HostError>>,
    },
    Pause {
        worker: PeerId,
        pause: bool,
        reply: oneshot::Sender<Result<(), HostError>>,
    },
    Workers {
        reply: oneshot::Sender<Vec<WorkerInfo>>,
    },
    Stats {
        reply: oneshot::Sender<QueueStats>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), HostError>>,
    },
}

/// The handle the HTTP layer holds to a running host.
#[derive(Clone)]
pub(crate) struct HostHandle {
    group: GroupId,
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<ClusterEvent>,
    store: Arc<JobStore>,
    counters: Arc<Counters>,
}

impl HostHandle {
    /// The cluster's group id.
    pub(crate) fn group(&self) -> &GroupId {
        &self.group
    }

    /// The job store (for reads).
    pub(crate) fn store(&self) -> &Arc<JobStore> {
        &self.store
    }

    /// What the host did since it started.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Live events of this cluster.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, HostError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| HostError::Stopped)?;
        answer.await.map_err(|_| HostError::Stopped)
    }

    /// Stores and queues jobs, all or none; returns their ids in order once they are durable.
    pub(crate) async fn submit(&self, jobs: Vec<SubmitJob>) -> Result<Vec<JobId>, HostError> {
        self.ask(|reply| Request::Submit { jobs, reply }).await?
    }

    /// Cancels a job; final.
    pub(crate) async fn cancel(&self, id: JobId) -> Result<(), HostError> {
        self.ask(|reply| Request::Cancel { id, reply }).await?
    }

    /// Runs a failed or cancelled job again.
    pub(crate) async fn retry(&self, id: JobId) -> Result<(), HostError> {
        self.ask(|reply| Request::Retry { id, reply }).await?
    }

    /// Deletes a finished job: it leaves the dispatcher and the store.
    pub(crate) async fn delete(&self, id: JobId) -> Result<(), HostError> {
        self.ask(|reply| Request::Delete { id, reply }).await?
    }

    /// Deletes every job of the cluster; refused while any job is live. Returns how many.
    pub(crate) async fn clear(&self) -> Result<u64, HostError> {
        self.ask(|reply| Request::Clear { reply }).await?
    }

    /// Pauses (or resumes) a worker.
    pub(crate) async fn pause(&self, worker: PeerId, pause: bool) -> Result<(), HostError> {
        self.ask(|reply| Request::Pause {
            worker,
            pause,
            reply,
        })
        .await?
    }

    /// The workers as the host sees them.
    pub(crate) async fn workers(&self) -> Result<Vec<WorkerInfo>, HostError> {
        self.ask(|reply| Request::Workers { reply }).await
    }

    /// Queue counters.
    pub(crate) async fn stats(&self) -> Result<QueueStats, HostError> {
        self.ask(|reply| Request::Stats { reply }).await
    }

    /// Returns once every change the host made so far is in the store, held ones included:
    /// a read of the store after it sees the jobs as the host does.
    pub(crate) async fn flush(&self) -> Result<(), HostError> {
        self.ask(|reply| Request::Flush { reply }).await?
    }
}

/// What the host knows of a worker beyond what the dispatcher tracks.
#[derive(Default)]
struct WorkerMeta {
    binary_path: Option<String>,
    binary_mode: Option<String>,
    version: Option<String>,
    last_seen: Millis,
}

/// What a request that read the store does next, in the actor, with what it read.
type AfterRead<L> = Box<dyn FnOnce(&mut Host<L>) + Send>;

/// Everything the host actor reads from.
struct Inbox<L: Link> {
    requests: mpsc::Receiver<Request>,
    incoming: mpsc::Receiver<Incoming>,
    members: mpsc::Receiver<MemberEvent>,
    committed: mpsc::Receiver<Committed>,
    reads: mpsc::Receiver<AfterRead<L>>,
    failures: mpsc::Receiver<(PeerId, String)>,
}

/// A submit whose jobs the store has committed.
struct Committed {
    jobs: Vec<NewJob<Payload>>,
    /// The finished jobs they wait for, told to the dispatcher again just before the jobs
    /// (it may have evicted them since the submit was checked).
    recall: Vec<(JobId, JobStatus)>,
    submitted: Result<Vec<Submitted>, StoreError>,
    reply: oneshot::Sender<Result<Vec<JobId>, HostError>>,
}

enum Event<L: Link> {
    Request(Request),
    Incoming(Incoming),
    Member(MemberEvent),
    Committed(Committed),
    Read(AfterRead<L>),
    SendFailed(PeerId, String),
    Wake,
    ReleaseHeld,
    Prune,
}

/// Starts the host of `config.group`: restores its queue from the store, then runs until
/// `cancel` fires.
pub(crate) async fn spawn<L: Link>(
    config: HostConfig,
    store: Arc<JobStore>,
    link: L,
    incoming: mpsc::Receiver<Incoming>,
    members: mpsc::Receiver<MemberEvent>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<HostHandle, HostError> {
    let mut dispatcher = Dispatcher::new(config.dispatcher.clone(), config.seed);
    let Restored {
        jobs: restored,
        unloaded,
        max_id,
    } = restore(&store, &config.group, config.dispatcher.max_finished).await?;
    let restored_payloads: Vec<(JobId, usize)> = restored
        .iter()
        .filter(|r| !r.status.is_terminal())
        .filter_map(|r| Some((r.job.id, r.job.payload.as_ref()?.get().len())))
        .collect();
    if !restored.is_empty() {
        tracing::info!(group = %config.group, jobs = restored.len(), "restoring the job queue");
        dispatcher.step(now(), Input::Restore(restored))?;
    }
    dispatcher.step(now(), unloaded)?;
    let (requests, requests_rx) = mpsc::channel(1024);
    let (events, _) = broadcast::channel(4096);
    let (committed, committed_rx) = mpsc::channel(1024);
    let (reads, reads_rx) = mpsc::channel(64);
    let (failures, failures_rx) = mpsc::channel(256);
    let counters = Arc::new(Counters::default());
    let handle = HostHandle {
        group: config.group.clone(),
        requests,
        events: events.clone(),
        store: store.clone(),
        counters: counters.clone(),
    };
    let mut host = Host {
        config,
        dispatcher,
        store,
        link,
        events,
        counters,
        outboxes: HashMap::new(),
        meta: HashMap::new(),
        ids: IdMaker::new(max_id),
        wake: None,
        committed,
        reads,
        failures,
        tracker: tracker.clone(),
        cancel: cancel.clone(),
        outputs: Vec::new(),
        pending_writes: Vec::new(),
        held: IdMap::default(),
        release_order: VecDeque::new(),
        release_at: None,
        flush_waiting: Vec::new(),
        early: HashMap::new(),
        members: HashSet::new(),
        taken_back: HashMap::new(),
        payloads: IdMap::default(),
        payload_bytes: 0,
        jobs_in_flight: 0,
        prune_at: None,
        pruning: None,
    };
    // The first look soon after the start, then one every interval.
    host.prune_at = host
        .prune_every()
        .map(|every| tokio::time::Instant::now() + every.min(Duration::from_secs(1)));
    for (id, size) in restored_payloads {
        host.track_payload(id, size);
    }
    // The restored jobs' skipped attempt numbers are stored before any worker is heard: a
    // crash soon after this start must not find the old numbers and hand the same ones out
    // again (the assignments that follow are held back from the store for a moment).
    host.dispatcher.take_outputs(&mut host.outputs);
    host.carry_out().await;
    if let Err(error) = host.store.flush().await {
        tracing::error!(%error, group = %host.config.group, "storing the restored queue failed; a second crash soon could repeat an attempt number");
    }
    let inbox = Inbox {
        requests: requests_rx,
        incoming,
        members,
        committed: committed_rx,
        reads: reads_rx,
        failures: failures_rx,
    };
    tracker.spawn(host.run(inbox));
    Ok(handle)
}

/// The group's jobs for the dispatcher.
async fn restore(
    store: &Arc<JobStore>,
    group: &GroupId,
    max_finished: usize,
) -> Result<Restored, HostError> {
    let reader = store.reader()?;
    let group = group.clone();
    let (finished, stats, active, max_id) = tokio::task::spawn_blocking(move || {
        Ok::<_, StoreError>((
            reader.load_finished(&group, max_finished)?,
            reader.stats(&group)?,
            reader.load_active(&group)?,
            reader.max_id()?,
        ))
    })
    .await
    .map_err(|_| HostError::Stopped)??;
    // The newest finished jobs come back as their status only, so `after` and retries know
    // them; the older ones only as counts, and from the store when named.
    let unloaded = |stored: u64, status: JobStatus| {
        let loaded = finished.iter().filter(|f| f.2 == status).count() as u64;
        usize::try_from(stored.saturating_sub(loaded)).unwrap_or(usize::MAX)
    };
    let unloaded = Input::Unloaded {
        completed: unloaded(stats.completed, JobStatus::Completed),
        failed: unloaded(stats.failed, JobStatus::Failed),
        cancelled: unloaded(stats.cancelled, JobStatus::Cancelled),
    };
    let finished = finished
        .into_iter()
        .map(|(id, job_type, status, created_at)| RestoredJob {
            job: NewJob::new(id, job_type, None),
            status,
            attempt: Attempt(0),
            retries: 0,
            losses: 0,
            error: None,
            created_at: millis(created_at),
            done_at: None,
            history: Vec::new(),
        });
    let active = active.into_iter().map(|row| {
        let state = row.state;
        RestoredJob {
            job: spec_of(state.job),
            status: state.status,
            attempt: state.attempt,
            retries: state.retries,
            losses: state.losses,
            error: state.error,
            created_at: millis(state.created_at),
            done_at: state.done_at.map(millis),
            history: Vec::new(),
        }
    });
    Ok(Restored {
        jobs: finished.chain(active).collect(),
        unloaded,
        max_id,
    })
}

/// What a starting host reads back from its store.
struct Restored {
    /// The live jobs and the newest finished ones.
    jobs: Vec<RestoredJob<Payload>>,
    /// The counts of the finished jobs left out.
    unloaded: Input<Payload, Carried>,
    /// The greatest id of the store (of every group), above which new ids are made.
    max_id: Option<JobId>,
}

/// The dispatcher's view of a stored job.
fn spec_of(job: proto::cluster::Job) -> NewJob<Payload> {
    NewJob {
        id: job.id,
        job_type: job.job_type,
        mode: job.mode,
        payload: job.payload,
        priority: job.priority,
        timeout_s: u32::try_from(job.timeout_s).unwrap_or(u32::MAX),
        max_retry: job.max_retry,
        labels: job.labels,
        not_before: job.not_before.map(millis),
        after: job.after,
    }
}

struct Host<L: Link> {
    config: HostConfig,
    dispatcher: Dispatcher<Payload, Carried>,
    store: Arc<JobStore>,
    link: L,
    events: broadcast::Sender<ClusterEvent>,
    counters: Arc<Counters>,
    outboxes: HashMap<PeerId, mpsc::Sender<ClusterMessage>>,
    meta: HashMap<PeerId, WorkerMeta>,
    ids: IdMaker,
    wake: Option<Millis>,
    committed: mpsc::Sender<Committed>,
    reads: mpsc::Sender<AfterRead<L>>,
    failures: mpsc::Sender<(PeerId, String)>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    outputs: Vec<Output<Payload, Carried>>,
    /// Store writes produced while handling one event, written before the next.
    pending_writes: Vec<Write>,
    /// Assigned and running states not yet sent to the store (see [`HOLD`]).
    held: IdMap<JobId, StateRow>,
    /// When each job's held state goes to the store, in that order; an entry whose job is no
    /// longer held is skipped.
    release_order: VecDeque<(tokio::time::Instant, JobId)>,
    /// When the first entry of `release_order` is due.
    release_at: Option<tokio::time::Instant>,
    /// Flush requests to answer once the held states are written.
    flush_waiting: Vec<oneshot::Sender<Result<(), HostError>>>,
    /// Verifications from peers whose join has not arrived yet (at most [`MAX_EARLY`]).
    early: HashMap<PeerId, WorkerVerified>,
    /// The group's members other than the host, as the group layer reported them. The
    /// dispatcher may drop a worker the group still counts (a failed send, a full outbox, an
    /// expired lease); such a worker is registered again when it is next heard from.
    members: HashSet<PeerId>,
    /// When each member was last registered again that way (at most once per
    /// [`HostConfig::take_back_every`]); until it leaves.
    taken_back: HashMap<PeerId, Millis>,
    /// The payload size of each live job that has one.
    payloads: IdMap<JobId, usize>,
    /// Their sum, plus the payloads of submits waiting for the store.
    payload_bytes: usize,
    /// Jobs of submits waiting for the store, counted against `max_live_jobs` with the live
    /// ones: a submit the dispatcher would refuse is refused before anything is stored.
    jobs_in_flight: usize,
    /// When the next prune is queued; `None` while one is being carried out, or when finished
    /// jobs are kept for ever.
    prune_at: Option<tokio::time::Instant>,
    /// What happened while a prune was being carried out that its outcome must leave alone.
    pruning: Option<PruneWatch>,
}

/// The jobs a prune must not forget a second time: deleted by the user, or all of them
/// cleared, while it was being carried out.
#[derive(Default)]
struct PruneWatch {
    deleted: Vec<JobId>,
    cleared: bool,
}

impl<L: Link> Host<L> {
    async fn run(mut self, mut inbox: Inbox<L>) {
        // `spawn` carried out what the restore produced: nothing is pending here.
        tracing::info!(group = %self.config.group, "cluster host running");
        loop {
            self.prune_if_over();
            let sleep = match self.wake {
                Some(at) => Duration::from_millis(at.0.saturating_sub(now().0)),
                None => Duration::from_secs(3600),
            };
            let release_at = self.release_at;
            let prune_at = self.prune_at;
            let event = tokio::select! {
                () = self.cancel.cancelled() => break,
                () = sleep_until_some(release_at) => Event::ReleaseHeld,
                () = sleep_until_some(prune_at) => Event::Prune,
                Some(request) = inbox.requests.recv() => Event::Request(request),
                Some(message) = inbox.incoming.recv() => Event::Incoming(message),
                Some(member) = inbox.members.recv() => Event::Member(member),
                Some(done) = inbox.committed.recv() => Event::Committed(done),
                Some(then) = inbox.reads.recv() => Event::Read(then),
                Some((worker, error)) = inbox.failures.recv() => Event::SendFailed(worker, error),
                () = tokio::time::sleep(sleep) => Event::Wake,
            };
            match event {
                Event::ReleaseHeld => {
                    self.release_held(tokio::time::Instant::now()).await;
                    continue;
                }
                Event::Prune => {
                    self.prune().await;
                    continue;
                }
                event => {
                    self.handle(event);
                    self.carry_out().await;
                }
            }
        }
        self.release_held(tokio::time::Instant::now() + HOLD).await;
        tracing::info!(group = %self.config.group, "cluster host stopped");
    }

    fn step(&mut self, input: Input<Payload, Carried>) -> Result<(), StepError> {
        let result = self.dispatcher.step(now(), input);
        self.dispatcher.take_outputs(&mut self.outputs);
        result
    }

    fn handle(&mut self, event: Event<L>) {
        match event {
            Event::Request(request) => self.request(request),
            Event::Incoming(message) => self.incoming(message),
            Event::Member(MemberEvent::Joined(peer)) => {
                self.members.insert(peer.clone());
                self.worker_joined(peer, true);
            }
            Event::Member(MemberEvent::Left(peer, reason)) => {
                self.members.remove(&peer);
                self.taken_back.remove(&peer);
                self.worker_gone(peer, reason);
            }
            Event::Committed(done) => self.committed(done),
            Event::Read(then) => then(self),
            Event::SendFailed(worker, error) => {
                tracing::warn!(%worker, %error, "cannot reach worker; its attempts go back to the queue");
                self.worker_gone(worker, LeaveReason::Disconnected);
            }
            Event::Wake => {
                self.wake = None;
                log_refusal(self.step(Input::Tick));
            }
            // Carried out by `run`: writing to the store waits, and this does not.
            Event::ReleaseHeld | Event::Prune => {}
        }
    }

    /// Registers `peer` as a worker and, unless `ask` is false (its verification is the message
    /// being handled), asks it to verify when it is not verified yet.
    fn worker_joined(&mut self, peer: PeerId, ask: bool) {
        tracing::info!(worker = %peer, "worker joined");
        self.meta.entry(peer.clone()).or_default().last_seen = now();
        log_refusal(self.step(Input::WorkerJoined(peer.clone())));
        // A verification that came before the join counts now.
        if let Some(verified) = self.early.remove(&peer) {
            self.message(&peer, ClusterMessage::WorkerVerified(verified));
        }
        // Still unverified (a join taken for a restart undoes the verification, and the worker's
        // own may have come just before it): ask for one, so the order of the two never
        // leaves a worker idle.
        let verified = self
            .dispatcher
            .workers()
            .iter()
            .any(|w| *w.peer == peer && w.verified);
        if ask && !verified {
            self.send(
                &peer,
                ClusterMessage::WorkerVerify(WorkerAction {
                    action: "verify".into(),
                }),
            );
        }
    }

    fn worker_gone(&mut self, worker: PeerId, reason: LeaveReason) {
        tracing::info!(%worker, reason = reason.as_str(), "worker gone");
        // Announced while the dispatcher still knows it.
        let info = self
            .meta
            .get(&worker)
            .and_then(|meta| self.worker_info(&worker, meta));
        log_refusal(self.step(Input::WorkerLeft {
            worker: worker.clone(),
            reason,
        }));
        self.forget_worker(&worker, info);
    }

    /// Drops what the host keeps of a worker the dispatcher no longer knows, so that `meta`
    /// holds exactly the workers it knows, and announces that it left (`info`, taken while
    /// the dispatcher still knew it).
    fn forget_worker(&mut self, worker: &PeerId, info: Option<WorkerInfo>) {
        self.early.remove(worker);
        self.outboxes.remove(worker);
        if self.meta.remove(worker).is_some()
            && let Some(info) = info
        {
            let _ = self.events.send(ClusterEvent::Worker(WorkerEvent {
                worker: info,
                left: true,
            }));
        }
    }

    /// A member the dispatcher dropped (it is not in `meta`) was heard from: it is registered
    /// again, as on a join, at most once per [`HostConfig::take_back_every`], whatever it sent: a worker
    /// that keeps being dropped (its sends fail) must not be taken back, given jobs and dropped
    /// again at the speed of a round trip. It is asked to verify unless its message is the
    /// verification (`verifies`); one that comes while taking back waits in `early` for the
    /// next time.
    fn take_back(&mut self, peer: &PeerId, verifies: bool) {
        let now = now();
        if let Some(&at) = self.taken_back.get(peer)
            && now.0.saturating_sub(at.0) < self.config.take_back_every.0
        {
            return;
        }
        tracing::info!(worker = %peer, "heard from a member that is not a worker; registering it again");
        self.taken_back.insert(peer.clone(), now);
        self.worker_joined(peer.clone(), !verifies);
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Submit { jobs, reply } => self.submit(jobs, reply, None),
            Request::Cancel { id, reply } => self.cancel(id, reply),
            Request::Retry { id, reply } => self.retry(id, reply),
            Request::Delete { id, reply } => self.delete(id, reply, true),
            Request::Clear { reply } => self.clear(reply),
            Request::Flush { reply } => self.flush_waiting.push(reply),
            Request::Pause {
                worker,
                pause,
                reply,
            } => {
                let input = if pause {
                    Input::Pause(worker.clone())
                } else {
                    Input::Resume(worker.clone())
                };
                let result = self.step(input).map_err(HostError::from);
                if result.is_ok() {
                    let action = WorkerAction {
                        action: if pause { "pause" } else { "resume" }.into(),
                    };
                    let message = if pause {
                        ClusterMessage::WorkerPause(action)
                    } else {
                        ClusterMessage::WorkerResume(action)
                    };
                    self.send(&worker, message);
                }
                let _ = reply.send(result);
            }
            Request::Workers { reply } => {
                let peers: Vec<PeerId> = self.meta.keys().cloned().collect();
                let workers = peers
                    .iter()
                    .filter_map(|p| self.worker_info(p, &self.meta[p]))
                    .collect();
                let _ = reply.send(workers);
            }
            Request::Stats { reply } => {
                let stats = self.dispatcher.stats();
                let _ = reply.send(QueueStats {
                    pending: (stats.pending + stats.assigned) as u64,
                    running: stats.running as u64,
                    completed: stats.completed as u64,
                    failed: stats.failed as u64,
                    workers: stats.workers as u64,
                    assigned: stats.assigned as u64,
                    cancelled: stats.cancelled as u64,
                });
            }
        }
    }

    fn worker_info(&self, peer: &PeerId, meta: &WorkerMeta) -> Option<WorkerInfo> {
        let workers = self.dispatcher.workers();
        let view = workers.iter().find(|w| w.peer == peer)?;
        let status = if view.paused {
            WorkerStatus::Paused
        } else if !view.verified {
            WorkerStatus::Joined
        } else if view.running > 0 {
            WorkerStatus::Busy
        } else {
            WorkerStatus::Idle
        };
        Some(WorkerInfo {
            peer_id: peer.clone(),
            status,
            binary_path: meta.binary_path.clone(),
            binary_mode: meta.binary_mode.clone(),
            verified: view.verified,
            job_types: view
                .types
                .as_ref()
                .map(|t| t.iter().map(|s| (*s).to_owned()).collect())
                .unwrap_or_default(),
            capacity: view.capacity,
            running_jobs: view.running,
            last_seen: stamp(meta.last_seen),
            version: meta.version.clone(),
        })
    }

    fn validate(&self, job: &SubmitJob) -> Result<(), String> {
        let limits = &self.config.limits;
        if job.job_type.trim().is_empty() {
            return Err("missing job type".into());
        }
        let max_type_len = self.config.dispatcher.max_type_len;
        if job.job_type.len() > max_type_len {
            return Err(format!(
                "job type of {} bytes is over the limit of {max_type_len} bytes",
                job.job_type.len()
            ));
        }
        if let Some(payload) = &job.payload
            && payload.get().len() > limits.max_payload_bytes
        {
            return Err(format!(
                "payload of {} bytes is over the limit of {} bytes",
                payload.get().len(),
                limits.max_payload_bytes
            ));
        }
        if job.labels.len() > limits.max_labels {
            return Err(format!(
                "{} labels is over the limit of {}",
                job.labels.len(),
                limits.max_labels
            ));
        }
        if job
            .labels
            .iter()
            .chain(&job.idempotency_key)
            .any(|t| t.is_empty() || t.len() > limits.max_text_len)
        {
            return Err(format!(
                "labels and idempotency keys must be 1 to {} bytes",
                limits.max_text_len
            ));
        }
        if job.after.len() > limits.max_after {
            return Err(format!(
                "{} dependencies is over the limit of {}",
                job.after.len(),
                limits.max_after
            ));
        }
        if job.timeout_s > u64::from(u32::MAX) {
            return Err(format!("timeout_s {} is too large", job.timeout_s));
        }
        Ok(())
    }

    /// A submit; `stored` holds the statuses the store gave for jobs named in `after` that
    /// the dispatcher did not know, once they were looked up.
    fn submit(
        &mut self,
        jobs: Vec<SubmitJob>,
        reply: oneshot::Sender<Result<Vec<JobId>, HostError>>,
        stored: Option<Vec<(JobId, JobStatus)>>,
    ) {
        if jobs.is_empty() {
            let _ = reply.send(Err(HostError::Invalid("no jobs to submit".into())));
            return;
        }
        for (index, job) in jobs.iter().enumerate() {
            if let Err(message) = self.validate(job) {
                let message = if jobs.len() > 1 {
                    format!("job {index}: {message}")
                } else {
                    message
                };
                let _ = reply.send(Err(HostError::Invalid(message)));
                return;
            }
        }
        let bytes: usize = jobs.iter().map(|j| payload_size(&j.payload)).sum();
        let limit = self.config.limits.max_live_payload_bytes;
        if bytes > 0 && self.payload_bytes + bytes > limit {
            let _ = reply.send(Err(HostError::Busy(format!(
                "queue full: live jobs hold {} bytes of payload and these {bytes} more would \
                 pass the limit of {limit}; submit again once some have finished",
                self.payload_bytes
            ))));
            return;
        }
        let live = self.dispatcher.live_jobs() + self.jobs_in_flight;
        let max = self.config.dispatcher.max_live_jobs;
        if live.saturating_add(jobs.len()) > max {
            let _ = reply.send(Err(StepError::QueueFull { live, max }.into()));
            return;
        }
        // Dependencies are checked before anything is stored: each must be known to the
        // dispatcher, come earlier in the same batch, or be a finished job of the store (one
        // the dispatcher evicted).
        let created_at = now();
        let mut seen = std::collections::HashSet::new();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut recall = Vec::new();
        let mut unknown: Vec<(JobId, JobId)> = Vec::new();
        for job in &jobs {
            let id = self.ids.next(created_at);
            for &dep in &job.after {
                if seen.contains(&dep) {
                    continue;
                }
                // Only a finished job can be unknown to the dispatcher and still count.
                let status = self.dispatcher.status(dep).or_else(|| {
                    let stored = stored.as_deref()?;
                    let found = stored.iter().find(|(id, _)| *id == dep)?;
                    Some(found.1).filter(|s| s.is_terminal())
                });
                match status {
                    Some(status) if status.is_terminal() => recall.push((dep, status)),
                    Some(_) => {}
                    None => unknown.push((id, dep)),
                }
            }
            seen.insert(id);
            ids.push(id);
        }
        if let Some(&(job, dependency)) = unknown.first() {
            if stored.is_some() {
                let _ = reply.send(Err(StepError::UnknownDependency { job, dependency }.into()));
                return;
            }
            let named: Vec<JobId> = unknown.iter().map(|&(_, dep)| dep).collect();
            self.read_store(
                move |reader| reader.statuses(&named),
                move |host, found| match found {
                    Ok(found) => host.submit(jobs, reply, Some(found)),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
            );
            return;
        }
        let mut for_store = Vec::with_capacity(jobs.len());
        let mut for_dispatcher = Vec::with_capacity(jobs.len());
        for (job, id) in jobs.into_iter().zip(ids) {
            let wire = proto::cluster::Job {
                id,
                job_type: job.job_type,
                mode: job.mode,
                payload: job.payload,
                priority: job.priority,
                timeout_s: job.timeout_s,
                max_retry: job.max_retry,
                labels: job.labels,
                not_before: job.not_before,
                after: job.after,
            };
            for_dispatcher.push(spec_of(wire.clone()));
            for_store.push(StoredNew {
                group: self.config.group.clone(),
                job: wire,
                created_at: stamp(created_at),
                idempotency_key: job.idempotency_key,
            });
        }
        // Reserved until the store answers, so that submits in flight count too.
        self.payload_bytes += bytes;
        self.jobs_in_flight += for_dispatcher.len();
        let store = self.store.clone();
        let committed = self.committed.clone();
        self.tracker.spawn(async move {
            let submitted = store.submit(for_store).await;
            let _ = committed
                .send(Committed {
                    jobs: for_dispatcher,
                    recall,
                    submitted,
                    reply,
                })
                .await;
        });
    }

    fn committed(&mut self, done: Committed) {
        let reserved: usize = done.jobs.iter().map(|j| payload_size(&j.payload)).sum();
        self.payload_bytes -= reserved;
        self.jobs_in_flight -= done.jobs.len();
        let submitted = match done.submitted {
            Ok(submitted) => submitted,
            Err(error) => {
                let _ = done.reply.send(Err(error.into()));
                return;
            }
        };
        let ids: Vec<JobId> = submitted.iter().map(|s| s.id()).collect();
        // Jobs the store already had (a repeated idempotency key) are not queued again.
        let fresh: Vec<NewJob<Payload>> = done
            .jobs
            .into_iter()
            .zip(&submitted)
            .filter(|(_, s)| matches!(s, Submitted::Created(_)))
            .map(|(job, _)| job)
            .collect();
        if fresh.is_empty() {
            let _ = done.reply.send(Ok(ids));
            return;
        }
        let count = fresh.len();
        let sizes: Vec<(JobId, usize)> = fresh
            .iter()
            .map(|j| (j.id, payload_size(&j.payload)))
            .collect();
        self.recall(done.recall);
        let result = self.step(Input::SubmitBatch(fresh));
        match result {
            Ok(()) => {
                self.counters.submitted(count);
                // The dispatcher does not announce a submit (the store row already says
                // pending): followers of the stream hear of it here, before any later change.
                let follow = self.events.receiver_count() > 0;
                for (id, size) in sizes {
                    self.track_payload(id, size);
                    if follow {
                        let _ = self.events.send(ClusterEvent::Job(JobEvent {
                            job_id: id,
                            status: JobStatus::Pending,
                            attempt: Attempt(0),
                            worker_id: None,
                            retries: 0,
                            error: None,
                            latency_ms: None,
                        }));
                    }
                }
                tracing::debug!(jobs = count, "jobs queued");
                let _ = done.reply.send(Ok(ids));
            }
            Err(error) => {
                // Stored but refused: mark them failed so the store does not keep them pending.
                tracing::warn!(%error, "stored jobs refused by the dispatcher; marking them failed");
                let at = stamp(now());
                let mut failed = 0;
                for submitted in &submitted {
                    if let Submitted::Created(id) = submitted {
                        failed += 1;
                        let row = StateRow {
                            id: *id,
                            status: JobStatus::Failed,
                            worker_id: None,
                            attempt: Attempt(0),
                            retries: 0,
                            losses: 0,
                            result: None,
                            error: Some(format!("refused: {error}")),
                            progress: None,
                            started_at: None,
                            done_at: Some(at),
                            elapsed_ms: None,
                        };
                        self.pending_writes.push(Write::State(Box::new(row)));
                    }
                }
                // Counted like the store's other finished jobs, and found there when named.
                log_refusal(self.step(Input::Unloaded {
                    completed: 0,
                    failed,
                    cancelled: 0,
                }));
                let _ = done.reply.send(Err(error.into()));
            }
        }
    }

    /// Deletes every job, which only a cluster with no live job allows (Goop² removed running
    /// jobs too, and their workers were never told). The count comes from the store.
    fn clear(&mut self, reply: oneshot::Sender<Result<u64, HostError>>) {
        if let Err(error) = self.no_live_jobs() {
            let _ = reply.send(Err(error));
            return;
        }
        let group = self.config.group.clone();
        self.read_store(
            move |reader| reader.stats(&group),
            move |host, stats| {
                let result = stats.and_then(|stats| {
                    host.no_live_jobs()?;
                    log_refusal(host.step(Input::ForgetFinished));
                    if let Some(watch) = &mut host.pruning {
                        watch.cleared = true;
                    }
                    host.pending_writes
                        .push(Write::ClearGroup(host.config.group.clone()));
                    Ok(stats.completed + stats.failed + stats.cancelled)
                });
                let _ = reply.send(result);
            },
        );
    }

    fn no_live_jobs(&self) -> Result<(), HostError> {
        let stats = self.dispatcher.stats();
        let live = stats.pending + stats.assigned + stats.running;
        if live > 0 {
            return Err(HostError::Invalid(format!(
                "{live} jobs are still live: cancel them first"
            )));
        }
        Ok(())
    }

    /// A user retry: the dispatcher keeps only the status of finished jobs (and not even that
    /// once it evicted them), so the job's spec and the statuses of the jobs it waits for come
    /// back from the store first.
    fn retry(&mut self, id: JobId, reply: oneshot::Sender<Result<(), HostError>>) {
        self.read_store(
            move |reader| {
                let Some(stored) = reader.get(id)? else {
                    return Ok(None);
                };
                let after = reader.statuses(&stored.state.job.after)?;
                Ok(Some((stored, after)))
            },
            move |host, found| {
                let result = found.and_then(|found| {
                    let (stored, mut recall) = found.ok_or(StepError::UnknownJob(id))?;
                    recall.push((id, stored.state.status));
                    host.recall(recall);
                    let attempt = stored.state.attempt;
                    let job = spec_of(stored.state.job);
                    let size = payload_size(&job.payload);
                    host.step(Input::Retry(RetryJob { job, attempt }))?;
                    host.track_payload(id, size);
                    Ok(())
                });
                let _ = reply.send(result);
            },
        );
    }

    /// A cancel; of a job the dispatcher does not know, the store says whether it finished.
    fn cancel(&mut self, id: JobId, reply: oneshot::Sender<Result<(), HostError>>) {
        match self.step(Input::Cancel(id)) {
            Err(StepError::UnknownJob(_)) => self.read_store(
                move |reader| reader.statuses(&[id]),
                move |_, found| {
                    let error = |found: Vec<(JobId, JobStatus)>| match found.first() {
                        Some(&(job, status)) if status.is_terminal() => {
                            StepError::AlreadyTerminal { job, status }
                        }
                        _ => StepError::UnknownJob(id),
                    };
                    let _ = reply.send(found.and_then(|found| Err(error(found).into())));
                },
            ),
            result => {
                let _ = reply.send(result.map_err(HostError::from));
            }
        }
    }

    /// Deletes a finished job; one the dispatcher evicted is recalled from the store first.
    fn delete(&mut self, id: JobId, reply: oneshot::Sender<Result<(), HostError>>, look: bool) {
        match self.step(Input::Forget(id)) {
            Ok(()) => {
                if let Some(watch) = &mut self.pruning {
                    watch.deleted.push(id);
                }
                self.pending_writes.push(Write::Delete(id));
                let _ = reply.send(Ok(()));
            }
            Err(StepError::UnknownJob(_)) if look => self.read_store(
                move |reader| reader.statuses(&[id]),
                move |host, found| match found {
                    Ok(found) => {
                        host.recall(found);
                        host.delete(id, reply, false);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
            ),
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    /// Tells the dispatcher of finished jobs it evicted; it skips the others.
    fn recall(&mut self, jobs: Vec<(JobId, JobStatus)>) {
        if !jobs.is_empty() {
            log_refusal(self.step(Input::Recall(jobs)));
        }
    }

    /// How many more finished jobs the store has than it keeps.
    fn over_keep(&self) -> usize {
        self.config.limits.keep_finished_jobs.map_or(0, |keep| {
            self.dispatcher.finished_jobs().saturating_sub(keep)
        })
    }

    /// Sets a prune soon when the store has more finished jobs than it keeps and none is
    /// under way or due sooner.
    fn prune_if_over(&mut self) {
        if self.pruning.is_some() || self.over_keep() == 0 {
            return;
        }
        let soon = tokio::time::Instant::now() + PRUNE_AGAIN;
        if self.prune_at.is_none_or(|at| at > soon) {
            self.prune_at = Some(soon);
        }
    }

    /// How often to look for finished jobs past their keep time, if they are not kept for ever.
    fn prune_every(&self) -> Option<Duration> {
        let keep = self.config.limits.keep_finished?;
        Some(PRUNE_EVERY.min(keep / 4).max(Duration::from_millis(100)))
    }

    /// Queues the deletion of the finished jobs past the keep limits: the oldest over
    /// `keep_finished_jobs`, then those submitted and finished longer than `keep_finished` ago
    /// (up to a window of each). The prune is queued in the actor, in order with the host's
    /// writes: a job retried before it is queued is pending in the store by then, and one
    /// retried after it is answered from the store without it. The outcome comes back through
    /// [`Host::pruned`].
    async fn prune(&mut self) {
        self.prune_at = None;
        let limits = &self.config.limits;
        if limits.keep_finished.is_none() && limits.keep_finished_jobs.is_none() {
            return;
        }
        let keep_ms = limits.keep_finished.map_or(u64::MAX, |keep| {
            u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)
        });
        let prune = store::Prune {
            group: self.config.group.clone(),
            before: stamp(Millis(now().0.saturating_sub(keep_ms))),
            window: PRUNE_WINDOW,
            oldest: self.over_keep(),
        };
        match self.store.prune(prune).await {
            Ok(done) => {
                self.pruning = Some(PruneWatch::default());
                let reads = self.reads.clone();
                self.tracker.spawn(async move {
                    let result = done.await.map_err(HostError::from);
                    let _ = reads
                        .send(Box::new(move |host: &mut Self| host.pruned(result)))
                        .await;
                });
            }
            Err(error) => {
                tracing::error!(%error, "cannot prune finished jobs");
                self.prune_at = self
                    .prune_every()
                    .map(|every| tokio::time::Instant::now() + every);
            }
        }
    }

    /// The dispatcher forgets the jobs a prune deleted (each leaves the counts once, evicted or
    /// not), and the next prune is set.
    fn pruned(&mut self, result: Result<Vec<store::Pruned>, HostError>) {
        let watch = self.pruning.take().unwrap_or_default();
        let more = match result {
            Ok(pruned) => {
                let found = pruned.len();
                if !watch.cleared {
                    let pruned: Vec<_> = pruned
                        .into_iter()
                        .filter(|(id, _)| !watch.deleted.contains(id))
                        .collect();
                    log_refusal(self.step(Input::Deleted(pruned)));
                }
                if found > 0 {
                    tracing::info!(jobs = found, "deleted finished jobs past the keep limits");
                }
                found >= PRUNE_WINDOW || self.over_keep() > 0
            }
            Err(error) => {
                tracing::error!(%error, "pruning finished jobs failed");
                false
            }
        };
        let next = if more {
            Some(PRUNE_AGAIN)
        } else {
            self.prune_every()
        };
        self.prune_at = next.map(|after| tokio::time::Instant::now() + after);
    }

    /// Reads the store off the actor, once every change the host made so far is written
    /// (held ones included), then carries on in the actor with `then`.
    fn read_store<T: Send + 'static>(
        &mut self,
        read: impl FnOnce(&store::Reader) -> Result<T, StoreError> + Send + 'static,
        then: impl FnOnce(&mut Self, Result<T, HostError>) + Send + 'static,
    ) {
        let (flushed, flush) = oneshot::channel();
        self.flush_waiting.push(flushed);
        let store = self.store.clone();
        let reads = self.reads.clone();
        self.tracker.spawn(async move {
            let found = async {
                flush.await.map_err(|_| HostError::Stopped)??;
                let reader = store.reader()?;
                tokio::task::spawn_blocking(move || read(&reader))
                    .await
                    .map_err(|_| HostError::Stopped)?
                    .map_err(HostError::from)
            }
            .await;
            let _ = reads
                .send(Box::new(move |host: &mut Self| then(host, found)))
                .await;
        });
    }

    fn incoming(&mut self, message: Incoming) {
        let Incoming {
            from,
            msg_type,
            payload,
        } = message;
        match ClusterMessage::decode(&msg_type, &payload) {
            Ok(message) => self.message(&from, message),
            Err(error) => {
                tracing::warn!(%from, %msg_type, %error, "dropped a malformed cluster message")
            }
        }
    }

    fn message(&mut self, from: &PeerId, message: ClusterMessage) {
        if message.sender() == Sender::Host {
            tracing::warn!(%from, msg_type = message.msg_type(), "dropped a host message sent to the host");
            return;
        }
        if let Some(meta) = self.meta.get_mut(from) {
            meta.last_seen = now();
        } else if self.members.contains(from) {
            // A member the dispatcher dropped (the group layer still counts it, so no join
            // will come): without this it would stay idle until it rejoined.
            let verifies = matches!(message, ClusterMessage::WorkerVerified(_));
            self.take_back(from, verifies);
        }
        let worker = from.clone();
        let result = match message {
            ClusterMessage::Batch(messages) => {
                for message in messages {
                    self.message(from, message);
                }
                Ok(())
            }
            ClusterMessage::JobAck(JobRef { job_id, attempt }) => self.step(Input::Ack {
                worker,
                job: job_id,
                attempt,
            }),
            ClusterMessage::JobProgress(p) => self.step(Input::Progress {
                worker,
                job: p.job_id,
                attempt: p.attempt,
                report: Carried::Progress {
                    percent: p.percent,
                    message: p.message,
                },
            }),
            ClusterMessage::JobOutput(o) => self.step(Input::Output {
                worker,
                job: o.job_id,
                attempt: o.attempt,
                data: Carried::Json(Some(o.data)),
            }),
            ClusterMessage::JobResult(r) => {
                let report = match r.status {
                    ResultStatus::Completed => Report::Completed(Carried::Json(r.result)),
                    ResultStatus::Failed => Report::Failed(
                        r.error
                            .unwrap_or_else(|| "failed without an error message".into()),
                    ),
                    ResultStatus::TimedOut => {
                        Report::TimedOut(r.error.unwrap_or_else(|| "timed out".into()))
                    }
                    ResultStatus::Lost => {
                        Report::Lost(r.error.unwrap_or_else(|| "executor lost".into()))
                    }
                    ResultStatus::NotStarted => {
                        Report::NotStarted(r.error.unwrap_or_else(|| "not started".into()))
                    }
                };
                self.step(Input::Result {
                    worker,
                    job: r.job_id,
                    attempt: r.attempt,
                    report,
                })
            }
            ClusterMessage::JobLog(log) => {
                let holds = self
                    .dispatcher
                    .job_view(log.job_id)
                    .is_some_and(|job| job.worker == Some(from) && job.attempt == log.attempt);
                if holds {
                    let _ = self.events.send(ClusterEvent::Log(LogEvent {
                        job_id: log.job_id,
                        attempt: log.attempt,
                        msg: log.msg,
                        stream: log.stream,
                    }));
                }
                Ok(())
            }
            ClusterMessage::WorkerVerified(v) if !self.meta.contains_key(from) => {
                // Not a member (yet): its join may still be on the way, since the MQ bus does
                // not wait for the group layer. Only a member becomes a worker, so the
                // verification waits for the join (see `worker_joined`).
                if self.early.len() < MAX_EARLY || self.early.contains_key(from) {
                    self.early.insert(from.clone(), v);
                } else {
                    tracing::warn!(%worker, "dropped a verification from a peer that is not a member");
                }
                Ok(())
            }
            ClusterMessage::WorkerVerified(v) => {
                if let Some(meta) = self.meta.get_mut(from) {
                    meta.version = v.version.clone();
                }
                if v.ok {
                    tracing::info!(%worker, types = ?v.types, capacity = v.capacity, "worker verified");
                    self.step(Input::WorkerVerified {
                        worker,
                        types: v.types,
                        capacity: v.capacity,
                    })
                } else {
                    tracing::warn!(%worker, error = v.error.as_deref().unwrap_or(""), "worker failed its check");
                    self.step(Input::WorkerUnverified(worker))
                }
            }
            ClusterMessage::WorkerBinary(b) => {
                if let Some(meta) = self.meta.get_mut(from) {
                    meta.binary_path = Some(b.path);
                    meta.binary_mode = Some(b.mode);
                }
                Ok(())
            }
            ClusterMessage::WorkerStatus(s) => match s.status.as_str() {
                "paused" => self.step(Input::Pause(worker)),
                "idle" => self.step(Input::Resume(worker)),
                other => {
                    tracing::warn!(%from, status = other, "ignored an unknown worker status");
                    Ok(())
                }
            },
            ClusterMessage::WorkerHeartbeat(h) => self.step(Input::Heartbeat {
                worker,
                running: h
                    .running
                    .into_iter()
                    .map(|r| (r.job_id, r.attempt))
                    .collect(),
            }),
            ClusterMessage::JobAssign(_)
            | ClusterMessage::JobCancel(_)
            | ClusterMessage::WorkerPause(_)
            | ClusterMessage::WorkerResume(_)
            | ClusterMessage::WorkerVerify(_)
            | ClusterMessage::Shutdown(_) => Ok(()),
        };
        log_refusal(result);
    }

    /// Queues a message on a worker's outbox, starting the outbox if needed.
    fn send(&mut self, worker: &PeerId, message: ClusterMessage) {
        let outbox = self.outboxes.entry(worker.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.config.limits.outbox);
            self.tracker.spawn(outbox::run(
                self.link.clone(),
                self.config.group.clone(),
                worker.clone(),
                rx,
                OnFailure::Report(self.failures.clone()),
                self.cancel.clone(),
            ));
            tx
        });
        if let Err(error) = outbox.try_send(message) {
            // The dispatcher never gives a worker more than its capacity, so a full outbox means
            // the worker stopped taking messages: treat it as gone.
            tracing::warn!(%worker, %error, "worker outbox full or closed");
            self.outboxes.remove(worker);
            let _ = self
                .failures
                .try_send((worker.clone(), "outbox full".into()));
        }
    }

    /// Carries out the dispatcher's outputs and the store writes they imply.
    async fn carry_out(&mut self) {
        let outputs = std::mem::take(&mut self.outputs);
        for output in outputs {
            match output {
                Output::Assign(a) => {
                    let message = ClusterMessage::JobAssign(JobAssign {
                        job_id: a.job,
                        job_type: a.job_type.to_string(),
                        payload: a.payload,
                        timeout_s: u64::from(a.timeout_s),
                        attempt: a.attempt,
                        mode: a.mode,
                        priority: a.priority,
                    });
                    self.send(&a.worker, message);
                }
                Output::Cancel {
                    worker,
                    job,
                    attempt,
                    reason,
                } => {
                    tracing::debug!(%worker, job_id = %job, %attempt, ?reason, "cancelling attempt on worker");
                    self.send(
                        &worker,
                        ClusterMessage::JobCancel(JobRef {
                            job_id: job,
                            attempt,
                        }),
                    );
                }
                Output::JobChanged(update) => self.job_changed(update),
                Output::Progress {
                    job,
                    attempt,
                    report,
                } => {
                    if let Carried::Progress { percent, message } = report {
                        self.pending_writes.push(Write::Progress {
                            id: job,
                            percent,
                            message: Some(message.clone()),
                        });
                        let _ = self.events.send(ClusterEvent::Progress(ProgressEvent {
                            job_id: job,
                            attempt,
                            percent,
                            message,
                        }));
                    }
                }
                Output::JobOutput { job, attempt, data } => {
                    if let Carried::Json(Some(data)) = data {
                        let _ = self.events.send(ClusterEvent::Output(OutputEvent {
                            job_id: job,
                            attempt,
                            data,
                        }));
                    }
                }
                Output::WorkerLost { worker, reason } => {
                    tracing::warn!(%worker, reason = reason.as_str(), "worker lost");
                    // The dispatcher no longer knows it, so it can no longer be described.
                    self.forget_worker(&worker, None);
                }
                Output::AttemptEnded { job, record } => self.attempt_ended(job, &record),
                Output::WakeAt(at) => self.wake = Some(at),
            }
        }
        let mut writes = Vec::with_capacity(self.pending_writes.len());
        for write in std::mem::take(&mut self.pending_writes) {
            let write = match write {
                Write::State(row)
                    if matches!(row.status, JobStatus::Assigned | JobStatus::Running) =>
                {
                    let row = match self.held.remove(&row.id) {
                        Some(earlier) => row.after(earlier),
                        None => {
                            // Held at most HOLD after its first unwritten change.
                            let due = tokio::time::Instant::now() + HOLD;
                            self.release_order.push_back((due, row.id));
                            self.release_at.get_or_insert(due);
                            *row
                        }
                    };
                    self.held.insert(row.id, row);
                    continue;
                }
                // A later state of a held job replaces the held one, keeping what it said.
                Write::State(row) => match self.held.remove(&row.id) {
                    Some(earlier) => Write::State(Box::new(row.after(earlier))),
                    None => Write::State(row),
                },
                other => other,
            };
            writes.push(write);
        }
        self.write(writes).await;
        if !self.flush_waiting.is_empty() {
            self.release_held(tokio::time::Instant::now() + HOLD).await;
            // The store flush covers everything written above; the actor does not wait for it.
            for reply in std::mem::take(&mut self.flush_waiting) {
                let store = self.store.clone();
                self.tracker.spawn(async move {
                    let _ = reply.send(store.flush().await.map_err(HostError::from));
                });
            }
        }
    }

    /// Sends the held states due by `now` to the store.
    async fn release_held(&mut self, now: tokio::time::Instant) {
        let mut writes = Vec::new();
        while let Some(&(due, id)) = self.release_order.front() {
            if due > now {
                break;
            }
            self.release_order.pop_front();
            if let Some(row) = self.held.remove(&id) {
                writes.push(Write::State(Box::new(row)));
            }
        }
        self.release_at = self.release_order.front().map(|&(due, _)| due);
        self.write(writes).await;
    }

    /// Queues changes for the store, in order, as one message to its writer.
    async fn write(&self, writes: Vec<Write>) {
        if let Err(error) = self.store.write_all(writes).await {
            tracing::error!(%error, "job store write failed");
        }
    }

    fn attempt_ended(&mut self, job: JobId, ended: &dispatcher::AttemptRecord) {
        let (outcome, error) = match &ended.end {
            Some(AttemptEnd::Completed) => (AttemptOutcome::Completed, None),
            Some(AttemptEnd::Failed(e)) => (AttemptOutcome::Failed, Some(e.to_string())),
            Some(AttemptEnd::TimedOut) => (AttemptOutcome::TimedOut, Some("timed out".to_owned())),
            Some(AttemptEnd::Lost(e)) => (AttemptOutcome::Lost, Some(e.to_string())),
            Some(AttemptEnd::Cancelled) => (AttemptOutcome::Cancelled, None),
            Some(AttemptEnd::Interrupted) | None => {
                (AttemptOutcome::Lost, Some("host restarted".into()))
            }
        };
        self.counters.attempt_ended(outcome);
        self.pending_writes.push(Write::Attempt {
            job,
            record: AttemptRecord {
                attempt: ended.attempt,
                worker_id: (*ended.worker).clone(),
                started_at: stamp(ended.assigned_at),
                ended_at: ended.ended_at.map(stamp),
                outcome: Some(outcome),
                error,
            },
        });
    }

    /// Counts a live job's payload against `max_live_payload_bytes`.
    fn track_payload(&mut self, id: JobId, size: usize) {
        if size > 0 {
            self.payload_bytes += size;
            if let Some(earlier) = self.payloads.insert(id, size) {
                self.payload_bytes -= earlier;
            }
        }
    }

    fn job_changed(&mut self, update: dispatcher::JobUpdate<Carried>) {
        self.counters.finished(update.status);
        if update.status.is_terminal()
            && let Some(size) = self.payloads.remove(&update.id)
        {
            self.payload_bytes -= size;
        }
        let result = match update.result {
            Some(Carried::Json(result)) => result,
            _ => None,
        };
        let worker = update.worker.as_deref().cloned();
        let error = update.error.as_deref().map(str::to_owned);
        // Three of these per job: with nobody following the stream, not even built.
        if self.events.receiver_count() > 0 {
            let latency = update
                .done_at
                .map(|done| done.0.saturating_sub(update.created_at.0));
            let _ = self.events.send(ClusterEvent::Job(JobEvent {
                job_id: update.id,
                status: update.status,
                attempt: update.attempt,
                worker_id: worker.clone(),
                retries: update.retries,
                error: error.clone(),
                latency_ms: latency,
            }));
        }
        let requeued = update.status == JobStatus::Pending;
        self.pending_writes.push(Write::State(Box::new(StateRow {
            id: update.id,
            status: update.status,
            worker_id: worker,
            attempt: update.attempt,
            retries: update.retries,
            losses: update.losses,
            result,
            error,
            progress: (update.status == JobStatus::Completed).then_some((100.0, None)),
            // A finished job keeps the start of its last attempt, written when it was assigned
            // (the dispatcher's terminal update may name an earlier one).
            started_at: if update.status.is_terminal() {
                None
            } else {
                update.started_at.map(stamp)
            },
            done_at: update.done_at.map(stamp),
            elapsed_ms: None,
        })));
        // Back in the queue (a retry, a lost worker, a user retry, a restore): the progress of
        // the attempt before is no longer the job's. As a progress write, not in the state
        // row, so that coalesced with the held states that follow it, it still counts as
        // older than the new attempt's progress.
        if requeued {
            self.pending_writes.push(Write::Progress {
                id: update.id,
                percent: 0.0,
                message: None,
            });
        }
    }
}

fn payload_size(payload: &Payload) -> usize {
    payload.as_ref().map_or(0, |p| p.get().len())
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Logs an input the dispatcher refused; a stale or foreign report is routine, the rest is not.
fn log_refusal(result: Result<(), StepError>) {
    if let Err(error) = result {
        match error {
            StepError::Ignored { .. } => tracing::debug!(%error, "report ignored"),
            _ => tracing::warn!(%error, "input refused"),
        }
    }
}
