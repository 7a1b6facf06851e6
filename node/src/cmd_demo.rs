//! `goop demo`: a whole cluster on this machine, a real workload through it, and a summary.
//!
//! The demo starts a host and N workers as separate `goop` processes (each with its own data
//! directory under one demo directory), creates the cluster on the host, starts the workers
//! with the example executor, submits a mix of `calculate` and `transform` jobs whose answers it
//! knows, follows them to the end, checks every answer and prints what it saw. Whatever happens
//! (an error, Ctrl-C, SIGTERM), it stops the processes it started and removes the demo directory
//! unless `--keep` is given.
//!
//! The pure parts (the workload, the expected answers, the percentiles and the summary) are at
//! the top and unit-tested; the process and HTTP shell follows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use proto::api::{ClusterEvent, CreateCluster, SubmitJob};
use proto::cluster::{JobState, Json, QueueStats, WorkerInfo};
use proto::{JobId, JobStatus, PeerId};
use serde_json::value::RawValue;

use crate::client::{ApiClient, ClientError};

/// Run a whole cluster on this machine: a host, N workers and a real workload, then a summary.
///
/// `goop demo` starts a host node and `--workers` worker nodes as separate `goop` processes on
/// loopback (no mDNS, ports chosen by the system), each with its own data directory under a
/// temporary demo directory. It creates a cluster on the host, starts the workers with the
/// example executor and waits until the host has verified every one of them.
///
/// It then submits `--jobs` jobs in batches over the host's HTTP API: about four in five are
/// `calculate` jobs (arithmetic expressions with parameters, whose answers the demo computes
/// itself) and the rest `transform` jobs (upper, lower, reverse on text), spread over
/// priorities 0, 1, 5 and 10. Progress is shown on stderr while they run (a bar on a terminal,
/// a line a second otherwise).
///
/// At the end it prints a summary on stdout: jobs completed and failed, wall time (first submit
/// to last result), throughput, submit-to-result latency percentiles (p50, p95, p99, from the
/// host's job events), jobs per worker, and the check of every answer against the expected
/// value. Then it stops the processes (SIGTERM, then SIGKILL after a deadline) and removes the
/// demo directory unless --keep is given. Ctrl-C stops everything too.
///
/// The executor is `goop-example-executor` next to this `goop` binary (built by `cargo build
/// --release -p examples`). When it is missing and `python3` is on the PATH, the demo falls
/// back to `examples/python/executor.py`, which serves `calculate` only, so the workload is
/// then all `calculate` jobs.
///
/// Exit status: 0 when every job completed with the right answer, 1 when some job failed or
/// answered wrong, 2 when the cluster could not be set up.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// Worker nodes to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub workers: u32,
    /// Jobs to submit.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub jobs: u32,
    /// The executor the workers run (daemon mode; it must serve `calculate` and, unless it is
    /// the Python example, `transform`). Default: `goop-example-executor` next to this binary.
    #[arg(long)]
    pub executor: Option<PathBuf>,
    /// Keep the demo directory (data directories and logs of every process) at the end.
    #[arg(long)]
    pub keep: bool,
    /// Where to put the demo directory (default: a new directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Jobs per submit request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Give up when the jobs have not all finished after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

// ---- the workload ---------------------------------------------------------------------------

/// What a job must answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expected {
    /// A `calculate` job: `{"expression": <expression>, "value": <value>}`.
    Value { expression: String, value: f64 },
    /// A `transform` job: `{"output": <text>}`.
    Output(String),
}

/// Arithmetic expressions with parameters `a`, `b`, `c` (each in 1..=1000), and how to compute
/// them. Both example executors (Rust and Python) agree on these for positive operands.
type Compute = fn(f64, f64, f64) -> f64;

const TEMPLATES: [(&str, Compute); 8] = [
    ("(a + b) * c", |a, b, c| (a + b) * c),
    ("a * b - c", |a, b, c| a * b - c),
    ("(a - b) ^ 2 + c", |a, b, c| (a - b).powi(2) + c),
    ("a / b + c", |a, b, c| a / b + c),
    ("sqrt(a * a + b * b)", |a, b, _| (a * a + b * b).sqrt()),
    ("max(a, b, c) - min(a, b, c)", |a, b, c| {
        a.max(b).max(c) - a.min(b).min(c)
    }),
    ("a % b + c", |a, b, c| a % b + c),
    ("-a ^ 2 + b * c", |a, b, c| -(a * a) + b * c),
];

const PRIORITIES: [i32; 4] = [0, 1, 5, 10];

