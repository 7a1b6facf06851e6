//! `goop job ...` and `goop cluster ...`: the command-line client of a node's cluster API.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use proto::api::{ClusterEvent, ClusterStatus, CreateCluster, SubmitJob};
use proto::cluster::{JobState, WorkerInfo};
use proto::{Admission, JobId, JobMode, JobStatus, Timestamp};
use serde_json::value::RawValue;

use crate::client::{ApiClient, ClientError, DEFAULT_API, all_completed};

/// Where the node's API is and how to authenticate.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The node's HTTP API.
    #[arg(long, env = "GOOP_API", default_value = DEFAULT_API, global = true)]
    pub api: String,
    /// The node's API token, when it has one.
    #[arg(long, env = "GOOP_API_TOKEN", hide_env_values = true, global = true)]
    pub api_token: Option<String>,
}

impl ApiArgs {
    pub(crate) fn client(&self) -> ApiClient {
        ApiClient::new(&self.api, self.api_token.clone())
    }
}

/// `goop job`: submit, inspect, cancel, retry and watch jobs.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit one job from flags, or many from a JSON-lines file.
    ///
    /// Each line of --file is one job: {"type", "payload"?, "priority"?, "timeout_s"?,
    /// "max_retry"?, "mode"?, "labels"?, "after"?, "not_before"?, "idempotency_key"?}.
    /// Prints one job id per line, in input order.
    Submit(SubmitArgs),
    /// List jobs, oldest first, with filters.
    List(ListArgs),
    /// Show one job with its result, error, progress and every attempt, as JSON.
    Show {
        /// The job id (16 hex characters).
        id: JobId,
    },
    /// Cancel jobs. Cancel is final: nothing the worker reports afterwards changes it.
    Cancel {
        /// Job ids.
        #[arg(required = true)]
        ids: Vec<JobId>,
    },
    /// Run failed or cancelled jobs again, with a fresh retry budget.
    Retry {
        /// Job ids.
        #[arg(required = true)]
        ids: Vec<JobId>,
    },
    /// Follow jobs live: progress bars on a terminal, one line per event otherwise.
    ///
    /// With ids, ends when all of them are finished (exit 0 only if all completed); without,
    /// follows the whole cluster until interrupted.
    Watch {
        /// Job ids to follow.
        ids: Vec<JobId>,
    },
}

/// Flags of `goop job submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job type (for a single job).
    #[arg(long = "type", short = 't', required_unless_present = "file")]
    pub job_type: Option<String>,
    /// The payload as JSON (any JSON value; numbers are kept exactly).
    #[arg(long, short = 'p')]
    pub payload: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Seconds an attempt may run; 0 means no limit.
    #[arg(long = "timeout", default_value_t = 0)]
    pub timeout_s: u64,
    /// Failures tolerated before the job fails for good.
    #[arg(long, default_value_t = 0)]
    pub max_retry: u32,
    /// `oneshot` or `continuous`.
    #[arg(long, default_value = "oneshot")]
    pub mode: String,
    /// A label to filter by (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A job that must complete first (repeatable).
    #[arg(long = "after")]
    pub after: Vec<JobId>,
    /// Not started before this time (RFC 3339).
    #[arg(long)]
    pub not_before: Option<Timestamp>,
    /// An idempotency key: submitting it again returns the first job instead of a new one.
    #[arg(long)]
    pub key: Option<String>,
    /// Read jobs from this JSON-lines file (`-` for stdin) instead of the flags above.
    #[arg(long, short = 'f', conflicts_with_all = ["job_type", "payload", "key"])]
    pub file: Option<PathBuf>,
    /// Jobs per HTTP request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Follow the jobs until they finish; print one JSON line per job; exit 0 only if all
    /// completed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long)]
    pub wait_timeout: Option<u64>,
}

