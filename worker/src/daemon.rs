//! Daemon mode: one long-lived executor process, supervised by one task.
//!
//! The task owns the daemon's stdin (job lines queue in one buffer, so many go out in one write)
//! and one buffered reader of its stdout; lines are routed to jobs by `job_id`. At most
//! `capacity` jobs are in the daemon at once. A cancelled or timed-out job gets a `__cancel__`
//! line and its outcome at once; its slot is reused when the daemon answers for it, or
//! `kill_grace` later.
//!
//! When the daemon dies (exit, closed stdout, broken stdin, failed check), its in-flight jobs
//! end as `ExecutorLost`, not as failures, and it is restarted after a backoff that doubles up
//! to a cap and resets when a job completes; every restart runs the check again. Too many failed
//! checks in a row make the executor unusable.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proto::{
    CHECK_JOB_ID, CHECK_LINE, CheckInfo, ExecutorLine, IdMap, IdSet, JobId, JobLine,
    write_cancel_line,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::ExecutorConfig;
use crate::executor::{Command, ExecutorStatus, Submitted};
use crate::job::{EventKind, Failure, FailureKind, LogStream, Outcome, format_limit};
use crate::lines::{Line, LineReader};
use crate::oneshot::cut;
use crate::process::{self, describe_exit, signal_group};
use crate::restarts::{Restarts, Verdict};
use crate::stderr::StderrTail;

struct Proc {
    /// Waits for the process to exit. It runs as a task of its own because polling a child's
    /// exit costs a `waitpid` call, which this loop must not pay on every line.
    waiter: JoinSet<io::Result<ExitStatus>>,
    pgid: Pid,
    stdin: Option<ChildStdin>,
    /// Lines not yet written, from `written` on.
    out: Vec<u8>,
    written: usize,
    stdout: LineReader<ChildStdout>,
    stdout_open: bool,
    stderr: ChildStderr,
    stderr_buf: Box<[u8]>,
    stderr_open: bool,
    tail: StderrTail,
    exit: Option<ExitStatus>,
    /// After the process exited, how long its pipes may stay open.
    drain_until: Option<Instant>,
    /// After stdout closed, how long the process has to exit before it is killed.
    exit_by: Option<Instant>,
    /// Why the supervisor killed it, when it did.
    kill_reason: Option<String>,
}

