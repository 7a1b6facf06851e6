//! The job store against a real SQLite file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use proto::cluster::{AttemptOutcome, AttemptRecord, Job, JobState};
use proto::{Attempt, GroupId, JobId, JobMode, JobStatus, Timestamp};
use serde_json::value::RawValue;
use store::{
    JobStore, ListFilter, NewJob, Prune, Pruned, Reader, StateRow, StoreConfig, StoreError,
    Submitted, Write,
};

/// A fresh database path under the system temp dir, removed when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "goop-store-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("goop.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn group() -> GroupId {
    "g1".parse().unwrap()
}

fn job(id: u64, job_type: &str, priority: i32) -> Job {
    Job {
        id: JobId::from_u64(id),
        job_type: job_type.to_owned(),
        mode: JobMode::Oneshot,
        payload: Some(
            RawValue::from_string(format!(r#"{{"n":{id}}}"#))
                .unwrap()
                .into(),
        ),
        priority,
        timeout_s: 0,
        max_retry: 0,
        labels: Vec::new(),
        not_before: None,
        after: Vec::new(),
    }
}

fn new_job(job: Job) -> NewJob {
    NewJob {
        group: group(),
        job,
        created_at: Timestamp::from_unix_ms(1_000),
        idempotency_key: None,
    }
}

fn state_of(store: &JobStore, id: u64) -> JobState {
    store
        .reader()
        .unwrap()
        .get(JobId::from_u64(id))
        .unwrap()
        .expect("job exists")
        .state
}

/// The ids of the group's jobs, page by page, following the cursor to the end.
fn pages_of(reader: &Reader, limit: usize) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = reader
            .list(&ListFilter {
                group: Some(group()),
                cursor,
                limit,
                ..ListFilter::default()
            })
            .unwrap();
        pages.push(page.jobs.iter().map(|j| j.state.job.id.as_u64()).collect());
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
    }
}

/// `state` started as attempt 1 on `peerA` at 2 s, and the attempt's record.
fn started(state: &JobState) -> (JobState, AttemptRecord) {
    let mut running = state.clone();
    running.status = JobStatus::Running;
    running.worker_id = Some("peerA".parse().unwrap());
    running.attempt = Attempt(1);
    running.started_at = Some(Timestamp::from_unix_ms(2_000));
    let record = AttemptRecord {
        attempt: Attempt(1),
        worker_id: "peerA".parse().unwrap(),
        started_at: Timestamp::from_unix_ms(2_000),
        ended_at: None,
        outcome: None,
        error: None,
    };
    (running, record)
}

async fn write_state(store: &JobStore, row: StateRow) {
    store.write(Write::State(Box::new(row))).await.unwrap();
}

async fn write_attempt(store: &JobStore, job: JobId, record: AttemptRecord) {
    store.write(Write::Attempt { job, record }).await.unwrap();
}

#[tokio::test]
async fn submitted_jobs_round_trip_with_exact_numbers() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    let payload = r#"{"a":9007199254740993,"b":12345678901234567890,"c":99999999999999999999999}"#;
    let mut full = job(u64::MAX, "calculate", -7);
    full.payload = Some(RawValue::from_string(payload.to_owned()).unwrap().into());
    full.mode = JobMode::Continuous;
    full.timeout_s = 30;
    full.max_retry = 2;
    full.labels = vec!["nightly".into(), "gpu".into()];
    full.not_before = Some(Timestamp::from_unix_ms(5_000));
    full.after = vec![JobId::from_u64(1)];
    let submitted = store.submit(vec![new_job(full)]).await.unwrap();
    assert_eq!(submitted, [Submitted::Created(JobId::from_u64(u64::MAX))]);

    let state = state_of(&store, u64::MAX);
    assert_eq!(state.job.payload.unwrap().get(), payload);
    assert_eq!(state.job.mode, JobMode::Continuous);
    assert_eq!(
        (state.job.priority, state.job.timeout_s, state.job.max_retry),
        (-7, 30, 2)
    );
    assert_eq!(state.job.labels, ["nightly", "gpu"]);
    assert_eq!(state.job.not_before, Some(Timestamp::from_unix_ms(5_000)));
    assert_eq!(state.job.after, [JobId::from_u64(1)]);
    assert_eq!(state.status, JobStatus::Pending);
    assert_eq!(state.created_at, Timestamp::from_unix_ms(1_000));
}