const WORDS: [&str; 8] = [
    "goop", "cluster", "Worker", "host", "Job", "peer", "Result", "queue",
];

/// A small deterministic generator (SplitMix64), so that every run submits the same workload.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        // The bias of a modulo is irrelevant for a demo workload.
        (self.next() % n as u64) as usize
    }
}

/// The demo's jobs and their expected answers, in the same order.
pub(crate) struct Workload {
    pub(crate) jobs: Vec<SubmitJob>,
    pub(crate) expected: Vec<Expected>,
}

impl Workload {
    /// `count` jobs from `seed`: four in five `calculate` (all of them when `transform` is
    /// false), the rest `transform`, over [`PRIORITIES`].
    pub(crate) fn generate(count: usize, seed: u64, transform: bool) -> Self {
        let mut rng = SplitMix(seed);
        let mut jobs = Vec::with_capacity(count);
        let mut expected = Vec::with_capacity(count);
        for _ in 0..count {
            let priority = PRIORITIES[rng.below(PRIORITIES.len())];
            let (job, answer) = if transform && rng.below(5) == 0 {
                let words: Vec<&str> = (0..3).map(|_| WORDS[rng.below(WORDS.len())]).collect();
                let input = format!("{} {} #{}", words.join(" "), rng.below(100), rng.below(10));
                let (format, output) = match rng.below(3) {
                    0 => ("upper", input.to_uppercase()),
                    1 => ("lower", input.to_lowercase()),
                    _ => ("reverse", input.chars().rev().collect()),
                };
                let payload = serde_json::json!({ "input": input, "format": format });
                (job("transform", &payload), Expected::Output(output))
            } else {
                let (expression, compute) = TEMPLATES[rng.below(TEMPLATES.len())];
                let [a, b, c] = [(); 3].map(|()| rng.below(1000) + 1);
                let payload = serde_json::json!({
                    "expression": expression,
                    "parameters": { "a": a, "b": b, "c": c },
                });
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "parameters are at most 1000, exact in f64"
                )]
                let value = compute(a as f64, b as f64, c as f64);
                let answer = Expected::Value {
                    expression: expression.to_owned(),
                    value,
                };
                (job("calculate", &payload), answer)
            };
            jobs.push(SubmitJob {
                priority,
                timeout_s: 60,
                ..job
            });
            expected.push(answer);
        }
        Self { jobs, expected }
    }
}

fn job(job_type: &str, payload: &serde_json::Value) -> SubmitJob {
    let mut job = SubmitJob::new(job_type);
    job.payload = serde_json::value::to_raw_value(payload)
        .ok()
        .map(Json::from);
    job
}

/// Whether `result` is the answer `expected` describes; the error says what differs.
pub(crate) fn check(expected: &Expected, result: Option<&RawValue>) -> Result<(), String> {
    let result = result.ok_or("no result")?;
    let value: serde_json::Value =
        serde_json::from_str(result.get()).map_err(|e| format!("result is not JSON: {e}"))?;
    match expected {
        Expected::Value {
            expression,
            value: want,
        } => {
            if value["expression"].as_str() != Some(expression) {
                return Err(format!(
                    "answered for expression {}, not {expression:?}",
                    value["expression"]
                ));
            }
            let got = value["value"]
                .as_f64()
                .ok_or_else(|| format!("no numeric value in {}", result.get()))?;
            // The executors compute in f64 as the demo does; allow for a different order of
            // operations in the last bits.
            if (got - want).abs() > 1e-9 * want.abs().max(1.0) {
                return Err(format!("{expression}: got {got}, expected {want}"));
            }
            Ok(())
        }
        Expected::Output(want) => match value["output"].as_str() {
            Some(got) if got == want => Ok(()),
            _ => Err(format!("expected output {want:?}, got {}", value["output"])),
        },
    }
}

// ---- figures and the summary ----------------------------------------------------------------

/// The `p`th percentile (0 < p <= 100) of sorted values, by the nearest-rank method: the
/// smallest value with at least p% of the values at or below it.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank between 1 and the number of values"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// What the demo saw, ready to print.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) workers: usize,
    pub(crate) executor: String,
    pub(crate) submitted: usize,
    pub(crate) calculate: usize,
    pub(crate) transform: usize,
    pub(crate) completed: usize,
    pub(crate) failed: usize,
    /// Jobs neither completed nor failed (cancelled, or unfinished at the deadline).
    pub(crate) other: usize,
    pub(crate) wall: Duration,
    /// Submit-to-result latencies in ms, sorted.
    pub(crate) latencies: Vec<u64>,
    /// Jobs completed per worker, as (name, count), in worker order.
    pub(crate) per_worker: Vec<(String, usize)>,
    pub(crate) correct: usize,
    /// The first few wrong answers and failures, with the job id.
    pub(crate) problems: Vec<String>,
    pub(crate) problem_count: usize,
}