struct Running {
    job: Submitted,
    deadline: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Phase {
    /// No process; start one at this time.
    Waiting { until: Instant },
    /// The check line is out; it must be answered by this time.
    Checking { deadline: Instant },
    /// Taking jobs.
    Ready,
    /// The check failed too often; jobs are refused.
    Unusable,
    /// The supervisor killed the process (during its check or not) and waits for it to go.
    Dying { checking: bool },
    /// Shutting down: stdin is closed; then SIGTERM, then SIGKILL, at these times.
    Stopping {
        term_at: Option<Instant>,
        kill_at: Option<Instant>,
    },
}

enum Step {
    /// This many commands were received into `Daemon::commands_in`; 0 means the handle is gone.
    Commands(usize),
    Line(io::Result<Option<Line>>),
    Wrote(io::Result<usize>),
    Stderr(io::Result<usize>),
    Exited(io::Result<ExitStatus>),
    Timer,
}

pub(crate) struct Daemon {
    config: Arc<ExecutorConfig>,
    commands: mpsc::Receiver<Command>,
    /// Commands taken from the channel in one go.
    commands_in: Vec<Command>,
    status: watch::Sender<ExecutorStatus>,
    capacity: usize,
    queue: VecDeque<Submitted>,
    /// The ids in `queue`, to refuse duplicates without a scan.
    queued: IdSet<JobId>,
    running: IdMap<JobId, Running>,
    /// Cancelled or timed-out jobs still holding a slot, until the daemon answers for them.
    draining: IdMap<JobId, Instant>,
    deadlines: BTreeSet<(Instant, JobId)>,
    /// Places of jobs finished in this turn of the loop, freed together at its end.
    finished_places: Option<OwnedSemaphorePermit>,
    proc: Option<Proc>,
    phase: Phase,
    /// When to restart and when to give up. A failed check is one more loss of the process,
    /// so failed checks and losses grow one delay; a first check that fails is final.
    restarts: Restarts,
    shutting_down: bool,
}

/// How many commands are taken from the channel at once.
const COMMANDS_AT_ONCE: usize = 256;

async fn write_some(stdin: Option<&mut ChildStdin>, buf: &[u8]) -> io::Result<usize> {
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

impl Daemon {
    pub(crate) fn new(
        config: Arc<ExecutorConfig>,
        commands: mpsc::Receiver<Command>,
        status: watch::Sender<ExecutorStatus>,
    ) -> Self {
        let restarts = Restarts::new(
            config.restart_backoff,
            config.max_restart_backoff,
            config.max_failed_restarts,
        );
        Self {
            config,
            commands,
            commands_in: Vec::with_capacity(COMMANDS_AT_ONCE),
            status,
            capacity: 1,
            queue: VecDeque::new(),
            queued: IdSet::default(),
            running: IdMap::default(),
            draining: IdMap::default(),
            deadlines: BTreeSet::new(),
            finished_places: None,
            proc: None,
            phase: Phase::Waiting {
                until: Instant::now(),
            },
            restarts,
            shutting_down: false,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.admit();
            if self.shutting_down && self.proc.is_none() {
                break;
            }
            let wake = self.next_wakeup();
            let shutting_down = self.shutting_down;
            let step = match self.proc.as_mut() {
                Some(p) => {
                    let has_out = p.written < p.out.len();
                    let stdin = if has_out { p.stdin.as_mut() } else { None };
                    tokio::select! {
                        biased;
                        () = sleep_until(wake) => Step::Timer,
                        n = self.commands.recv_many(&mut self.commands_in, COMMANDS_AT_ONCE),
                            if !shutting_down => Step::Commands(n),
                        Some(r) = p.waiter.join_next(), if p.exit.is_none() => {
                            Step::Exited(r.unwrap_or_else(|e| Err(io::Error::other(e))))
                        }
                        r = p.stdout.next(), if p.stdout_open => Step::Line(r),
                        r = p.stderr.read(&mut p.stderr_buf), if p.stderr_open => Step::Stderr(r),
                        r = write_some(stdin, &p.out[p.written..]), if has_out => Step::Wrote(r),
                    }
                }
                None => tokio::select! {
                    biased;
                    () = sleep_until(wake) => Step::Timer,
                    n = self.commands.recv_many(&mut self.commands_in, COMMANDS_AT_ONCE),
                        if !shutting_down => Step::Commands(n),
                },
            };
            self.handle(step).await;
            self.finish_process_if_gone().await;
            // One release for every job finished in this turn.
            self.finished_places = None;
        }
        let _ = self.status.send(ExecutorStatus::Stopped);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Waiting { until } if self.proc.is_none() && !self.shutting_down => Some(until),
            Phase::Checking { deadline } => Some(deadline),
            Phase::Stopping { term_at, kill_at } => term_at.or(kill_at),
            _ => None,
        };
        let drain = self
            .proc
            .as_ref()
            .and_then(|p| p.drain_until.or(p.exit_by.filter(|_| p.exit.is_none())));
        let job = self.deadlines.first().map(|(at, _)| *at);
        let draining = self.draining.values().min().copied();
        [phase, drain, job, draining].into_iter().flatten().min()
    }

    async fn handle(&mut self, step: Step) {
        match step {
            Step::Timer => self.on_timer().await,
            Step::Commands(0) => self.on_shutdown().await,
            Step::Commands(_) => {
                let mut commands = std::mem::take(&mut self.commands_in);
                for command in commands.drain(..) {
                    match command {
                        Command::Submit(job) => self.on_submit(job).await,
                        Command::SubmitBatch(jobs) => {
                            for job in jobs {
                                self.on_submit(job).await;
                            }
                        }
                        Command::Cancel(id) => self.on_cancel(id).await,
                        Command::Shutdown => self.on_shutdown().await,
                    }
                }
                self.commands_in = commands;
            }
            Step::Exited(result) => {
                if let Some(p) = self.proc.as_mut() {
                    p.exit = Some(result.unwrap_or_else(|error| {
                        tracing::warn!(%error, "cannot wait for the executor daemon");
                        std::os::unix::process::ExitStatusExt::from_raw(0)
                    }));
                    // Whatever the daemon started goes with it.
                    signal_group(p.pgid, Signal::SIGKILL);
                    p.drain_until = Some(Instant::now() + self.config.kill_grace);
                }
            }
            Step::Line(Ok(Some(line))) => {
                self.on_line(line).await;
                // Lines already read are handled in one go: one wakeup, many answers.
                while let Some(line) = self.proc.as_mut().and_then(|p| p.stdout.buffered()) {
                    self.on_line(line).await;
                }
            }
            Step::Line(Ok(None)) | Step::Line(Err(_)) => {
                if let Some(p) = self.proc.as_mut() {
                    p.stdout_open = false;
                    if p.exit.is_none() {
                        // Usually the daemon is exiting; if not, it can no longer answer and is
                        // killed once the grace is over.
                        p.exit_by = Some(Instant::now() + self.config.kill_grace);
                    }
                }
            }
            Step::Stderr(result) => {
                let Some(p) = self.proc.as_mut() else { return };
                match result {
                    Ok(n) if n > 0 => {
                        let pid = p.pgid.as_raw();
                        p.tail.push(&p.stderr_buf[..n], |line| {
                            tracing::info!(target: "executor", pid, stderr = %line);
                        });
                    }
                    _ => {
                        p.stderr_open = false;
                        let pid = p.pgid.as_raw();
                        p.tail
                            .finish(|line| tracing::info!(target: "executor", pid, stderr = %line));
                    }
                }
            }
            Step::Wrote(Ok(n)) => {
                if let Some(p) = self.proc.as_mut() {
                    p.written += n;
                    if p.written >= p.out.len() {
                        p.out.clear();
                        p.written = 0;
                    }
                }
            }
            Step::Wrote(Err(error)) => {
                if let Some(p) = self.proc.as_mut() {
                    tracing::debug!(%error, "executor daemon stopped reading its input");
                    p.stdin = None;
                    p.kill_reason.get_or_insert_with(|| {
                        format!("executor stopped reading its input: {error}")
                    });
                    signal_group(p.pgid, Signal::SIGKILL);
                }
            }
        }
    }

    /// Writes job lines while there are free slots and a checked daemon.
    fn admit(&mut self) {
        if !matches!(self.phase, Phase::Ready) || self.shutting_down {
            return;
        }
        let Some(p) = self.proc.as_mut() else { return };
        if p.stdin.is_none() {
            return;
        }
        while self.running.len() + self.draining.len() < self.capacity {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&job.spec.id);
            let id_text = hex_id(job.spec.id);
            JobLine {
                job_id: id_text.as_str(),
                payload: &job.spec.payload,
                timeout_s: job.spec.timeout_s(),
                job_type: &job.spec.job_type,
                mode: job.spec.mode,
                attempt: job.spec.attempt,
            }
            .write_to(&mut p.out);
            let deadline = job.spec.timeout.map(|t| Instant::now() + t);
            let id = job.spec.id;
            if let Some(at) = deadline {
                self.deadlines.insert((at, id));
            }
            if self.config.started_events {
                job.lossy(EventKind::Started);
            }
            self.running.insert(id, Running { job, deadline });
        }
    }

