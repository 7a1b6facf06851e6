//! The state machine: every input, every transition, and the dispatch loop.
//!
//! Each `step` first fires the timers that are due (leases, attempt deadlines, backoffs), then
//! applies the input, then assigns ready jobs to eligible workers until no pair is left, and
//! finally announces the next wake-up if it changed. Everything it wants done is pushed to the
//! output buffer, which the shell drains.
//!
//! Live jobs sit in a slab; the hot indexes (`index`) hold slab positions. Terminal jobs are
//! handed to the shell: their last `JobChanged` carries everything the store needs, and the
//! dispatcher keeps only their status (for `after` checks, retries and stale reports) in a
//! compact map until the shell forgets them.
//!
//! The one `impl` is split by concern: `jobs` (submit, cancel, retry, forget, restore),
//! `transitions` (queueing, attempts, failures, losses, finishing), `workers`, `timers` and
//! `pick` (the dispatch loop).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use proto::{Attempt, JobId, PeerId};

use crate::config::Config;
use crate::error::{IgnoreReason, StepError};
use crate::index::{HandleHeap, HeadKey, TypeQueue, WorkerKey};
use crate::io::{AttemptEnd, Input, Output, Report};
use crate::known::KnownIds;
use crate::seeded::{IdMap, SeededMap, SeededState, SplitMix};
use crate::state::{Job, State, Worker};
use crate::time::Millis;

mod jobs;
mod pick;
mod timers;
mod transitions;
mod workers;

/// Heaps with lazily removed entries are rebuilt when stale entries outnumber live ones by this
/// much, which keeps their size proportional to the live work.
const COMPACT_SLACK: usize = 1024;

/// The job queue and scheduler. `P` is the job payload and `R` a worker report (progress,
/// output, result); the dispatcher moves both through without looking inside.
pub struct Dispatcher<P, R> {
    pub(crate) config: Config,
    rng: SplitMix,
    pub(crate) now: Millis,
    /// The live-job slab.
    pub(crate) slots: Vec<Option<Job<P>>>,
    /// Per slot, a number that grows on every state change of the job in it and on every
    /// reuse, so that lazily removed index entries can be told stale. Kept apart from the
    /// slab so that checking an entry does not touch the (large) job record.
    pub(crate) generations: Vec<u32>,
    /// Per slot, the stamp of the assignment whose attempt is in flight there (stamps are
    /// unique and start at 1; 0 means none): a deadline entry is live while its slot holds its
    /// stamp, which is checked without touching the job record or a map.
    run_stamps: Vec<u64>,
    free_slots: Vec<u32>,
    /// Every job the dispatcher knows: live ones by slab slot, terminal ones by status. A
    /// live job's cell number there is its `seq`.
    pub(crate) ids: KnownIds,
    /// Jobs whose current attempt a worker holds: at most the cluster's capacity, so it stays
    /// in cache for the reports, which only ever concern these (and the plain hash, one
    /// multiply, is the cheaper one here).
    inflight: SeededMap<JobId, u32>,
    pub(crate) live_count: usize,
    /// Jobs blocked on a job, with the `dep_epoch` they registered under.
    dependents: IdMap<Vec<(JobId, u32)>>,
    pub(crate) types: Vec<TypeQueue>,
    type_ids: SeededMap<Arc<str>, u32>,
    /// Heads of every non-empty ready queue, with their type.
    heads_any: HandleHeap<(HeadKey, u32)>,
    /// Heads of the non-empty ready queues of types some eligible typed worker serves.
    heads_typed: HandleHeap<(HeadKey, u32)>,
    /// Eligible workers that run every type.
    wildcard: HandleHeap<WorkerKey>,
    pub(crate) workers: Vec<Option<Worker>>,
    /// Workers whose load dropped during this step: their heap entries are out of date until
    /// `dispatch` brings them up to date (see there why they wait).
    released: Vec<u32>,
    free_workers: Vec<u32>,
    pub(crate) worker_ids: SeededMap<PeerId, u32>,
    /// Delayed jobs: (due, slot, generation).
    delayed: BinaryHeap<Reverse<(Millis, u32, u32)>>,
    /// Attempt deadlines: (deadline, slot, job id, stamp of the assignment). An entry is live
    /// while `run_stamps` holds its stamp at its slot.
    deadlines: BinaryHeap<Reverse<(Millis, u32, u64, u64)>>,
    deadlines_live: usize,
    /// Worker leases: (until, slot, incarnation); one entry per worker, pushed again when it
    /// fires early because a heartbeat moved the lease.
    leases: BinaryHeap<Reverse<(Millis, u32, u64)>>,
    /// Jobs by state; the terminal ones include those evicted from `ids` or never loaded.
    pub(crate) counts: [usize; State::COUNT],
    /// Finished jobs in the order they finished, with their cell: the oldest are evicted first.
    /// An entry whose id has since moved to another cell (retried, forgotten, recalled) is
    /// stale and skipped.
    pub(crate) finished: VecDeque<(JobId, u64)>,
    /// Ids known as finished in `ids`: at most `config.max_finished` between steps, except
    /// right after an `Input::Recall`.
    pub(crate) finished_known: usize,
    next_stamp: u64,
    next_incarnation: u64,
    /// Dependents to fail because a job they wait for failed; drained iteratively so long
    /// chains cannot overflow the stack.
    cascade: Vec<(JobId, Arc<str>)>,
    outputs: Vec<Output<P, R>>,
    announced: Option<Millis>,
}

