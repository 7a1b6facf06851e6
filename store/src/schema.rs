//! The schema and its migrations, versioned in code.
//!
//! The database is shared with other parts of the peer (groups), so the version lives in a
//! `schema_versions` row of our own rather than in `PRAGMA user_version`.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Context, StoreError};
use crate::writer::Synchronous;

const COMPONENT: &str = "cluster_jobs";

/// Each entry moves the schema one version up; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, attempts, idempotency keys.
    "CREATE TABLE cluster_jobs (
        seq INTEGER PRIMARY KEY,
        id INTEGER NOT NULL UNIQUE,
        group_id TEXT NOT NULL,
        type TEXT NOT NULL,
        mode TEXT NOT NULL,
        payload TEXT,
        priority INTEGER NOT NULL,
        timeout_s INTEGER NOT NULL,
        max_retry INTEGER NOT NULL,
        labels TEXT,
        not_before INTEGER,
        after TEXT,
        idempotency_key TEXT,
        status TEXT NOT NULL,
        worker_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        losses INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT,
        progress REAL NOT NULL DEFAULT 0,
        progress_msg TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        done_at INTEGER,
        elapsed_ms INTEGER
    );
    CREATE INDEX cluster_jobs_by_status ON cluster_jobs (group_id, status, seq);
    CREATE INDEX cluster_jobs_by_type ON cluster_jobs (group_id, type, seq);
    CREATE UNIQUE INDEX cluster_jobs_by_key ON cluster_jobs (group_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE cluster_attempts (
        job_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        worker_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        outcome TEXT,
        error TEXT,
        PRIMARY KEY (job_id, attempt)
    ) WITHOUT ROWID;",
    // 2: payloads in a table of their own. A state update rewrites the whole job row, which
    // carried the payload along each time: three rewrites of a 64 KiB payload per job.
    "CREATE TABLE cluster_payloads (
        job_id INTEGER PRIMARY KEY,
        payload TEXT NOT NULL
    );
    INSERT INTO cluster_payloads (job_id, payload)
        SELECT id, payload FROM cluster_jobs WHERE payload IS NOT NULL;
    ALTER TABLE cluster_jobs DROP COLUMN payload;",
    // 3: integer keys in the job indexes (see `codes`): the status as a fixed code, the group
    // and the type as codes interned in tables of their own, the status index on one integer
    // made of the group, the status and the seq. Comparing text keys on the way down the
    // indexes was a third of the work of a state update. The job id becomes the row key, which
    // saves the seek down its own index on each update. Small payloads go back into the job
    // rows (see `writer::INLINE_PAYLOAD`); those already apart stay in `cluster_payloads`.
    "CREATE TABLE cluster_groups (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE cluster_types (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    INSERT INTO cluster_groups (name) SELECT DISTINCT group_id FROM cluster_jobs ORDER BY 1;
    INSERT INTO cluster_types (name) SELECT DISTINCT type FROM cluster_jobs ORDER BY 1;
    CREATE TABLE cluster_jobs_v3 (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        group_code INTEGER NOT NULL,
        type_code INTEGER NOT NULL,
        status_key INTEGER NOT NULL,
        status INTEGER AS ((status_key >> 42) & 7) VIRTUAL,
        mode TEXT NOT NULL,
        priority INTEGER NOT NULL,
        timeout_s INTEGER NOT NULL,
        max_retry INTEGER NOT NULL,
        labels TEXT,
        not_before INTEGER,
        after TEXT,
        idempotency_key TEXT,
        payload TEXT,
        worker_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        losses INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT,
        progress REAL NOT NULL DEFAULT 0,
        progress_msg TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        done_at INTEGER,
        elapsed_ms INTEGER
    );
    INSERT INTO cluster_jobs_v3 (seq, id, group_code, type_code, status_key, mode, priority,
        timeout_s, max_retry, labels, not_before, after, idempotency_key, worker_id, attempt,
        retries, losses, result, error, progress, progress_msg, created_at, started_at, done_at,
        elapsed_ms)
    SELECT j.seq, j.id, g.code, t.code,
        (g.code << 45) | (CASE j.status WHEN 'pending' THEN 0 WHEN 'assigned' THEN 1
            WHEN 'running' THEN 2 WHEN 'completed' THEN 3 WHEN 'failed' THEN 4
            WHEN 'cancelled' THEN 5 END << 42) | j.seq,
        j.mode, j.priority, j.timeout_s, j.max_retry, j.labels, j.not_before, j.after,
        j.idempotency_key, j.worker_id, j.attempt, j.retries, j.losses, j.result, j.error,
        j.progress, j.progress_msg, j.created_at, j.started_at, j.done_at, j.elapsed_ms
    FROM cluster_jobs j
        JOIN cluster_groups g ON g.name = j.group_id
        JOIN cluster_types t ON t.name = j.type
    ORDER BY j.seq;
    DROP TABLE cluster_jobs;
    ALTER TABLE cluster_jobs_v3 RENAME TO cluster_jobs;
    CREATE UNIQUE INDEX cluster_jobs_by_seq ON cluster_jobs (seq);
    CREATE INDEX cluster_jobs_by_status ON cluster_jobs (status_key);
    CREATE INDEX cluster_jobs_by_type ON cluster_jobs (group_code, type_code, seq);
    CREATE UNIQUE INDEX cluster_jobs_by_key ON cluster_jobs (group_code, idempotency_key)
        WHERE idempotency_key IS NOT NULL;",
];