    async fn on_submit(&mut self, job: Submitted) {
        if self.shutting_down {
            job.finish(lost(
                FailureKind::ShutDown,
                "the worker is shutting down",
                None,
            ))
            .await;
            return;
        }
        let id = job.spec.id;
        if self.running.contains_key(&id) || self.queued.contains(&id) {
            job.reject().await;
            return;
        }
        if let Phase::Unusable = self.phase {
            let reason = match &*self.status.borrow() {
                ExecutorStatus::Unusable { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            job.finish(lost(
                FailureKind::Rejected,
                format!("executor is unusable: {reason}"),
                None,
            ))
            .await;
            return;
        }
        self.queued.insert(id);
        self.queue.push_back(job);
    }

    async fn on_cancel(&mut self, id: JobId) {
        if self.queued.remove(&id)
            && let Some(at) = self.queue.iter().position(|q| q.spec.id == id)
        {
            if let Some(job) = self.queue.remove(at) {
                job.finish(Outcome::Cancelled).await;
            }
            return;
        }
        self.stop_job(id, Outcome::Cancelled).await;
    }

    /// Ends a running job now (cancel or timeout): the daemon gets a cancel line, the job its
    /// outcome; the slot stays taken until the daemon answers or the grace runs out.
    async fn stop_job(&mut self, id: JobId, outcome: Outcome) {
        let Some(job) = self.remove_running(id) else {
            return;
        };
        if let Some(p) = self.proc.as_mut() {
            write_cancel_line(hex_id(id).as_str(), &mut p.out);
            self.draining
                .insert(id, Instant::now() + self.config.kill_grace);
        }
        job.job.finish(outcome).await;
    }

    fn free_later(&mut self, place: OwnedSemaphorePermit) {
        match &mut self.finished_places {
            Some(places) => places.merge(place),
            None => self.finished_places = Some(place),
        }
    }

    fn remove_running(&mut self, id: JobId) -> Option<Running> {
        let job = self.running.remove(&id)?;
        if let Some(at) = job.deadline {
            self.deadlines.remove(&(at, id));
        }
        Some(job)
    }

    async fn on_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.queued.clear();
        for job in self.queue.drain(..) {
            job.finish(lost(
                FailureKind::ShutDown,
                "the worker is shutting down",
                None,
            ))
            .await;
        }
        match self.proc.as_mut() {
            Some(p) => {
                // Closing stdin is the daemon's signal to finish and exit.
                p.stdin = None;
                p.out.clear();
                p.written = 0;
                self.phase = Phase::Stopping {
                    term_at: Some(Instant::now() + self.config.shutdown_grace),
                    kill_at: None,
                };
            }
            None => self.phase = Phase::Unusable,
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Waiting { until } if until <= now && self.proc.is_none() => self.start_process(),
            Phase::Checking { deadline } if deadline <= now => {
                let reason = format!(
                    "check timed out after {}",
                    format_limit(self.config.check_timeout)
                );
                self.kill(reason);
            }
            Phase::Stopping { term_at, kill_at } => {
                if let Some(p) = self.proc.as_mut() {
                    if term_at.is_some_and(|at| at <= now) {
                        signal_group(p.pgid, Signal::SIGTERM);
                        self.phase = Phase::Stopping {
                            term_at: None,
                            kill_at: Some(now + self.config.kill_grace),
                        };
                    } else if kill_at.is_some_and(|at| at <= now) {
                        signal_group(p.pgid, Signal::SIGKILL);
                        self.phase = Phase::Stopping {
                            term_at: None,
                            kill_at: None,
                        };
                    }
                }
            }
            _ => {}
        }
        if let Some(p) = self.proc.as_ref()
            && p.exit.is_none()
            && p.exit_by.is_some_and(|at| at <= now)
        {
            self.kill("executor closed its stdout".to_owned());
            if let Some(p) = self.proc.as_mut() {
                p.exit_by = None;
            }
        }
        if let Some(p) = self.proc.as_mut()
            && p.drain_until.is_some_and(|at| at <= now)
        {
            tracing::warn!(
                pgid = p.pgid.as_raw(),
                "executor output still open after it exited; a process left its group"
            );
            p.stdout_open = false;
            p.stderr_open = false;
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let limit = self
                .running
                .get(&id)
                .and_then(|r| r.job.spec.timeout)
                .unwrap_or_default();
            let failure = Failure::new(
                FailureKind::TimedOut,
                format!("timed out after {}", format_limit(limit)),
            );
            self.stop_job(id, Outcome::Failed(failure)).await;
            self.deadlines.remove(&(at, id));
        }
        let expired: Vec<JobId> = self
            .draining
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::warn!(job_id = %id, "executor daemon did not finish a cancelled job in time; its slot is reused");
            self.draining.remove(&id);
        }
    }

