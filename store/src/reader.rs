//! Reads: a job with its attempts, filtered pages, counters, and the restore of a host's queue.
//!
//! A `Reader` is its own SQLite connection; WAL lets it read beside the writer. Its calls block,
//! so async callers run them in `spawn_blocking`.

use std::path::Path;

use proto::cluster::{AttemptOutcome, AttemptRecord, Job, JobState, Json, QueueStats};
use proto::{Attempt, GroupId, JobId, JobMode, JobStatus, PeerId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::value::RawValue;

use crate::codes::{GROUP_SHIFT, MAX_SEQ, SEQ_BITS, status_code, status_key, status_of};
use crate::error::{Context, StoreError};
use crate::schema;
use crate::writer::Synchronous;

/// A stored job: its state and its place in submission order.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// Submission order across the whole store (also the pagination cursor).
    pub seq: u64,
    /// The group it belongs to.
    pub group: GroupId,
    /// Its state.
    pub state: JobState,
}

/// Which jobs a list wants.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this group's jobs.
    pub group: Option<GroupId>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs carrying this label.
    pub label: Option<String>,
    /// Only these jobs.
    pub ids: Option<Vec<JobId>>,
    /// Jobs after this cursor (a `seq` from an earlier page).
    pub cursor: Option<u64>,
    /// At most this many (clamped to 1..=1000), and fewer when they carry more than
    /// [`PAGE_BYTES`] of payloads and results.
    pub limit: usize,
}

/// The most payload and result bytes one page of a list carries (a single job may carry more).
pub const PAGE_BYTES: usize = 32 * 1024 * 1024;

fn job_bytes(job: &StoredJob) -> usize {
    let len = |json: &Option<Json>| json.as_ref().map_or(0, |j| j.get().len());
    len(&job.state.job.payload) + len(&job.state.result)
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, in submission order.
    pub jobs: Vec<StoredJob>,
    /// The cursor of the next page, when there may be one.
    pub next_cursor: Option<u64>,
}

/// A read connection to the job store.
pub struct Reader {
    conn: Connection,
}

/// Jobs with their payloads: a small one in the job's row, a large one in a table of its own
/// (see the schema).
const JOBS: &str = "cluster_jobs LEFT JOIN cluster_payloads ON job_id = id";

/// The columns `read_row` reads, the group and type turned back from codes into text.
const COLUMNS: &str = "seq, id, (SELECT name FROM cluster_groups WHERE code = group_code),
    (SELECT name FROM cluster_types WHERE code = type_code), mode,
    COALESCE(cluster_jobs.payload, cluster_payloads.payload), priority, timeout_s,
    max_retry, labels, not_before, after, status, worker_id, attempt, retries, losses, result,
    error, progress, progress_msg, created_at, started_at, done_at, elapsed_ms";

/// The code of the group named by parameter `?n`; NULL (matching no job) for a group that has
/// none.
fn group_code(n: usize) -> String {
    format!("(SELECT code FROM cluster_groups WHERE name = ?{n})")
}

/// The jobs of the group named by parameter `?n` whose status codes run from `first` to `last`,
/// as a range of the status index.
fn statuses_of_group(n: usize, first: JobStatus, last: JobStatus) -> String {
    format!(
        "status_key BETWEEN ({g} << {GROUP_SHIFT}) + {} AND ({g} << {GROUP_SHIFT}) + {}",
        status_key(0, status_code(first), 0),
        status_key(0, status_code(last), MAX_SEQ),
        g = group_code(n),
    )
}

/// The code of the job type named by parameter `?n`, or NULL.
fn type_code(n: usize) -> String {
    format!("(SELECT code FROM cluster_types WHERE name = ?{n})")
}

impl Reader {
    pub(crate) fn open(path: &Path, sync: Synchronous) -> Result<Self, StoreError> {
        Ok(Self {
            conn: schema::open(path, sync)?,
        })
    }

