//! Oneshot mode: a fresh process per job. Also runs the `__check__` handshake of both modes'
//! first start when the binary is oneshot.
//!
//! A job's process gets its job line on stdin, then stdin is closed. stdout is read line by line
//! until a terminal line (`done` or `error`); after it the process has `done_grace` to exit before
//! its group is killed. A timeout, a cancel or a shutdown sends SIGTERM to the group and SIGKILL
//! `kill_grace` later. When the process exits, whatever is left of its group is killed, so a
//! grandchild holding stdout open cannot hang the job.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use proto::{CheckInfo, ExecutorLine, IdMap, IdSet, JobId, JobLine};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ExecutorConfig;
use crate::executor::{Command, ExecutorStatus, StartError, Submitted, check_process};
use crate::job::{EventKind, Failure, FailureKind, JobSpec, LogStream, Outcome, format_limit};
use crate::lines::{Line, LineReader};
use crate::process::{self, describe_exit, signal_group};
use crate::restarts::{Restarts, Verdict};
use crate::sink::EventSink;
use crate::stderr::StderrTail;

/// One process run: what to write, how long it may take, and where its events go.
pub(crate) struct Run<'a> {
    pub(crate) config: &'a ExecutorConfig,
    /// The whole input, `\n` included.
    pub(crate) input: Vec<u8>,
    pub(crate) env: [(&'a str, &'a str); 3],
    pub(crate) timeout: Option<Duration>,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) stop: &'a CancellationToken,
    /// `None` for the check, whose lines are not passed on.
    pub(crate) events: Option<&'a EventSink>,
}

/// Why reading ended, before the exit status is known.
enum End {
    Done(Box<RawValue>),
    Error(String),
    TooLong(usize),
    TimedOut,
    Cancelled,
    Stopped,
}

enum Step {
    Wrote(io::Result<usize>),
    Line(io::Result<Option<Line>>),
    Stderr(io::Result<usize>),
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
    Stopped,
    Kill,
    DrainOver,
}