    fn start_process(&mut self) {
        // No per-job environment: one process serves many jobs.
        let env = [];
        match process::spawn(&self.config, &env) {
            Ok(mut spawned) => {
                let mut waiter = JoinSet::new();
                waiter.spawn(async move { spawned.child.wait().await });
                let mut out = Vec::with_capacity(64 * 1024);
                out.extend_from_slice(CHECK_LINE.as_bytes());
                out.push(b'\n');
                tracing::debug!(pid = spawned.pgid.as_raw(), "executor daemon started");
                self.proc = Some(Proc {
                    waiter,
                    pgid: spawned.pgid,
                    stdin: Some(spawned.stdin),
                    out,
                    written: 0,
                    stdout: LineReader::new(spawned.stdout, self.config.max_line_bytes),
                    stdout_open: true,
                    stderr: spawned.stderr,
                    stderr_buf: vec![0; 8192].into_boxed_slice(),
                    stderr_open: true,
                    tail: StderrTail::new(self.config.stderr_tail_bytes, self.config.max_log_bytes),
                    exit: None,
                    drain_until: None,
                    exit_by: None,
                    kill_reason: None,
                });
                self.phase = Phase::Checking {
                    deadline: Instant::now() + self.config.check_timeout,
                };
            }
            Err(error) => {
                let reason = format!(
                    "cannot start executor {}: {error}",
                    self.config.path.display()
                );
                self.after_loss(reason, None, true);
            }
        }
    }