    /// One job with its attempt history, if it exists.
    pub fn get(&self, id: JobId) -> Result<Option<StoredJob>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {JOBS} WHERE id = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)
            .context("preparing a job lookup")?
            .query_row([sql_id(id)], |row| Ok(read_row(row)))
            .optional()
            .context("looking up a job")?;
        let Some(job) = row else { return Ok(None) };
        let mut job = job?;
        job.state.attempts = self.attempts(id)?;
        add_unrecorded_attempt(&mut job.state);
        Ok(Some(job))
    }

    /// A job's attempts, oldest first.
    pub fn attempts(&self, id: JobId) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT attempt, worker_id, started_at, ended_at, outcome, error
                 FROM cluster_attempts WHERE job_id = ?1 ORDER BY attempt",
            )
            .context("preparing an attempts query")?;
        let rows = stmt
            .query_map([sql_id(id)], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ))
            })
            .context("reading attempts")?;
        let mut out = Vec::new();
        for row in rows {
            let (attempt, worker, started, ended, outcome, error) =
                row.context("reading an attempt")?;
            out.push(AttemptRecord {
                attempt: Attempt(attempt),
                worker_id: worker.parse().map_err(|e| corrupt(id, e))?,
                started_at: Timestamp::from_unix_ms(started),
                ended_at: ended.map(Timestamp::from_unix_ms),
                outcome: outcome
                    .map(|o| parse_outcome(&o).ok_or_else(|| corrupt(id, o)))
                    .transpose()?,
                error,
            });
        }
        Ok(out)
    }

    /// A page of jobs matching `filter`, in submission order.
    pub fn list(&self, filter: &ListFilter) -> Result<JobPage, StoreError> {
        let limit = filter.limit.clamp(1, 1000);
        let mut sql = format!("SELECT {COLUMNS} FROM {JOBS} WHERE seq > ?1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(
            i64::try_from(filter.cursor.unwrap_or(0)).unwrap_or(i64::MAX),
        )];
        let mut order = "seq";
        match (&filter.group, filter.status) {
            (Some(group), Some(status)) => {
                // A range of the status index, from just after the cursor; within it the keys
                // are in submission order.
                let first_seq = filter
                    .cursor
                    .unwrap_or(0)
                    .saturating_add(1)
                    .min(MAX_SEQ.unsigned_abs() + 1);
                let low = status_key(0, status_code(status), 0)
                    + i64::try_from(first_seq).unwrap_or(MAX_SEQ + 1);
                let high = status_key(0, status_code(status), MAX_SEQ);
                args.push(Box::new(group.as_str().to_owned()));
                let g = group_code(args.len());
                args.push(Box::new(low));
                args.push(Box::new(high));
                sql.push_str(&format!(
                    " AND status_key BETWEEN ({g} << {GROUP_SHIFT}) + ?{} AND ({g} << {GROUP_SHIFT}) + ?{}",
                    args.len() - 1,
                    args.len()
                ));
                order = "status_key";
            }
            (group, status) => {
                if let Some(group) = group {
                    args.push(Box::new(group.as_str().to_owned()));
                    sql.push_str(&format!(" AND group_code = {}", group_code(args.len())));
                }
                if let Some(status) = status {
                    args.push(Box::new(status_code(status)));
                    sql.push_str(&format!(" AND status = ?{}", args.len()));
                }
            }
        }
        if let Some(job_type) = &filter.job_type {
            args.push(Box::new(job_type.clone()));
            sql.push_str(&format!(" AND type_code = {}", type_code(args.len())));
        }
        if let Some(label) = &filter.label {
            args.push(Box::new(label.clone()));
            sql.push_str(&format!(
                " AND labels IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(labels) WHERE value = ?{})",
                args.len()
            ));
        }
        if let Some(ids) = &filter.ids {
            let mut placeholders = Vec::with_capacity(ids.len());
            for id in ids {
                args.push(Box::new(sql_id(*id)));
                placeholders.push(format!("?{}", args.len()));
            }
            if placeholders.is_empty() {
                placeholders.push("NULL".to_owned());
            }
            sql.push_str(&format!(" AND id IN ({})", placeholders.join(",")));
        }
        sql.push_str(&format!(" ORDER BY {order} LIMIT {}", limit + 1));
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .context("preparing a job list")?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |row| {
                Ok(read_row(row))
            })
            .context("listing jobs")?;
        let mut jobs = Vec::with_capacity(limit);
        let mut bytes = 0;
        let mut full = false;
        for row in rows {
            let job = row.context("reading a job")??;
            // A page of large payloads and results ends early (with at least one job) rather
            // than grow to gigabytes; the cursor takes the reader on.
            if !jobs.is_empty() && bytes + job_bytes(&job) > PAGE_BYTES {
                full = true;
                break;
            }
            bytes += job_bytes(&job);
            jobs.push(job);
        }
        let next_cursor = if full || jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.seq)
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// The group's jobs that are not terminal, in submission order: what a restarting host
    /// puts back into its dispatcher.
    pub fn load_active(&self, group: &GroupId) -> Result<Vec<StoredJob>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {JOBS} WHERE {} ORDER BY seq",
            statuses_of_group(1, JobStatus::Pending, JobStatus::Running),
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .context("preparing the restore query")?;
        let rows = stmt
            .query_map([group.as_str()], |row| Ok(read_row(row)))
            .context("restoring jobs")?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.context("reading a job")??);
        }
        Ok(out)
    }

    /// The group's `limit` newest finished jobs as `(id, type, status, created_at)`, oldest
    /// first: a restarting host tells its dispatcher their statuses (so `after` and retries
    /// still know them) without loading their payloads or results. Older ones are counted by
    /// [`Reader::stats`] and looked up by [`Reader::statuses`] when named.
    pub fn load_finished(
        &self,
        group: &GroupId,
        limit: usize,
    ) -> Result<Vec<(JobId, String, JobStatus, Timestamp)>, StoreError> {
        // The newest of each status from its end of the status index, then the newest of
        // those: the index alone orders them, so no row beyond the limit is read.
        let mut stmts = Vec::new();
        for status in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            stmts.push(format!(
                "SELECT * FROM (SELECT seq, id,
                     (SELECT name FROM cluster_types WHERE code = type_code), status, created_at
                 FROM cluster_jobs WHERE {} ORDER BY status_key DESC LIMIT ?2)",
                statuses_of_group(1, status, status),
            ));
        }
        let sql = format!("{} ORDER BY seq DESC LIMIT ?2", stmts.join(" UNION ALL "));
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .context("preparing the finished-jobs query")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(rusqlite::params![group.as_str(), limit], |row| {
                Ok((
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .context("reading finished jobs")?;
        let mut out = Vec::new();
        for row in rows {
            let (raw, job_type, status, created) = row.context("reading a finished job")?;
            let id = job_id(raw);
            let status = status_of(status).ok_or_else(|| corrupt(id, status))?;
            out.push((id, job_type, status, Timestamp::from_unix_ms(created)));
        }
        out.reverse();
        Ok(out)
    }

    /// The greatest job id stored in any group, as the unsigned number it is: new ids are made
    /// above it, so they never meet an old one.
    pub fn max_id(&self) -> Result<Option<JobId>, StoreError> {
        // Ids from 2^63 up are stored as negative integers, so those, when there are any,
        // are the greatest.
        let max: Option<i64> = self
            .conn
            .query_row(
                "SELECT COALESCE((SELECT MAX(id) FROM cluster_jobs WHERE id < 0),
                                 (SELECT MAX(id) FROM cluster_jobs))",
                [],
                |r| r.get(0),
            )
            .context("reading the greatest job id")?;
        Ok(max.map(job_id))
    }

    /// The status of each of `ids` that exists.
    pub fn statuses(&self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status FROM cluster_jobs WHERE id = ?1")
            .context("preparing a status lookup")?;
        let mut out = Vec::new();
        for id in ids {
            let status: Option<i64> = stmt
                .query_row([sql_id(*id)], |r| r.get(0))
                .optional()
                .context("reading a status")?;
            if let Some(status) = status {
                out.push((*id, status_of(status).ok_or_else(|| corrupt(*id, status))?));
            }
        }
        Ok(out)
    }

    /// Job counters of a group (`workers` is left 0: the store does not know workers).
    pub fn stats(&self, group: &GroupId) -> Result<QueueStats, StoreError> {
        // The status is read from the key, so the count reads the index alone.
        let sql = format!(
            "SELECT (status_key >> {SEQ_BITS}) & 7, COUNT(*) FROM cluster_jobs WHERE {} GROUP BY 1",
            statuses_of_group(1, JobStatus::Pending, JobStatus::Cancelled),
        );
        let mut stmt = self.conn.prepare_cached(&sql).context("preparing stats")?;
        let rows = stmt
            .query_map([group.as_str()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .context("counting jobs")?;
        let mut stats = QueueStats::default();
        for row in rows {
            let (status, count) = row.context("reading a count")?;
            let count = u64::try_from(count).unwrap_or(0);
            match status_of(status) {
                Some(JobStatus::Pending) => stats.pending += count,
                Some(JobStatus::Assigned) => {
                    stats.pending += count;
                    stats.assigned += count;
                }
                Some(JobStatus::Running) => stats.running += count,
                Some(JobStatus::Completed) => stats.completed += count,
                Some(JobStatus::Failed) => stats.failed += count,
                Some(JobStatus::Cancelled) => stats.cancelled += count,
                None => {}
            }
        }
        Ok(stats)
    }
}

fn read_row(row: &Row<'_>) -> Result<StoredJob, StoreError> {
    let raw_id: i64 = row.get(1).context("reading a job id")?;
    let id = job_id(raw_id);
    let get_err = |e: rusqlite::Error| corrupt(id, e);
    let text =
        |index: usize| -> Result<Option<String>, StoreError> { row.get(index).map_err(get_err) };
    let raw = |index: usize| -> Result<Option<Json>, StoreError> {
        text(index)?
            .map(|s| {
                RawValue::from_string(s)
                    .map(Json::from)
                    .map_err(|e| corrupt(id, e))
            })
            .transpose()
    };
    let ms = |index: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(row
            .get::<_, Option<i64>>(index)
            .map_err(get_err)?
            .map(Timestamp::from_unix_ms))
    };
    let seq: i64 = row.get(0).map_err(get_err)?;
    let group: String = row.get(2).map_err(get_err)?;
    let mode: String = row.get(4).map_err(get_err)?;
    let status: i64 = row.get(12).map_err(get_err)?;
    let labels = text(9)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(id, e)))
        .transpose()?;
    let after = text(11)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(id, e)))
        .transpose()?;
    let timeout: i64 = row.get(7).map_err(get_err)?;
    let elapsed: Option<i64> = row.get(24).map_err(get_err)?;
    let job = Job {
        id,
        job_type: row.get(3).map_err(get_err)?,
        mode: if mode == "continuous" {
            JobMode::Continuous
        } else {
            JobMode::Oneshot
        },
        payload: raw(5)?,
        priority: row.get(6).map_err(get_err)?,
        timeout_s: u64::try_from(timeout).unwrap_or(0),
        max_retry: row.get(8).map_err(get_err)?,
        labels: labels.unwrap_or_default(),
        not_before: ms(10)?,
        after: after.unwrap_or_default(),
    };
    let worker: Option<String> = text(13)?;
    let state = JobState {
        job,
        status: status_of(status).ok_or_else(|| corrupt(id, status))?,
        worker_id: worker
            .map(|w| w.parse::<PeerId>().map_err(|e| corrupt(id, e)))
            .transpose()?,
        result: raw(17)?,
        error: text(18)?,
        progress: row.get(19).map_err(get_err)?,
        progress_msg: text(20)?,
        retries: row.get(15).map_err(get_err)?,
        created_at: ms(21)?.unwrap_or_default(),
        started_at: ms(22)?,
        done_at: ms(23)?,
        elapsed_ms: elapsed.and_then(|e| u64::try_from(e).ok()),
        attempt: Attempt(row.get(14).map_err(get_err)?),
        losses: row.get(16).map_err(get_err)?,
        attempts: Vec::new(),
    };
    Ok(StoredJob {
        seq: u64::try_from(seq).unwrap_or(0),
        group: group.parse().map_err(|e| corrupt(id, e))?,
        state,
    })
}

