//! End-to-end cluster benchmark: no-op jobs through the whole stack, with one and then two
//! worker nodes on this machine, next to the worker runtime alone measured in the same run.
//!
//! The path of a job: batch submit over HTTP → the host's store (on) and dispatcher → libp2p →
//! a worker node → its daemon executor (the SDK `echo-executor`) → the result back over libp2p →
//! stored on the host. Every node is a real `target/release/goop` process, as `goop demo`
//! starts them.
//!
//! Figures (reported, not asserted; targets in brackets):
//! - throughput: `--jobs` no-op jobs submitted in batches of `--batch`, timed from the first
//!   submit until the host counts them all completed, or every submit is answered and no job
//!   is live (polling `GET /api/cluster/stats`)
//!   [>= 50,000 jobs/s, and >= 50% of the runtime figure];
//! - latency: `--latency-jobs` jobs submitted one at a time, each waited for on the host's event
//!   stream before the next, from just before the submit to the arrival of its `completed`
//!   event [p50 < 2 ms];
//! - the baseline: the same no-op jobs through `worker::Executor` driven directly (daemon mode,
//!   the same echo executor, `submit_batch` of 256 on a multi-thread runtime), as
//!   `executor-bench` measures it.
//!
//! Usage: `cluster-bench [--jobs N] [--batch N] [--latency-jobs N] [--runtime-jobs N]
//! [--submitters N] [--capacity N] [--transport tcp|quic] [--goop PATH] [--executor PATH]
//! [--keep]`. The host alone
//! (no workers) is measured first, for how fast it takes submits. Build first with
//! `cargo build --release -p node -p examples -p benches`.

use std::error::Error;
use std::io::{BufRead, BufReader, Read};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proto::api::{ClusterEvent, SubmitBatch, SubmitBatchResponse, SubmitJob};
use proto::cluster::{QueueStats, WorkerInfo};
use proto::{BinaryMode, JobId, JobStatus};
use worker::ExecutorConfig;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Options {
    jobs: usize,
    batch: usize,
    latency_jobs: usize,
    runtime_jobs: usize,
    capacity: u32,
    goop: PathBuf,
    executor: PathBuf,
    keep: bool,
    submitters: usize,
    /// Where the nodes listen: TCP (Noise, yamux) or QUIC.
    listen: &'static str,
}

fn options() -> Result<Options> {
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    let mut options = Options {
        jobs: 50_000,
        batch: 1_000,
        latency_jobs: 500,
        runtime_jobs: 200_000,
        capacity: 1024,
        goop: release.join("goop"),
        executor: release.join("echo-executor"),
        keep: false,
        submitters: 1,
        listen: "/ip4/127.0.0.1/tcp/0",
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--jobs" => options.jobs = value()?.parse()?,
            "--batch" => options.batch = value()?.parse::<usize>()?.clamp(1, 10_000),
            "--latency-jobs" => options.latency_jobs = value()?.parse()?,
            "--runtime-jobs" => options.runtime_jobs = value()?.parse()?,
            "--capacity" => options.capacity = value()?.parse()?,
            "--goop" => options.goop = PathBuf::from(value()?),
            "--executor" => options.executor = PathBuf::from(value()?),
            "--keep" => options.keep = true,
            "--submitters" => options.submitters = value()?.parse()?,
            "--transport" => {
                options.listen = match value()?.as_str() {
                    "tcp" => "/ip4/127.0.0.1/tcp/0",
                    "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
                    other => return Err(format!("--transport is tcp or quic, not {other}").into()),
                }
            }
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    for (path, what) in [
        (&options.goop, "goop"),
        (&options.executor, "echo-executor"),
    ] {
        if !path.is_file() {
            return Err(format!(
                "{what} not found at {}: build with `cargo build --release -p node -p examples`",
                path.display()
            )
            .into());
        }
    }
    options.goop = std::fs::canonicalize(&options.goop)?;
    options.executor = std::fs::canonicalize(&options.executor)?;
    Ok(options)
}

// ---- processes ------------------------------------------------------------------------------

/// A `goop` process, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
struct Proc {
    child: Child,
    reader: Option<JoinHandle<()>>,
    api: String,
    listen: String,
    peer_id: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn spawn(
    options: &Options,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<Proc> {
    let log = std::fs::File::create(data_dir.with_extension("log"))?;
    let mut command = Command::new(&options.goop);
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            options.listen,
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--print-ready",
        ])
        .env_remove("GOOP_API_TOKEN")
        .env("GOOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::sync_channel(1);
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        let _ = lines.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    let mut proc = Proc {
        child,
        reader: Some(reader),
        api: String::new(),
        listen: String::new(),
        peer_id: String::new(),
    };
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let ready: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
        format!(
            "goop {} did not become ready; see {}",
            args.first().copied().unwrap_or(""),
            data_dir.with_extension("log").display()
        )
    })?;
    proc.api = ready["api"].as_str().ok_or("no api")?.to_owned();
    proc.listen = ready["listen"][0].as_str().ok_or("no listen")?.to_owned();
    proc.peer_id = ready["peer_id"].as_str().ok_or("no peer_id")?.to_owned();
    Ok(proc)
}

