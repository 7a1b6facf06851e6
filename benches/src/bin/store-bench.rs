//! Job store benchmark: the writes a busy host makes per job, next to bare SQLite doing the
//! least any durable queue must in the same run.
//!
//! Each round stores `--batch` new jobs (one submit), marks them running (one group commit),
//! then completed with their result and attempt (one group commit), as a host does when its
//! workers keep up. The store grows to `--jobs` jobs. The baseline does one insert and two
//! updates per job on a bare rowid table with the same settings (WAL, `synchronous=NORMAL`)
//! and the same transactions. Then the store prunes every job (as a host deletes finished jobs
//! past their keep time), a window of 10,000 of each status at a time, next to bare SQLite
//! deleting the same rows by id in transactions of 10,000.
//!
//! Usage: `store-bench [--jobs N] [--batch N] [--payload-bytes N] [--dir PATH]`: the payload is
//! a JSON string of about that many bytes (default a 7-byte object), also the result of each
//! job. Reported, not asserted.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::cluster::{AttemptOutcome, AttemptRecord, Job, Json};
use proto::{Attempt, GroupId, JobId, JobMode, JobStatus, PeerId, Timestamp};
use store::{JobStore, NewJob, Prune, StateRow, StoreConfig, Write};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "\
store-bench: the job store's writes per job (submit, running, completed with its attempt) next
to bare SQLite doing one insert and two updates per job in the same transactions, then the
prune of every job next to bare deletes. Reported, not asserted.

usage: store-bench [--jobs N] [--batch N] [--payload-bytes N] [--dir PATH]

  --jobs N            jobs in all (default 200000)
  --batch N           jobs per transaction (default 1000)
  --payload-bytes N   size of each payload and result (default a 7-byte object)
  --dir PATH          where the databases go (default a temporary directory)";

fn main() -> Result<()> {
    if benches::wants_help(USAGE) {
        return Ok(());
    }
    let mut jobs = 200_000_usize;
    let mut batch = 1_000_usize;
    let mut payload_bytes = 0_usize;
    let mut dir = std::env::temp_dir().join(format!("goop-store-bench-{}", std::process::id()));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--jobs" => jobs = value()?.parse()?,
            "--batch" => batch = value()?.parse::<usize>()?.max(1),
            "--payload-bytes" => payload_bytes = value()?.parse()?,
            "--dir" => dir = PathBuf::from(value()?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    std::fs::create_dir_all(&dir)?;
    let payload = if payload_bytes == 0 {
        "{\"n\":1}".to_owned()
    } else {
        format!("\"{}\"", "x".repeat(payload_bytes))
    };
    let rounds = jobs.div_ceil(batch);
    let total = rounds * batch;
    let (bare, bare_delete) = bare_sqlite(&dir.join("bare.db"), rounds, batch, &payload)?;
    let (ours, prune) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(job_store(&dir.join("store.db"), rounds, batch, &payload))?;
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "bare sqlite: {total} jobs (insert, update, update) in transactions of {batch}: {:.0} jobs/s",
        rate(bare)
    );
    println!(
        "job store:   {total} jobs (submit, running, completed + attempt): {:.0} jobs/s = {:.0}% of bare, {:.1} µs per job",
        rate(ours),
        100.0 * bare.as_secs_f64() / ours.as_secs_f64(),
        ours.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "prune:       {total} jobs in windows of {PRUNE_WINDOW}: {:.0} jobs/s = {:.0}% of bare deletes ({:.0} jobs/s), {:.1} µs per job",
        rate(prune),
        100.0 * bare_delete.as_secs_f64() / prune.as_secs_f64(),
        rate(bare_delete),
        prune.as_secs_f64() * 1e6 / total as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Jobs of each finished status one prune looks at, as the cluster host uses it.
const PRUNE_WINDOW: usize = 10_000;

fn id(round: usize, index: usize, batch: usize) -> JobId {
    JobId::from_u64((1_u64 << 40) + (round * batch + index) as u64)
}

/// The time of the inserts and updates, then of deleting every row.
fn bare_sqlite(
    path: &Path,
    rounds: usize,
    batch: usize,
    payload: &str,
) -> Result<(Duration, Duration)> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload TEXT, status TEXT, result TEXT)",
    )?;
    let start = Instant::now();
    for round in 0..rounds {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO jobs (id, payload, status) VALUES (?1, ?2, 'pending')",
            )?;
            for i in 0..batch {
                insert.execute(rusqlite::params![
                    id(round, i, batch).as_u64() as i64,
                    "{\"n\":1}"
                ])?;
            }
        }
        tx.commit()?;
        for (status, result) in [("running", None), ("completed", Some(payload))] {
            let tx = conn.transaction()?;
            {
                let mut update =
                    tx.prepare_cached("UPDATE jobs SET status = ?2, result = ?3 WHERE id = ?1")?;
                for i in 0..batch {
                    update.execute(rusqlite::params![
                        id(round, i, batch).as_u64() as i64,
                        status,
                        result
                    ])?;
                }
            }
            tx.commit()?;
        }
    }
    let writes = start.elapsed();
    let start = Instant::now();
    let ids: Vec<i64> = (0..rounds)
        .flat_map(|round| (0..batch).map(move |i| id(round, i, batch).as_u64() as i64))
        .collect();
    for chunk in ids.chunks(PRUNE_WINDOW) {
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
            for id in chunk {
                delete.execute([id])?;
            }
        }
        tx.commit()?;
    }
    Ok((writes, start.elapsed()))
}