/// Opens the database at `path`, sets it up for WAL and brings the schema up to date.
pub(crate) fn open(path: &std::path::Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).context("opening the database")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .context("setting the busy timeout")?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .context("enabling WAL")?;
    let sync = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .context("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .context("enabling foreign keys")?;
    // The page cache and memory-mapped reads keep the hot pages of a busy queue out of read(2)
    // calls; both only bound memory, they change nothing on disk. The cache is 8 MiB: pages
    // not in the WAL are read through the map, not the cache, and a larger cache costs the
    // writer, because a commit after a b-tree rebalance (which renumbers pages through a spare
    // page number past the end) scans the whole cache. With 64 MiB the writer spent 5–10 %
    // more CPU per job in `cluster-bench`.
    conn.pragma_update(None, "cache_size", -8_192)
        .context("sizing the page cache")?;
    conn.pragma_update(None, "mmap_size", 268_435_456_i64)
        .context("enabling memory-mapped reads")?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .context("keeping temporary tables in memory")?;
    // Checkpoint the WAL every ~40 MB rather than every ~4 MB: a busy queue rewrites the same
    // pages many times between two checkpoints, and each checkpoint copies them once.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)
        .context("setting the checkpoint interval")?;
    // A burst (a large submit, or the changes kept through a full disk) can grow the WAL well
    // past that; once it is checkpointed, the file is cut back to 64 MiB instead of keeping
    // its largest size for good.
    conn.pragma_update(None, "journal_size_limit", 67_108_864_i64)
        .context("limiting the WAL's size")?;
    Ok(conn)
}