// ---- HTTP -----------------------------------------------------------------------------------

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(addr: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self
            .agent
            .get(format!("{}{path}", self.base))
            .call()?
            .body_mut()
            .read_json()?)
    }

    fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        Ok(self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body)?
            .body_mut()
            .read_json()?)
    }

    fn submit(&self, jobs: Vec<SubmitJob>) -> Result<Vec<JobId>> {
        let answer: SubmitBatchResponse = self.post("/api/cluster/jobs", &SubmitBatch { jobs })?;
        Ok(answer.job_ids)
    }

    /// The host's event stream.
    fn events(&self) -> Result<Events> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        let response = agent
            .get(format!("{}/api/cluster/events", self.base))
            .header("Accept", "text/event-stream")
            .call()?;
        Ok(Events {
            lines: BufReader::new(Box::new(response.into_body().into_reader())),
        })
    }
}

struct Events {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Events {
    fn next(&mut self) -> Result<ClusterEvent> {
        let (mut name, mut data, mut line) = (String::new(), String::new(), String::new());
        loop {
            line.clear();
            if self.lines.read_line(&mut line)? == 0 {
                return Err("the event stream ended".into());
            }
            let text = line.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                if !data.is_empty()
                    && let Ok(event) = ClusterEvent::decode(&name, &data)
                {
                    return Ok(event);
                }
                name.clear();
                data.clear();
            } else if let Some(value) = text.strip_prefix("event:") {
                value.trim().clone_into(&mut name);
            } else if let Some(value) = text.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
    }
}

// ---- the cluster runs -----------------------------------------------------------------------

struct ClusterFigures {
    workers: usize,
    throughput: f64,
    submit_rate: f64,
    per_worker: Vec<i64>,
    latency_us: Vec<u64>,
    host_latency_ms: Vec<u64>,
    cpu: CpuSplit,
}

fn noop() -> SubmitJob {
    SubmitJob::new("noop")
}

/// Submits `--jobs` no-op jobs in batches from `--submitters` threads, each with its own
/// connection; the thread returned answers how long after `start` the last batch was stored.
fn submit_all(
    api: &str,
    options: &Options,
    start: Instant,
) -> JoinHandle<std::result::Result<Duration, String>> {
    let (api, jobs, batch, submitters) = (
        api.to_owned(),
        options.jobs,
        options.batch,
        options.submitters.max(1),
    );
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..submitters)
            .map(|i| {
                let api = Api::new(&api);
                let mut left = jobs / submitters + usize::from(i < jobs % submitters);
                std::thread::spawn(move || -> std::result::Result<(), String> {
                    while left > 0 {
                        let n = left.min(batch);
                        api.submit((0..n).map(|_| noop()).collect())
                            .map_err(|e| e.to_string())?;
                        left -= n;
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a submitter panicked")??;
        }
        Ok(start.elapsed())
    })
}

fn cluster_run(options: &Options, workers: usize, dir: &Path) -> Result<ClusterFigures> {
    std::fs::create_dir_all(dir)?;
    let host = spawn(options, &dir.join("host"), &["node"], &[])?;
    let api = Api::new(&host.api);
    let created: serde_json::Value = api.post(
        "/api/cluster/create",
        &serde_json::json!({ "name": "bench", "max_members": 0 }),
    )?;
    let group = created["group_id"]
        .as_str()
        .ok_or("no group id")?
        .to_owned();
    let executor = options.executor.to_string_lossy().into_owned();
    let mut nodes = Vec::new();
    let (mut latency_us, mut host_latency_ms) = (Vec::new(), Vec::new());
    for i in 1..=workers {
        let capacity = options.capacity.to_string();
        nodes.push(spawn(
            options,
            &dir.join(format!("worker-{i}")),
            &[
                "worker",
                "--join",
                &host.listen,
                "--group",
                &group,
                "--executor",
                &executor,
                "--mode",
                "daemon",
            ],
            &[("ECHO_CAPACITY", capacity)],
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: Vec<WorkerInfo> = api.get("/api/cluster/workers")?;
        if seen.iter().filter(|w| w.verified).count() >= workers {
            break;
        }
        if Instant::now() > deadline {
            return Err("the workers were not verified within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Latency first, on an empty queue: one job at a time, each waited for on the event stream.
    let mut events = api.events()?;
    for _ in 0..options.latency_jobs * usize::from(workers > 0) {
        let start = Instant::now();
        let id = api.submit(vec![noop()])?[0];
        loop {
            if let ClusterEvent::Job(job) = events.next()?
                && job.job_id == id
                && job.status.is_terminal()
            {
                if job.status != JobStatus::Completed {
                    return Err(format!("job {id} ended {:?}: {:?}", job.status, job.error).into());
                }
                latency_us.push(u64::try_from(start.elapsed().as_micros())?);
                host_latency_ms.extend(job.latency_ms);
                break;
            }
        }
    }
    drop(events);

    // Throughput: every batch submitted by one thread while this one watches the counters.
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let cpu_before = CpuSplit::sample(host.child.id(), &pids);
    let before: QueueStats = api.get("/api/cluster/stats")?;
    let target = before.completed + options.jobs as u64;
    let start = Instant::now();
    let submitter = submit_all(&host.api, options, start);
    if workers == 0 {
        // The host alone: how fast it takes submits, with nothing to run them.
        let submitted_in = submitter
            .join()
            .map_err(|_| "the submitter panicked")?
            .map_err(|e| format!("submit failed: {e}"))?;
        return Ok(ClusterFigures {
            workers,
            throughput: 0.0,
            submit_rate: options.jobs as f64 / submitted_in.as_secs_f64(),
            per_worker: Vec::new(),
            latency_us,
            host_latency_ms,
            cpu: CpuSplit::sample(host.child.id(), &pids).since(cpu_before),
        });
    }
    let deadline = start + Duration::from_secs(600);
    let elapsed = loop {
        let stats: QueueStats = api.get("/api/cluster/stats")?;
        if stats.failed > before.failed {
            return Err(format!("{} jobs failed", stats.failed - before.failed).into());
        }
        // Every job answered and none live: all done, even where a host that keeps fewer
        // finished jobs than were run (`--keep-finished-jobs`) has deleted some of them.
        let drained =
            submitter.is_finished() && stats.pending + stats.assigned + stats.running == 0;
        if stats.completed >= target || drained {
            break start.elapsed();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} jobs completed in 600 s",
                stats.completed - before.completed,
                options.jobs
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let cpu = CpuSplit::sample(host.child.id(), &pids).since(cpu_before);
    let submitted_in = submitter
        .join()
        .map_err(|_| "the submitter panicked")?
        .map_err(|e| format!("submit failed: {e}"))?;
    // The share of each worker is read from the host's store once every process has stopped.
    let peers: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    drop(nodes);
    drop(host);
    let per_worker = count_per_worker(&dir.join("host").join("goop.db"), &peers)?;
    Ok(ClusterFigures {
        workers,
        throughput: options.jobs as f64 / elapsed.as_secs_f64(),
        submit_rate: options.jobs as f64 / submitted_in.as_secs_f64(),
        per_worker,
        latency_us,
        host_latency_ms,
        cpu,
    })
}

// ---- CPU accounting --------------------------------------------------------------------------

/// CPU time (user + system, in clock ticks) of one process or thread, from its `stat` file.
fn cpu_ticks(stat: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return 0;
    };
    // The fields after the command name, which ends at the last ')': utime and stime are the
    // 12th and 13th of them.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The process ids under `pid`, children first-level and below.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{next}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(child);
                queue.push(child);
            }
        }
    }
    out
}

/// Where the CPU time of a run went, in clock ticks: the host's job-store thread, the rest of
/// the host, the worker nodes, and the executors they started.
#[derive(Clone, Copy, Default)]
struct CpuSplit {
    store: u64,
    host: u64,
    workers: u64,
    executors: u64,
}

impl CpuSplit {
    fn sample(host: u32, workers: &[u32]) -> Self {
        let mut split = Self::default();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{host}/task")) {
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let ticks = cpu_ticks(&task.path().join("stat"));
                if comm.trim() == "goop-job-store" {
                    split.store += ticks;
                } else {
                    split.host += ticks;
                }
            }
        }
        for &worker in workers {
            split.workers += cpu_ticks(Path::new(&format!("/proc/{worker}/stat")));
            for child in descendants(worker) {
                split.executors += cpu_ticks(Path::new(&format!("/proc/{child}/stat")));
            }
        }
        split
    }

    fn since(self, before: Self) -> Self {
        Self {
            store: self.store.saturating_sub(before.store),
            host: self.host.saturating_sub(before.host),
            workers: self.workers.saturating_sub(before.workers),
            executors: self.executors.saturating_sub(before.executors),
        }
    }

    /// Microseconds of CPU per job for each part, `jobs` having run.
    fn per_job(self, jobs: usize) -> String {
        // Linux reports these in ticks of 1/100 s (USER_HZ).
        let us = |ticks: u64| ticks as f64 * 10_000.0 / jobs.max(1) as f64;
        format!(
            "host job store {:.1}, host rest {:.1}, worker nodes {:.1}, executors {:.1}; total {:.1}",
            us(self.store),
            us(self.host),
            us(self.workers),
            us(self.executors),
            us(self.store + self.host + self.workers + self.executors)
        )
    }
}

/// Jobs completed per worker, from the host's store (where 3 is the stored code of `completed`).
fn count_per_worker(db: &Path, peers: &[String]) -> Result<Vec<i64>> {
    let db = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut counts = Vec::with_capacity(peers.len());
    for peer in peers {
        counts.push(db.query_row(
            "SELECT count(*) FROM cluster_jobs WHERE worker_id = ?1 AND status = 3",
            [peer],
            |row| row.get(0),
        )?);
    }
    Ok(counts)
}

// ---- the runtime baseline -------------------------------------------------------------------

fn runtime_figure(options: &Options) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut config = ExecutorConfig::new(&options.executor, BinaryMode::Daemon);
    config.capacity_override = NonZeroU32::new(options.capacity);
    config.max_queued = 4 * options.capacity as usize;
    let figure = runtime.block_on(benches::runtime_throughput(
        config,
        options.runtime_jobs,
        256,
    ))?;
    Ok(figure)
}

// ---- the report -----------------------------------------------------------------------------

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

const USAGE: &str = "\
cluster-bench: no-op jobs through the whole cluster stack (HTTP submit, host, libp2p, worker
node, daemon executor, result stored) with one and then two worker nodes, next to the worker
runtime alone measured in the same run. Reported, not asserted.