async fn write_some(stdin: &mut Option<ChildStdin>, buf: &[u8]) -> io::Result<usize> {
    match stdin {
        Some(stdin) => stdin.write(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one process to its end and says how it went.
pub(crate) async fn run(run: Run<'_>) -> Outcome {
    let config = run.config;
    // Starting a process blocks for a fork and an exec; done on the blocking pool it does not
    // hold up the runtime's worker threads, so several jobs start in parallel.
    let spawn_config = config.clone();
    let env: Vec<(String, String)> = run
        .env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let spawned = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        process::spawn(&spawn_config, &env)
    })
    .await
    .unwrap_or_else(|error| Err(io::Error::other(error)));
    let mut spawned = match spawned {
        Ok(spawned) => spawned,
        // Not the job's fault: the binary is gone or the system is out of something.
        Err(error) => {
            return Outcome::ExecutorLost(Failure::new(
                FailureKind::Io,
                format!("cannot start executor {}: {error}", config.path.display()),
            ));
        }
    };
    let pgid = spawned.pgid;
    if let Some(events) = run.events.filter(|_| config.started_events) {
        events.lossy(EventKind::Started);
    }
    let mut stdin = Some(spawned.stdin);
    let mut written = 0;
    let mut stdout = LineReader::new(spawned.stdout, config.max_line_bytes);
    let mut stdout_open = true;
    let mut stderr_buf = vec![0u8; 8192];
    let mut stderr_open = true;
    let mut tail = StderrTail::new(config.stderr_tail_bytes, config.max_log_bytes);
    let mut exit: Option<ExitStatus> = None;
    let mut end: Option<End> = None;
    let deadline = run.timeout.map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut killed_by_us = false;

    loop {
        if exit.is_some() && !stdout_open && !stderr_open {
            break;
        }
        let step = tokio::select! {
            biased;
            r = stdout.next(), if stdout_open => Step::Line(r),
            r = spawned.stderr.read(&mut stderr_buf), if stderr_open => Step::Stderr(r),
            r = write_some(&mut stdin, &run.input[written..]), if stdin.is_some() => Step::Wrote(r),
            r = spawned.child.wait(), if exit.is_none() => Step::Exited(r),
            () = run.cancel.cancelled(), if end.is_none() => Step::Cancelled,
            () = run.stop.cancelled(), if end.is_none() => Step::Stopped,
            () = sleep_until(deadline), if end.is_none() && deadline.is_some() => Step::TimedOut,
            () = sleep_until(kill_at), if exit.is_none() && kill_at.is_some() => Step::Kill,
            () = sleep_until(drain_until), if drain_until.is_some() => Step::DrainOver,
        };
        match step {
            Step::Wrote(Ok(n)) => {
                written += n;
                if written >= run.input.len() {
                    // Closing stdin tells the executor there is nothing more to read.
                    stdin = None;
                }
            }
            Step::Wrote(Err(error)) => {
                // The executor may have answered without reading its input; its lines and its
                // exit status say more than the broken pipe.
                tracing::debug!(%error, "executor stopped reading its input");
                stdin = None;
            }
            Step::Line(Ok(Some(Line::Text))) => {
                if end.is_some() {
                    continue;
                }
                match ExecutorLine::parse(stdout.text()) {
                    Ok(ExecutorLine::Done { result, .. }) => {
                        end = Some(End::Done(result.to_owned()));
                        stdin = None;
                        kill_at = Some(Instant::now() + config.done_grace);
                    }
                    Ok(ExecutorLine::Error { error, .. }) => {
                        end = Some(End::Error(error.into_owned()));
                        stdin = None;
                        kill_at = Some(Instant::now() + config.done_grace);
                    }
                    Ok(ExecutorLine::Progress { pct, msg, .. }) => {
                        if let Some(events) = run.events {
                            let msg = msg.into_owned();
                            events.lossy(EventKind::Progress { pct, msg });
                        }
                    }
                    Ok(ExecutorLine::Output { data, .. }) => {
                        if let Some(events) = run.events {
                            events.send(EventKind::Output(data.to_owned())).await;
                        }
                    }
                    Ok(ExecutorLine::Log { msg, .. }) => {
                        if let Some(events) = run.events {
                            let line = cut(&msg, config.max_log_bytes);
                            events.lossy(EventKind::Log {
                                stream: LogStream::Stdout,
                                line,
                            });
                        }
                    }
                    Err(error) => {
                        tracing::trace!(%error, "executor printed a line outside the protocol");
                        if let Some(events) = run.events {
                            let text = String::from_utf8_lossy(stdout.text());
                            events.lossy(EventKind::Log {
                                stream: LogStream::Stdout,
                                line: cut(&text, config.max_log_bytes),
                            });
                        }
                    }
                }
            }
            Step::Line(Ok(Some(Line::TooLong { len }))) => {
                if end.is_none() {
                    end = Some(End::TooLong(len));
                    stdin = None;
                    signal_group(pgid, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + config.kill_grace);
                }
            }
            Step::Line(Ok(None)) => {
                stdout_open = false;
                if end.is_none() && exit.is_none() {
                    // It can no longer report anything: a short grace to exit, then it is
                    // stopped rather than left to hang.
                    kill_at.get_or_insert(Instant::now() + config.done_grace);
                }
            }
            Step::Line(Err(error)) => {
                tracing::debug!(%error, "cannot read executor stdout");
                stdout_open = false;
            }
            Step::Stderr(Ok(0)) | Step::Stderr(Err(_)) => {
                stderr_open = false;
                tail.finish(|line| log_stderr(run.events, line));
            }
            Step::Stderr(Ok(n)) => {
                tail.push(&stderr_buf[..n], |line| log_stderr(run.events, line));
            }
            Step::Exited(result) => {
                exit = Some(result.unwrap_or_else(|error| {
                    tracing::warn!(%error, "cannot wait for executor");
                    std::os::unix::process::ExitStatusExt::from_raw(0)
                }));
                // Nothing of this job may outlive it.
                signal_group(pgid, Signal::SIGKILL);
                drain_until = Some(Instant::now() + config.kill_grace);
            }
            Step::TimedOut | Step::Cancelled | Step::Stopped => {
                end = Some(match step {
                    Step::TimedOut => End::TimedOut,
                    Step::Cancelled => End::Cancelled,
                    _ => End::Stopped,
                });
                stdin = None;
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + config.kill_grace);
            }
            Step::Kill => {
                signal_group(pgid, Signal::SIGKILL);
                killed_by_us = true;
                kill_at = None;
            }
            Step::DrainOver => {
                tracing::warn!(
                    pgid = pgid.as_raw(),
                    "executor output still open after it exited; a process left its group"
                );
                break;
            }
        }
    }

    let stderr_tail = tail.tail();
    let with_tail = |mut failure: Failure| {
        failure.stderr_tail = stderr_tail.clone();
        failure
    };
    match end {
        Some(End::Done(result)) => Outcome::Completed { result },
        Some(End::Error(error)) if !error.is_empty() => {
            Outcome::Failed(with_tail(Failure::new(FailureKind::ErrorLine, error)))
        }
        Some(End::TooLong(len)) => Outcome::Failed(with_tail(Failure::new(
            FailureKind::LineTooLong,
            format!(
                "executor printed a line of {len} bytes, over the limit of {} bytes",
                config.max_line_bytes
            ),
        ))),
        Some(End::TimedOut) => Outcome::Failed(with_tail(Failure::new(
            FailureKind::TimedOut,
            format!(
                "timed out after {}",
                format_limit(run.timeout.unwrap_or_default())
            ),
        ))),
        Some(End::Cancelled) => Outcome::Cancelled,
        Some(End::Stopped) => Outcome::ExecutorLost(with_tail(Failure::new(
            FailureKind::ShutDown,
            "the worker is shutting down",
        ))),
        Some(End::Error(_)) | None => {
            let status = exit.unwrap_or_default();
            let failure = if killed_by_us || status.success() {
                Failure::new(FailureKind::NoResult, "executor produced no result")
            } else if status.code().is_some() {
                Failure::new(FailureKind::Exited, describe_exit(status))
            } else {
                Failure::new(FailureKind::Signaled, describe_exit(status))
            };
            Outcome::Failed(with_tail(failure))
        }
    }
}

