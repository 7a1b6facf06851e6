//! The worker side of a cluster: runs the host's jobs through the executor runtime and reports
//! back.
//!
//! One actor owns the executor handle and the set of attempts it runs. Messages from any peer
//! but the cluster's host are dropped. Reports go through one outbox to the host that batches
//! what queued while a send was in flight and, for a failed send, waits and sends the same batch
//! again: a result is kept until the host has it (the host ignores duplicates), so a host that
//! restarts gets every result of the attempts it still knows.
//!
//! The actor also watches the executor's status: while the executor is down (a daemon being
//! restarted, a oneshot binary that cannot be started, or an executor that is unusable for
//! good) the host is told the worker failed its check, so it sends no jobs that would only
//! come back lost; once the executor is checked again, the worker announces it again.

use std::sync::Arc;
use std::time::Duration;

use proto::cluster::{
    ClusterMessage, JobLog, JobOutput, JobProgress, JobRef, JobResult, ResultStatus, WorkerBinary,
    WorkerHeartbeat, WorkerStatusUpdate, WorkerVerified,
};
use proto::{Attempt, GroupId, IdMap, JobId, PeerId};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use worker::{
    CheckInfo, Event, EventKind, Executor, ExecutorConfig, ExecutorStatus, JobSpec, LogStream,
    Outcome,
};

use super::outbox::{self, OnFailure};
use super::{Incoming, Link};

/// The largest result a worker sends: a result travels in one MQ message, which holds 16 MiB by
/// default; a larger one would be refused again and again, so the job fails saying why.
const MAX_RESULT_BYTES: usize = proto::DEFAULT_MAX_FRAME_BYTES - 64 * 1024;

/// The most job events the actor takes from their channel at once.
const EVENTS_AT_ONCE: usize = 1024;

/// The worker side's settings.
#[derive(Clone, Debug)]
pub(crate) struct MemberConfig {
    /// The cluster's group.
    pub group: GroupId,
    /// The cluster's host: the only peer whose job messages are taken.
    pub host: PeerId,
    /// The executor to run jobs with.
    pub executor: ExecutorConfig,
    /// How often the worker tells the host what it runs (which renews its lease).
    pub heartbeat: Duration,
}

/// Something the group layer tells the worker side.
#[derive(Debug)]
pub(crate) enum HostEvent {
    /// The worker (re)joined the host's group: announce the executor again, so a host that
    /// restarted knows this worker.
    Welcomed,
    /// The worker's own user pauses (`true`) or resumes it: the host is told.
    Pause(bool),
}

enum Event2 {
    Incoming(Incoming),
    Host(HostEvent),
    /// Job events, taken from their channel together (`jobs` holds them).
    Jobs,
    Heartbeat,
    /// The executor's status changed (`false`: its supervisor is gone, nothing more will).
    Executor(bool),
}

/// Starts the worker side: starts and checks the executor, announces it to the host, then takes
/// jobs until `cancel` fires. A failed check is reported to the host and returned.
pub(crate) async fn spawn<L: Link>(
    config: MemberConfig,
    link: L,
    incoming: mpsc::Receiver<Incoming>,
    host_events: mpsc::Receiver<HostEvent>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), worker::StartError> {
    let (outbox_tx, outbox_rx) = mpsc::channel(65_536);
    tracker.spawn(outbox::run(
        link,
        config.group.clone(),
        config.host.clone(),
        outbox_rx,
        OnFailure::Retry {
            max_backoff: Duration::from_secs(5),
        },
        cancel.clone(),
    ));
    let executor = match Executor::start(config.executor.clone()).await {
        Ok(executor) => Arc::new(executor),
        Err(error) => {
            tracing::error!(%error, path = %config.executor.path.display(), "executor check failed");
            let _ = outbox_tx
                .send(ClusterMessage::WorkerVerified(WorkerVerified {
                    ok: false,
                    types: Vec::new(),
                    capacity: 0,
                    version: None,
                    error: Some(error.to_string()),
                }))
                .await;
            return Err(error);
        }
    };
    let (events_tx, events_rx) = mpsc::channel(4096);
    let status = executor.status();
    let mut member = Member {
        config,
        executor,
        status,
        down: false,
        outbox: outbox_tx,
        events: events_tx,
        running: IdMap::default(),
        assigned: Vec::new(),
        tracker: tracker.clone(),
        cancel,
    };
    member.announce().await;
    tracker.spawn(member.run(incoming, host_events, events_rx));
    Ok(())
}