impl Summary {
    /// Whether every job completed with the right answer.
    pub(crate) fn ok(&self) -> bool {
        self.submitted > 0 && self.correct == self.submitted && self.problem_count == 0
    }

    /// The summary as printed on stdout.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mix = if self.transform > 0 {
            format!(
                "{} calculate, {} transform",
                thousands(self.calculate as u64),
                thousands(self.transform as u64)
            )
        } else {
            format!("{} calculate", thousands(self.calculate as u64))
        };
        let _ = writeln!(
            out,
            "goop demo: {} workers ({}), {} jobs ({mix})",
            self.workers,
            self.executor,
            thousands(self.submitted as u64)
        );
        let _ = writeln!(out, "  completed    {}", thousands(self.completed as u64));
        let _ = writeln!(out, "  failed       {}", thousands(self.failed as u64));
        if self.other > 0 {
            let _ = writeln!(
                out,
                "  unfinished   {} (cancelled or still running)",
                thousands(self.other as u64)
            );
        }
        let secs = self.wall.as_secs_f64();
        let _ = writeln!(
            out,
            "  wall time    {secs:.2} s (first submit to last result)"
        );
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rate, rounded for display"
        )]
        let rate = if secs > 0.0 {
            (self.completed as f64 / secs).round() as u64
        } else {
            0
        };
        let _ = writeln!(out, "  throughput   {} jobs/s", thousands(rate));
        let p = |q| percentile(&self.latencies, q).map_or("-".to_owned(), |v| format!("{v} ms"));
        let _ = writeln!(
            out,
            "  latency      p50 {}, p95 {}, p99 {} (submit to result, {} jobs)",
            p(50.0),
            p(95.0),
            p(99.0),
            thousands(self.latencies.len() as u64)
        );
        let _ = write!(out, "  per worker  ");
        for (i, (name, count)) in self.per_worker.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let _ = write!(out, "{sep}{name} {}", thousands(*count as u64));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  results      {} of {} correct",
            thousands(self.correct as u64),
            thousands(self.submitted as u64)
        );
        for problem in &self.problems {
            let _ = writeln!(out, "    {problem}");
        }
        if self.problem_count > self.problems.len() {
            let _ = writeln!(
                out,
                "    … and {} more",
                self.problem_count - self.problems.len()
            );
        }
        let verdict = if self.ok() {
            "ok: every job completed with the right answer"
        } else {
            "FAILED: not every job completed with the right answer"
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

/// How many problems the summary lists one by one.
const PROBLEMS_SHOWN: usize = 10;

/// Builds the summary from the stored jobs, in submit order with their expectations.
pub(crate) fn summarize(
    workload: &Workload,
    ids: &[JobId],
    states: &HashMap<JobId, JobState>,
    seen: &HashMap<JobId, Seen>,
    workers: &[(String, PeerId)],
) -> Summary {
    let mut summary = Summary {
        workers: workers.len(),
        submitted: ids.len(),
        ..Summary::default()
    };
    let mut per_peer: HashMap<&PeerId, usize> = HashMap::new();
    let problem = |summary: &mut Summary, text: String| {
        summary.problem_count += 1;
        if summary.problems.len() < PROBLEMS_SHOWN {
            summary.problems.push(text);
        }
    };
    for (id, expected) in ids.iter().zip(&workload.expected) {
        match expected {
            Expected::Value { .. } => summary.calculate += 1,
            Expected::Output(_) => summary.transform += 1,
        }
        let Some(state) = states.get(id) else {
            summary.other += 1;
            problem(&mut summary, format!("job {id}: not found on the host"));
            continue;
        };
        let seen = seen.get(id);
        if let Some(ms) = seen
            .and_then(|s| s.latency_ms)
            .or_else(|| stored_latency(state))
        {
            summary.latencies.push(ms);
        }
        match state.status {
            JobStatus::Completed => {
                summary.completed += 1;
                // The worker that ran it: from its events, else the stored job, else its last
                // attempt.
                let worker = seen
                    .and_then(|s| s.worker.as_ref())
                    .or(state.worker_id.as_ref())
                    .or_else(|| state.attempts.last().map(|a| &a.worker_id));
                if let Some(worker) = worker {
                    *per_peer.entry(worker).or_default() += 1;
                }
                match check(expected, state.result.as_deref()) {
                    Ok(()) => summary.correct += 1,
                    Err(why) => problem(&mut summary, format!("job {id}: wrong answer: {why}")),
                }
            }
            JobStatus::Failed => {
                summary.failed += 1;
                let error = state.error.as_deref().unwrap_or("no error given");
                problem(&mut summary, format!("job {id}: failed: {error}"));
            }
            other => {
                summary.other += 1;
                problem(&mut summary, format!("job {id}: {}", other.as_str()));
            }
        }
    }
    summary.latencies.sort_unstable();
    summary.per_worker = workers
        .iter()
        .map(|(name, peer)| (name.clone(), per_peer.remove(peer).unwrap_or(0)))
        .collect();
    for (peer, count) in per_peer {
        summary.per_worker.push((short_peer(peer), count));
    }
    summary
}

/// Submit-to-result latency from the stored timestamps (millisecond resolution), for jobs
/// whose event the demo missed.
fn stored_latency(state: &JobState) -> Option<u64> {
    let done = state.done_at?;
    u64::try_from(done.as_unix_ms() - state.created_at.as_unix_ms()).ok()
}

fn short_peer(peer: &PeerId) -> String {
    let text = peer.as_str();
    let tail: String = text
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

// ---- processes ------------------------------------------------------------------------------

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn setup(message: impl Into<String>) -> DemoError {
    DemoError::Setup(message.into())
}

/// The ready line of `--print-ready`.
#[derive(Debug, serde::Deserialize)]
struct Ready {
    peer_id: PeerId,
    listen: Vec<String>,
    api: String,
}

/// A `goop` process the demo started.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stdout: Option<JoinHandle<()>>,
}

/// Every process the demo started, and its directory; shared with the signal watcher so that
/// Ctrl-C stops them too.
struct Procs {
    dir: PathBuf,
    keep: bool,
    running: Vec<Proc>,
}

/// How long a process gets to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

impl Procs {
    /// Stops every process, the last started first (workers before the host), then removes
    /// the directory unless it is kept. Safe to call twice.
    fn stop_all(&mut self) {
        while let Some(mut proc) = self.running.pop() {
            stop(&mut proc.child);
            if let Some(reader) = proc.stdout.take() {
                let _ = reader.join();
            }
        }
        if self.keep {
            eprintln!("goop demo: kept {}", self.dir.display());
        } else if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        self.dir = PathBuf::new();
    }
}

/// SIGTERM, a deadline, then SIGKILL.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a process's log, to explain a failure.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{}", tail.join("\n"))
    }
}

