//! `goop executor`: try an executor binary locally, without a cluster.
//!
//! `check` runs the `__check__` handshake and prints what the executor declared; `run` feeds it
//! job lines from a file or stdin through the same runtime a worker node uses and prints one
//! result line per job. Both exist so that executor authors can test their binary alone.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::{self, IsTerminal, Read, Write};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use proto::{Attempt, BinaryMode, JobId, JobMode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use worker::{
    Event, EventKind, Executor, ExecutorConfig, FailureKind, JobSpec, LogStream, Outcome,
    StartError,
};

/// Exit status when the executor or the arguments cannot be used.
const EXIT_UNUSABLE: u8 = 2;

/// Try an executor binary locally: run its check, or run jobs through it.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    #[command(subcommand)]
    command: ExecutorCommand,
}

#[derive(Debug, Subcommand)]
enum ExecutorCommand {
    /// Run the `__check__` handshake and print what the executor declares.
    ///
    /// Prints one JSON line: {"ok":true,"types":[...],"capacity":N,"version":"..."} (types
    /// empty means every type; version null when not given), or {"ok":false,"error":"..."}
    /// with the end of the executor's stderr under "stderr" when it wrote any. Exits 0 when the
    /// check passed, 1 when it failed.
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
    /// Run jobs through an executor exactly as a worker node would.
    ///
    /// Reads job lines from --jobs FILE, or from stdin when no file is given (all of the input
    /// is read and checked before the first job runs). Each line is a JSON object:
    ///   {"id": "...", "type": "...", "payload": <any JSON>, "timeout_s": N, "mode": "oneshot"|"continuous"}
    /// Only "type" is required. "id" names the job in the output (one is generated when
    /// absent); the executor sees it as its job_id when it is 16 lowercase hex characters,
    /// else a generated one. "payload" defaults to null, "timeout_s" to 0 (no limit), "mode"
    /// to "oneshot". Blank lines are skipped.
    ///
    /// Writes one JSON line per finished job to stdout, in the order they finish:
    ///   {"job_id": "...", "status": "completed"|"failed"|"cancelled", "result": <JSON>,
    ///    "error": "...", "stderr": "...", "elapsed_ms": N}
    /// ("result" for completed jobs; "error", and "stderr" when the executor wrote any, for the
    /// others). Progress goes to stderr, as a bar when stderr is a terminal; executor logs go to
    /// stderr as log lines (GOOP_LOG=debug shows progress lines too).
    ///
    /// A job whose daemon crashes under it is not the job's fault: it is run again, up to
    /// --max-lost times, before it is reported failed.
    ///
    /// Exit status: 0 when every job completed, 1 when any failed or was cancelled (Ctrl-C
    /// cancels the jobs), 2 when the executor or the arguments are unusable (a failed check, a
    /// bad job line, an executor that cannot be restarted).
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The executor binary.
    path: PathBuf,
    /// How to run it: a process per job (oneshot), or one long-lived process (daemon).
    #[arg(long, default_value = "oneshot", value_parser = parse_mode)]
    mode: BinaryMode,
    /// The time limit of the check, in seconds.
    #[arg(long, default_value_t = 5.0)]
    check_timeout: f64,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The executor binary.
    path: PathBuf,
    /// How to run it: a process per job (oneshot), or one long-lived process (daemon).
    #[arg(long, value_parser = parse_mode)]
    mode: BinaryMode,
    /// Run at most this many jobs at once, instead of the capacity the executor declares.
    #[arg(long)]
    capacity: Option<NonZeroU32>,
    /// Read job lines from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    jobs: Option<PathBuf>,
    /// How many times a job lost to a daemon crash is run again before it counts as failed.
    #[arg(long, default_value_t = 3)]
    max_lost: u32,
    /// The longest stdout line accepted from the executor, in bytes.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
    /// The time limit of the check, in seconds.
    #[arg(long, default_value_t = 5.0)]
    check_timeout: f64,
}

fn parse_mode(s: &str) -> Result<BinaryMode, String> {
    s.parse()
        .map_err(|e: proto::UnknownBinaryMode| e.to_string())
}

fn check_timeout(seconds: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid check timeout {seconds}: expected a positive number"))
}

/// Runs `goop executor ...`.
pub(crate) fn run(args: ExecutorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("goop: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    match args.command {
        ExecutorCommand::Check(args) => runtime.block_on(check(args)),
        ExecutorCommand::Run(args) => runtime.block_on(run_jobs(args)),
    }
}

#[derive(Serialize)]
struct CheckReport<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr: Option<&'a str>,
}