    /// Kills the daemon for `reason`; the rest happens when it is gone.
    fn kill(&mut self, reason: String) {
        if let Some(p) = self.proc.as_mut() {
            p.kill_reason.get_or_insert(reason);
            p.stdin = None;
            signal_group(p.pgid, Signal::SIGKILL);
            if !matches!(self.phase, Phase::Stopping { .. }) {
                let checking = matches!(self.phase, Phase::Checking { .. });
                self.phase = Phase::Dying { checking };
            }
        }
    }

    async fn on_line(&mut self, line: Line) {
        let Some(p) = self.proc.as_mut() else { return };
        let text = p.stdout.text();
        let parsed = match line {
            Line::Text => ExecutorLine::parse(text),
            Line::TooLong { len } => {
                let limit = self.config.max_line_bytes;
                let id = sniff_job_id(text);
                self.on_long_line(id, len, limit).await;
                return;
            }
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::info!(
                    target: "executor",
                    pid = p.pgid.as_raw(),
                    %error,
                    stdout = %cut(&String::from_utf8_lossy(text), self.config.max_log_bytes),
                );
                return;
            }
        };
        if let Phase::Checking { .. } = self.phase {
            match (&parsed, parsed.job_id()) {
                (ExecutorLine::Done { result, .. }, None | Some(CHECK_JOB_ID)) => {
                    let info = CheckInfo::from_result(result);
                    self.on_checked(info);
                    return;
                }
                (ExecutorLine::Error { error, .. }, None | Some(CHECK_JOB_ID)) => {
                    let reason = format!("check failed: {error}");
                    self.kill(reason);
                    return;
                }
                _ => {}
            }
        }
        let id = match parsed.job_id() {
            Some(id_text) => match id_text.parse::<JobId>() {
                Ok(id) => id,
                Err(_) => {
                    tracing::debug!(job_id = id_text, "executor daemon line for an unknown job");
                    return;
                }
            },
            // A line without a job_id can only be about the one job in flight, if there is
            // exactly one: this lets a Goop² executor (which never names jobs) run as a
            // daemon of capacity 1.
            None if self.running.len() == 1 && self.draining.is_empty() => {
                match self.running.keys().next() {
                    Some(id) => *id,
                    None => return,
                }
            }
            None => {
                match &parsed {
                    ExecutorLine::Done { .. } | ExecutorLine::Error { .. } => {
                        tracing::warn!(
                            pid = p.pgid.as_raw(),
                            "executor daemon answered without a job_id; ignored"
                        );
                    }
                    ExecutorLine::Log { msg, .. } => {
                        tracing::info!(target: "executor", pid = p.pgid.as_raw(), log = %msg);
                    }
                    _ => {}
                }
                return;
            }
        };
        let Some(job) = self.running.get(&id) else {
            if matches!(
                parsed,
                ExecutorLine::Done { .. } | ExecutorLine::Error { .. }
            ) {
                // The daemon finished a job that was cancelled: its slot is free again.
                self.draining.remove(&id);
            }
            return;
        };
        let max_log = self.config.max_log_bytes;
        match parsed {
            ExecutorLine::Progress { pct, msg, .. } => job.job.lossy(EventKind::Progress {
                pct,
                msg: msg.into_owned(),
            }),
            ExecutorLine::Log { msg, .. } => job.job.lossy(EventKind::Log {
                stream: LogStream::Stdout,
                line: cut(&msg, max_log),
            }),
            ExecutorLine::Output { data, .. } => {
                job.job.send(EventKind::Output(data.to_owned())).await;
            }
            ExecutorLine::Done { result, .. } => {
                let result = result.to_owned();
                if let Some(job) = self.remove_running(id) {
                    self.restarts.healthy();
                    let place = job.job.finish_keeping_place(Outcome::Completed { result });
                    self.free_later(place.await);
                }
            }
            ExecutorLine::Error { error, .. } => {
                let failure = if error.is_empty() {
                    Failure::new(
                        FailureKind::NoResult,
                        "executor reported an error with no text",
                    )
                } else {
                    Failure::new(FailureKind::ErrorLine, error.into_owned())
                };
                if let Some(job) = self.remove_running(id) {
                    job.job.finish(Outcome::Failed(failure)).await;
                }
            }
        }
    }

    async fn on_long_line(&mut self, id: Option<JobId>, len: usize, limit: usize) {
        let id = match id {
            Some(id) if self.running.contains_key(&id) => Some(id),
            Some(id) => {
                self.draining.remove(&id);
                None
            }
            None if self.running.len() == 1 => self.running.keys().next().copied(),
            None => {
                tracing::warn!(
                    len,
                    limit,
                    "executor daemon printed an over-long line for no known job; dropped"
                );
                None
            }
        };
        if let Some(id) = id {
            let failure = Failure::new(
                FailureKind::LineTooLong,
                format!("executor printed a line of {len} bytes, over the limit of {limit} bytes"),
            );
            self.stop_job(id, Outcome::Failed(failure)).await;
        }
    }

    fn on_checked(&mut self, info: CheckInfo) {
        let capacity = self
            .config
            .capacity_override
            .map_or(info.capacity, |c| c.get());
        self.capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        self.restarts.check_passed();
        self.phase = Phase::Ready;
        tracing::debug!(capacity = self.capacity, "executor daemon checked");
        let _ = self.status.send(ExecutorStatus::Ready(info));
    }

    /// Once the process has exited and its pipes are done, ends what it held and plans what
    /// comes next.
    async fn finish_process_if_gone(&mut self) {
        let gone = self
            .proc
            .as_ref()
            .is_some_and(|p| p.exit.is_some() && !p.stdout_open && !p.stderr_open);
        if !gone {
            return;
        }
        let Some(mut p) = self.proc.take() else {
            return;
        };
        let pid = p.pgid.as_raw();
        p.tail
            .finish(|line| tracing::info!(target: "executor", pid, stderr = %line));
        let status = p.exit.unwrap_or_default();
        let reason = p
            .kill_reason
            .take()
            .unwrap_or_else(|| format!("executor {}", describe_exit(status)));
        let tail = p.tail.tail();
        let was_checking = matches!(
            self.phase,
            Phase::Checking { .. } | Phase::Dying { checking: true }
        );
        self.draining.clear();
        self.deadlines.clear();
        let kind = if self.shutting_down {
            FailureKind::ShutDown
        } else {
            FailureKind::Crashed
        };
        let in_flight: Vec<Running> = self.running.drain().map(|(_, job)| job).collect();
        if !in_flight.is_empty() && !self.shutting_down {
            tracing::warn!(pid, jobs = in_flight.len(), %reason, "executor daemon lost with jobs in flight");
        }
        // The status goes out before the jobs' outcomes, so that whoever watches it knows the
        // executor is down by the time it hears of the jobs it lost (the node stops taking jobs
        // before it reports them lost).
        if !self.shutting_down {
            self.after_loss(reason.clone(), tail.clone(), was_checking);
        }
        for job in in_flight {
            job.job
                .finish(lost(kind, reason.clone(), tail.clone()))
                .await;
        }
        if self.shutting_down {
            return;
        }
        if let Phase::Unusable = self.phase {
            let message = match &*self.status.borrow() {
                ExecutorStatus::Unusable { reason, .. } => {
                    format!("executor is unusable: {reason}")
                }
                _ => "executor is unusable".to_owned(),
            };
            self.queued.clear();
            for job in self.queue.drain(..) {
                job.finish(lost(FailureKind::Rejected, message.clone(), None))
                    .await;
            }
        }
    }

    /// Plans the restart after the daemon died or could not start.
    fn after_loss(&mut self, reason: String, tail: Option<String>, check_failed: bool) {
        let verdict = if check_failed {
            self.restarts.check_failed()
        } else {
            Verdict::Retry(self.restarts.lost())
        };
        let Verdict::Retry(delay) = verdict else {
            tracing::error!(%reason, "executor is unusable");
            self.phase = Phase::Unusable;
            let _ = self.status.send(ExecutorStatus::Unusable {
                reason,
                stderr_tail: tail,
            });
            return;
        };
        tracing::warn!(%reason, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "executor daemon lost; restarting");
        self.phase = Phase::Waiting {
            until: Instant::now() + delay,
        };
        let _ = self.status.send(ExecutorStatus::Restarting { reason });
    }
}