impl<P: Clone, R> Dispatcher<P, R> {
    /// An empty dispatcher. `seed` drives the retry jitter and the hash keys, so two
    /// dispatchers with the same seed fed the same inputs produce the same outputs.
    pub fn new(config: Config, seed: u64) -> Self {
        let hasher = SeededState::new(seed);
        Self {
            config,
            rng: SplitMix::new(seed),
            now: Millis::ZERO,
            slots: Vec::new(),
            generations: Vec::new(),
            run_stamps: Vec::new(),
            free_slots: Vec::new(),
            ids: KnownIds::new(hasher.id_map()),
            inflight: hasher.map(),
            live_count: 0,
            dependents: hasher.id_map(),
            types: Vec::new(),
            type_ids: hasher.map(),
            heads_any: HandleHeap::default(),
            heads_typed: HandleHeap::default(),
            wildcard: HandleHeap::default(),
            workers: Vec::new(),
            released: Vec::new(),
            free_workers: Vec::new(),
            worker_ids: hasher.map(),
            delayed: BinaryHeap::new(),
            deadlines: BinaryHeap::new(),
            deadlines_live: 0,
            leases: BinaryHeap::new(),
            counts: [0; State::COUNT],
            finished: VecDeque::new(),
            finished_known: 0,
            next_stamp: 1,
            next_incarnation: 0,
            cascade: Vec::new(),
            outputs: Vec::new(),
            announced: None,
        }
    }

    /// Apply one input at time `now`, then assign what can be assigned. Outputs accumulate
    /// until drained with [`Dispatcher::drain_outputs`] or [`Dispatcher::take_outputs`].
    ///
    /// Time never goes backwards here: a `now` earlier than a previous one is taken as the
    /// previous one. Timers due by `now` fire before the input is applied.
    ///
    /// # Errors
    /// When the input is refused (bad submit, cancel of a finished job, ...) or is a worker
    /// report that must be ignored (stale, duplicate, foreign). Nothing changed in either case.
    pub fn step(&mut self, now: Millis, input: Input<P, R>) -> Result<(), StepError> {
        self.now = self.now.max(now);
        self.fire_timers();
        // Recalled jobs are about to be named by the next input: they stay until it is applied.
        let evict = !matches!(input, Input::Recall(_));
        let result = self.apply(input);
        self.dispatch();
        self.announce_wakeup();
        if evict {
            self.evict_finished();
        }
        result
    }