struct Member {
    config: MemberConfig,
    executor: Arc<Executor>,
    /// The executor's status, as its runtime reports it.
    status: watch::Receiver<ExecutorStatus>,
    /// Whether the host was last told the executor is down (a failed verification).
    down: bool,
    outbox: mpsc::Sender<ClusterMessage>,
    events: mpsc::Sender<Event>,
    /// The attempts this worker runs, by job.
    running: IdMap<JobId, Attempt>,
    /// Jobs of the message being handled, handed to the runtime together once it is done.
    assigned: Vec<JobSpec>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Member {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        mut host_events: mpsc::Receiver<HostEvent>,
        mut events: mpsc::Receiver<Event>,
    ) {
        let mut jobs = Vec::with_capacity(EVENTS_AT_ONCE);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        loop {
            let event = tokio::select! {
                () = self.cancel.cancelled() => break,
                Some(message) = incoming.recv() => Event2::Incoming(message),
                Some(event) = host_events.recv() => Event2::Host(event),
                // Never 0: the actor holds a sender of its own (`self.events`).
                _ = events.recv_many(&mut jobs, EVENTS_AT_ONCE) => Event2::Jobs,
                _ = heartbeat.tick() => Event2::Heartbeat,
                changed = self.status.changed(), if watching => Event2::Executor(changed.is_ok()),
            };
            match event {
                Event2::Incoming(message) => self.incoming(message).await,
                Event2::Host(HostEvent::Welcomed) => self.announce().await,
                Event2::Host(HostEvent::Pause(pause)) => {
                    let status = if pause { "paused" } else { "idle" };
                    self.report(ClusterMessage::WorkerStatus(WorkerStatusUpdate {
                        status: status.into(),
                    }))
                    .await;
                }
                Event2::Jobs => {
                    // The runtime reports an executor down before the jobs it lost: the host
                    // hears it first too, and does not hand those jobs straight back.
                    if watching && self.status.has_changed().unwrap_or(false) {
                        self.executor_changed().await;
                    }
                    for event in jobs.drain(..) {
                        self.job_event(event).await;
                    }
                }
                Event2::Executor(true) => self.executor_changed().await,
                Event2::Executor(false) => watching = false,
                Event2::Heartbeat => {
                    let running = self.running.iter().map(|(job, attempt)| JobRef {
                        job_id: *job,
                        attempt: *attempt,
                    });
                    let message = ClusterMessage::WorkerHeartbeat(WorkerHeartbeat {
                        running: running.collect(),
                    });
                    // A heartbeat that cannot be queued now is superseded by the next one.
                    let _ = self.outbox.try_send(message);
                }
            }
        }
        if let Ok(executor) = Arc::try_unwrap(self.executor) {
            executor.shutdown().await;
        }
        tracing::info!(group = %self.config.group, "worker side stopped");
    }

    /// Tells the host which executor this worker runs and whether it takes jobs.
    async fn announce(&mut self) {
        let binary = WorkerBinary {
            path: self.config.executor.path.display().to_string(),
            mode: self.config.executor.mode.as_str().to_owned(),
        };
        let _ = self.outbox.send(ClusterMessage::WorkerBinary(binary)).await;
        let verified = self.verification();
        self.send_verified(verified).await;
    }

    /// Tells the host whether the executor takes jobs: what it serves when it is ready, why
    /// not when it is down.
    async fn send_verified(&mut self, verified: WorkerVerified) {
        self.down = !verified.ok;
        self.report(ClusterMessage::WorkerVerified(verified)).await;
    }

    /// The verification the executor's current status makes.
    fn verification(&self) -> WorkerVerified {
        let first = self.executor.info();
        let capacity = u32::try_from(self.executor.capacity()).unwrap_or(u32::MAX);
        let ready = |info: &CheckInfo| WorkerVerified {
            ok: true,
            types: info.types.clone(),
            capacity,
            version: info.version.clone(),
            error: None,
        };
        let down = |error: String| WorkerVerified {
            ok: false,
            types: Vec::new(),
            capacity: 0,
            version: first.version.clone(),
            error: Some(error),
        };
        match &*self.status.borrow() {
            // What the last check declared: a restarted executor may declare other types.
            ExecutorStatus::Ready(info) => ready(info),
            // Only before the first check, which a started executor has passed.
            ExecutorStatus::Starting => ready(first),
            ExecutorStatus::Restarting { reason } => down(format!("executor is down: {reason}")),
            ExecutorStatus::Unusable { reason, .. } => {
                down(format!("executor is unusable: {reason}"))
            }
            ExecutorStatus::Stopped => down("executor stopped".to_owned()),
        }
    }

