//! The writer: one thread that owns the write connection and commits in groups.
//!
//! Everything queued while a transaction commits goes into the next one, so a busy host gets
//! large transactions and a quiet one low latency, without a timer. Progress updates of one job
//! within a transaction are coalesced: only the last is written.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use proto::cluster::{AttemptOutcome, AttemptRecord, Job, JobState, Json};
use proto::{Attempt, GroupId, IdMap, JobId, JobStatus, PeerId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Statement, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use crate::codes::{self, Codes};
use crate::error::{Context, StoreError};
use crate::reader::{self, Reader};
use crate::schema;

/// How hard SQLite syncs to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous=NORMAL` in WAL mode: a commit survives the process being killed; a power
    /// loss or OS crash may lose the last transactions (never corrupts the file).
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit also survives a power loss, at the cost of an fsync each.
    Full,
}

/// Store settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// Commands that may wait for the writer before senders are slowed down.
    pub queue: usize,
    /// The most commands one transaction takes.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            queue: 65_536,
            max_batch: 16_384,
        }
    }
}

/// A job to insert.
#[derive(Debug)]
pub struct NewJob {
    /// The cluster group it belongs to.
    pub group: GroupId,
    /// The job as submitted.
    pub job: Job,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// A client's key: submitting the same key to the same group again returns the first job.
    pub idempotency_key: Option<String>,
}

/// What became of one submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Stored as a new job.
    Created(JobId),
    /// Its idempotency key was seen before: this is the job stored then.
    Existing(JobId),
}

impl Submitted {
    /// The job's id, new or existing.
    pub fn id(self) -> JobId {
        match self {
            Self::Created(id) | Self::Existing(id) => id,
        }
    }
}

/// The mutable part of a stored job: what changes after submit.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// The job.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// The current worker; a finished job given `None` keeps its last one.
    pub worker_id: Option<PeerId>,
    /// The current attempt.
    pub attempt: Attempt,
    /// Failures counted against `max_retry`.
    pub retries: u32,
    /// Worker losses counted against the crash limit.
    pub losses: u32,
    /// The result of a completed job.
    pub result: Option<Json>,
    /// The last error.
    pub error: Option<String>,
    /// The last progress, when this change carries one.
    pub progress: Option<(f64, Option<String>)>,
    /// When the current attempt was assigned; `None` keeps the stored time.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal status.
    pub done_at: Option<Timestamp>,
    /// `done_at − started_at` of a finished job; `None` has the store work it out for a
    /// completed or failed job from the times it has.
    pub elapsed_ms: Option<u64>,
}

impl StateRow {
    /// This change written in place of `earlier`, a change of the same job that was never
    /// written: it keeps what `earlier` said and this one leaves to the stored row (the start
    /// time, the progress, and the worker of a finished job).
    pub fn after(self, earlier: StateRow) -> StateRow {
        StateRow {
            started_at: self.started_at.or(earlier.started_at),
            progress: self.progress.or(earlier.progress),
            worker_id: if self.worker_id.is_none() && self.status.is_terminal() {
                earlier.worker_id
            } else {
                self.worker_id
            },
            ..self
        }
    }

    /// The mutable part of `state`, progress included.
    pub fn of(state: &JobState) -> Self {
        Self {
            id: state.job.id,
            status: state.status,
            worker_id: state.worker_id.clone(),
            attempt: state.attempt,
            retries: state.retries,
            losses: state.losses,
            result: state.result.clone(),
            error: state.error.clone(),
            progress: Some((state.progress, state.progress_msg.clone())),
            started_at: state.started_at,
            done_at: state.done_at,
            elapsed_ms: state.elapsed_ms,
        }
    }
}

/// A change to stored jobs.
#[derive(Debug)]
pub enum Write {
    /// The job's mutable state. Its attempt history is written with [`Write::Attempt`].
    State(Box<StateRow>),
    /// A progress report; coalesced with others of the same job in one transaction.
    Progress {
        /// The job.
        id: JobId,
        /// Percent done.
        percent: f64,
        /// What is happening.
        message: Option<String>,
    },
    /// An attempt started or ended.
    Attempt {
        /// The job.
        job: JobId,
        /// The attempt as it stands.
        record: AttemptRecord,
    },
    /// Remove one job and its attempts.
    Delete(JobId),
    /// Remove every job of a group.
    ClearGroup(GroupId),
}