/// Starts `goop <args>` in `data_dir`, logging to `<data_dir>.log`, and waits for its ready
/// line.
fn spawn(
    procs: &Mutex<Procs>,
    name: &str,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Ready, DemoError> {
    let exe = std::env::current_exe()
        .map_err(|e| setup(format!("cannot find the goop executable: {e}")))?;
    let log = data_dir.with_extension("log");
    let log_file = std::fs::File::create(&log)
        .map_err(|e| setup(format!("cannot create {}: {e}", log.display())))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--print-ready",
        ])
        .env_remove("GOOP_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    for (key, value) in env {
        command.env(key, value);
    }
    // Its own process group, so that a Ctrl-C on the terminal reaches the demo alone and the
    // demo stops the processes in order.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| setup(format!("cannot start the {name}: {e}")))?;
    let stdout = child.stdout.take();
    let (tx, rx) = mpsc::sync_channel(1);
    // The reader hands over the first line, then drains the pipe until the process ends, so
    // that the process never blocks writing to it.
    let reader = std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        let _ = lines.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    let mut registry = procs.lock().unwrap_or_else(PoisonError::into_inner);
    registry.running.push(Proc {
        name: name.to_owned(),
        child,
        log: log.clone(),
        stdout: Some(reader),
    });
    drop(registry);
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    serde_json::from_str::<Ready>(&line).map_err(|_| {
        setup(format!(
            "the {name} did not become ready (log {}):{}",
            log.display(),
            log_tail(&log)
        ))
    })
}

/// The executor the workers run, and whether it serves `transform`.
#[derive(Debug)]
struct ExecutorChoice {
    path: PathBuf,
    transform: bool,
    label: String,
}

