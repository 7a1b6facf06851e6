//! Executor runtime benchmark: jobs per second through the worker runtime, each figure next to
//! a baseline measured in the same run (these machines are shared and noisy).
//!
//! (a) daemon mode, no-op jobs through `worker::Executor`, against a minimal pipe-echo pair: the
//!     same executor binary fed the same job lines by two plain threads, no runtime. Jobs are
//!     submitted one by one and with `submit_batch`, on a current-thread and on a multi-thread
//!     tokio runtime.
//! (b) oneshot mode, jobs through `worker::Executor`, against bare spawn-write-read-wait of the
//!     same binary with the same concurrency.
//!
//! Usage: `executor-bench [--executor PATH] [--daemon-jobs N] [--oneshot-jobs N]
//! [--capacity N] [--concurrency N] [--rounds N]`. The executor defaults to `$GOOP_BENCH_EXECUTOR`,
//! else `target/release/echo-executor` (the SDK echo executor). Build with `--release`.

use std::error::Error;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::{Attempt, BinaryMode, JobId, JobLine, JobMode};
use serde_json::value::RawValue;
use worker::ExecutorConfig;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Options {
    executor: PathBuf,
    daemon_jobs: usize,
    oneshot_jobs: usize,
    capacity: u32,
    concurrency: usize,
    rounds: usize,
}

fn options() -> Result<Options> {
    let default_executor = std::env::var_os("GOOP_BENCH_EXECUTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/echo-executor")
        });
    let mut options = Options {
        executor: default_executor,
        daemon_jobs: 200_000,
        oneshot_jobs: 2_000,
        capacity: 1024,
        concurrency: 4,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--executor" => options.executor = PathBuf::from(value()?),
            "--daemon-jobs" => options.daemon_jobs = value()?.parse()?,
            "--oneshot-jobs" => options.oneshot_jobs = value()?.parse()?,
            "--capacity" => options.capacity = value()?.parse()?,
            "--concurrency" => options.concurrency = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse()?,
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

fn job_line(i: u64, out: &mut Vec<u8>) {
    let id = JobId::from_u64(i).to_string();
    JobLine {
        job_id: &id,
        payload: RawValue::NULL,
        timeout_s: 0,
        job_type: "noop",
        mode: JobMode::Oneshot,
        attempt: Attempt(1),
    }
    .write_to(out);
}

/// The baseline for (a): one thread writes all job lines, another reads all answers.
fn pipe_echo(executor: &Path, jobs: usize) -> Result<f64> {
    let mut child = Command::new(executor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = BufWriter::with_capacity(64 * 1024, child.stdin.take().ok_or("stdin")?);
    let mut stdout = BufReader::with_capacity(64 * 1024, child.stdout.take().ok_or("stdout")?);
    let mut line = Vec::new();
    stdin.write_all(proto::CHECK_LINE.as_bytes())?;
    stdin.write_all(b"\n")?;
    stdin.flush()?;
    stdout.read_until(b'\n', &mut line)?;
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(128);
        for i in 0..jobs as u64 {
            buf.clear();
            job_line(i + 1, &mut buf);
            stdin.write_all(&buf)?;
        }
        stdin.flush()
    });
    let mut answers = 0;
    while answers < jobs {
        line.clear();
        if stdout.read_until(b'\n', &mut line)? == 0 {
            return Err("executor closed its stdout".into());
        }
        answers += 1;
    }
    let elapsed = start.elapsed();
    writer.join().map_err(|_| "writer thread panicked")??;
    child.wait()?;
    Ok(jobs as f64 / elapsed.as_secs_f64())
}