async fn check(args: CheckArgs) -> ExitCode {
    let mut config = ExecutorConfig::new(&args.path, args.mode);
    match check_timeout(args.check_timeout) {
        Ok(timeout) => config.check_timeout = timeout,
        Err(error) => {
            eprintln!("goop: {error}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    }
    let result = worker::check(config).await;
    let (report, ok) = match &result {
        Ok(info) => (
            CheckReport {
                ok: true,
                types: Some(&info.types),
                capacity: Some(info.capacity),
                version: Some(info.version.as_deref()),
                error: None,
                stderr: None,
            },
            true,
        ),
        Err(StartError::CheckFailed {
            reason,
            stderr_tail,
        }) => (
            CheckReport {
                ok: false,
                types: None,
                capacity: None,
                version: None,
                error: Some(reason),
                stderr: stderr_tail.as_deref(),
            },
            false,
        ),
    };
    let line = serde_json::to_string(&report).unwrap_or_else(|_| "{\"ok\":false}".to_owned());
    println!("{line}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One line of the job input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobInput {
    id: Option<String>,
    #[serde(rename = "type")]
    job_type: String,
    payload: Option<Box<RawValue>>,
    timeout_s: Option<u64>,
    mode: Option<JobMode>,
}

/// A job of the input, ready to be (re)submitted.
struct InputJob {
    name: String,
    job_type: String,
    payload: std::sync::Arc<RawValue>,
    timeout: Option<Duration>,
    mode: JobMode,
}

/// Why the job input cannot be used.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("cannot read {source_name}: {error}")]
    Read {
        source_name: String,
        error: io::Error,
    },
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("no jobs in the input")]
    Empty,
}

/// Parses the job lines; ids are checked for duplicates and mapped to job ids.
fn parse_jobs(text: &str) -> Result<Vec<(JobId, InputJob)>, InputError> {
    let mut jobs = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ids: HashSet<JobId> = HashSet::new();
    let mut pending_names = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| InputError::Line {
            line: number,
            reason,
        };
        let input: JobInput = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if input.job_type.is_empty() {
            return Err(bad("\"type\" is empty".to_owned()));
        }
        if let Some(name) = &input.id {
            if name.is_empty() {
                return Err(bad("\"id\" is empty".to_owned()));
            }
            if let Some(first) = names.insert(name.clone(), number) {
                return Err(bad(format!(
                    "duplicate id {name:?} (first on line {first})"
                )));
            }
        }
        let id = input
            .id
            .as_deref()
            .and_then(|name| name.parse::<JobId>().ok());
        if let Some(id) = id {
            ids.insert(id);
        }
        pending_names.push(input.id.is_none());
        jobs.push((
            id,
            InputJob {
                name: input.id.unwrap_or_default(),
                job_type: input.job_type,
                payload: input
                    .payload
                    .unwrap_or_else(|| RawValue::NULL.to_owned())
                    .into(),
                timeout: input.timeout_s.filter(|&t| t > 0).map(Duration::from_secs),
                mode: input.mode.unwrap_or_default(),
            },
        ));
    }
    if jobs.is_empty() {
        return Err(InputError::Empty);
    }
    // Generated ids avoid the given ones and the given names.
    let random = RandomState::new();
    let mut counter = 0u64;
    let mut out = Vec::with_capacity(jobs.len());
    for ((id, mut job), unnamed) in jobs.into_iter().zip(pending_names) {
        let id = match id {
            Some(id) => id,
            None => loop {
                counter += 1;
                let candidate = JobId::from_u64(random.hash_one(counter));
                if ids.insert(candidate) && !names.contains_key(&candidate.to_string()) {
                    break candidate;
                }
            },
        };
        if unnamed {
            job.name = id.to_string();
        }
        out.push((id, job));
    }
    Ok(out)
}

fn read_input(jobs: Option<&PathBuf>) -> Result<String, InputError> {
    match jobs {
        Some(path) => std::fs::read_to_string(path).map_err(|error| InputError::Read {
            source_name: path.display().to_string(),
            error,
        }),
        None => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| InputError::Read {
                    source_name: "stdin".to_owned(),
                    error,
                })?;
            Ok(text)
        }
    }
}

/// One result line.
#[derive(Serialize)]
struct ResultLine<'a> {
    job_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr: Option<&'a str>,
    elapsed_ms: u64,
}

/// Where a job of the run stands.
struct Tracked {
    job: InputJob,
    attempt: Attempt,
    lost: u32,
    started: Option<Instant>,
    submitted: Instant,
    done: bool,
}

fn spec_of(id: JobId, tracked: &Tracked) -> JobSpec {
    JobSpec {
        id,
        attempt: tracked.attempt,
        job_type: tracked.job.job_type.clone(),
        mode: tracked.job.mode,
        payload: tracked.job.payload.clone(),
        timeout: tracked.job.timeout,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Default)]