fn log_stderr(events: Option<&EventSink>, line: String) {
    if let Some(events) = events {
        events.lossy(EventKind::Log {
            stream: LogStream::Stderr,
            line,
        });
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [cut]", &text[..end])
}

/// The job line and environment of a job.
pub(crate) fn job_input(spec: &JobSpec) -> (Vec<u8>, String, String) {
    let id = spec.id.to_string();
    let mut input = Vec::with_capacity(spec.payload.get().len() + 128);
    JobLine {
        job_id: &id,
        payload: &spec.payload,
        timeout_s: spec.timeout_s(),
        job_type: &spec.job_type,
        mode: spec.mode,
        attempt: spec.attempt,
    }
    .write_to(&mut input);
    (input, id, spec.attempt.to_string())
}

/// The task that owns the oneshot jobs of one executor: a queue, at most `capacity` processes.
///
/// A process that cannot be started (the binary was removed or replaced, the system is out of
/// processes) loses its job (`ExecutorLost`, kind `Io`: it never ran, which a cluster worker
/// reports as not started), and takes the executor down the way a daemon that died is: no job
/// starts until a check passes again, after a backoff that doubles up to a cap (and goes back
/// to the first only once a process starts), and too many failed checks in a row make the
/// executor unusable. The status says so before the lost job's outcome goes out.
pub(crate) struct Oneshot {
    pub(crate) config: Arc<ExecutorConfig>,
    pub(crate) capacity: usize,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) status: watch::Sender<ExecutorStatus>,
}

struct Running {
    cancel: CancellationToken,
    /// [`Restarts::downs`] when the job started: its process starting says something of the
    /// executor's health only if it did not go down since.
    since: u64,
}

/// Whether jobs may start.
enum Health {
    Ready,
    /// A process could not be started; jobs wait for a check to pass.
    Down {
        /// When the next check starts; `None` while one runs.
        check_at: Option<Instant>,
    },
    /// The check failed too often; jobs are refused with this reason.
    Unusable(String),
}

/// A job whose process could not be started, handed back to the manager with why.
type Unstarted = Option<(Submitted, Failure)>;