/// Applies the migrations this database has not seen, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (
            component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )
    .context("creating schema_versions")?;
    let current: i64 = conn
        .query_row(
            "SELECT version FROM schema_versions WHERE component = ?1",
            [COMPONENT],
            |r| r.get(0),
        )
        .optional()
        .context("reading the schema version")?
        .unwrap_or(0);
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let tx = conn.transaction().context("starting a migration")?;
        tx.execute_batch(sql).context("applying a migration")?;
        tx.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?1, ?2)
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            rusqlite::params![COMPONENT, version],
        )
        .context("recording the schema version")?;
        tx.commit().context("committing a migration")?;
        tracing::info!(component = COMPONENT, version, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_two_moves_payloads_out_of_the_job_rows() {
        let dir = std::env::temp_dir().join(format!("goop-schema-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("goop.db");
        let _ = std::fs::remove_file(&path);
        let mut conn = open(&path, Synchronous::Normal).unwrap();
        // A database at version 1, with a job that has a payload and one that has none.
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
             INSERT INTO schema_versions VALUES ('cluster_jobs', 1);
             INSERT INTO cluster_jobs (id, group_id, type, mode, payload, priority, timeout_s,
                 max_retry, status, created_at)
             VALUES (7, 'g', 't', 'oneshot', '{\"n\":12345678901234567890}', 0, 0, 0,
                 'pending', 1), (8, 'g', 't', 'oneshot', NULL, 0, 0, 0, 'pending', 2);",
        )
        .unwrap();

        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row(
                "SELECT version FROM schema_versions WHERE component = ?1",
                [COMPONENT],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, 3);
        let payloads: Vec<(i64, String)> = conn
            .prepare("SELECT job_id, payload FROM cluster_payloads ORDER BY job_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(payloads, [(7, r#"{"n":12345678901234567890}"#.to_owned())]);
        // Version 3 brings a payload column back for small payloads; the moved ones stay apart.
        let inline: Option<String> = conn
            .query_row("SELECT payload FROM cluster_jobs WHERE id = 7", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(inline, None);
        // Both jobs are still there, and migrating again changes nothing.
        migrate(&mut conn).unwrap();
        let jobs: i64 = conn
            .query_row("SELECT COUNT(*) FROM cluster_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jobs, 2);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database at version 2: six jobs in two groups, of two types, one in each status, listed
    /// in an order their ids do not have, with idempotency keys, payloads, results and attempts.
    fn version_two_database(path: &std::path::Path) {
        let mut conn = open(path, Synchronous::Normal).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(
            "CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
             INSERT INTO schema_versions VALUES ('cluster_jobs', 2);
             INSERT INTO cluster_jobs (id, group_id, type, mode, priority, timeout_s, max_retry,
                 labels, not_before, after, idempotency_key, status, worker_id, attempt,
                 retries, losses, result, error, progress, progress_msg, created_at,
                 started_at, done_at, elapsed_ms)
             VALUES
             (30, 'g1', 'alpha', 'oneshot', 3, 60, 2, '[\"gpu\"]', 9000, '[\"000000000000000a\"]',
                 'k1', 'pending', NULL, 0, 0, 0, NULL, NULL, 0, NULL, 1000, NULL, NULL, NULL),
             (10, 'g2', 'beta', 'continuous', 0, 0, 0, NULL, NULL, NULL, 'k1', 'running',
                 'peerB', 2, 0, 1, NULL, NULL, 50.5, 'half', 1001, 2500, NULL, NULL),
             (-5, 'g1', 'beta', 'oneshot', -1, 0, 0, NULL, NULL, NULL, NULL, 'completed',
                 'peerA', 1, 0, 0, '{\"r\":98765432109876543210}', NULL, 100, NULL, 1002,
                 3000, 3400, 400),
             (20, 'g1', 'alpha', 'oneshot', 0, 0, 1, NULL, NULL, NULL, 'k2', 'failed', 'peerA',
                 2, 2, 0, NULL, 'boom', 0, NULL, 1003, 4000, 4100, 100),
             (40, 'g1', 'alpha', 'oneshot', 0, 0, 0, NULL, NULL, NULL, NULL, 'assigned',
                 'peerB', 1, 0, 0, NULL, NULL, 0, NULL, 1004, 5000, NULL, NULL),
             (50, 'g2', 'alpha', 'oneshot', 0, 0, 0, NULL, NULL, NULL, NULL, 'cancelled', NULL,
                 0, 0, 0, NULL, 'cancelled by a user', 0, NULL, 1005, NULL, 6000, NULL);
             INSERT INTO cluster_payloads (job_id, payload) VALUES
                 (30, '{\"n\":12345678901234567890}'), (10, '[1,2]'), (-5, '\"x\"'),
                 (20, '{}'), (40, 'null');
             INSERT INTO cluster_attempts VALUES
                 (10, 1, 'peerA', 2000, 2200, 'lost', 'worker left'),
                 (20, 1, 'peerA', 3500, 3600, 'failed', 'first'),
                 (20, 2, 'peerA', 4000, 4100, 'failed', 'boom');",
        )
        .unwrap();
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn version_three_codes_keep_every_job_its_order_and_its_keys() {
        use proto::cluster::{AttemptOutcome, Job};
        use proto::{Attempt, GroupId, JobId, JobMode, JobStatus, Timestamp};

        use crate::reader::ListFilter;
        use crate::writer::{JobStore, NewJob, StoreConfig, Submitted};

        let dir = std::env::temp_dir().join(format!("goop-schema-v3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("goop.db");
        let _ = std::fs::remove_file(&path);
        version_two_database(&path);
        let store = JobStore::open(&path, StoreConfig::default()).unwrap();
        let reader = store.reader().unwrap();
        let version: i64 = open(&path, Synchronous::Normal)
            .unwrap()
            .query_row(
                "SELECT version FROM schema_versions WHERE component = ?1",
                [COMPONENT],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, 3);

        let id = |raw: i64| crate::reader::job_id(raw);
        let g1: GroupId = "g1".parse().unwrap();
        let g2: GroupId = "g2".parse().unwrap();
        let ms = Timestamp::from_unix_ms;

        // Every field of every job, read back through the store.
        let pending = reader.get(id(30)).unwrap().unwrap();
        assert_eq!(pending.group, g1);
        let job = &pending.state.job;
        assert_eq!(
            (job.job_type.as_str(), job.mode, job.priority, job.timeout_s),
            ("alpha", JobMode::Oneshot, 3, 60)
        );
        assert_eq!(
            job.payload.as_ref().unwrap().get(),
            r#"{"n":12345678901234567890}"#
        );
        assert_eq!(
            (job.max_retry, job.labels.as_slice()),
            (2, ["gpu".to_owned()].as_slice())
        );
        assert_eq!(
            (job.not_before, job.after.as_slice()),
            (Some(ms(9000)), [id(10)].as_slice())
        );
        assert_eq!(pending.state.status, JobStatus::Pending);
        assert_eq!(pending.state.created_at, ms(1000));
        assert!(pending.state.attempts.is_empty());

        let running = reader.get(id(10)).unwrap().unwrap();
        assert_eq!(
            (running.group.as_str(), running.state.job.job_type.as_str()),
            ("g2", "beta")
        );
        assert_eq!(running.state.job.mode, JobMode::Continuous);
        assert_eq!(running.state.status, JobStatus::Running);
        assert_eq!(running.state.worker_id.as_ref().unwrap().as_str(), "peerB");
        assert_eq!(
            (running.state.attempt, running.state.losses),
            (Attempt(2), 1)
        );
        assert_eq!(
            (
                running.state.progress,
                running.state.progress_msg.as_deref()
            ),
            (50.5, Some("half"))
        );
        let attempts: Vec<_> = running
            .state
            .attempts
            .iter()
            .map(|a| (a.attempt.0, a.worker_id.as_str(), a.outcome))
            .collect();
        assert_eq!(
            attempts,
            [(1, "peerA", Some(AttemptOutcome::Lost)), (2, "peerB", None)]
        );

        let completed = reader.get(id(-5)).unwrap().unwrap();
        assert_eq!(completed.state.job.id.as_u64(), u64::MAX - 4);
        assert_eq!(completed.state.status, JobStatus::Completed);
        assert_eq!(
            completed.state.result.as_ref().unwrap().get(),
            r#"{"r":98765432109876543210}"#
        );
        assert_eq!(
            (
                completed.state.started_at,
                completed.state.done_at,
                completed.state.elapsed_ms
            ),
            (Some(ms(3000)), Some(ms(3400)), Some(400))
        );
        assert_eq!(completed.state.job.priority, -1);

        let failed = reader.get(id(20)).unwrap().unwrap();
        assert_eq!(
            (
                failed.state.status,
                failed.state.retries,
                failed.state.error.as_deref()
            ),
            (JobStatus::Failed, 2, Some("boom"))
        );
        assert_eq!(failed.state.attempts.len(), 2);
        assert_eq!(
            reader.get(id(40)).unwrap().unwrap().state.status,
            JobStatus::Assigned
        );
        let cancelled = reader.get(id(50)).unwrap().unwrap();
        assert_eq!(cancelled.state.status, JobStatus::Cancelled);
        assert!(cancelled.state.job.payload.is_none());
        assert_eq!(reader.max_id().unwrap(), Some(id(-5)));

        // Lists keep the submission order, filtered by group, status and type, page by page.
        let list = |filter: ListFilter| -> Vec<i64> {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = reader
                    .list(&ListFilter {
                        cursor,
                        limit: 2,
                        ..filter.clone()
                    })
                    .unwrap();
                seen.extend(
                    page.jobs
                        .iter()
                        .map(|j| crate::reader::sql_id(j.state.job.id)),
                );
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return seen,
                }
            }
        };
        assert_eq!(list(ListFilter::default()), [30, 10, -5, 20, 40, 50]);
        let in_g1 = ListFilter {
            group: Some(g1.clone()),
            ..ListFilter::default()
        };
        assert_eq!(list(in_g1.clone()), [30, -5, 20, 40]);
        assert_eq!(
            list(ListFilter {
                job_type: Some("alpha".into()),
                ..in_g1.clone()
            }),
            [30, 20, 40]
        );
        assert_eq!(
            list(ListFilter {
                status: Some(JobStatus::Failed),
                ..in_g1.clone()
            }),
            [20]
        );
        assert_eq!(
            list(ListFilter {
                job_type: Some("beta".into()),
                ..ListFilter::default()
            }),
            [10, -5]
        );
        assert!(
            list(ListFilter {
                group: Some("g3".parse().unwrap()),
                ..ListFilter::default()
            })
            .is_empty()
        );
        let active: Vec<_> = reader
            .load_active(&g1)
            .unwrap()
            .iter()
            .map(|j| crate::reader::sql_id(j.state.job.id))
            .collect();
        assert_eq!(active, [30, 40]);
        let finished = reader.load_finished(&g1, 10).unwrap();
        assert_eq!(
            finished,
            [
                (id(-5), "beta".to_owned(), JobStatus::Completed, ms(1002)),
                (id(20), "alpha".to_owned(), JobStatus::Failed, ms(1003)),
            ]
        );
        assert_eq!(
            reader.load_finished(&g1, 1).unwrap(),
            [(id(20), "alpha".to_owned(), JobStatus::Failed, ms(1003))],
            "the newest only"
        );
        let stats = reader.stats(&g2).unwrap();
        assert_eq!((stats.running, stats.cancelled, stats.pending), (1, 1, 0));

        // Idempotency keys still answer per group, and new jobs come after the old ones.
        let new = |raw: u64, group: &GroupId, key: &str| NewJob {
            group: group.clone(),
            job: Job {
                id: JobId::from_u64(raw),
                job_type: "gamma".into(),
                mode: JobMode::Oneshot,
                payload: None,
                priority: 0,
                timeout_s: 0,
                max_retry: 0,
                labels: Vec::new(),
                not_before: None,
                after: Vec::new(),
            },
            created_at: ms(7000),
            idempotency_key: Some(key.to_owned()),
        };
        let submitted = store
            .submit(vec![
                new(60, &g1, "k1"),
                new(61, &g2, "k1"),
                new(62, &g1, "k3"),
            ])
            .await
            .unwrap();
        assert_eq!(
            submitted,
            [
                Submitted::Existing(id(30)),
                Submitted::Existing(id(10)),
                Submitted::Created(id(62)),
            ]
        );
        assert_eq!(list(in_g1), [30, -5, 20, 40, 62]);
        // A cursor past every seq there can be ends a status list rather than wrapping round.
        let page = reader
            .list(&ListFilter {
                group: Some(g1.clone()),
                status: Some(JobStatus::Pending),
                cursor: Some(u64::MAX),
                limit: 10,
                ..ListFilter::default()
            })
            .unwrap();
        assert!(page.jobs.is_empty());
        drop(reader);
        drop(store);

        // Once the seqs are used up, a submit is refused and stores nothing.
        open(&path, Synchronous::Normal)
            .unwrap()
            .execute(
                "UPDATE cluster_jobs SET seq = ?1,
                     status_key = (status_key & ~((1 << 42) - 1)) | ?1 WHERE id = 62",
                [crate::codes::MAX_SEQ],
            )
            .unwrap();
        let store = JobStore::open(&path, StoreConfig::default()).unwrap();
        let refused = store.submit(vec![new(63, &g1, "k4")]).await;
        assert!(matches!(refused, Err(StoreError::Full(_))), "{refused:?}");
        let reader = store.reader().unwrap();
        assert!(reader.get(id(63)).unwrap().is_none());
        assert_eq!(
            reader.get(id(62)).unwrap().unwrap().state.status,
            JobStatus::Pending
        );
        drop(reader);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
