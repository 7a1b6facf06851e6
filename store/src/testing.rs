//! Fault injection for tests of the store and of what is built on it.

use std::path::Path;

/// Makes every update of a job row in the database at `path` fail (`on`), or pass again,
/// from a connection of its own: a trigger in the real database stands in for a disk that
/// refuses writes. Inserts (submits) still pass on their own; a transaction that also holds
/// an update fails whole.
pub fn fail_job_updates(path: &Path, on: bool) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS test_failing (on_ INTEGER NOT NULL);
         CREATE TRIGGER IF NOT EXISTS test_failing_updates BEFORE UPDATE ON cluster_jobs
         WHEN (SELECT max(on_) FROM test_failing) = 1
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
         DELETE FROM test_failing;",
    )?;
    conn.execute("INSERT INTO test_failing VALUES (?1)", [i64::from(on)])?;
    Ok(())
}