fn choose_executor(explicit: Option<&Path>) -> Result<ExecutorChoice, DemoError> {
    if let Some(path) = explicit {
        let path = std::fs::canonicalize(path)
            .map_err(|e| setup(format!("cannot use the executor {}: {e}", path.display())))?;
        let python = path.extension().is_some_and(|e| e == "py");
        return Ok(ExecutorChoice {
            label: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            path,
            transform: !python,
        });
    }
    let exe = std::env::current_exe()
        .map_err(|e| setup(format!("cannot find the goop executable: {e}")))?;
    let beside = exe.with_file_name("goop-example-executor");
    if beside.is_file() {
        return Ok(ExecutorChoice {
            path: beside,
            transform: true,
            label: "goop-example-executor".into(),
        });
    }
    let has_python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let script = [
        PathBuf::from("examples/python/executor.py"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/executor.py"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    match (has_python, script) {
        (true, Some(script)) => {
            let path = std::fs::canonicalize(&script).unwrap_or(script);
            eprintln!(
                "goop demo: {} not found; using the Python example executor {} instead (calculate \
                 jobs only). Build the Rust one with `cargo build --release -p examples`.",
                beside.display(),
                path.display()
            );
            Ok(ExecutorChoice {
                path,
                transform: false,
                label: "examples/python/executor.py".into(),
            })
        }
        _ => Err(setup(format!(
            "the example executor {} is missing: build it with `cargo build --release -p \
             examples` (or pass --executor PATH)",
            beside.display()
        ))),
    }
}

/// Stops everything on Ctrl-C or SIGTERM, then exits with 130.
fn watch_signals(procs: Arc<Mutex<Procs>>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // The watcher lives as long as the process: it ends the process itself.
    std::thread::spawn(move || {
        runtime.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("goop demo: interrupted; stopping the cluster");
            procs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stop_all();
            std::process::exit(130);
        });
    });
}

// ---- the run --------------------------------------------------------------------------------

/// Runs `goop demo`.
pub fn run(args: &DemoArgs) -> ExitCode {
    static DEMOS: AtomicU32 = AtomicU32::new(0);
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "goop-demo-{}-{}",
            std::process::id(),
            DEMOS.fetch_add(1, Ordering::Relaxed)
        ))
    });
    let procs = Arc::new(Mutex::new(Procs {
        dir: dir.clone(),
        keep: args.keep,
        running: Vec::new(),
    }));
    watch_signals(Arc::clone(&procs));
    let result = demo(args, &dir, &procs);
    procs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .stop_all();
    match result {
        Ok((summary, events)) => {
            if let Some(events) = events {
                let _ = events.join();
            }
            print!("{}", summary.render());
            if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("goop demo: {error}");
            ExitCode::from(2)
        }
    }
}

/// What the host's events said about one job.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// Submit to terminal state, in ms.
    pub(crate) latency_ms: Option<u64>,
    /// The worker of its last assignment.
    pub(crate) worker: Option<PeerId>,
}

/// What the event thread gathered, by job.
type SeenByJob = Arc<Mutex<HashMap<JobId, Seen>>>;

