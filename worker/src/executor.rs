//! The handle the node drives: start an executor (running its `__check__`), submit jobs, cancel
//! them, shut down. Each job's events go to the bounded channel given with it.
//!
//! Behind the handle is one task: the oneshot manager or the daemon supervisor. `submit` waits
//! while `capacity + max_queued` jobs are already in the runtime, so nothing queues without
//! bound.

use std::sync::Arc;

use proto::{BinaryMode, CHECK_JOB_ID, CHECK_LINE, CheckInfo, JobId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ExecutorConfig;
use crate::daemon::Daemon;
use crate::job::{Event, EventKind, Failure, FailureKind, JobSpec, Outcome};
use crate::oneshot::{self, Oneshot, Run};

/// What the executor is doing, as seen by the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorStatus {
    /// Starting and running the check.
    Starting,
    /// Checked and taking jobs.
    Ready(CheckInfo),
    /// A daemon died, or a oneshot process could not be started: after a backoff the daemon is
    /// restarted, or the oneshot binary checked, again. Jobs wait meanwhile.
    Restarting {
        /// Why it went down, or why its last check failed.
        reason: String,
    },
    /// The executor cannot be used: its check failed too often. Jobs are refused (they end as
    /// `ExecutorLost`). Final.
    Unusable {
        /// Why.
        reason: String,
        /// The end of the executor's stderr from its last attempt, when it wrote any.
        stderr_tail: Option<String>,
    },
    /// Shut down.
    Stopped,
}

/// Why an executor could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `__check__` handshake did not succeed.
    #[error("executor check failed: {reason}")]
    CheckFailed {
        /// What went wrong.
        reason: String,
        /// The end of the executor's stderr, when it wrote any.
        stderr_tail: Option<String>,
    },
}

/// Why a job was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The executor has been shut down.
    #[error("the executor is shut down")]
    ShutDown,
}

/// Why some jobs of a batch were not taken: the executor shut down before they were handed
/// over. The jobs handed over before that run (or end as `ExecutorLost`) as usual.
#[derive(Debug, thiserror::Error)]
#[error("{error}: {} job(s) of the batch not taken", jobs.len())]
pub struct BatchRefused {
    /// Why.
    pub error: SubmitError,
    /// The jobs that were not handed over, in their order in the batch.
    pub jobs: Vec<JobSpec>,
}

/// A job inside the runtime, with its event channel and its place in the admission bound.
pub(crate) struct Submitted {
    pub(crate) spec: JobSpec,
    pub(crate) events: mpsc::Sender<Event>,
    permit: OwnedSemaphorePermit,
}

impl Submitted {
    fn event(&self, kind: EventKind) -> Event {
        Event {
            job: self.spec.id,
            attempt: self.spec.attempt,
            kind,
        }
    }

    /// Sends an advisory event if there is room (see `EventSink::lossy`).
    pub(crate) fn lossy(&self, kind: EventKind) {
        let _ = self.events.try_send(self.event(kind));
    }

    /// Sends an event, waiting for room.
    pub(crate) async fn send(&self, kind: EventKind) {
        deliver(&self.events, self.event(kind)).await;
    }

    /// Sends the outcome and frees the job's place.
    pub(crate) async fn finish(self, outcome: Outcome) {
        drop(self.finish_keeping_place(outcome).await);
    }

    /// Sends the outcome and returns the job's place in the admission bound, so a caller that
    /// finishes many jobs can free their places together.
    pub(crate) async fn finish_keeping_place(self, outcome: Outcome) -> OwnedSemaphorePermit {
        let event = self.event(EventKind::Finished(outcome));
        deliver(&self.events, event).await;
        self.permit
    }

    /// Refuses a job whose id is already in the runtime.
    pub(crate) async fn reject(self) {
        let message = format!("job {} is already running on this executor", self.spec.id);
        self.finish(Outcome::Failed(Failure::new(
            FailureKind::Rejected,
            message,
        )))
        .await;
    }
}

/// Sends an event, waiting only when the receiver is full (the common case costs no future).
/// A receiver that is gone is not an error: nobody is listening any more.
pub(crate) async fn deliver(events: &mpsc::Sender<Event>, event: Event) {
    if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
        let _ = events.send(event).await;
    }
}

pub(crate) enum Command {
    Submit(Submitted),
    SubmitBatch(Vec<Submitted>),
    Cancel(JobId),
    Shutdown,
}

/// A running executor: oneshot or daemon, checked, taking jobs.
pub struct Executor {
    commands: mpsc::Sender<Command>,
    admission: Arc<Semaphore>,
    status: watch::Receiver<ExecutorStatus>,
    info: CheckInfo,
    capacity: usize,
    max_queued: usize,
    tasks: TaskTracker,
}