/// Flags of `goop job list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this status.
    #[arg(long, value_parser = ["pending", "assigned", "running", "completed", "failed", "cancelled"])]
    pub status: Option<String>,
    /// Only jobs of this type.
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// Only jobs with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// Jobs per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Fetch every page, not just the first.
    #[arg(long)]
    pub all: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `goop cluster`: create a cluster and look at it.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster group on this node; the node becomes its host. Prints the group id.
    Create {
        /// A name for people.
        #[arg(long, default_value = "Cluster")]
        name: String,
        /// The most workers; 0 means no limit.
        #[arg(long, default_value_t = 0)]
        max_members: u32,
        /// Who may join as a worker: `open` (anyone who knows the host and the group id; the
        /// default), `invite` (only peers invited with `POST /api/groups/invite`) or `approval`
        /// (invited peers, and others once `POST /api/groups/approve` lets them in; their
        /// joins wait, listed as `requests` by `GET /api/groups`). On a node that already
        /// hosts a cluster, a different admission is refused.
        #[arg(long, value_parser = parse_admission)]
        admission: Option<Admission>,
    },
    /// The node's role in a cluster and, on a host, the queue counters (JSON).
    Status,
    /// The workers of the cluster this node hosts.
    Workers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_admission(s: &str) -> Result<Admission, String> {
    match s {
        "open" => Ok(Admission::Open),
        "invite" => Ok(Admission::Invite),
        "approval" => Ok(Admission::Approval),
        other => Err(format!(
            "invalid admission {other:?} (must be open, invite or approval)"
        )),
    }
}

pub(crate) fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("goop: {error}");
    ExitCode::from(2)
}

