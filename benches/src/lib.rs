//! Shared pieces of the goop benchmarks.

use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use proto::{Attempt, JobId, JobMode};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use worker::{EventKind, Executor, ExecutorConfig, JobSpec, Outcome};

/// Whether the command line asks for help (`-h` or `--help`); if so, `usage` is printed.
pub fn wants_help(usage: &str) -> bool {
    let asked = std::env::args()
        .skip(1)
        .any(|arg| arg == "-h" || arg == "--help");
    if asked {
        println!("{usage}");
    }
    asked
}

/// The `index`th positional argument as a count, `default` when absent; an argument that is
/// not a count is an error rather than silently the default.
pub fn count_arg(index: usize, name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .nth(index)
    {
        None => Ok(default),
        Some(arg) => arg
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} must be a count, not {arg:?} (see --help)")),
    }
}

/// The baseline of the MQ and group benchmarks: `n` copies of `line` written on a bare libp2p
/// stream, many lines per write as the MQ link does, while a reader counts the answers the
/// other end echoes. Returns lines per second.
pub async fn bare_stream_throughput(
    stream: libp2p::Stream,
    n: usize,
    line: &str,
) -> anyhow::Result<f64> {
    let (read, mut write) = stream.split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut lines = futures::io::BufReader::new(read).lines();
        let mut got = 0;
        while got < n {
            match lines.next().await {
                Some(Ok(_)) => got += 1,
                _ => break,
            }
        }
        got
    });
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(line.as_bytes());
        if batch.len() >= 256 * 1024 || i + 1 == n {
            write.write_all(&batch).await?;
            write.flush().await?;
            batch.clear();
        }
    }
    let got = reader.await?;
    let elapsed = started.elapsed();
    let _ = write.close().await;
    if got != n {
        anyhow::bail!("baseline got {got} of {n} answers");
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The latency baseline: `n` round trips of `line` on a bare libp2p stream whose other end echoes
/// each line, one at a time. Returns the sorted round-trip times.
pub async fn bare_stream_latency(
    stream: libp2p::Stream,
    n: usize,
    line: &str,
) -> anyhow::Result<Vec<Duration>> {
    let (read, mut write) = stream.split();
    let mut lines = futures::io::BufReader::new(read).lines();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        write.write_all(line.as_bytes()).await?;
        write.flush().await?;
        match lines.next().await {
            Some(Ok(_)) => samples.push(started.elapsed()),
            _ => anyhow::bail!("baseline stream ended"),
        }
    }
    samples.sort();
    Ok(samples)
}

/// A no-op job for the runtime baselines.
fn noop_spec(i: u64) -> JobSpec {
    JobSpec {
        id: JobId::from_u64(i),
        attempt: Attempt(1),
        job_type: "noop".to_owned(),
        mode: JobMode::Oneshot,
        payload: RawValue::NULL.to_owned().into(),
        timeout: None,
    }
}

/// Runs `jobs` no-op jobs through the runtime, submitted one by one (`batch` 1) or in batches;
/// returns jobs per second.
pub async fn runtime_throughput(
    config: ExecutorConfig,
    jobs: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let executor = std::sync::Arc::new(Executor::start(config).await?);
    let (tx, mut rx) = mpsc::channel(4096);
    let start = Instant::now();
    // Submitter and receiver are tasks of the runtime, as the node's would be (a future run by
    // `block_on` sits outside the worker threads, so every wakeup would cross threads).
    let submitter = {
        let executor = std::sync::Arc::clone(&executor);
        tokio::spawn(async move {
            if batch <= 1 {
                for i in 0..jobs as u64 {
                    executor.submit(noop_spec(i + 1), tx.clone()).await?;
                }
            } else {
                let mut next = 1;
                while next <= jobs as u64 {
                    let end = (next + batch as u64).min(jobs as u64 + 1);
                    executor
                        .submit_batch((next..end).map(noop_spec).collect(), &tx)
                        .await
                        .map_err(|refused| refused.error)?;
                    next = end;
                }
            }
            Ok::<_, worker::SubmitError>(())
        })
    };
    let receiver = tokio::spawn(async move {
        let mut done = 0;
        let mut failed = 0;
        let mut events = Vec::with_capacity(1024);
        while done < jobs {
            if rx.recv_many(&mut events, 1024).await == 0 {
                break;
            }
            for event in events.drain(..) {
                if let EventKind::Finished(outcome) = event.kind {
                    done += 1;
                    if !matches!(outcome, Outcome::Completed { .. }) {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("first failure: {outcome:?}");
                        }
                    }
                }
            }
        }
        (done, failed)
    });
    let (done, failed) = receiver.await?;
    let elapsed = start.elapsed();
    submitter.await??;
    if let Ok(executor) = std::sync::Arc::try_unwrap(executor) {
        executor.shutdown().await;
    }
    if done < jobs || failed > 0 {
        anyhow::bail!("{done} of {jobs} jobs finished, {failed} not completed");
    }
    Ok(jobs as f64 / elapsed.as_secs_f64())
}