    /// Take the outputs produced so far.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output<P, R>> {
        self.outputs.drain(..)
    }

    /// Move the outputs produced so far to the end of `into`, keeping both buffers' capacity.
    pub fn take_outputs(&mut self, into: &mut Vec<Output<P, R>>) {
        into.append(&mut self.outputs);
    }

    /// The earliest time at which a timer may fire: call `step` with `Input::Tick` then.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let delayed = self.delayed.peek().map(|Reverse(e)| e.0);
        let deadline = self.deadlines.peek().map(|Reverse(e)| e.0);
        let lease = self.leases.peek().map(|Reverse(e)| e.0);
        earliest(earliest(delayed, deadline), lease)
    }

    fn apply(&mut self, input: Input<P, R>) -> Result<(), StepError> {
        match input {
            Input::Submit(job) => self.submit_one(job),
            Input::SubmitBatch(jobs) => self.submit(jobs),
            Input::Cancel(id) => self.cancel(id),
            Input::Retry(retry) => self.retry(retry),
            Input::Forget(id) => self.forget(id),
            Input::ForgetFinished => {
                self.forget_finished();
                Ok(())
            }
            Input::Recall(jobs) => {
                self.recall(jobs);
                Ok(())
            }
            Input::Deleted(jobs) => {
                self.deleted(jobs);
                Ok(())
            }
            Input::Unloaded {
                completed,
                failed,
                cancelled,
            } => {
                self.counts[State::Completed.index()] += completed;
                self.counts[State::Failed.index()] += failed;
                self.counts[State::Cancelled.index()] += cancelled;
                Ok(())
            }
            Input::WorkerJoined(peer) => {
                self.worker_joined(peer);
                Ok(())
            }
            Input::WorkerVerified {
                worker,
                types,
                capacity,
            } => {
                self.worker_verified(worker, &types, capacity);
                Ok(())
            }
            Input::WorkerUnverified(peer) => self.with_worker(&peer, |d, w| {
                d.reindex_worker(w, |worker| worker.verified = false);
            }),
            Input::WorkerLeft { worker, reason } => {
                let slot = self.worker_slot(&worker)?;
                self.remove_worker(slot, reason);
                Ok(())
            }
            Input::Heartbeat { worker, running } => self.heartbeat(&worker, running),
            Input::Pause(peer) => self.with_worker(&peer, |d, w| {
                d.reindex_worker(w, |worker| worker.paused = true);
            }),
            Input::Resume(peer) => self.with_worker(&peer, |d, w| {
                d.reindex_worker(w, |worker| worker.paused = false);
            }),
            Input::Ack {
                worker,
                job,
                attempt,
            } => {
                let slot = self.holder(&worker, job, attempt)?;
                if self.job(slot).state == State::Running {
                    return Err(ignored(job, attempt, worker, IgnoreReason::Duplicate));
                }
                self.mark_running(slot);
                Ok(())
            }
            Input::Progress {
                worker,
                job,
                attempt,
                report,
            } => {
                let slot = self.holder(&worker, job, attempt)?;
                self.mark_running(slot);
                self.outputs.push(Output::Progress {
                    job,
                    attempt,
                    report,
                });
                Ok(())
            }
            Input::Output {
                worker,
                job,
                attempt,
                data,
            } => {
                let slot = self.holder(&worker, job, attempt)?;
                self.mark_running(slot);
                self.outputs.push(Output::JobOutput { job, attempt, data });
                Ok(())
            }
            Input::Result {
                worker,
                job,
                attempt,
                report,
            } => {
                let slot = self.holder(&worker, job, attempt)?;
                match report {
                    Report::Completed(result) => {
                        self.end_last_run(slot, AttemptEnd::Completed);
                        self.finish(slot, State::Completed, Some(result));
                    }
                    Report::Failed(error) => {
                        let error: Arc<str> = error.into();
                        let ended = self.end_run(slot, AttemptEnd::Failed(error.clone()));
                        self.fail_attempt(slot, error, ended);
                    }
                    Report::TimedOut(error) => {
                        let error: Arc<str> = error.into();
                        let ended = self.end_run(slot, AttemptEnd::TimedOut);
                        self.fail_attempt(slot, error, ended);
                    }
                    Report::Lost(reason) => {
                        let ended = self.end_run(slot, AttemptEnd::Lost(reason.as_str().into()));
                        self.lose_attempt(slot, &reason, ended);
                    }
                    Report::NotStarted(reason) => {
                        let ended = self.end_run(slot, AttemptEnd::Lost(reason.as_str().into()));
                        self.requeue_attempt(slot, ended);
                    }
                }
                Ok(())
            }
            Input::Tick => Ok(()),
            Input::Restore(jobs) => self.restore(jobs),
        }
    }
}

/// The earlier of two optional times; `None` means never.
fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn ignored(job: JobId, attempt: Attempt, worker: PeerId, reason: IgnoreReason) -> StepError {
    StepError::Ignored {
        job,
        attempt,
        worker,
        reason,
    }
}

/// The error a dependent fails with when `dependency` ended in `state`, or `None` if it
/// completed.
fn dependency_error(dependency: JobId, state: State) -> Option<Arc<str>> {
    match state {
        State::Failed => Some(format!("dependency {dependency} failed").into()),
        State::Cancelled => Some(format!("dependency {dependency} was cancelled").into()),
        _ => None,
    }
}