#[tokio::test]
async fn idempotency_keys_return_the_first_job() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    let mut first = new_job(job(1, "t", 0));
    first.idempotency_key = Some("order-17".into());
    let mut again = new_job(job(2, "t", 0));
    again.idempotency_key = Some("order-17".into());
    assert_eq!(
        store.submit(vec![first]).await.unwrap(),
        [Submitted::Created(JobId::from_u64(1))]
    );
    assert_eq!(
        store.submit(vec![again]).await.unwrap(),
        [Submitted::Existing(JobId::from_u64(1))]
    );
    assert!(
        store
            .reader()
            .unwrap()
            .get(JobId::from_u64(2))
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_failing_submit_stores_none_of_its_jobs_and_spares_the_others() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    store.submit(vec![new_job(job(1, "t", 0))]).await.unwrap();
    let (bad, good) = tokio::join!(
        store.submit(vec![new_job(job(2, "t", 0)), new_job(job(1, "t", 0))]),
        store.submit(vec![new_job(job(3, "t", 0))]),
    );
    assert!(
        matches!(bad, Err(StoreError::Duplicate(ref id)) if id == "0000000000000001"),
        "{bad:?}"
    );
    assert_eq!(good.unwrap(), [Submitted::Created(JobId::from_u64(3))]);
    let reader = store.reader().unwrap();
    assert!(reader.get(JobId::from_u64(2)).unwrap().is_none());
    assert!(reader.get(JobId::from_u64(3)).unwrap().is_some());
}

#[tokio::test]
async fn state_attempts_and_coalesced_progress_are_written() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    store
        .submit(vec![new_job(job(1, "t", 0)), new_job(job(2, "t", 0))])
        .await
        .unwrap();
    let (state, record) = started(&state_of(&store, 1));
    write_state(&store, StateRow::of(&state)).await;
    write_attempt(&store, JobId::from_u64(1), record.clone()).await;
    for pct in [10.0, 20.0, 42.5] {
        store
            .write(Write::Progress {
                id: JobId::from_u64(1),
                percent: pct,
                message: Some(format!("at {pct}")),
            })
            .await
            .unwrap();
    }
    // A progress report followed by a full state: the state is newer and wins.
    store
        .write(Write::Progress {
            id: JobId::from_u64(2),
            percent: 99.0,
            message: None,
        })
        .await
        .unwrap();
    let mut second = state_of(&store, 2);
    second.progress = 5.0;
    write_state(&store, StateRow::of(&second)).await;
    store.flush().await.unwrap();

    let got = store
        .reader()
        .unwrap()
        .get(JobId::from_u64(1))
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(got.status, JobStatus::Running);
    assert_eq!(got.worker_id.unwrap().as_str(), "peerA");
    assert_eq!(
        (got.progress, got.progress_msg.as_deref()),
        (42.5, Some("at 42.5"))
    );
    assert_eq!(got.attempts, std::slice::from_ref(&record));
    assert_eq!(state_of(&store, 2).progress, 5.0);

    let ended = AttemptRecord {
        ended_at: Some(Timestamp::from_unix_ms(3_000)),
        outcome: Some(AttemptOutcome::TimedOut),
        error: Some("timed out after 1s".into()),
        ..record
    };
    write_attempt(&store, JobId::from_u64(1), ended.clone()).await;
    // A state change that carries no progress and no start time keeps the stored ones, and the
    // store works out the elapsed time of the finished job.
    let mut failed = StateRow::of(&state_of(&store, 1));
    failed.status = JobStatus::Failed;
    failed.progress = None;
    failed.started_at = None;
    failed.done_at = Some(Timestamp::from_unix_ms(3_500));
    failed.elapsed_ms = None;
    write_state(&store, failed).await;
    store.flush().await.unwrap();
    let got = state_of(&store, 1);
    assert_eq!(got.attempts, [ended]);
    assert_eq!((got.status, got.progress), (JobStatus::Failed, 42.5));
    assert_eq!(got.started_at, Some(Timestamp::from_unix_ms(2_000)));
    assert_eq!(got.elapsed_ms, Some(1_500));
}