usage: cluster-bench [--jobs N] [--batch N] [--latency-jobs N] [--runtime-jobs N]
                     [--submitters N] [--capacity N] [--transport tcp|quic] [--goop PATH]
                     [--executor PATH] [--keep]

  --jobs N           jobs per throughput run (default 50000)
  --batch N          jobs per submit request, 1 to 10000 (default 1000)
  --latency-jobs N   jobs submitted one at a time for the latency figures (default 500)
  --runtime-jobs N   jobs for the runtime baseline (default 200000)
  --submitters N     threads submitting in parallel (default 1)
  --capacity N       executor capacity per worker (default 1024)
  --transport T      how the nodes connect: tcp (Noise, yamux) or quic (default tcp)
  --goop PATH        the goop binary (default target/release/goop)
  --executor PATH    the executor (default target/release/echo-executor)
  --keep             keep the nodes' data directories and logs

Build first: cargo build --release -p node -p examples -p benches";

fn main() -> Result<()> {
    if benches::wants_help(USAGE) {
        return Ok(());
    }
    let options = options()?;
    let dir = std::env::temp_dir().join(format!("goop-cluster-bench-{}", std::process::id()));
    println!(
        "goop: {}\nexecutor: {} (capacity {})",
        options.goop.display(),
        options.executor.display(),
        options.capacity
    );
    let before = runtime_figure(&options)?;
    println!(
        "runtime baseline: {} no-op jobs through worker::Executor: {before:.0} jobs/s",
        options.runtime_jobs
    );
    let mut runs = Vec::new();
    for workers in [0, 1, 2] {
        let run_dir = dir.join(format!("{workers}-workers"));
        let mut run = match cluster_run(&options, workers, &run_dir) {
            Ok(run) => run,
            Err(error) => {
                // The logs of a failed run stay, for whoever finds out why.
                eprintln!(
                    "the run failed; its data and logs are in {}",
                    run_dir.display()
                );
                return Err(error);
            }
        };
        if !options.keep {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        if workers == 0 {
            println!(
                "host alone (no workers): {} jobs in batches of {} from {} submitter(s): \
                 submits answered at {:.0} jobs/s; CPU µs per job: {}",
                options.jobs,
                options.batch,
                options.submitters,
                run.submit_rate,
                run.cpu.per_job(options.jobs)
            );
            continue;
        }
        run.latency_us.sort_unstable();
        run.host_latency_ms.sort_unstable();
        println!(
            "{workers} worker(s): {} jobs in batches of {}: {:.0} jobs/s (submits answered at \
             {:.0} jobs/s), per worker {:?}; single job p50 {:.2} ms, p99 {:.2} ms (host: p50 \
             {} ms, p99 {} ms)",
            options.jobs,
            options.batch,
            run.throughput,
            run.submit_rate,
            run.per_worker,
            percentile(&run.latency_us, 50.0) as f64 / 1000.0,
            percentile(&run.latency_us, 99.0) as f64 / 1000.0,
            percentile(&run.host_latency_ms, 50.0),
            percentile(&run.host_latency_ms, 99.0),
        );
        println!("  CPU µs per job: {}", run.cpu.per_job(options.jobs));
        runs.push(run);
    }
    let after = runtime_figure(&options)?;
    let baseline = (before + after) / 2.0;
    println!("runtime baseline again: {after:.0} jobs/s (mean {baseline:.0})");
    println!();
    println!(
        "targets: >= 50,000 jobs/s, >= 50% of the runtime figure, single-job p50 < 2 ms \
         (reported, not asserted)"
    );
    for run in &runs {
        println!(
            "  {} worker(s): {:.0} jobs/s = {:.0}% of the runtime's {baseline:.0} jobs/s; \
             latency p50 {:.2} ms, p99 {:.2} ms over {} jobs",
            run.workers,
            run.throughput,
            100.0 * run.throughput / baseline,
            percentile(&run.latency_us, 50.0) as f64 / 1000.0,
            percentile(&run.latency_us, 99.0) as f64 / 1000.0,
            run.latency_us.len()
        );
    }
    if !options.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