impl Oneshot {
    pub(crate) async fn run(mut self) {
        let stop = CancellationToken::new();
        let mut queue: VecDeque<Submitted> = VecDeque::new();
        // The ids in `queue`, to refuse duplicates without a scan.
        let mut queued: IdSet<JobId> = IdSet::default();
        let mut running: IdMap<JobId, Running> = IdMap::default();
        let mut tasks: JoinSet<Unstarted> = JoinSet::new();
        let mut task_jobs: HashMap<tokio::task::Id, JobId> = HashMap::new();
        let mut checks: JoinSet<Result<CheckInfo, StartError>> = JoinSet::new();
        let mut health = Health::Ready;
        // The delays before checks, and when to give up. The delay grows with every start that
        // fails and goes back to the configured one only once a process starts (a passing check
        // is not enough): an executor whose check passes but whose jobs cannot start (a machine
        // out of processes) is checked less and less often rather than flapping at the first
        // delay. Failed checks grow it too.
        let mut restarts = Restarts::new(
            self.config.restart_backoff,
            self.config.max_restart_backoff,
            self.config.max_failed_restarts,
        );
        // `Executor::start` ran the first check, and it passed.
        restarts.check_passed();
        let mut shutting_down = false;
        loop {
            while !shutting_down && matches!(health, Health::Ready) && running.len() < self.capacity
            {
                let Some(job) = queue.pop_front() else { break };
                queued.remove(&job.spec.id);
                let cancel = CancellationToken::new();
                running.insert(
                    job.spec.id,
                    Running {
                        cancel: cancel.clone(),
                        since: restarts.downs(),
                    },
                );
                let config = Arc::clone(&self.config);
                let stop = stop.clone();
                let id = job.spec.id;
                let task = tasks.spawn(run_job(config, job, cancel, stop));
                task_jobs.insert(task.id(), id);
            }
            if shutting_down && tasks.is_empty() && checks.is_empty() {
                break;
            }
            let check_at = match health {
                Health::Down { check_at, .. } if !shutting_down => check_at,
                _ => None,
            };
            tokio::select! {
                command = self.commands.recv(), if !shutting_down => match command {
                    Some(Command::Submit(job)) => {
                        admit(job, &running, &mut queued, &mut queue, &health).await;
                    }
                    Some(Command::SubmitBatch(jobs)) => {
                        for job in jobs {
                            admit(job, &running, &mut queued, &mut queue, &health).await;
                        }
                    }
                    Some(Command::Cancel(id)) => {
                        if let Some(job) = running.get(&id) {
                            job.cancel.cancel();
                        } else if queued.remove(&id)
                            && let Some(at) = queue.iter().position(|q| q.spec.id == id)
                            && let Some(job) = queue.remove(at)
                        {
                            job.finish(Outcome::Cancelled).await;
                        }
                    }
                    Some(Command::Shutdown) | None => {
                        shutting_down = true;
                        stop.cancel();
                        queued.clear();
                        for job in queue.drain(..) {
                            job.finish(Outcome::ExecutorLost(Failure::new(
                                FailureKind::ShutDown,
                                "the worker is shutting down",
                            )))
                            .await;
                        }
                    }
                },
                Some(joined) = tasks.join_next_with_id() => {
                    let (task, unstarted) = match joined {
                        Ok((task, unstarted)) => (task, unstarted),
                        Err(error) => {
                            tracing::error!(%error, "oneshot job task failed");
                            (error.id(), None)
                        }
                    };
                    let since = task_jobs
                        .remove(&task)
                        .and_then(|id| running.remove(&id))
                        .map(|job| job.since);
                    match unstarted {
                        Some((job, failure)) => {
                            if !shutting_down {
                                self.went_down(&mut health, &failure.message, &mut restarts);
                            }
                            job.finish(Outcome::ExecutorLost(failure)).await;
                        }
                        // The job's process had started (or its task failed). Known when the
                        // job ends: a job started before an outage and ending in it says
                        // nothing of the outage, which `healthy_since` leaves alone.
                        None => {
                            if let Some(since) = since {
                                restarts.healthy_since(since);
                            }
                        }
                    }
                }
                () = sleep_until(check_at), if check_at.is_some() => {
                    if let Health::Down { check_at, .. } = &mut health {
                        *check_at = None;
                    }
                    let config = Arc::clone(&self.config);
                    let stop = stop.clone();
                    checks.spawn(async move { check_process(&config, &stop).await });
                }
                Some(checked) = checks.join_next() => {
                    let checked = checked.unwrap_or_else(|error| {
                        Err(StartError::CheckFailed {
                            reason: format!("the check task failed: {error}"),
                            stderr_tail: None,
                        })
                    });
                    if !shutting_down {
                        self.checked(&mut health, &mut restarts, checked, &mut queue, &mut queued)
                            .await;
                    }
                }
            }
        }
        let _ = self.status.send(ExecutorStatus::Stopped);
    }