#[tokio::test]
async fn the_running_and_the_completing_attempt_are_read_from_the_job_row() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    store.submit(vec![new_job(job(1, "t", 0))]).await.unwrap();
    let peer = |name: &str| name.parse::<proto::PeerId>().unwrap();
    // Attempt 1 was lost on peerA (a row); attempt 2 runs on peerB (no row yet).
    let lost = AttemptRecord {
        attempt: Attempt(1),
        worker_id: peer("peerA"),
        started_at: Timestamp::from_unix_ms(2_000),
        ended_at: Some(Timestamp::from_unix_ms(2_500)),
        outcome: Some(AttemptOutcome::Lost),
        error: Some("worker left".into()),
    };
    write_attempt(&store, JobId::from_u64(1), lost.clone()).await;
    let mut running = StateRow::of(&state_of(&store, 1));
    running.status = JobStatus::Running;
    running.worker_id = Some(peer("peerB"));
    running.attempt = Attempt(2);
    running.started_at = Some(Timestamp::from_unix_ms(3_000));
    write_state(&store, running).await;
    store.flush().await.unwrap();
    let current = AttemptRecord {
        attempt: Attempt(2),
        worker_id: peer("peerB"),
        started_at: Timestamp::from_unix_ms(3_000),
        ended_at: None,
        outcome: None,
        error: None,
    };
    assert_eq!(
        state_of(&store, 1).attempts,
        [lost.clone(), current.clone()]
    );
    // A caller may store the running attempt too, in a transaction of its own.
    write_attempt(&store, JobId::from_u64(1), current.clone()).await;
    store.flush().await.unwrap();

    // It completes: the completing attempt is not stored as a row, yet reads back whole.
    let done = AttemptRecord {
        ended_at: Some(Timestamp::from_unix_ms(4_000)),
        outcome: Some(AttemptOutcome::Completed),
        ..current
    };
    write_attempt(&store, JobId::from_u64(1), done.clone()).await;
    let mut completed = StateRow::of(&state_of(&store, 1));
    completed.status = JobStatus::Completed;
    completed.worker_id = None;
    completed.started_at = None;
    completed.done_at = Some(Timestamp::from_unix_ms(4_000));
    write_state(&store, completed).await;
    store.flush().await.unwrap();
    let reader = store.reader().unwrap();
    // Rows: the lost attempt and the running one; none for its completion.
    let rows = reader.attempts(JobId::from_u64(1)).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].outcome, None);
    let state = state_of(&store, 1);
    assert_eq!(state.attempts, [lost, done]);
    assert_eq!(state.elapsed_ms, Some(1_000));
}