    /// The executor went down or came back: the host stops or starts sending jobs. An
    /// executor that stays down is reported again only when it becomes unusable for good.
    async fn executor_changed(&mut self) {
        let (ready, unusable) = {
            let status = self.status.borrow_and_update();
            (
                matches!(*status, ExecutorStatus::Ready(_)),
                matches!(*status, ExecutorStatus::Unusable { .. }),
            )
        };
        // The host knows already, unless the executor was just given up on for good.
        let told_ready = !self.down;
        if ready == told_ready && !unusable {
            return;
        }
        let verified = self.verification();
        match &verified.error {
            None => tracing::info!(group = %self.config.group, "executor ready again; taking jobs"),
            Some(error) => {
                tracing::warn!(group = %self.config.group, %error, "executor down; taking no jobs");
            }
        }
        self.send_verified(verified).await;
    }

    async fn incoming(&mut self, message: Incoming) {
        if message.from != self.config.host {
            tracing::warn!(from = %message.from, msg_type = %message.msg_type, "dropped a cluster message from a peer that is not the host");
            return;
        }
        match ClusterMessage::decode(&message.msg_type, &message.payload) {
            Ok(decoded) => self.message(decoded).await,
            Err(error) => tracing::warn!(%error, "dropped a malformed message from the host"),
        }
        self.hand_over();
    }