enum Command {
    Submit(
        Vec<NewJob>,
        oneshot::Sender<Result<Vec<Submitted>, StoreError>>,
    ),
    Writes(Vec<Write>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Prune(Prune, oneshot::Sender<Result<Vec<Pruned>, StoreError>>),
}

/// Finished jobs of `group` to delete for good: the `oldest` longest submitted, then those
/// submitted and finished before `before`. See [`JobStore::prune`].
#[derive(Clone, Debug)]
pub struct Prune {
    /// The cluster whose jobs go.
    pub group: GroupId,
    /// Jobs submitted and finished before this time go.
    pub before: Timestamp,
    /// How many of the oldest jobs of each finished status are looked at (and at most
    /// deleted) by one prune, so one prune holds the writer for a bounded time.
    pub window: usize,
    /// Before those, the oldest finished jobs go whatever their age, this many (at most
    /// `window`): the store keeps no more than a number of them.
    pub oldest: usize,
}

/// A job a prune deleted, with the status it had.
pub type Pruned = (JobId, JobStatus);

/// The handle to a job store. Dropping it lets the writer commit what is queued and stop.
pub struct JobStore {
    path: PathBuf,
    synchronous: Synchronous,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl JobStore {
    /// Opens (or creates) the store in the database file at `path` and starts its writer. One
    /// store at a time may be open on a database: its writer numbers the jobs (their `seq`).
    pub fn open(path: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let mut conn = schema::open(path, config.synchronous)?;
        schema::migrate(&mut conn)?;
        let writer = Writer::load(&conn)?;
        let (commands, receiver) = mpsc::channel(config.queue.max(1));
        let max_batch = config.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("goop-job-store".to_owned())
            .spawn(move || writer_loop(conn, writer, receiver, max_batch))
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            path: path.to_owned(),
            synchronous: config.synchronous,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// A new read connection to the same database.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.path, self.synchronous)
    }

    fn sender(&self) -> Result<&mpsc::Sender<Command>, StoreError> {
        self.commands.as_ref().ok_or(StoreError::Closed)
    }

    /// Stores new jobs in one transaction and returns once it is committed. All or none: if any
    /// job cannot be stored, none is.
    pub async fn submit(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Submit(jobs, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a change; it is committed with the next group. Waits only when the queue is full.
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.write_all(vec![write]).await
    }

    /// Queues many changes at once, in order: one message to the writer rather than one per
    /// change. Waits only when the queue is full.
    pub async fn write_all(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.sender()?
            .send(Command::Writes(writes))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Returns once everything queued before it is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Flush(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes finished jobs of `prune.group` for good: the `prune.oldest` submitted longest
    /// ago, then those submitted and finished before `prune.before`, looking at the oldest
    /// `prune.window` of each finished status. The outer future returns once the prune is
    /// queued, in order with the changes queued before and after it (a job retried before it
    /// is queued is not deleted); the inner one gives the deleted jobs once that is committed.
    pub async fn prune(
        &self,
        prune: Prune,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<Pruned>, StoreError>> + use<>,
        StoreError,
    > {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Prune(prune, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { answer.await.map_err(|_| StoreError::Closed)? })
    }
}

impl Drop for JobStore {
    fn drop(&mut self) {
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut writer: Writer,
    mut commands: mpsc::Receiver<Command>,
    max_batch: usize,
) {
    let mut batch = Vec::new();
    loop {
        let mut size = 0;
        if writer.retrying() {
            // The changes of a failed transaction are written again after a pause, with
            // whatever arrived meanwhile, whether or not anything did.
            std::thread::sleep(retry_pause(writer.failures));
        } else {
            let Some(first) = commands.blocking_recv() else {
                break;
            };
            size = first.size();
            batch.push(first);
        }
        let mut closed = false;
        while size < max_batch {
            match commands.try_recv() {
                Ok(command) => {
                    size += command.size();
                    batch.push(command);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        commit(&mut conn, &mut writer, &mut batch);
        if closed && writer.retrying() {
            tracing::error!(
                changes = writer.pending.len() + writer.removals.len(),
                "job store closed with changes it could not write"
            );
            break;
        }
    }
    tracing::debug!("job store writer stopped");
}

/// How long the writer waits before writing again the changes of `failures` failed
/// transactions in a row: 50 ms, doubling up to 2 s.
fn retry_pause(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(50 << failures.saturating_sub(1).min(6)).min(RETRY_PAUSE_MAX)
}

/// The longest pause between two attempts to write the changes of a failed transaction.
const RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

impl Command {
    /// What it counts for against `StoreConfig::max_batch`: a change each, a submit or flush
    /// one.
    fn size(&self) -> usize {
        match self {
            Self::Writes(writes) => writes.len(),
            Self::Submit(..) | Self::Flush(_) | Self::Prune(..) => 1,
        }
    }
}

/// Replies owed once the transaction is settled.
enum Reply {
    Submit(
        oneshot::Sender<Result<Vec<Submitted>, StoreError>>,
        Result<Vec<Submitted>, StoreError>,
    ),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Prune(
        oneshot::Sender<Result<Vec<Pruned>, StoreError>>,
        Result<Vec<Pruned>, StoreError>,
    ),
}

/// What the writer thread keeps from one transaction to the next.
struct Writer {
    /// The codes of groups and types.
    codes: Codes,
    /// The next job's place in submission order. The writer is the only one to insert jobs,
    /// so it counts them itself; a submit rolled back leaves a gap, which orders nothing wrong.
    next_seq: i64,
    /// The coalesced changes not yet written in the transaction being built, empty between
    /// two (kept to reuse the maps' memory); after a failed transaction, its changes to
    /// stored jobs, to be written again.
    pending: Coalesced,
    /// The changes written in the open transaction, kept until it commits.
    written: Coalesced,
    /// The deletes and clears done in the open transaction; after a failed one, those to
    /// do again.
    removals: Vec<Removal>,
    /// Orders progress against states, across transactions.
    index: usize,
    /// Transactions failed in a row.
    failures: u32,
}

impl Writer {
    fn load(conn: &Connection) -> Result<Self, StoreError> {
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM cluster_jobs", [], |r| {
                r.get(0)
            })
            .context("reading the last sequence number")?;
        Ok(Self {
            codes: Codes::new(),
            next_seq: last + 1,
            pending: Coalesced::default(),
            written: Coalesced::default(),
            removals: Vec::new(),
            index: 0,
            failures: 0,
        })
    }

    /// Whether changes of a failed transaction wait to be written again.
    fn retrying(&self) -> bool {
        self.failures > 0 && (!self.pending.is_empty() || !self.removals.is_empty())
    }
}

/// A change that removes rows; done again, after the others, when its transaction failed.
enum Removal {
    /// One job, with its attempts and payload.
    Job(JobId),
    /// Every job of a group.
    Group(GroupId),
}

fn commit(conn: &mut Connection, writer: &mut Writer, batch: &mut Vec<Command>) {
    let size = batch.len();
    let mut replies = Vec::new();
    let outcome = (|| -> Result<(), StoreError> {
        let tx = conn.transaction().context("starting a transaction")?;
        apply(&tx, writer, batch, &mut replies)?;
        tx.commit().context("committing")
    })();
    batch.clear();
    match outcome {
        Ok(()) => {
            tracing::trace!(commands = size, "job store committed");
            if writer.failures > 0 {
                tracing::info!(
                    failures = writer.failures,
                    "job store writes again: the changes of the failed transactions are stored"
                );
                writer.failures = 0;
            }
            writer.written.clear();
            writer.removals.clear();
            for reply in replies {
                match reply {
                    Reply::Submit(to, result) => {
                        let _ = to.send(result);
                    }
                    Reply::Flush(to) => {
                        let _ = to.send(Ok(()));
                    }
                    Reply::Prune(to, result) => {
                        let _ = to.send(result);
                    }
                }
            }
        }
        Err(error) => {
            writer.codes.forget();
            // What was written and what was not yet, the later over the earlier: every change
            // to a stored job is written again in the next transaction.
            writer.written.absorb(&mut writer.pending);
            std::mem::swap(&mut writer.pending, &mut writer.written);
            writer.failures += 1;
            let retained = writer.pending.len() + writer.removals.len();
            if writer.failures == 1 {
                tracing::error!(%error, commands = size, retained, "job store transaction failed and was rolled back; its changes to stored jobs will be written again, its submits are refused");
            } else if writer.failures <= 5 || writer.failures.is_multiple_of(30) {
                // Then about once a minute, at the longest pause.
                tracing::warn!(%error, failures = writer.failures, retained, "job store transaction failed again");
            }
            let error = std::sync::Arc::new(error);
            let failed = || StoreError::RolledBack(error.clone());
            for reply in replies {
                match reply {
                    Reply::Submit(to, _) => {
                        let _ = to.send(Err(failed()));
                    }
                    Reply::Flush(to) => {
                        let _ = to.send(Err(failed()));
                    }
                    Reply::Prune(to, _) => {
                        let _ = to.send(Err(failed()));
                    }
                }
            }
        }
    }
}

/// Writes of one transaction waiting to be applied, coalesced per job: the last full state
/// (merged with what earlier ones said that it leaves out), the last progress, and the last
/// record of each attempt. Deletes and submits apply in order, after what came before them.
#[derive(Default)]
struct Coalesced {
    states: IdMap<JobId, (usize, StateRow)>,
    progress: IdMap<JobId, (usize, f64, Option<String>)>,
    attempts: IdMap<(JobId, u32), AttemptRecord>,
}

impl Coalesced {
    fn state(&mut self, index: usize, row: StateRow) {
        let row = match self.states.remove(&row.id) {
            Some((_, earlier)) => row.after(earlier),
            None => row,
        };
        self.states.insert(row.id, (index, row));
    }

    /// Adds change number `index`; a delete or clear is handed back, to be done in order.
    fn coalesce(&mut self, index: usize, write: Write) -> Option<Removal> {
        match write {
            Write::Progress {
                id,
                percent,
                message,
            } => {
                self.progress.insert(id, (index, percent, message));
            }
            Write::State(state) => self.state(index, *state),
            Write::Attempt { job, record } => {
                let key = (job, record.attempt.0);
                // The attempt that completed a job is the job's row (see `Reader::get`): it
                // replaces any earlier record of the attempt and is not written itself.
                if record.outcome == Some(AttemptOutcome::Completed) {
                    self.attempts.remove(&key);
                } else {
                    self.attempts.insert(key, record);
                }
            }
            Write::Delete(id) => return Some(Removal::Job(id)),
            Write::ClearGroup(group) => return Some(Removal::Group(group)),
        }
        None
    }

    /// Takes in `newer`'s changes, which came after these.
    fn absorb(&mut self, newer: &mut Coalesced) {
        for (_, (index, row)) in newer.states.drain() {
            self.state(index, row);
        }
        self.progress.extend(newer.progress.drain());
        self.attempts.extend(newer.attempts.drain());
    }

    fn len(&self) -> usize {
        self.states.len() + self.progress.len() + self.attempts.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.states.clear();
        self.progress.clear();
        self.attempts.clear();
    }

    /// Writes the changes in `tx`, then moves them to `written`, where they stay until the
    /// transaction commits.
    fn flush(&mut self, tx: &Transaction<'_>, written: &mut Coalesced) -> Result<(), StoreError> {
        if !self.states.is_empty() {
            let mut update = tx
                .prepare_cached(UPDATE_STATE)
                .context("preparing a state update")?;
            // In id order: neighbouring jobs share b-tree pages, and the status index takes
            // its new keys in order instead of splitting pages at random places.
            let mut rows: Vec<&StateRow> = self.states.values().map(|(_, row)| row).collect();
            rows.sort_unstable_by_key(|row| row.id);
            for row in rows {
                write_state(&mut update, row)?;
            }
        }
        if !self.attempts.is_empty() {
            let mut upsert = tx
                .prepare_cached(UPSERT_ATTEMPT)
                .context("preparing an attempt write")?;
            for ((job, _), record) in &self.attempts {
                write_attempt(&mut upsert, *job, record)?;
            }
        }
        if !self.progress.is_empty() {
            let mut update = tx
                .prepare_cached(
                    "UPDATE cluster_jobs SET progress = ?2, progress_msg = ?3 WHERE id = ?1",
                )
                .context("preparing a progress update")?;
            for (id, (index, percent, message)) in &self.progress {
                // A full state written after this report carries newer progress (or none).
                if self
                    .states
                    .get(id)
                    .is_some_and(|(state, row)| state > index && row.progress.is_some())
                {
                    continue;
                }
                update
                    .execute(params![reader::sql_id(*id), percent, message])
                    .context("writing progress")?;
            }
        }
        if written.is_empty() {
            // The usual case, one flush per transaction: no copying.
            std::mem::swap(self, written);
        } else {
            written.absorb(self);
        }
        Ok(())
    }
}

fn apply(
    tx: &Transaction<'_>,
    writer: &mut Writer,
    batch: &mut Vec<Command>,
    replies: &mut Vec<Reply>,
) -> Result<(), StoreError> {
    let Writer {
        codes,
        next_seq,
        pending,
        written,
        removals,
        index,
        ..
    } = writer;
    // The deletes and clears of a failed transaction are done again first, after the changes
    // that came before them (none came after them for the jobs they remove).
    let mut outcome = if removals.is_empty() {
        Ok(())
    } else {
        pending
            .flush(tx, written)
            .and_then(|()| removals.iter().try_for_each(|r| remove(tx, codes, r)))
    };
    // Once something failed, the transaction is lost: the rest of the batch is only taken
    // in (changes kept to be written again, replies to be answered with the error).
    for command in batch.drain(..) {
        match command {
            Command::Submit(jobs, reply) => {
                let result = match outcome {
                    Ok(()) => submit_all(tx, codes, next_seq, jobs),
                    Err(_) => Ok(Vec::new()),
                };
                replies.push(Reply::Submit(reply, result));
            }
            Command::Flush(reply) => replies.push(Reply::Flush(reply)),
            Command::Prune(prune, reply) => {
                // The changes queued before it first: a job retried since it failed is no
                // longer finished.
                outcome = outcome.and_then(|()| pending.flush(tx, written));
                let result = match outcome {
                    Ok(()) => prune_finished(tx, codes, &prune),
                    Err(_) => Ok(Vec::new()),
                };
                replies.push(Reply::Prune(reply, result));
            }
            Command::Writes(writes) => {
                for write in writes {
                    *index += 1;
                    if let Some(removal) = pending.coalesce(*index, write) {
                        outcome = outcome
                            .and_then(|()| pending.flush(tx, written))
                            .and_then(|()| remove(tx, codes, &removal));
                        removals.push(removal);
                    }
                }
            }
        }
    }
    outcome.and_then(|()| pending.flush(tx, written))
}

/// Deletes the rows `removal` names.
fn remove(tx: &Transaction<'_>, codes: &mut Codes, removal: &Removal) -> Result<(), StoreError> {
    match removal {
        Removal::Job(id) => delete_job(tx, *id),
        Removal::Group(group) => {
            // A group without a code never had a job. Its code is kept: codes are never
            // deleted, so the cached ones stay right.
            let Some(code) = codes.existing_group(tx, group.as_str())? else {
                return Ok(());
            };
            tx.execute(
                "DELETE FROM cluster_attempts WHERE job_id IN
                    (SELECT id FROM cluster_jobs WHERE group_code = ?1)",
                [code],
            )
            .context("clearing attempts")?;
            tx.execute(
                "DELETE FROM cluster_payloads WHERE job_id IN
                    (SELECT id FROM cluster_jobs WHERE group_code = ?1)",
                [code],
            )
            .context("clearing payloads")?;
            tx.execute("DELETE FROM cluster_jobs WHERE group_code = ?1", [code])
                .context("clearing jobs")?;
            Ok(())
        }
    }
}

/// Removes one job, its attempts and its payload.
fn delete_job(tx: &Transaction<'_>, id: JobId) -> Result<(), StoreError> {
    let id = reader::sql_id(id);
    for (sql, context) in [
        (
            "DELETE FROM cluster_attempts WHERE job_id = ?1",
            "deleting attempts",
        ),
        (
            "DELETE FROM cluster_payloads WHERE job_id = ?1",
            "deleting a payload",
        ),
        ("DELETE FROM cluster_jobs WHERE id = ?1", "deleting a job"),
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([id]))
            .context(context)?;
    }
    Ok(())
}

/// The first `?3` jobs of a range of the status index (one group's jobs of one status, in
/// submission order), of which those submitted and finished before `?4` go. Only a window of
/// the range is read: past the jobs old enough, a scan to the end of the range would read
/// every younger job of that status to find none.
const SELECT_PRUNABLE: &str = "SELECT id FROM (
        SELECT id, created_at, done_at FROM cluster_jobs
        WHERE status_key BETWEEN ?1 AND ?2 ORDER BY status_key LIMIT ?3)
     WHERE created_at < ?4 AND COALESCE(done_at, created_at) < ?4";

/// The group's oldest `?7` finished jobs, whatever their status: the first `?7` of each
/// status's range of the status index (completed `?1`–`?2`, failed `?3`–`?4`, cancelled
/// `?5`–`?6`), then the first `?7` of those in submission order (the `seq` in the key's low
/// bits). The index alone answers it.
const SELECT_OLDEST: &str = "SELECT id, status_key FROM (
        SELECT * FROM (SELECT id, status_key FROM cluster_jobs
            WHERE status_key BETWEEN ?1 AND ?2 ORDER BY status_key LIMIT ?7)
        UNION ALL SELECT * FROM (SELECT id, status_key FROM cluster_jobs
            WHERE status_key BETWEEN ?3 AND ?4 ORDER BY status_key LIMIT ?7)
        UNION ALL SELECT * FROM (SELECT id, status_key FROM cluster_jobs
            WHERE status_key BETWEEN ?5 AND ?6 ORDER BY status_key LIMIT ?7))
     ORDER BY status_key & ?8 LIMIT ?7";

/// Deletes what `prune` asks for inside a savepoint: all of it or, when something fails,
/// nothing (and the rest of the transaction stands).
fn prune_finished(
    tx: &Transaction<'_>,
    codes: &mut Codes,
    prune: &Prune,
) -> Result<Vec<Pruned>, StoreError> {
    let Some(group) = codes.existing_group(tx, prune.group.as_str())? else {
        return Ok(Vec::new());
    };
    in_savepoint(tx, "prune", || {
        let window = i64::try_from(prune.window).unwrap_or(i64::MAX);
        let before = prune.before.as_unix_ms();
        let finished = [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ];
        let range = |status| {
            let code = codes::status_code(status);
            (
                codes::status_key(group, code, 0),
                codes::status_key(group, code, codes::MAX_SEQ),
            )
        };
        let mut pruned = Vec::new();
        let oldest = i64::try_from(prune.oldest.min(prune.window)).unwrap_or(i64::MAX);
        if oldest > 0 {
            let [(c1, c2), (f1, f2), (x1, x2)] = finished.map(range);
            let mut select = tx
                .prepare_cached(SELECT_OLDEST)
                .context("preparing the oldest-jobs query")?;
            let rows = select
                .query_map(
                    params![c1, c2, f1, f2, x1, x2, oldest, codes::MAX_SEQ],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )
                .context("finding the oldest finished jobs")?;
            for row in rows {
                let (raw, key) = row.context("reading an old finished job")?;
                let id = reader::job_id(raw);
                let status = codes::status_of((key >> codes::SEQ_BITS) & 7)
                    .ok_or_else(|| reader::corrupt(id, format!("status key {key}")))?;
                pruned.push((id, status));
            }
            for (id, _) in &pruned {
                delete_job(tx, *id)?;
            }
        }
        let by_count = pruned.len();
        let mut select = tx
            .prepare_cached(SELECT_PRUNABLE)
            .context("preparing the prune query")?;
        for status in finished {
            let (first, last) = range(status);
            let rows = select
                .query_map(params![first, last, window, before], |row| {
                    row.get::<_, i64>(0)
                })
                .context("finding jobs to prune")?;
            for row in rows {
                pruned.push((
                    reader::job_id(row.context("reading a job to prune")?),
                    status,
                ));
            }
        }
        for (id, _) in &pruned[by_count..] {
            delete_job(tx, *id)?;
        }
        Ok(pruned)
    })
}

/// Inserts one submit's jobs inside a savepoint, so a failing submit leaves the rest of the
/// group commit intact.
fn submit_all(
    tx: &Transaction<'_>,
    codes: &mut Codes,
    next_seq: &mut i64,
    jobs: Vec<NewJob>,
) -> Result<Vec<Submitted>, StoreError> {
    let result = in_savepoint(tx, "submit", || {
        let mut insert = Inserts {
            job: tx
                .prepare_cached(INSERT_JOB)
                .context("preparing a job insert")?,
            payload: tx
                .prepare_cached(INSERT_PAYLOAD)
                .context("preparing a payload insert")?,
        };
        let mut by_key = None;
        let mut out = Vec::with_capacity(jobs.len());
        for new in jobs {
            let group = codes.group(tx, new.group.as_str())?;
            if let Some(key) = &new.idempotency_key {
                let lookup = match &mut by_key {
                    Some(lookup) => lookup,
                    None => by_key.insert(
                        tx.prepare_cached(
                            "SELECT id FROM cluster_jobs
                             WHERE group_code = ?1 AND idempotency_key = ?2",
                        )
                        .context("preparing an idempotency lookup")?,
                    ),
                };
                let existing: Option<i64> = lookup
                    .query_row(params![group, key], |row| row.get(0))
                    .optional()
                    .context("looking up an idempotency key")?;
                if let Some(id) = existing {
                    out.push(Submitted::Existing(reader::job_id(id)));
                    continue;
                }
            }
            let job_type = codes.job_type(tx, &new.job.job_type)?;
            let seq = *next_seq;
            if seq > codes::MAX_SEQ {
                return Err(StoreError::Full("no more jobs fit in the status index"));
            }
            *next_seq += 1;
            out.push(insert_job(&mut insert, new, seq, group, job_type)?);
        }
        Ok(out)
    });
    if result.is_err() {
        codes.forget();
    }
    result
}

/// Runs `body` inside the savepoint `name`: when it fails, what it did is rolled back and the
/// rest of the transaction stands.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    name: &str,
    body: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = |verb: &str| -> Result<(), StoreError> {
        tx.prepare_cached(&format!("{verb} {name}"))
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
            .context("managing a savepoint")
    };
    run("SAVEPOINT")?;
    let result = body();
    if result.is_err() {
        run("ROLLBACK TO")?;
    }
    run("RELEASE")?;
    result
}

const INSERT_JOB: &str = "INSERT INTO cluster_jobs (id, group_code, type_code, mode, priority,
        timeout_s, max_retry, labels, not_before, after, idempotency_key, status_key, created_at,
        seq, payload)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Payloads up to this many bytes are kept in the job's row, larger ones in `cluster_payloads`:
/// a small payload costs less carried along by the row's rewrites than inserted on its own.
const INLINE_PAYLOAD: usize = 256;

const INSERT_PAYLOAD: &str = "INSERT INTO cluster_payloads (job_id, payload) VALUES (?1, ?2)";

/// The statements a submit runs per job.
struct Inserts<'tx> {
    job: rusqlite::CachedStatement<'tx>,
    payload: rusqlite::CachedStatement<'tx>,
}

fn insert_job(
    insert: &mut Inserts<'_>,
    new: NewJob,
    seq: i64,
    group: i64,
    job_type: i64,
) -> Result<Submitted, StoreError> {
    let job = &new.job;
    let labels = (!job.labels.is_empty()).then(|| to_json(&job.labels));
    let after = (!job.after.is_empty()).then(|| to_json(&job.after));
    let payload = job.payload.as_ref().map(|p| p.get());
    let (inline, apart) = match payload {
        Some(p) if p.len() <= INLINE_PAYLOAD => (Some(p), None),
        other => (None, other),
    };
    let inserted = insert.job.execute(params![
        reader::sql_id(job.id),
        group,
        job_type,
        reader::mode_str(job.mode),
        job.priority,
        i64::try_from(job.timeout_s).unwrap_or(i64::MAX),
        job.max_retry,
        labels,
        job.not_before.map(Timestamp::as_unix_ms),
        after,
        new.idempotency_key,
        codes::status_key(group, codes::status_code(JobStatus::Pending), seq),
        new.created_at.as_unix_ms(),
        seq,
        inline,
    ]);
    match inserted {
        Ok(_) => {
            if let Some(payload) = apart {
                insert
                    .payload
                    .execute(params![reader::sql_id(job.id), payload])
                    .context("inserting a payload")?;
            }
            Ok(Submitted::Created(job.id))
        }
        // The id is the row key: only a job already stored under it breaks that constraint.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(StoreError::Duplicate(job.id.to_string()))
        }
        Err(source) => Err(StoreError::Sqlite {
            context: "inserting a job",
            source,
        }),
    }
}

/// The state update. The status goes into the bits of `status_key` above the seq (see
/// `codes::status_key`). The terminal statuses are the codes from 3 up (completed and failed,
/// whose elapsed time the store works out, are 3 and 4): comparisons rather than `IN` lists,
/// which SQLite would build a temporary table for on every run. A NULL progress (`?9`) keeps
/// the stored progress and message.
const UPDATE_STATE: &str = "UPDATE cluster_jobs
    SET status_key = (status_key & ~(7 << 42)) | (?2 << 42),
        worker_id = CASE WHEN ?2 >= 3 THEN COALESCE(?3, worker_id) ELSE ?3 END,
        attempt = ?4, retries = ?5, losses = ?6, result = ?7, error = ?8,
        progress = COALESCE(?9, progress),
        progress_msg = CASE WHEN ?9 IS NULL THEN progress_msg ELSE ?10 END,
        started_at = COALESCE(?11, started_at), done_at = ?12,
        elapsed_ms = COALESCE(?13,
            CASE WHEN ?2 BETWEEN 3 AND 4 THEN ?12 - COALESCE(?11, started_at) END)
     WHERE id = ?1";

fn write_state(update: &mut Statement<'_>, state: &StateRow) -> Result<(), StoreError> {
    // Without progress in the change, the stored progress is kept.
    let (progress, progress_msg) = match &state.progress {
        Some((pct, msg)) => (Some(*pct), msg.as_deref()),
        None => (None, None),
    };
    update
        .execute(params![
            reader::sql_id(state.id),
            codes::status_code(state.status),
            state.worker_id.as_ref().map(|w| w.as_str()),
            state.attempt.0,
            state.retries,
            state.losses,
            state.result.as_ref().map(|r| r.get()),
            state.error,
            progress,
            progress_msg,
            state.started_at.map(Timestamp::as_unix_ms),
            state.done_at.map(Timestamp::as_unix_ms),
            state
                .elapsed_ms
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        ])
        .context("writing job state")?;
    Ok(())
}

const UPSERT_ATTEMPT: &str = "INSERT INTO cluster_attempts
        (job_id, attempt, worker_id, started_at, ended_at, outcome, error)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (job_id, attempt) DO UPDATE SET worker_id = excluded.worker_id,
        started_at = excluded.started_at, ended_at = excluded.ended_at,
        outcome = excluded.outcome, error = excluded.error";

fn write_attempt(
    upsert: &mut Statement<'_>,
    job: JobId,
    record: &AttemptRecord,
) -> Result<(), StoreError> {
    upsert
        .execute(params![
            reader::sql_id(job),
            record.attempt.0,
            record.worker_id.as_str(),
            record.started_at.as_unix_ms(),
            record.ended_at.map(Timestamp::as_unix_ms),
            record.outcome.map(AttemptOutcome::as_str),
            record.error,
        ])
        .context("writing an attempt")?;
    Ok(())
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retry_pause;

    #[test]
    fn the_retry_pause_doubles_from_50_ms_up_to_2_s() {
        let pauses: Vec<Duration> = (1..=9).map(retry_pause).collect();
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_pause(u32::MAX).as_millis(), 2000);
    }
}