impl Executor {
    /// Starts the executor and runs its `__check__`; fails when the check does.
    ///
    /// In oneshot mode the check runs in a process of its own; in daemon mode it is the first
    /// line the daemon gets. The capacity is the configured override, else the declared one.
    pub async fn start(config: ExecutorConfig) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let tasks = TaskTracker::new();
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (status_tx, mut status_rx) = watch::channel(ExecutorStatus::Starting);
        let info = match config.mode {
            BinaryMode::Oneshot => {
                let info = check_oneshot(&config).await?;
                let capacity = capacity_of(&config, &info);
                let _ = status_tx.send(ExecutorStatus::Ready(info.clone()));
                let manager = Oneshot {
                    config: Arc::clone(&config),
                    capacity,
                    commands: commands_rx,
                    status: status_tx,
                };
                tasks.spawn(manager.run());
                info
            }
            BinaryMode::Daemon => {
                tasks.spawn(Daemon::new(Arc::clone(&config), commands_rx, status_tx).run());
                loop {
                    let status = status_rx.borrow_and_update().clone();
                    match status {
                        ExecutorStatus::Ready(info) => break info,
                        ExecutorStatus::Unusable {
                            reason,
                            stderr_tail,
                        } => {
                            drop(commands_tx);
                            tasks.close();
                            tasks.wait().await;
                            return Err(StartError::CheckFailed {
                                reason,
                                stderr_tail,
                            });
                        }
                        _ => {}
                    }
                    if status_rx.changed().await.is_err() {
                        return Err(StartError::CheckFailed {
                            reason: "the executor supervisor stopped".to_owned(),
                            stderr_tail: None,
                        });
                    }
                }
            }
        };
        tasks.close();
        let capacity = capacity_of(&config, &info);
        Ok(Self {
            commands: commands_tx,
            admission: Arc::new(Semaphore::new(capacity.saturating_add(config.max_queued))),
            status: status_rx,
            info,
            capacity,
            max_queued: config.max_queued,
            tasks,
        })
    }

    /// What the executor declared in its check (of its first start, for a daemon).
    pub fn info(&self) -> &CheckInfo {
        &self.info
    }

    /// How many jobs run at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A watch of the executor's status (restarts, unusable, stopped).
    pub fn status(&self) -> watch::Receiver<ExecutorStatus> {
        self.status.clone()
    }

    /// Hands a job to the runtime, waiting while the runtime is full. Its events, ending with
    /// `Finished`, go to `events`; the receiver must keep reading them.
    pub async fn submit(
        &self,
        spec: JobSpec,
        events: mpsc::Sender<Event>,
    ) -> Result<(), SubmitError> {
        let permit = Arc::clone(&self.admission)
            .acquire_owned()
            .await
            .map_err(|_| SubmitError::ShutDown)?;
        let job = Submitted {
            spec,
            events,
            permit,
        };
        self.commands
            .send(Command::Submit(job))
            .await
            .map_err(|_| SubmitError::ShutDown)
    }

    /// Hands many jobs to the runtime at once, all reporting to `events`: one admission and one
    /// message per batch rather than per job. Waits while the runtime is full; a batch larger
    /// than the runtime's bound is handed over in parts. When the executor shuts down midway,
    /// the jobs not handed over come back in the error.
    pub async fn submit_batch(
        &self,
        jobs: Vec<JobSpec>,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), BatchRefused> {
        let limit = self.capacity.saturating_add(self.max_queued).max(1);
        let mut jobs = jobs.into_iter();
        loop {
            let part: Vec<JobSpec> = jobs.by_ref().take(limit).collect();
            if part.is_empty() {
                return Ok(());
            }
            let count = u32::try_from(part.len()).unwrap_or(u32::MAX);
            let Ok(mut permits) = Arc::clone(&self.admission).acquire_many_owned(count).await
            else {
                return Err(refused(part, jobs));
            };
            let mut batch = Vec::with_capacity(part.len());
            for spec in part {
                // The permits were taken together, one per job; each job frees its own.
                let permit = permits.split(1).expect("one permit per job of the part");
                batch.push(Submitted {
                    spec,
                    events: events.clone(),
                    permit,
                });
            }
            if let Err(mpsc::error::SendError(Command::SubmitBatch(batch))) =
                self.commands.send(Command::SubmitBatch(batch)).await
            {
                let part = batch.into_iter().map(|job| job.spec).collect();
                return Err(refused(part, jobs));
            }
        }
    }

    /// Cancels a job: a queued one is dropped, a running one is stopped (SIGTERM to its process
    /// group in oneshot mode, a `__cancel__` line in daemon mode). Its outcome is `Cancelled`.
    /// Unknown or finished jobs are ignored.
    pub async fn cancel(&self, job: JobId) {
        let _ = self.commands.send(Command::Cancel(job)).await;
    }

    /// Stops the executor: queued jobs end as `ExecutorLost`; running oneshot jobs are stopped;
    /// a daemon gets its stdin closed, `shutdown_grace` to exit, then SIGTERM and SIGKILL.
    pub async fn shutdown(self) {
        self.admission.close();
        let _ = self.commands.send(Command::Shutdown).await;
        self.tasks.wait().await;
    }
}