#[tokio::test]
async fn lists_page_and_filter_in_submission_order() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    let jobs = (1..=25).map(|i| {
        let mut j = job(i, if i % 2 == 0 { "even" } else { "odd" }, 0);
        if i % 5 == 0 {
            j.labels = vec!["fives".into()];
        }
        new_job(j)
    });
    store.submit(jobs.collect()).await.unwrap();
    let mut done = state_of(&store, 4);
    done.status = JobStatus::Failed;
    write_state(&store, StateRow::of(&done)).await;
    store.flush().await.unwrap();
    let reader = store.reader().unwrap();

    let seen: Vec<u64> = pages_of(&reader, 10).into_iter().flatten().collect();
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());

    let evens = reader
        .list(&ListFilter {
            job_type: Some("even".into()),
            limit: 100,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(evens.jobs.len(), 12);
    let fives = reader
        .list(&ListFilter {
            label: Some("fives".into()),
            limit: 100,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(
        fives
            .jobs
            .iter()
            .map(|j| j.state.job.id.as_u64())
            .collect::<Vec<_>>(),
        [5, 10, 15, 20, 25]
    );
    let failed = reader
        .list(&ListFilter {
            status: Some(JobStatus::Failed),
            limit: 100,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(
        failed
            .jobs
            .iter()
            .map(|j| j.state.job.id.as_u64())
            .collect::<Vec<_>>(),
        [4]
    );

    let some = reader
        .list(&ListFilter {
            ids: Some(vec![
                JobId::from_u64(7),
                JobId::from_u64(3),
                JobId::from_u64(99),
            ]),
            limit: 100,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(
        some.jobs
            .iter()
            .map(|j| j.state.job.id.as_u64())
            .collect::<Vec<_>>(),
        [3, 7]
    );
    let stats = reader.stats(&group()).unwrap();
    assert_eq!((stats.pending, stats.failed), (24, 1));
    let active = reader.load_active(&group()).unwrap();
    assert_eq!(active.len(), 24);
    let finished = reader.load_finished(&group(), usize::MAX).unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!(
        (finished[0].0, finished[0].1.as_str(), finished[0].2),
        (JobId::from_u64(4), "even", JobStatus::Failed)
    );
    assert!(active.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn a_page_of_large_payloads_ends_early_and_the_cursor_goes_on() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    // Four jobs of 12 MiB each: two fit in a page's 32 MiB, the third would not.
    let big = format!("\"{}\"", "x".repeat(12 * 1024 * 1024));
    let jobs = (1..=4)
        .map(|i| {
            let mut job = job(i, "t", 0);
            job.payload = Some(RawValue::from_string(big.clone()).unwrap().into());
            new_job(job)
        })
        .collect();
    store.submit(jobs).await.unwrap();
    let reader = store.reader().unwrap();
    let pages = pages_of(&reader, 1000);
    assert_eq!(pages, [vec![1, 2], vec![3, 4]]);
}

#[tokio::test]
async fn committed_submits_survive_a_reopen() {
    let db = TempDb::new();
    {
        let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
        store
            .submit((1..=100).map(|i| new_job(job(i, "t", 0))).collect())
            .await
            .unwrap();
        // Dropped without a flush: the submit was answered only after its commit.
    }
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    assert_eq!(
        store.reader().unwrap().load_active(&group()).unwrap().len(),
        100
    );
}

#[tokio::test]
async fn the_greatest_id_is_read_as_unsigned() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    assert_eq!(store.reader().unwrap().max_id().unwrap(), None);
    store
        .submit(vec![new_job(job(5, "t", 0)), new_job(job(3, "t", 0))])
        .await
        .unwrap();
    assert_eq!(
        store.reader().unwrap().max_id().unwrap(),
        Some(JobId::from_u64(5))
    );
    // Ids from 2^63 up are negative as SQLite integers, yet still the greatest.
    let big = (1_u64 << 63) + 9;
    store
        .submit(vec![
            new_job(job(big, "t", 0)),
            new_job(job(big - 2, "t", 0)),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.reader().unwrap().max_id().unwrap(),
        Some(JobId::from_u64(big))
    );
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let db = TempDb::new();
    drop(JobStore::open(&db.path(), StoreConfig::default()).unwrap());
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute(
        "UPDATE schema_versions SET version = 99 WHERE component = 'cluster_jobs'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = JobStore::open(&db.path(), StoreConfig::default())
        .err()
        .expect("refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn writes_of_one_transaction_coalesce_without_losing_what_earlier_ones_said() {
    // The same changes queued one by one and as one `write_all`.
    for together in [false, true] {
        writes_coalesce(together).await;
    }
}

async fn writes_coalesce(together: bool) {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    store.submit(vec![new_job(job(1, "t", 0))]).await.unwrap();
    let base = StateRow::of(&state_of(&store, 1));
    let worker: proto::PeerId = "peerA".parse().unwrap();
    let assigned = StateRow {
        status: JobStatus::Assigned,
        worker_id: Some(worker.clone()),
        attempt: Attempt(1),
        started_at: Some(Timestamp::from_unix_ms(10)),
        progress: None,
        ..base.clone()
    };
    let done = StateRow {
        status: JobStatus::Completed,
        worker_id: None,
        attempt: Attempt(1),
        started_at: None,
        progress: None,
        done_at: Some(Timestamp::from_unix_ms(25)),
        elapsed_ms: None,
        ..base
    };
    let started = AttemptRecord {
        attempt: Attempt(1),
        worker_id: worker.clone(),
        started_at: Timestamp::from_unix_ms(10),
        ended_at: None,
        outcome: None,
        error: None,
    };
    let ended = AttemptRecord {
        ended_at: Some(Timestamp::from_unix_ms(25)),
        outcome: Some(AttemptOutcome::Completed),
        ..started.clone()
    };
    let writes = vec![
        Write::State(Box::new(assigned)),
        Write::Attempt {
            job: JobId::from_u64(1),
            record: started,
        },
        Write::Progress {
            id: JobId::from_u64(1),
            percent: 50.0,
            message: None,
        },
        Write::State(Box::new(done)),
        Write::Attempt {
            job: JobId::from_u64(1),
            record: ended.clone(),
        },
    ];
    // Queued back to back, these land in one transaction.
    if together {
        store.write_all(writes).await.unwrap();
    } else {
        for write in writes {
            store.write(write).await.unwrap();
        }
    }
    store.flush().await.unwrap();
    let got = state_of(&store, 1);
    assert_eq!(got.status, JobStatus::Completed, "together: {together}");
    assert_eq!(
        got.worker_id,
        Some(worker),
        "a finished job keeps its last worker"
    );
    assert_eq!(got.started_at, Some(Timestamp::from_unix_ms(10)));
    assert_eq!(got.elapsed_ms, Some(15));
    assert_eq!(
        got.progress, 50.0,
        "the report came after the last state that carried progress"
    );
    assert_eq!(got.attempts, [ended]);
}

#[tokio::test]
async fn a_restore_loads_the_newest_finished_jobs_of_every_status() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    let jobs = (1..=30).map(|n| new_job(job(n, "t", 0))).collect();
    store.submit(jobs).await.unwrap();
    let finals = [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Completed,
        JobStatus::Cancelled,
    ];
    // Every job but the multiples of 7 finishes, with the statuses in turn.
    for n in (1..=30u64).filter(|n| n % 7 != 0) {
        let mut row = StateRow::of(&state_of(&store, n));
        row.status = finals[(n % 4) as usize];
        write_state(&store, row).await;
    }
    store.flush().await.unwrap();
    let reader = store.reader().unwrap();
    let newest = |limit| -> Vec<(u64, JobStatus)> {
        reader
            .load_finished(&group(), limit)
            .unwrap()
            .into_iter()
            .map(|(id, _, status, _)| (id.as_u64(), status))
            .collect()
    };
    let expect = |ids: &[u64]| -> Vec<(u64, JobStatus)> {
        ids.iter().map(|&n| (n, finals[(n % 4) as usize])).collect()
    };
    assert_eq!(newest(6), expect(&[24, 25, 26, 27, 29, 30]));
    assert_eq!(newest(1), expect(&[30]));
    assert_eq!(newest(0), expect(&[]));
    let all = newest(usize::MAX);
    assert_eq!(
        all.len(),
        26,
        "every finished job, 7, 14, 21 and 28 still pending"
    );
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
    let stats = reader.stats(&group()).unwrap();
    assert_eq!(stats.completed + stats.failed + stats.cancelled, 26);
}

#[tokio::test]
async fn a_prune_deletes_the_jobs_submitted_and_finished_before_its_time_in_windows() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    // Job n is submitted at n seconds; job 3 has a payload kept apart from its row.
    let jobs = (1..=12u64)
        .map(|n| {
            let mut job = job(n, "t", 0);
            if n == 3 {
                let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(400));
                job.payload = Some(RawValue::from_string(big).unwrap().into());
            }
            NewJob {
                created_at: Timestamp::from_unix_ms(n as i64 * 1_000),
                ..new_job(job)
            }
        })
        .collect();
    store.submit(jobs).await.unwrap();
    let finals = [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    // Every job but 5 and 10 finishes half a second after it was submitted, but job 2 at 20 s.
    for n in (1..=12u64).filter(|n| !n.is_multiple_of(5)) {
        let mut row = StateRow::of(&state_of(&store, n));
        row.status = finals[(n % 3) as usize];
        let done = if n == 2 {
            20_000
        } else {
            n as i64 * 1_000 + 500
        };
        row.done_at = Some(Timestamp::from_unix_ms(done));
        write_state(&store, row).await;
        if row_failed(n) {
            let record = AttemptRecord {
                attempt: Attempt(1),
                worker_id: "12D3KooWworker".parse().unwrap(),
                started_at: Timestamp::from_unix_ms(n as i64 * 1_000),
                ended_at: Some(Timestamp::from_unix_ms(done)),
                outcome: Some(AttemptOutcome::Failed),
                error: Some("boom".to_owned()),
            };
            write_attempt(&store, JobId::from_u64(n), record).await;
        }
    }
    store.flush().await.unwrap();
    let prune = |before: i64, window: usize| Prune {
        group: group(),
        before: Timestamp::from_unix_ms(before),
        window,
        oldest: 0,
    };
    let ids = |pruned: Vec<Pruned>| -> Vec<(u64, JobStatus)> {
        let mut ids: Vec<_> = pruned.into_iter().map(|(id, s)| (id.as_u64(), s)).collect();
        ids.sort_unstable_by_key(|(id, _)| *id);
        ids
    };
    let status = |n: u64| (n, finals[(n % 3) as usize]);

    // A window of 1 looks at the oldest job of each finished status only: 3 (completed), 1
    // (failed) and 2 (cancelled, but finished late).
    let pruned = store.prune(prune(8_000, 1)).await.unwrap().await.unwrap();
    assert_eq!(ids(pruned), vec![status(1), status(3)]);
    // A job queued again before the prune is not finished any more, so it stays.
    let mut again = StateRow::of(&state_of(&store, 4));
    again.status = JobStatus::Pending;
    again.done_at = None;
    write_state(&store, again).await;
    let pruned = store.prune(prune(8_000, 100)).await.unwrap().await.unwrap();
    assert_eq!(ids(pruned), vec![status(6), status(7)]);
    store.flush().await.unwrap();

    let reader = store.reader().unwrap();
    let left: Vec<u64> = pages_of(&reader, 100).concat();
    assert_eq!(left, vec![2, 4, 5, 8, 9, 10, 11, 12]);
    let stats = reader.stats(&group()).unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.completed + stats.failed + stats.cancelled
        ),
        (3, 5)
    );
    // Nothing of the pruned jobs is left: no attempt, no payload kept apart.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM cluster_payloads"), 0);
    let attempts = count("SELECT COUNT(*) FROM cluster_attempts");
    let failed_left = [2u64, 4, 8, 9, 11, 12]
        .iter()
        .filter(|n| row_failed(**n))
        .count();
    assert_eq!(attempts as usize, failed_left);
    // The oldest finished jobs go whatever their age and status, at most a window of them.
    let oldest = |oldest, window| Prune {
        oldest,
        ..prune(0, window)
    };
    let pruned = store.prune(oldest(2, 100)).await.unwrap().await.unwrap();
    assert_eq!(ids(pruned), vec![status(2), status(8)]);
    let pruned = store.prune(oldest(100, 1)).await.unwrap().await.unwrap();
    assert_eq!(ids(pruned), vec![status(9)]);
    assert_eq!(pages_of(&reader, 100).concat(), vec![4, 5, 10, 11, 12]);
    // A group with no jobs prunes nothing.
    let other = Prune {
        group: "g2".parse().unwrap(),
        ..prune(i64::MAX, 100)
    };
    assert!(store.prune(other).await.unwrap().await.unwrap().is_empty());
}

/// Whether job `n` of the prune test fails (and so has an attempt record).
fn row_failed(n: u64) -> bool {
    !n.is_multiple_of(5) && n % 3 == 1
}

fn fail_updates(db: &TempDb, on: bool) {
    store::testing::fail_job_updates(&db.path(), on).unwrap();
}

#[tokio::test]
async fn a_failed_transaction_refuses_its_submits_and_writes_its_changes_again() {
    let db = TempDb::new();
    let store = JobStore::open(&db.path(), StoreConfig::default()).unwrap();
    store
        .submit((1..=3).map(|n| new_job(job(n, "t", 0))).collect())
        .await
        .unwrap();
    let pending = state_of(&store, 1);
    fail_updates(&db, true);

    // Changes to stored jobs while every transaction fails: a start with its attempt, a
    // progress report, a delete, then the end of the first job.
    let (running, record) = started(&pending);
    let record = AttemptRecord {
        outcome: Some(AttemptOutcome::Failed),
        error: Some("exit status 3".into()),
        ..record
    };
    write_state(&store, StateRow::of(&running)).await;
    write_attempt(&store, JobId::from_u64(1), record.clone()).await;
    store
        .write(Write::Progress {
            id: JobId::from_u64(2),
            percent: 30.0,
            message: Some("a third".into()),
        })
        .await
        .unwrap();
    store
        .write(Write::Delete(JobId::from_u64(3)))
        .await
        .unwrap();
    let refused = store.submit(vec![new_job(job(4, "t", 0))]).await;
    let Err(error @ StoreError::RolledBack(_)) = refused else {
        panic!("a submit in a failing transaction must be refused, got {refused:?}");
    };
    assert!(
        error.to_string().contains("injected failure") && !error.is_disk_full(),
        "{error}"
    );
    let mut failed = StateRow::of(&running);
    failed.status = JobStatus::Failed;
    failed.started_at = None;
    failed.progress = None;
    failed.error = Some("exit status 3".into());
    failed.done_at = Some(Timestamp::from_unix_ms(2_500));
    write_state(&store, failed).await;
    assert!(matches!(
        store.flush().await,
        Err(StoreError::RolledBack(_))
    ));
    // Nothing of it is in the database yet.
    let reader = store.reader().unwrap();
    assert_eq!(state_of(&store, 1).status, JobStatus::Pending);
    assert!(reader.get(JobId::from_u64(3)).unwrap().is_some());
    assert!(reader.get(JobId::from_u64(4)).unwrap().is_none());

    // Once writes pass again, the writer stores every change it kept, in order, by itself.
    fail_updates(&db, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.flush().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the kept changes were never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let first = state_of(&store, 1);
    assert_eq!(first.status, JobStatus::Failed);
    assert_eq!(first.started_at, Some(Timestamp::from_unix_ms(2_000)));
    assert_eq!(first.error.as_deref(), Some("exit status 3"));
    assert_eq!(first.attempts, [record]);
    let second = state_of(&store, 2);
    assert_eq!(
        (second.progress, second.progress_msg.as_deref()),
        (30.0, Some("a third"))
    );
    assert!(reader.get(JobId::from_u64(3)).unwrap().is_none());
    assert!(reader.get(JobId::from_u64(4)).unwrap().is_none());
    // And it takes new jobs again.
    store.submit(vec![new_job(job(5, "t", 0))]).await.unwrap();
    assert_eq!(state_of(&store, 5).status, JobStatus::Pending);
}