/// Runs `goop job ...`.
pub fn run_job(api: &ApiArgs, command: JobCommand) -> ExitCode {
    let client = api.client();
    let result = match command {
        JobCommand::Submit(args) => submit(&client, args),
        JobCommand::List(args) => list(&client, &args),
        JobCommand::Show { id } => client.job(id).map(|state| {
            println!(
                "{}",
                serde_json::to_string_pretty(&state).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }),
        JobCommand::Cancel { ids } => each(&ids, |id| client.cancel(id)),
        JobCommand::Retry { ids } => each(&ids, |id| client.retry(id)),
        JobCommand::Watch { ids } => watch(&client, &ids),
    };
    result.unwrap_or_else(fail)
}

/// Runs `goop cluster ...`.
pub fn run_cluster(api: &ApiArgs, command: ClusterCommand) -> ExitCode {
    let client = api.client();
    let result = match command {
        ClusterCommand::Create {
            name,
            max_members,
            admission,
        } => client
            .post::<_, serde_json::Value>(
                "/api/cluster/create",
                &CreateCluster {
                    name: Some(name),
                    group_id: None,
                    max_members,
                    admission,
                },
            )
            .map(|answer| {
                println!("{}", answer["group_id"].as_str().unwrap_or_default());
                ExitCode::SUCCESS
            }),
        ClusterCommand::Status => {
            client
                .get::<ClusterStatus>("/api/cluster/status")
                .map(|status| {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                })
        }
        ClusterCommand::Workers { json } => client
            .get::<Vec<WorkerInfo>>("/api/cluster/workers")
            .map(|workers| {
                print_workers(&workers, json);
                ExitCode::SUCCESS
            }),
    };
    result.unwrap_or_else(fail)
}

fn each(
    ids: &[JobId],
    call: impl Fn(JobId) -> Result<serde_json::Value, ClientError>,
) -> Result<ExitCode, ClientError> {
    let mut code = ExitCode::SUCCESS;
    for id in ids {
        match call(*id) {
            Ok(answer) => println!("{answer}"),
            Err(error) => {
                // The node's message usually names the job already.
                let error = error.to_string();
                if error.contains(&id.to_string()) {
                    eprintln!("goop: {error}");
                } else {
                    eprintln!("goop: job {id}: {error}");
                }
                code = ExitCode::from(1);
            }
        }
    }
    Ok(code)
}

fn submit(client: &ApiClient, args: SubmitArgs) -> Result<ExitCode, ClientError> {
    let jobs = match &args.file {
        Some(path) => match read_jobs(path) {
            Ok(jobs) => jobs,
            Err(message) => return Ok(fail(message)),
        },
        None => match job_from_flags(&args) {
            Ok(job) => vec![job],
            Err(message) => return Ok(fail(message)),
        },
    };
    let total = jobs.len();
    let mut ids = Vec::with_capacity(total);
    let mut out = std::io::stdout().lock();
    // Without --wait, each batch's ids are printed as soon as the node took it, so a
    // submit that fails half way still tells which jobs went in.
    let submitted = client.submit_each(jobs, args.batch, |accepted| {
        if args.wait {
            ids.extend_from_slice(accepted);
        } else {
            for id in accepted {
                let _ = writeln!(out, "{id}");
            }
            let _ = out.flush();
        }
    });
    if let Err((taken, error)) = submitted {
        // The jobs taken run whatever happens here: their ids are not kept from the caller.
        if args.wait {
            for id in &ids {
                let _ = writeln!(out, "{id}");
            }
        }
        drop(out);
        return Ok(fail(format_args!(
            "{error}; the node took the first {taken} of the {total} jobs{}",
            if taken == 0 {
                ""
            } else {
                " (their ids are on standard output)"
            }
        )));
    }
    drop(out);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(ids.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} finished ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let wanted: std::collections::HashSet<JobId> = ids.iter().copied().collect();
    let states = client.follow(&ids, args.wait_timeout.map(Duration::from_secs), |event| {
        if let (Some(bar), ClusterEvent::Job(job)) = (&bar, event)
            && job.status.is_terminal()
            && wanted.contains(&job.job_id)
        {
            bar.inc(1);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    for state in &states {
        let _ = writeln!(out, "{}", outcome_line(state));
    }
    Ok(if all_completed(&states) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One finished job as `goop executor run` prints it:
/// `{"job_id","status","result"?,"error"?,"elapsed_ms"?}`.
#[derive(serde::Serialize)]
struct Outcome<'a> {
    job_id: JobId,
    status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
}

fn outcome_line(state: &JobState) -> String {
    let outcome = Outcome {
        job_id: state.job.id,
        status: state.status,
        result: state.result.as_deref(),
        error: state.error.as_deref(),
        elapsed_ms: state.elapsed_ms,
    };
    serde_json::to_string(&outcome).unwrap_or_default()
}

fn job_from_flags(args: &SubmitArgs) -> Result<SubmitJob, String> {
    let job_type = args
        .job_type
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or("--type is required")?;
    let mode = match args.mode.as_str() {
        "oneshot" => JobMode::Oneshot,
        "continuous" => JobMode::Continuous,
        other => {
            return Err(format!(
                "invalid --mode {other:?}: expected oneshot or continuous"
            ));
        }
    };
    let payload = match &args.payload {
        Some(text) => Some(
            RawValue::from_string(text.clone())
                .map_err(|e| format!("--payload is not valid JSON: {e}"))?
                .into(),
        ),
        None => None,
    };
    Ok(SubmitJob {
        job_type,
        mode,
        payload,
        priority: args.priority,
        timeout_s: args.timeout_s,
        max_retry: args.max_retry,
        labels: args.labels.clone(),
        not_before: args.not_before,
        after: args.after.clone(),
        idempotency_key: args.key.clone(),
    })
}

fn read_jobs(path: &std::path::Path) -> Result<Vec<SubmitJob>, String> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut jobs = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let job: SubmitJob = serde_json::from_str(&line)
            .map_err(|e| format!("{} line {}: {e}", path.display(), index + 1))?;
        jobs.push(job);
    }
    if jobs.is_empty() {
        return Err(format!("{} holds no jobs", path.display()));
    }
    Ok(jobs)
}

fn list(client: &ApiClient, args: &ListArgs) -> Result<ExitCode, ClientError> {
    let mut query = vec![format!("limit={}", args.limit.clamp(1, 1000))];
    for (key, value) in [
        ("status", &args.status),
        ("type", &args.job_type),
        ("label", &args.label),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode_query(value)));
        }
    }
    let mut cursor: Option<String> = None;
    let mut out = std::io::stdout().lock();
    let mut header = !args.json;
    loop {
        let mut path = format!("/api/cluster/jobs?{}", query.join("&"));
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (jobs, next): (Vec<JobState>, _) = client.get_with_header(&path, "x-next-cursor")?;
        if header {
            let _ = writeln!(
                out,
                "{:<16}  {:<9}  {:<16}  {:>5}  {:>3}  ERROR",
                "ID", "STATUS", "TYPE", "PRI", "TRY"
            );
            header = false;
        }
        for job in &jobs {
            if args.json {
                let _ = writeln!(out, "{}", serde_json::to_string(job).unwrap_or_default());
            } else {
                let error: String = job
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<16}  {:<9}  {:<16}  {:>5}  {:>3}  {error}",
                    job.job.id,
                    job.status.as_str(),
                    job.job.job_type,
                    job.job.priority,
                    job.attempt.0
                );
            }
        }
        match next {
            Some(next) if args.all => cursor = Some(next),
            _ => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_workers(workers: &[WorkerInfo], json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(workers).unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        out,
        "{:<54}  {:<8}  {:>8}  {:>4}  TYPES",
        "PEER", "STATUS", "RUNNING", "CAP"
    );
    for worker in workers {
        let types = if worker.job_types.is_empty() {
            "*".to_owned()
        } else {
            worker.job_types.join(",")
        };
        let status = serde_json::to_value(worker.status).ok();
        let status = status.as_ref().and_then(|s| s.as_str()).unwrap_or("?");
        let _ = writeln!(
            out,
            "{:<54}  {:<8}  {:>8}  {:>4}  {types}",
            worker.peer_id, status, worker.running_jobs, worker.capacity
        );
    }
}