    /// Hands the jobs the last message assigned to the runtime, together: one task, one
    /// admission and one runtime command for the lot. `submit_batch` waits while the runtime
    /// is full; the actor must not, so a task does it. A job the runtime refuses (it shut
    /// down) is reported lost, so the host runs it elsewhere.
    fn hand_over(&mut self) {
        if self.assigned.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.assigned);
        let executor = self.executor.clone();
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let Err(refused) = executor.submit_batch(jobs, &events).await else {
                return;
            };
            tracing::warn!(error = %refused, "executor refused jobs");
            for spec in refused.jobs {
                let lost = Outcome::ExecutorLost(worker::Failure {
                    kind: worker::FailureKind::Rejected,
                    message: refused.error.to_string(),
                    stderr_tail: None,
                });
                let finished = Event {
                    job: spec.id,
                    attempt: spec.attempt,
                    kind: EventKind::Finished(lost),
                };
                let _ = events.send(finished).await;
            }
        });
    }

    async fn message(&mut self, message: ClusterMessage) {
        match message {
            ClusterMessage::Batch(messages) => {
                for message in messages {
                    Box::pin(self.message(message)).await;
                }
            }
            ClusterMessage::JobAssign(assign) => {
                if self.running.get(&assign.job_id) == Some(&assign.attempt) {
                    // A repeated delivery: acknowledge again, run once.
                    self.report(ClusterMessage::JobAck(JobRef {
                        job_id: assign.job_id,
                        attempt: assign.attempt,
                    }))
                    .await;
                    return;
                }
                if let Some(previous) = self.running.insert(assign.job_id, assign.attempt) {
                    tracing::warn!(job_id = %assign.job_id, %previous, "host reassigned a job this worker still runs; stopping the old attempt");
                    if !self.withdraw(assign.job_id) {
                        self.executor.cancel(assign.job_id).await;
                    }
                }
                self.report(ClusterMessage::JobAck(JobRef {
                    job_id: assign.job_id,
                    attempt: assign.attempt,
                }))
                .await;
                // Shared with the message, not copied: the runtime writes it into the job line.
                let payload = assign
                    .payload
                    .unwrap_or_else(|| RawValue::NULL.to_owned().into());
                let spec = JobSpec {
                    id: assign.job_id,
                    attempt: assign.attempt,
                    job_type: assign.job_type,
                    mode: assign.mode,
                    payload,
                    timeout: (assign.timeout_s > 0).then(|| Duration::from_secs(assign.timeout_s)),
                };
                self.assigned.push(spec);
            }
            ClusterMessage::JobCancel(JobRef { job_id, attempt }) => {
                if self.running.get(&job_id) == Some(&attempt) || attempt == Attempt(0) {
                    tracing::info!(%job_id, %attempt, "host cancelled a job");
                    if self.withdraw(job_id) {
                        // Never reached the runtime: nothing to stop and nothing to report.
                        self.running.remove(&job_id);
                    } else {
                        self.executor.cancel(job_id).await;
                    }
                }
            }
            ClusterMessage::WorkerPause(_) => {
                self.report(ClusterMessage::WorkerStatus(WorkerStatusUpdate {
                    status: "paused".into(),
                }))
                .await;
            }
            ClusterMessage::WorkerResume(_) => {
                self.report(ClusterMessage::WorkerStatus(WorkerStatusUpdate {
                    status: "idle".into(),
                }))
                .await;
            }
            ClusterMessage::WorkerVerify(_) => self.announce().await,
            ClusterMessage::Shutdown(s) => {
                tracing::info!(reason = %s.reason, "host shut the cluster down")
            }
            other => tracing::warn!(
                msg_type = other.msg_type(),
                "dropped a worker message sent to a worker"
            ),
        }
    }

    /// Takes `job` out of the jobs not yet handed to the runtime; false when it is not there.
    fn withdraw(&mut self, job: JobId) -> bool {
        let before = self.assigned.len();
        self.assigned.retain(|spec| spec.id != job);
        self.assigned.len() != before
    }

    async fn report(&self, message: ClusterMessage) {
        if self.outbox.send(message).await.is_err() {
            tracing::warn!("worker outbox closed; report dropped");
        }
    }

    async fn job_event(&mut self, event: Event) {
        let Event { job, attempt, kind } = event;
        if self.running.get(&job) != Some(&attempt) {
            return;
        }
        match kind {
            EventKind::Started => {}
            EventKind::Progress { pct, msg } => {
                // Progress is advisory: when the outbox is full, this one is skipped.
                let _ = self
                    .outbox
                    .try_send(ClusterMessage::JobProgress(JobProgress {
                        job_id: job,
                        attempt,
                        percent: pct,
                        message: msg,
                    }));
            }
            EventKind::Output(data) => {
                self.report(ClusterMessage::JobOutput(JobOutput {
                    job_id: job,
                    attempt,
                    data: data.into(),
                }))
                .await;
            }
            EventKind::Log { stream, line } => {
                let stream = match stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                };
                let _ = self.outbox.try_send(ClusterMessage::JobLog(JobLog {
                    job_id: job,
                    attempt,
                    msg: line,
                    stream: Some(stream.into()),
                }));
            }
            EventKind::Finished(outcome) => {
                self.running.remove(&job);
                let result = match outcome {
                    Outcome::Completed { result } if result.get().len() > MAX_RESULT_BYTES => {
                        tracing::warn!(job_id = %job, bytes = result.get().len(), "result too large to send");
                        JobResult {
                            job_id: job,
                            attempt,
                            status: ResultStatus::Failed,
                            result: None,
                            error: Some(format!(
                                "result too large: {} bytes, over the limit of {MAX_RESULT_BYTES}",
                                result.get().len()
                            )),
                            elapsed_ms: None,
                        }
                    }
                    Outcome::Completed { result } => JobResult {
                        job_id: job,
                        attempt,
                        status: ResultStatus::Completed,
                        result: Some(result.into()),
                        error: None,
                        elapsed_ms: None,
                    },
                    Outcome::Failed(failure) => JobResult {
                        job_id: job,
                        attempt,
                        status: if failure.kind == worker::FailureKind::TimedOut {
                            ResultStatus::TimedOut
                        } else {
                            ResultStatus::Failed
                        },
                        result: None,
                        error: Some(failure.to_string()),
                        elapsed_ms: None,
                    },
                    // The host asked for it and already counts the job as cancelled.
                    Outcome::Cancelled => return,
                    Outcome::ExecutorLost(failure) => JobResult {
                        job_id: job,
                        attempt,
                        // A process that could not be started, or a job refused by an
                        // executor given up on, never ran: no loss for the job.
                        status: if matches!(
                            failure.kind,
                            worker::FailureKind::Io | worker::FailureKind::Rejected
                        ) {
                            ResultStatus::NotStarted
                        } else {
                            ResultStatus::Lost
                        },
                        result: None,
                        error: Some(failure.to_string()),
                        elapsed_ms: None,
                    },
                };
                self.report(ClusterMessage::JobResult(result)).await;
            }
        }
    }
}