fn demo(
    args: &DemoArgs,
    dir: &Path,
    procs: &Arc<Mutex<Procs>>,
) -> Result<(Summary, Option<JoinHandle<()>>), DemoError> {
    let executor = choose_executor(args.executor.as_deref())?;
    std::fs::create_dir_all(dir)
        .map_err(|e| setup(format!("cannot create {}: {e}", dir.display())))?;
    let workers = args.workers as usize;
    eprintln!(
        "goop demo: starting a host and {workers} workers in {}",
        dir.display()
    );

    let host = spawn(procs, "host", &dir.join("host"), &["node"], &[])?;
    let client = ApiClient::new(&host.api, None);
    let created: serde_json::Value = client.post(
        "/api/cluster/create",
        &CreateCluster {
            name: Some("demo".into()),
            group_id: None,
            max_members: 0,
            admission: None,
        },
    )?;
    let group = created["group_id"]
        .as_str()
        .ok_or_else(|| setup(format!("the host created no cluster: {created}")))?
        .to_owned();
    let join = host
        .listen
        .first()
        .cloned()
        .ok_or_else(|| setup("the host listens on no address"))?;
    let executor_path = executor.path.to_string_lossy().into_owned();
    let mut named = Vec::with_capacity(workers);
    for i in 1..=workers {
        let name = format!("worker-{i}");
        let ready = spawn(
            procs,
            &name,
            &dir.join(&name),
            &[
                "worker",
                "--join",
                &join,
                "--group",
                &group,
                "--executor",
                &executor_path,
                "--mode",
                "daemon",
            ],
            // More jobs at once than the example's default of 4: its jobs take microseconds,
            // so the round trip is what a worker waits on.
            &[
                ("GOOP_EXAMPLE_CAPACITY", "32"),
                ("PY_EXECUTOR_CAPACITY", "8"),
            ],
        )?;
        named.push((name, ready.peer_id));
    }
    wait_for_workers(&client, &named, procs)?;
    eprintln!(
        "goop demo: cluster {group} ready with {workers} verified workers ({})",
        executor.label
    );

    let workload = Workload::generate(args.jobs as usize, 0x600d_cafe, executor.transform);
    let seen: SeenByJob = Arc::default();
    let events = client.events()?;
    let event_thread = {
        let seen = Arc::clone(&seen);
        let mut events = events;
        // Reads the host's job events until the host stops; the thread is joined after the
        // processes are stopped.
        std::thread::spawn(move || {
            while let Ok(Some(event)) = events.next_event() {
                let ClusterEvent::Job(job) = event else {
                    continue;
                };
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                let entry = seen.entry(job.job_id).or_default();
                if job.worker_id.is_some() {
                    entry.worker = job.worker_id;
                }
                if job.status.is_terminal() {
                    entry.latency_ms = job.latency_ms;
                }
            }
        })
    };

    let total = workload.jobs.len();
    eprintln!("goop demo: submitting {} jobs", thousands(total as u64));
    let start = Instant::now();
    let ids = client.submit(workload.jobs.clone(), args.batch as usize)?;
    let wall = wait_for_jobs(&client, total, start, Duration::from_secs(args.timeout))?;

    let wanted: std::collections::HashSet<JobId> = ids.iter().copied().collect();
    let mut states: HashMap<JobId, JobState> = list_jobs(&client)?
        .into_iter()
        .filter(|state| wanted.contains(&state.job.id))
        .map(|state| (state.job.id, state))
        .collect();
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // A job whose worker neither the events nor the listing named: its attempts say.
    for (id, state) in &mut states {
        let known = seen.get(id).is_some_and(|s| s.worker.is_some()) || state.worker_id.is_some();
        if !known && state.status == JobStatus::Completed {
            *state = client.job(*id)?;
        }
    }
    let mut summary = summarize(&workload, &ids, &states, &seen, &named);
    summary.wall = wall;
    summary.executor = executor.label;
    Ok((summary, Some(event_thread)))
}