fn watch(client: &ApiClient, ids: &[JobId]) -> Result<ExitCode, ClientError> {
    let terminal = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    let mut by_job: std::collections::HashMap<JobId, ProgressBar> =
        std::collections::HashMap::new();
    let style = ProgressStyle::with_template("{prefix:16} {bar:30} {pos:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut show = |event: &ClusterEvent| {
        let job = match event {
            ClusterEvent::Job(j) => Some(j.job_id),
            ClusterEvent::Progress(p) => Some(p.job_id),
            ClusterEvent::Output(o) => Some(o.job_id),
            ClusterEvent::Log(l) => Some(l.job_id),
            ClusterEvent::Worker(_) | ClusterEvent::Lagged { .. } => None,
        };
        // Given ids, only their jobs' events are shown.
        if !ids.is_empty() && !job.is_some_and(|job| ids.contains(&job)) {
            return;
        }
        if !terminal {
            if let Ok(data) = serde_json::to_string(event) {
                eprintln!("{} {data}", event.name());
            }
            return;
        }
        let (id, pct, msg) = match event {
            ClusterEvent::Progress(p) => (p.job_id, Some(p.percent), p.message.clone()),
            ClusterEvent::Job(j) => (j.job_id, None, j.status.as_str().to_owned()),
            _ => return,
        };
        let bar = by_job.entry(id).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new(100));
            bar.set_style(style.clone());
            bar.set_prefix(id.to_string());
            bar
        });
        if let Some(pct) = pct {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a percentage clamped to 0..=100"
            )]
            bar.set_position(pct.clamp(0.0, 100.0) as u64);
        }
        bar.set_message(msg);
        if let ClusterEvent::Job(j) = event
            && j.status.is_terminal()
        {
            if j.status == JobStatus::Completed {
                bar.set_position(100);
            }
            bar.finish();
        }
    };
    if ids.is_empty() {
        let mut events = client.events()?;
        while let Some(event) = events.next_event()? {
            show(&event);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let states = client.follow(ids, None, &mut show)?;
    let mut out = std::io::stdout().lock();
    for state in &states {
        let _ = writeln!(out, "{}", outcome_line(state));
    }
    Ok(if all_completed(&states) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