    /// A process could not be started: no job starts until a check passes, after the delay
    /// `restarts` gives. Starts that fail while the executor is already down change nothing.
    fn went_down(&self, health: &mut Health, reason: &str, restarts: &mut Restarts) {
        if !matches!(health, Health::Ready) {
            return;
        }
        let delay = restarts.lost();
        tracing::warn!(%reason, delay_ms = millis(delay), "executor cannot be started; checking it again");
        *health = Health::Down {
            check_at: Some(Instant::now() + delay),
        };
        let _ = self.status.send(ExecutorStatus::Restarting {
            reason: reason.to_owned(),
        });
    }

    /// A check of an executor that was down ended: jobs start again, or the next check is
    /// set, or, after too many failures, the executor is unusable and its queue is lost.
    async fn checked(
        &self,
        health: &mut Health,
        restarts: &mut Restarts,
        checked: Result<CheckInfo, StartError>,
        queue: &mut VecDeque<Submitted>,
        queued: &mut IdSet<JobId>,
    ) {
        if !matches!(health, Health::Down { .. }) {
            return;
        }
        let (reason, stderr_tail) = match checked {
            Ok(info) => {
                restarts.check_passed();
                tracing::info!("executor checked again; taking jobs");
                *health = Health::Ready;
                let _ = self.status.send(ExecutorStatus::Ready(info));
                return;
            }
            Err(StartError::CheckFailed {
                reason,
                stderr_tail,
            }) => (reason, stderr_tail),
        };
        if let Verdict::Retry(delay) = restarts.check_failed() {
            tracing::warn!(%reason, delay_ms = millis(delay), "executor check failed; checking it again");
            *health = Health::Down {
                check_at: Some(Instant::now() + delay),
            };
            let _ = self.status.send(ExecutorStatus::Restarting { reason });
            return;
        }
        tracing::error!(%reason, "executor is unusable");
        let message = format!("executor is unusable: {reason}");
        *health = Health::Unusable(reason.clone());
        let _ = self.status.send(ExecutorStatus::Unusable {
            reason,
            stderr_tail,
        });
        queued.clear();
        for job in queue.drain(..) {
            job.finish(Outcome::ExecutorLost(Failure::new(
                FailureKind::Rejected,
                message.clone(),
            )))
            .await;
        }
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// Queues a job unless its id is already in the runtime or the executor is unusable.
async fn admit(
    job: Submitted,
    running: &IdMap<JobId, Running>,
    queued: &mut IdSet<JobId>,
    queue: &mut VecDeque<Submitted>,
    health: &Health,
) {
    if let Health::Unusable(reason) = health {
        job.finish(Outcome::ExecutorLost(Failure::new(
            FailureKind::Rejected,
            format!("executor is unusable: {reason}"),
        )))
        .await;
        return;
    }
    let id = job.spec.id;
    if running.contains_key(&id) || !queued.insert(id) {
        job.reject().await;
    } else {
        queue.push_back(job);
    }
}

/// Runs one job's process; a job whose process could not be started comes back unfinished.
async fn run_job(
    config: Arc<ExecutorConfig>,
    job: Submitted,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> Unstarted {
    let id = job.spec.id;
    let (input, id_text, attempt) = job_input(&job.spec);
    let sink = EventSink::new(job.events.clone(), id, job.spec.attempt);
    let outcome = run(Run {
        config: &config,
        input,
        env: [
            ("GOOP_JOB_ID", &id_text),
            ("GOOP_JOB_TYPE", &job.spec.job_type),
            ("GOOP_ATTEMPT", &attempt),
        ],
        timeout: job.spec.timeout,
        cancel: &cancel,
        stop: &stop,
        events: Some(&sink),
    })
    .await;
    match outcome {
        Outcome::ExecutorLost(failure) if failure.kind == FailureKind::Io => Some((job, failure)),
        outcome => {
            job.finish(outcome).await;
            None
        }
    }
}