pub(crate) fn corrupt(id: JobId, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        job: id.to_string(),
        reason: reason.to_string(),
    }
}

/// Adds the job's current attempt to its history when the store keeps no row for it: an attempt
/// that is still running, or the one that completed the job. Rows are written only for the
/// attempts that ended otherwise (one write fewer per job on the hot path); the job's own row
/// says the rest: its worker, the start of its last attempt and, once completed, its end.
fn add_unrecorded_attempt(state: &mut JobState) {
    let (ended_at, outcome) = match state.status {
        JobStatus::Assigned | JobStatus::Running => (None, None),
        JobStatus::Completed => (state.done_at, Some(AttemptOutcome::Completed)),
        _ => return,
    };
    let current = state.attempt;
    if let Some(recorded) = state.attempts.iter_mut().find(|a| a.attempt == current) {
        // A row written while the attempt ran (the store's callers may write one) is finished
        // from the job's row once the attempt completed the job.
        if recorded.outcome.is_none() && outcome.is_some() {
            recorded.ended_at = ended_at;
            recorded.outcome = outcome;
        }
        return;
    }
    if let (Some(worker), Some(started_at)) = (&state.worker_id, state.started_at) {
        state.attempts.push(AttemptRecord {
            attempt: state.attempt,
            worker_id: worker.clone(),
            started_at,
            ended_at,
            outcome,
            error: None,
        });
    }
}

/// Job ids are stored as SQLite integers: the id's 64 bits, read as signed.
pub(crate) fn sql_id(id: JobId) -> i64 {
    i64::from_ne_bytes(id.as_u64().to_ne_bytes())
}

pub(crate) fn job_id(raw: i64) -> JobId {
    JobId::from_u64(u64::from_ne_bytes(raw.to_ne_bytes()))
}

pub(crate) fn mode_str(mode: JobMode) -> &'static str {
    match mode {
        JobMode::Oneshot => "oneshot",
        JobMode::Continuous => "continuous",
    }
}

fn parse_outcome(s: &str) -> Option<AttemptOutcome> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}