/// The baseline for (b): `concurrency` threads, each spawning the executor per job, writing
/// the job line, reading its output to the end and waiting for it.
fn bare_spawn(executor: &Path, jobs: usize, concurrency: usize) -> Result<f64> {
    let start = Instant::now();
    let per_thread = jobs.div_ceil(concurrency);
    let threads: Vec<_> = (0..concurrency)
        .map(|t| {
            let executor = executor.to_owned();
            std::thread::spawn(move || -> std::io::Result<usize> {
                let mut line = Vec::with_capacity(128);
                let mut out = Vec::new();
                let mut ran = 0;
                for i in 0..per_thread {
                    let n = (t * per_thread + i) as u64;
                    if n as usize >= jobs {
                        break;
                    }
                    let mut child = Command::new(&executor)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    line.clear();
                    job_line(n + 1, &mut line);
                    let mut stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
                    stdin.write_all(&line)?;
                    drop(stdin);
                    out.clear();
                    child
                        .stdout
                        .take()
                        .ok_or(std::io::ErrorKind::BrokenPipe)?
                        .read_to_end(&mut out)?;
                    child.wait()?;
                    ran += 1;
                }
                Ok(ran)
            })
        })
        .collect();
    let mut ran = 0;
    for thread in threads {
        ran += thread.join().map_err(|_| "spawn thread panicked")??;
    }
    let elapsed = start.elapsed();
    Ok(ran as f64 / elapsed.as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

const USAGE: &str = "\
executor-bench: no-op jobs through the worker runtime (worker::Executor) and an executor, in
daemon and oneshot mode, next to bare pipes in the same run. Reported, not asserted.

usage: executor-bench [--executor PATH] [--daemon-jobs N] [--oneshot-jobs N] [--capacity N]
                      [--concurrency N] [--rounds N]

  --executor PATH     the executor (default $GOOP_BENCH_EXECUTOR, else
                      target/release/echo-executor)
  --daemon-jobs N     jobs through the daemon executor (default 200000)
  --oneshot-jobs N    jobs through oneshot processes (default 2000)
  --capacity N        the daemon's capacity (default 1024)
  --concurrency N     oneshot processes at once (default 4)
  --rounds N          rounds, baseline and runtime alternating; medians reported
                      (default 3)";

fn main() -> Result<()> {
    if benches::wants_help(USAGE) {
        return Ok(());
    }
    let options = options()?;
    if !options.executor.exists() {
        return Err(format!(
            "executor {} not found: build it with `cargo build --release -p examples`, or pass \
             --executor / GOOP_BENCH_EXECUTOR",
            options.executor.display()
        )
        .into());
    }
    // The daemon figures are taken on both runtime flavours: a current-thread runtime keeps
    // the submitter, the supervisor and the receiver on one thread (no cross-thread wakeups,
    // the other core left to the executor); a multi-thread one is what the node runs.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("executor: {}", options.executor.display());

    let mut daemon_config = ExecutorConfig::new(&options.executor, BinaryMode::Daemon);
    daemon_config.capacity_override = NonZeroU32::new(options.capacity);
    daemon_config.max_queued = 4 * options.capacity as usize;
    let mut oneshot_config = ExecutorConfig::new(&options.executor, BinaryMode::Oneshot);
    let concurrency = u32::try_from(options.concurrency)?;
    oneshot_config.capacity_override = NonZeroU32::new(concurrency);

    // Rounds alternate baseline and runtime so that noise hits both alike; medians are kept.
    let mut pipe = vec![];
    let mut daemon: [Vec<f64>; 4] = Default::default();
    let (mut bare, mut oneshot) = (vec![], vec![]);
    let jobs = options.daemon_jobs;
    let oneshot_jobs = options.oneshot_jobs;
    let flavours = [(&current, 1), (&current, 256), (&multi, 1), (&multi, 256)];
    for round in 1..=options.rounds {
        pipe.push(pipe_echo(&options.executor, jobs)?);
        for (figures, (runtime, batch)) in daemon.iter_mut().zip(flavours) {
            figures.push(runtime.block_on(benches::runtime_throughput(
                daemon_config.clone(),
                jobs,
                batch,
            ))?);
        }
        bare.push(bare_spawn(
            &options.executor,
            oneshot_jobs,
            options.concurrency,
        )?);
        oneshot.push(multi.block_on(benches::runtime_throughput(
            oneshot_config.clone(),
            oneshot_jobs,
            1,
        ))?);
        let i = round - 1;
        println!(
            "round {round}: pipe-echo {:.0}/s; daemon current-thread {:.0}/s, batched {:.0}/s; \
             multi-thread {:.0}/s, batched {:.0}/s; bare spawn {:.0}/s, oneshot {:.0}/s",
            pipe[i], daemon[0][i], daemon[1][i], daemon[2][i], daemon[3][i], bare[i], oneshot[i]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Ratios are taken within each round (baseline and runtime measured back to back), then
    // the median over rounds: steadier than a ratio of medians on a shared machine.
    let ratio = |runtime: &[f64], baseline: &[f64]| {
        median(
            runtime
                .iter()
                .zip(baseline)
                .map(|(r, b)| 100.0 * r / b)
                .collect(),
        )
    };
    let ratios = [0, 1, 2, 3].map(|i| ratio(&daemon[i], &pipe));
    let oneshot_ratio = ratio(&oneshot, &bare);
    let pipe = median(pipe);
    let [a, b, c, d] = daemon.map(median);
    let (bare, oneshot) = (median(bare), median(oneshot));
    let pct = |i: usize| ratios[i];
    println!();
    println!(
        "(a) daemon, {jobs} no-op jobs, capacity {} (targets: >= 100000 jobs/s and >= 50% of \
         pipe-echo; medians, ratios per round)\n    pipe-echo baseline {pipe:.0} jobs/s\n    current-thread runtime: submit \
         {a:.0} jobs/s ({:.0}%), submit_batch(256) {b:.0} jobs/s ({:.0}%)\n    multi-thread \
         runtime:  submit {c:.0} jobs/s ({:.0}%), submit_batch(256) {d:.0} jobs/s ({:.0}%)",
        options.capacity,
        pct(0),
        pct(1),
        pct(2),
        pct(3)
    );
    println!(
        "(b) oneshot, {} jobs, concurrency {}, multi-thread runtime: {:.0} jobs/s; bare \
         spawn-and-wait {:.0} jobs/s; ratio {:.0}% (target: >= 75%)",
        options.oneshot_jobs, options.concurrency, oneshot, bare, oneshot_ratio
    );
    Ok(())
}