/// A job id as its 16 hex digits, without going through `fmt` (this is on the hot path).
struct HexId([u8; 16]);

impl HexId {
    fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn hex_id(id: JobId) -> HexId {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let value = id.as_u64();
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    HexId(out)
}

fn lost(kind: FailureKind, message: impl Into<String>, tail: Option<String>) -> Outcome {
    let mut failure = Failure::new(kind, message);
    failure.stderr_tail = tail;
    Outcome::ExecutorLost(failure)
}

/// Finds `"job_id":"<id>"` in the first bytes of an over-long line, so the job it belongs to
/// can be failed without reading the rest.
fn sniff_job_id(prefix: &[u8]) -> Option<JobId> {
    const KEY: &[u8] = b"\"job_id\"";
    let at = prefix.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = &prefix[at + KEY.len()..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let id = rest.get(..16)?;
    std::str::from_utf8(id).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_match_the_display_form() {
        for value in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = JobId::from_u64(value);
            assert_eq!(hex_id(id).as_str(), id.to_string());
        }
    }

    #[test]
    fn sniffs_a_job_id_from_a_line_prefix() {
        let id = sniff_job_id(br#"{"job_id" : "00000000000000ab","status":"done","result":"xxxx"#);
        assert_eq!(id, Some(JobId::from_u64(0xab)));
        assert_eq!(sniff_job_id(br#"{"status":"done","result":"xxxx"#), None);
        assert_eq!(sniff_job_id(br#"{"job_id":"short"}"#), None);
    }
}