fn wait_for_workers(
    client: &ApiClient,
    named: &[(String, PeerId)],
    procs: &Mutex<Procs>,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let workers: Vec<WorkerInfo> = client.get("/api/cluster/workers")?;
        let verified = named
            .iter()
            .filter(|(_, peer)| workers.iter().any(|w| &w.peer_id == peer && w.verified))
            .count();
        if verified == named.len() {
            return Ok(());
        }
        // A worker that exited will never be verified: say why now.
        {
            let mut registry = procs.lock().unwrap_or_else(PoisonError::into_inner);
            for proc in &mut registry.running {
                if let Ok(Some(status)) = proc.child.try_wait() {
                    return Err(setup(format!(
                        "the {} exited ({status}) (log {}):{}",
                        proc.name,
                        proc.log.display(),
                        log_tail(&proc.log)
                    )));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(setup(format!(
                "only {verified} of {} workers were verified by the host within 60 s",
                named.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the host's counters until `total` jobs are finished, showing progress; returns the
/// time from `start` to the moment they all were.
fn wait_for_jobs(
    client: &ApiClient,
    total: usize,
    start: Instant,
    timeout: Duration,
) -> Result<Duration, DemoError> {
    let total = total as u64;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} finished, {per_sec}, {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_line = Instant::now();
    loop {
        let stats: QueueStats = client.get("/api/cluster/stats")?;
        let finished = stats.completed + stats.failed + stats.cancelled;
        let now = Instant::now();
        if let Some(bar) = &bar {
            bar.set_position(finished.min(total));
            bar.set_message(format!("{} failed", stats.failed));
        } else if now - last_line >= Duration::from_secs(1) || finished >= total {
            last_line = now;
            eprintln!(
                "goop demo: {finished}/{total} finished ({} completed, {} failed, {} running, {} \
                 pending) after {:.1} s",
                stats.completed,
                stats.failed,
                stats.running,
                stats.pending,
                (now - start).as_secs_f64()
            );
        }
        if finished >= total {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(now - start);
        }
        if now - start >= timeout {
            if let Some(bar) = bar {
                bar.abandon();
            }
            eprintln!(
                "goop demo: {} jobs still unfinished after {} s; summarizing what finished",
                total - finished,
                timeout.as_secs()
            );
            return Ok(now - start);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every job on the host, oldest first.
fn list_jobs(client: &ApiClient) -> Result<Vec<JobState>, ClientError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/cluster/jobs?limit=1000".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        let (page, next): (Vec<JobState>, _) = client.get_with_header(&path, "x-next-cursor")?;
        let empty = page.is_empty();
        all.extend(page);
        match next {
            Some(next) if !empty => cursor = Some(next),
            _ => return Ok(all),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn the_workload_is_deterministic_and_mixed() {
        let a = Workload::generate(1000, 7, true);
        let b = Workload::generate(1000, 7, true);
        assert_eq!(a.expected, b.expected);
        assert_eq!(a.jobs.len(), 1000);
        let transforms = a.jobs.iter().filter(|j| j.job_type == "transform").count();
        assert!((100..=300).contains(&transforms), "{transforms} transforms");
        for priority in PRIORITIES {
            assert!(a.jobs.iter().any(|j| j.priority == priority));
        }
        let only_calc = Workload::generate(500, 7, false);
        assert!(only_calc.jobs.iter().all(|j| j.job_type == "calculate"));
    }

    #[test]
    fn expected_values_follow_the_expressions() {
        let workload = Workload::generate(200, 1, false);
        for (job, expected) in workload.jobs.iter().zip(&workload.expected) {
            let payload: serde_json::Value =
                serde_json::from_str(job.payload.as_ref().unwrap().get()).unwrap();
            let p = |k: &str| payload["parameters"][k].as_f64().unwrap();
            let (a, b, c) = (p("a"), p("b"), p("c"));
            let Expected::Value { expression, value } = expected else {
                panic!("calculate only")
            };
            assert_eq!(payload["expression"].as_str(), Some(expression.as_str()));
            let want = match expression.as_str() {
                "(a + b) * c" => (a + b) * c,
                "a * b - c" => a * b - c,
                "(a - b) ^ 2 + c" => (a - b) * (a - b) + c,
                "a / b + c" => a / b + c,
                "sqrt(a * a + b * b)" => a.hypot(b),
                "max(a, b, c) - min(a, b, c)" => a.max(b).max(c) - a.min(b).min(c),
                "a % b + c" => a - (a / b).floor() * b + c,
                "-a ^ 2 + b * c" => b * c - a * a,
                other => panic!("unknown template {other}"),
            };
            assert!(
                (want - value).abs() < 1e-9 * want.abs().max(1.0),
                "{expression}"
            );
        }
    }

    #[test]
    fn check_accepts_right_answers_and_names_wrong_ones() {
        let value = Expected::Value {
            expression: "(a + b) * c".into(),
            value: 24.0,
        };
        assert_eq!(
            check(
                &value,
                Some(&raw(r#"{"expression":"(a + b) * c","value":24}"#))
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &value,
                Some(&raw(r#"{"expression":"(a + b) * c","value":24.0}"#))
            ),
            Ok(())
        );
        let wrong = check(
            &value,
            Some(&raw(r#"{"expression":"(a + b) * c","value":25}"#)),
        );
        assert_eq!(wrong, Err("(a + b) * c: got 25, expected 24".into()));
        assert!(check(&value, Some(&raw(r#"{"expression":"a","value":24}"#))).is_err());
        assert!(check(&value, Some(&raw(r#"{"expression":"(a + b) * c"}"#))).is_err());
        assert_eq!(check(&value, None), Err("no result".into()));

        let third = Expected::Value {
            expression: "a / b + c".into(),
            value: 1.0 / 3.0 + 2.0,
        };
        assert_eq!(
            check(
                &third,
                Some(&raw(
                    r#"{"expression":"a / b + c","value":2.3333333333333335}"#
                ))
            ),
            Ok(())
        );

        let output = Expected::Output("GOOP".into());
        assert_eq!(
            check(&output, Some(&raw(r#"{"format":"upper","output":"GOOP"}"#))),
            Ok(())
        );
        assert!(check(&output, Some(&raw(r#"{"format":"upper","output":"goop"}"#))).is_err());
    }

    #[test]
    fn transform_answers_match_the_formats() {
        let workload = Workload::generate(300, 3, true);
        let mut seen = 0;
        for (job, expected) in workload.jobs.iter().zip(&workload.expected) {
            if job.job_type != "transform" {
                continue;
            }
            let payload: serde_json::Value =
                serde_json::from_str(job.payload.as_ref().unwrap().get()).unwrap();
            let input = payload["input"].as_str().unwrap();
            let want = match payload["format"].as_str().unwrap() {
                "upper" => input.to_uppercase(),
                "lower" => input.to_lowercase(),
                "reverse" => input.chars().rev().collect(),
                other => panic!("unknown format {other}"),
            };
            assert_eq!(expected, &Expected::Output(want));
            seen += 1;
        }
        assert!(seen > 0);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 95.0), Some(95));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        let values: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&values, 95.0), Some(10));
        assert_eq!(percentile(&values, 50.0), Some(5));
        assert_eq!(percentile(&[1, 2, 3], 1.0), Some(1));
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn state(id: JobId, status: JobStatus, worker: &PeerId, result: Option<&str>) -> JobState {
        let mut value = serde_json::json!({
            "job": { "id": id, "type": "calculate", "payload": null },
            "status": status,
            "worker_id": worker,
            "created_at": "2026-11-21T12:00:00.000Z",
            "done_at": "2026-11-21T12:00:00.040Z",
        });
        if let Some(result) = result {
            value["result"] = serde_json::from_str(result).unwrap();
        }
        if status == JobStatus::Failed {
            value["error"] = "division by zero".into();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_summary_counts_checks_and_renders() {
        let workload = Workload::generate(4, 11, false);
        let ids: Vec<JobId> = (1..=4).map(JobId::from_u64).collect();
        let w1: PeerId = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1"
            .parse()
            .unwrap();
        let w2: PeerId = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2"
            .parse()
            .unwrap();
        let answer = |i: usize| {
            let Expected::Value { expression, value } = &workload.expected[i] else {
                unreachable!()
            };
            serde_json::json!({ "expression": expression, "value": value }).to_string()
        };
        let mut states = HashMap::new();
        states.insert(
            ids[0],
            state(ids[0], JobStatus::Completed, &w1, Some(&answer(0))),
        );
        states.insert(
            ids[1],
            state(ids[1], JobStatus::Completed, &w2, Some(&answer(1))),
        );
        states.insert(
            ids[2],
            state(
                ids[2],
                JobStatus::Completed,
                &w2,
                Some(r#"{"expression":"x","value":1}"#),
            ),
        );
        states.insert(ids[3], state(ids[3], JobStatus::Failed, &w1, None));
        let seen = |ms| Seen {
            latency_ms: Some(ms),
            worker: None,
        };
        let latencies: HashMap<JobId, Seen> = [(ids[0], seen(3)), (ids[1], seen(5))].into();
        let named = vec![
            ("worker-1".to_owned(), w1.clone()),
            ("worker-2".to_owned(), w2.clone()),
        ];
        let mut summary = summarize(&workload, &ids, &states, &latencies, &named);
        summary.wall = Duration::from_millis(2000);
        summary.executor = "goop-example-executor".into();
        assert_eq!(summary.completed, 3);
        assert_eq!(summary.failed, 1);
        assert_eq!(summary.correct, 2);
        assert_eq!(summary.problem_count, 2);
        assert!(!summary.ok());
        // Two latencies from events, two from the stored timestamps (40 ms).
        assert_eq!(summary.latencies, vec![3, 5, 40, 40]);
        assert_eq!(
            summary.per_worker,
            vec![("worker-1".to_owned(), 1), ("worker-2".to_owned(), 2)]
        );
        let text = summary.render();
        assert!(
            text.starts_with(
                "goop demo: 2 workers (goop-example-executor), 4 jobs (4 calculate)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  completed    3\n"), "{text}");
        assert!(text.contains("  failed       1\n"), "{text}");
        assert!(text.contains("  wall time    2.00 s"), "{text}");
        assert!(text.contains("  throughput   2 jobs/s\n"), "{text}");
        assert!(
            text.contains(
                "  latency      p50 5 ms, p95 40 ms, p99 40 ms (submit to result, 4 jobs)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  per worker   worker-1 1, worker-2 2\n"),
            "{text}"
        );
        assert!(text.contains("  results      2 of 4 correct\n"), "{text}");
        assert!(
            text.contains("job 0000000000000003: wrong answer"),
            "{text}"
        );
        assert!(
            text.contains("job 0000000000000004: failed: division by zero"),
            "{text}"
        );
        assert!(text.ends_with("FAILED: not every job completed with the right answer\n"));

        states.remove(&ids[2]);
        states.insert(
            ids[2],
            state(ids[2], JobStatus::Completed, &w2, Some(&answer(2))),
        );
        states.insert(
            ids[3],
            state(ids[3], JobStatus::Completed, &w1, Some(&answer(3))),
        );
        let summary = summarize(&workload, &ids, &states, &latencies, &named);
        assert!(summary.ok());
        assert!(
            summary
                .render()
                .ends_with("ok: every job completed with the right answer\n")
        );
    }
}
