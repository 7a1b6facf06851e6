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
    // A larger page cache and memory-mapped reads keep the hot pages of a busy queue out of
    // read(2) calls; both only bound memory, they change nothing on disk.
    conn.pragma_update(None, "cache_size", -65_536)
        .context("sizing the page cache")?;
    conn.pragma_update(None, "mmap_size", 268_435_456_i64)
        .context("enabling memory-mapped reads")?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .context("keeping temporary tables in memory")?;
    // Checkpoint the WAL every ~40 MB rather than every ~4 MB: a busy queue rewrites the same
    // pages many times between two checkpoints, and each checkpoint copies them once.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)
        .context("setting the checkpoint interval")?;
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
        assert_eq!(version, 2);
        let payloads: Vec<(i64, String)> = conn
            .prepare("SELECT job_id, payload FROM cluster_payloads ORDER BY job_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(payloads, [(7, r#"{"n":12345678901234567890}"#.to_owned())]);
        let has_payload_column = conn.prepare("SELECT payload FROM cluster_jobs").is_ok();
        assert!(!has_payload_column);
        // Both jobs are still there, and migrating again changes nothing.
        migrate(&mut conn).unwrap();
        let jobs: i64 = conn
            .query_row("SELECT COUNT(*) FROM cluster_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jobs, 2);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