/// The jobs of a batch from `part` on, refused because the executor shut down.
fn refused(part: Vec<JobSpec>, rest: std::vec::IntoIter<JobSpec>) -> BatchRefused {
    BatchRefused {
        error: SubmitError::ShutDown,
        jobs: part.into_iter().chain(rest).collect(),
    }
}

fn capacity_of(config: &ExecutorConfig, info: &CheckInfo) -> usize {
    let capacity = config.capacity_override.map_or(info.capacity, |c| c.get());
    usize::try_from(capacity).unwrap_or(usize::MAX).max(1)
}

/// Runs the check in a oneshot process.
async fn check_oneshot(config: &ExecutorConfig) -> Result<CheckInfo, StartError> {
    check_process(config, &CancellationToken::new()).await
}

/// Runs the check in a oneshot process, which `stop` ends early (the check then fails).
pub(crate) async fn check_process(
    config: &ExecutorConfig,
    stop: &CancellationToken,
) -> Result<CheckInfo, StartError> {
    let never = CancellationToken::new();
    let outcome = oneshot::run(Run {
        config,
        input: format!("{CHECK_LINE}\n").into_bytes(),
        env: [
            ("GOOP_JOB_ID", CHECK_JOB_ID),
            ("GOOP_JOB_TYPE", CHECK_JOB_ID),
            ("GOOP_ATTEMPT", "0"),
        ],
        timeout: Some(config.check_timeout),
        cancel: &never,
        stop,
        events: None,
    })
    .await;
    match outcome {
        Outcome::Completed { result } => Ok(CheckInfo::from_result(&result)),
        Outcome::Failed(failure) | Outcome::ExecutorLost(failure) => Err(StartError::CheckFailed {
            reason: failure.message,
            stderr_tail: failure.stderr_tail,
        }),
        Outcome::Cancelled => Err(StartError::CheckFailed {
            reason: "cancelled".to_owned(),
            stderr_tail: None,
        }),
    }
}

/// Runs only the `__check__` handshake, in the given mode, and stops the executor again.
pub async fn check(config: ExecutorConfig) -> Result<CheckInfo, StartError> {
    match config.mode {
        BinaryMode::Oneshot => check_oneshot(&config).await,
        BinaryMode::Daemon => {
            let executor = Executor::start(config).await?;
            let info = executor.info().clone();
            executor.shutdown().await;
            Ok(info)
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::{Attempt, JobMode};
    use serde_json::value::RawValue;

    use super::*;

    fn spec(id: u64) -> JobSpec {
        JobSpec {
            id: JobId::from_u64(id),
            attempt: Attempt(1),
            job_type: "noop".to_owned(),
            mode: JobMode::Oneshot,
            payload: RawValue::NULL.to_owned().into(),
            timeout: None,
        }
    }

    /// A handle whose runtime takes `parts` batch commands, then stops. It stops before it
    /// lets the last part's jobs go, so a part waiting for their places finds it stopped.
    fn executor_taking(parts: usize) -> (Executor, tokio::task::JoinHandle<Vec<Vec<u64>>>) {
        let (commands, mut rx) = mpsc::channel(1);
        let taken = tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let Some(Command::SubmitBatch(batch)) = rx.recv().await else {
                    return taken;
                };
                taken.push(batch.iter().map(|job| job.spec.id.as_u64()).collect());
                if taken.len() == parts {
                    drop(rx);
                    drop(batch);
                    return taken;
                }
            }
        });
        let executor = Executor {
            commands,
            admission: Arc::new(Semaphore::new(2)),
            status: watch::channel(ExecutorStatus::Stopped).1,
            info: CheckInfo::default(),
            capacity: 2,
            max_queued: 0,
            tasks: TaskTracker::new(),
        };
        (executor, taken)
    }

    #[tokio::test]
    async fn a_batch_refused_midway_returns_exactly_the_jobs_not_handed_over() {
        let (executor, taken) = executor_taking(1);
        let (events, _rx) = mpsc::channel(16);
        let refused = executor
            .submit_batch((1..=5).map(spec).collect(), &events)
            .await
            .expect_err("the runtime stopped after one part");
        let ids: Vec<u64> = refused.jobs.iter().map(|job| job.id.as_u64()).collect();
        assert_eq!(taken.await.unwrap(), vec![vec![1, 2]]);
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(
            refused.to_string(),
            "the executor is shut down: 3 job(s) of the batch not taken"
        );
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_bound_goes_in_parts() {
        let (executor, taken) = executor_taking(3);
        let (events, _rx) = mpsc::channel(16);
        executor
            .submit_batch((1..=5).map(spec).collect(), &events)
            .await
            .unwrap();
        assert_eq!(taken.await.unwrap(), vec![vec![1, 2], vec![3, 4], vec![5]]);
    }
}