struct Tally {
    completed: usize,
    failed: usize,
    cancelled: usize,
}

async fn run_jobs(args: RunArgs) -> ExitCode {
    let jobs = match read_input(args.jobs.as_ref()).and_then(|text| parse_jobs(&text)) {
        Ok(jobs) => jobs,
        Err(error) => {
            eprintln!("goop: bad job input: {error}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    let mut config = ExecutorConfig::new(&args.path, args.mode);
    config.capacity_override = args.capacity;
    config.max_line_bytes = args.max_line_bytes;
    // The time of a job is counted from when it reached the executor, not from when it queued.
    config.started_events = true;
    // Every job of the input may wait in the runtime: the input is already in memory.
    config.max_queued = jobs.len();
    match check_timeout(args.check_timeout) {
        Ok(timeout) => config.check_timeout = timeout,
        Err(error) => {
            eprintln!("goop: {error}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    }
    let executor = match Executor::start(config).await {
        Ok(executor) => Arc::new(executor),
        Err(StartError::CheckFailed {
            reason,
            stderr_tail,
        }) => {
            eprintln!("goop: executor check failed: {reason}");
            if let Some(tail) = stderr_tail {
                eprintln!("executor stderr:\n{tail}");
            }
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    tracing::info!(
        path = %args.path.display(),
        mode = %args.mode,
        capacity = executor.capacity(),
        jobs = jobs.len(),
        "executor checked"
    );

    let total = jobs.len();
    let bar = if io::stderr().is_terminal() {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };

    let (events_tx, mut events_rx) = mpsc::channel::<Event>(1024);
    // Resubmissions never wait: at most one per job is outstanding.
    let (again_tx, mut again_rx) = mpsc::channel::<JobSpec>(total);
    let now = Instant::now();
    let mut tracked: HashMap<JobId, Tracked> = HashMap::with_capacity(total);
    let mut first_specs = Vec::with_capacity(total);
    for (id, job) in jobs {
        let entry = Tracked {
            job,
            attempt: Attempt(1),
            lost: 0,
            started: None,
            submitted: now,
            done: false,
        };
        first_specs.push(spec_of(id, &entry));
        tracked.insert(id, entry);
    }

    let submitter = {
        let executor = Arc::clone(&executor);
        let events = events_tx.clone();
        tokio::spawn(async move {
            for spec in first_specs {
                if executor.submit(spec, events.clone()).await.is_err() {
                    return;
                }
            }
            while let Some(spec) = again_rx.recv().await {
                if executor.submit(spec, events.clone()).await.is_err() {
                    return;
                }
            }
        })
    };
    drop(events_tx);

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let mut remaining = total;
    let mut unusable: Option<String> = None;
    let mut interrupted = false;
    let mut again_tx = Some(again_tx);
    let mut give_up_at: Option<tokio::time::Instant> = None;

    while remaining > 0 {
        let event = tokio::select! {
            event = events_rx.recv() => event,
            () = sleep_until(give_up_at) => break,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                again_tx = None;
                submitter.abort();
                // Jobs never submitted will not report; they are reported cancelled below.
                give_up_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                bar.suspend(|| tracing::warn!("interrupted: cancelling the jobs"));
                for (id, job) in &tracked {
                    if !job.done {
                        executor.cancel(*id).await;
                    }
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        let Some(job) = tracked.get_mut(&event.job) else {
            continue;
        };
        match event.kind {
            EventKind::Started => job.started = Some(Instant::now()),
            EventKind::Progress { pct, msg } => {
                tracing::debug!(job_id = %job.job.name, pct, msg = %msg, "progress");
                bar.set_message(format!("{}: {pct}% {msg}", job.job.name));
            }
            EventKind::Output(data) => {
                let data = data.get().to_owned();
                bar.suspend(|| tracing::info!(job_id = %job.job.name, output = %data, "output"));
            }
            EventKind::Log { stream, line } => {
                let stream = match stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                };
                bar.suspend(|| tracing::info!(job_id = %job.job.name, stream, "{line}"));
            }
            EventKind::Finished(outcome) => {
                let failure = match &outcome {
                    Outcome::ExecutorLost(failure) => Some(failure),
                    _ => None,
                };
                if let Some(failure) = failure {
                    if failure.kind == FailureKind::Rejected {
                        unusable.get_or_insert_with(|| failure.message.clone());
                    } else if job.lost < args.max_lost
                        && !interrupted
                        && let Some(again) = &again_tx
                    {
                        job.lost += 1;
                        job.attempt = job.attempt.next();
                        job.started = None;
                        let spec = spec_of(event.job, job);
                        if again.try_send(spec).is_ok() {
                            continue;
                        }
                    }
                }
                job.done = true;
                remaining -= 1;
                bar.inc(1);
                let since = job.started.unwrap_or(job.submitted);
                let elapsed_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                let lost_message;
                let (status, result, error, stderr) = match &outcome {
                    Outcome::Completed { result } => {
                        tally.completed += 1;
                        ("completed", Some(&**result), None, None)
                    }
                    Outcome::Failed(failure) => {
                        tally.failed += 1;
                        (
                            "failed",
                            None,
                            Some(failure.message.as_str()),
                            failure.stderr_tail.as_deref(),
                        )
                    }
                    Outcome::Cancelled => {
                        tally.cancelled += 1;
                        ("cancelled", None, Some("cancelled"), None)
                    }
                    Outcome::ExecutorLost(failure) => {
                        tally.failed += 1;
                        lost_message = if failure.kind == FailureKind::Rejected {
                            failure.message.clone()
                        } else {
                            format!(
                                "executor lost {} times, last: {}",
                                job.lost + 1,
                                failure.message
                            )
                        };
                        (
                            "failed",
                            None,
                            Some(lost_message.as_str()),
                            failure.stderr_tail.as_deref(),
                        )
                    }
                };
                let line = ResultLine {
                    job_id: &job.job.name,
                    status,
                    result,
                    error,
                    stderr,
                    elapsed_ms,
                };
                let written = serde_json::to_writer(&mut out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| {
                        if events_rx.is_empty() {
                            out.flush()
                        } else {
                            Ok(())
                        }
                    });
                if let Err(error) = written {
                    bar.abandon();
                    eprintln!("goop: cannot write results: {error}");
                    return ExitCode::from(EXIT_UNUSABLE);
                }
            }
        }
    }
    for job in tracked.values_mut().filter(|job| !job.done) {
        tally.cancelled += 1;
        let line = ResultLine {
            job_id: &job.job.name,
            status: "cancelled",
            result: None,
            error: Some("cancelled before it ran"),
            stderr: None,
            elapsed_ms: 0,
        };
        if serde_json::to_writer(&mut out, &line).is_ok() {
            let _ = out.write_all(b"\n");
        }
    }
    let _ = out.flush();
    drop(again_tx);
    bar.finish_and_clear();
    submitter.abort();
    let _ = submitter.await;
    match Arc::try_unwrap(executor) {
        Ok(executor) => executor.shutdown().await,
        Err(_) => tracing::warn!("executor still in use at exit; not waiting for it"),
    }
    eprintln!(
        "{} completed, {} failed, {} cancelled in {:.1}s",
        tally.completed,
        tally.failed,
        tally.cancelled,
        now.elapsed().as_secs_f64()
    );
    if let Some(reason) = unusable {
        eprintln!("goop: the executor became unusable: {reason}");
        return ExitCode::from(EXIT_UNUSABLE);
    }
    if tally.completed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lines_are_checked_and_named() {
        let jobs = parse_jobs(
            "{\"type\":\"a\"}\n\n{\"id\":\"00000000000000ff\",\"type\":\"b\",\"payload\":{\"x\":1},\"timeout_s\":3}\n{\"id\":\"mine\",\"type\":\"c\",\"mode\":\"continuous\"}\n",
        )
        .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].1.name, jobs[0].0.to_string());
        assert_eq!(jobs[0].1.payload.get(), "null");
        assert_eq!(jobs[1].0, JobId::from_u64(0xff));
        assert_eq!(jobs[1].1.timeout, Some(Duration::from_secs(3)));
        assert_eq!(jobs[2].1.name, "mine");
        assert_eq!(jobs[2].1.mode, JobMode::Continuous);
        assert_ne!(jobs[0].0, jobs[2].0);
    }

    #[test]
    fn bad_job_lines_say_where_and_why() {
        let error = |text: &str| parse_jobs(text).err().unwrap().to_string();
        assert!(error("{\"type\":\"a\"}\nnope\n").starts_with("line 2: "));
        assert!(error("{\"payload\":1}").contains("missing field `type`"));
        assert!(error("{\"type\":\"a\",\"timeout\":3}").contains("unknown field `timeout`"));
        assert_eq!(
            error("{\"id\":\"x\",\"type\":\"a\"}\n{\"id\":\"x\",\"type\":\"a\"}"),
            "line 2: duplicate id \"x\" (first on line 1)"
        );
        assert!(
            error("{\"type\":\"a\",\"mode\":\"daemon\"}").starts_with("line 1: unknown variant")
        );
        assert_eq!(error("\n\n"), "no jobs in the input");
    }
}