/// The time of the writes, then of pruning every job.
async fn job_store(
    path: &Path,
    rounds: usize,
    batch: usize,
    payload: &str,
) -> Result<(Duration, Duration)> {
    let store = JobStore::open(path, StoreConfig::default())?;
    let group: GroupId = "bench".parse()?;
    let worker: PeerId = "12D3KooWbenchworker".parse()?;
    let payload: Json = Arc::from(serde_json::value::RawValue::from_string(
        payload.to_owned(),
    )?);
    let mut phases = [Duration::ZERO; 3];
    let start = Instant::now();
    for round in 0..rounds {
        let t0 = Instant::now();
        let now = Timestamp::from_unix_ms(1_700_000_000_000 + round as i64);
        let new = (0..batch)
            .map(|i| NewJob {
                group: group.clone(),
                job: Job {
                    id: id(round, i, batch),
                    job_type: "echo".into(),
                    mode: JobMode::Oneshot,
                    payload: Some(payload.clone()),
                    priority: 0,
                    timeout_s: 60,
                    max_retry: 3,
                    labels: Vec::new(),
                    not_before: None,
                    after: Vec::new(),
                },
                created_at: now,
                idempotency_key: None,
            })
            .collect();
        store.submit(new).await?;
        let t1 = Instant::now();
        for i in 0..batch {
            let mut row = row(id(round, i, batch), JobStatus::Running, &worker);
            row.started_at = Some(now);
            store.write(Write::State(Box::new(row))).await?;
        }
        store.flush().await?;
        let t2 = Instant::now();
        for i in 0..batch {
            let job = id(round, i, batch);
            let mut row = row(job, JobStatus::Completed, &worker);
            row.result = Some(payload.clone());
            row.progress = Some((100.0, None));
            row.done_at = Some(now);
            store.write(Write::State(Box::new(row))).await?;
            store
                .write(Write::Attempt {
                    job,
                    record: AttemptRecord {
                        attempt: Attempt(1),
                        worker_id: worker.clone(),
                        started_at: now,
                        ended_at: Some(now),
                        outcome: Some(AttemptOutcome::Completed),
                        error: None,
                    },
                })
                .await?;
        }
        store.flush().await?;
        phases[0] += t1 - t0;
        phases[1] += t2 - t1;
        phases[2] += t2.elapsed();
    }
    let per_job = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * batch) as f64;
    println!(
        "job store phases, µs per job: submit {:.2}, running {:.2}, completed + attempt {:.2}",
        per_job(phases[0]),
        per_job(phases[1]),
        per_job(phases[2])
    );
    let writes = start.elapsed();
    let start = Instant::now();
    loop {
        let prune = Prune {
            group: group.clone(),
            before: Timestamp::from_unix_ms(i64::MAX),
            window: PRUNE_WINDOW,
            oldest: 0,
        };
        if store.prune(prune).await?.await?.is_empty() {
            break;
        }
    }
    Ok((writes, start.elapsed()))
}

fn row(id: JobId, status: JobStatus, worker: &PeerId) -> StateRow {
    StateRow {
        id,
        status,
        worker_id: Some(worker.clone()),
        attempt: Attempt(1),
        retries: 0,
        losses: 0,
        result: None,
        error: None,
        progress: None,
        started_at: None,
        done_at: None,
        elapsed_ms: None,
    }
}
