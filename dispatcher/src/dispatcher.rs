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

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

use proto::{Attempt, JobId, JobStatus, PeerId};

use crate::config::Config;
use crate::error::{IgnoreReason, StepError};
use crate::index::{HeadKey, ReadyEntry, TypeQueue, WorkerKey};
use crate::io::{
    Assignment, AttemptEnd, AttemptRecord, CancelReason, Input, JobUpdate, LeaveReason, NewJob,
    Output, Report, RestoredJob, RetryJob,
};
use crate::seeded::{SeededMap, SeededState, SplitMix};
use crate::state::{Cold, Job, Known, Run, State, Worker};
use crate::time::Millis;

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
    free_slots: Vec<u32>,
    /// Every job the dispatcher knows: live ones by slab slot, terminal ones by status. One
    /// map rather than two, because each lookup is a likely cache miss.
    pub(crate) ids: SeededMap<JobId, Known>,
    live_count: usize,
    /// Jobs blocked on a job, with the `dep_epoch` they registered under.
    dependents: SeededMap<JobId, Vec<(JobId, u32)>>,
    pub(crate) types: Vec<TypeQueue>,
    type_ids: SeededMap<Arc<str>, u32>,
    /// Heads of every non-empty ready heap.
    heads_any: BTreeSet<(HeadKey, u32)>,
    /// Heads of the non-empty ready heaps of types some eligible typed worker serves.
    heads_typed: BTreeSet<(HeadKey, u32)>,
    /// Eligible workers that run every type.
    wildcard: BTreeSet<WorkerKey>,
    pub(crate) workers: Vec<Option<Worker>>,
    free_workers: Vec<u32>,
    pub(crate) worker_ids: SeededMap<PeerId, u32>,
    /// Delayed jobs: (due, slot, generation).
    delayed: BinaryHeap<Reverse<(Millis, u32, u32)>>,
    /// Attempt deadlines: (deadline, slot, job id, attempt).
    deadlines: BinaryHeap<Reverse<(Millis, u32, u64, u32)>>,
    deadlines_live: usize,
    /// Worker leases: (until, slot, incarnation); one entry per worker, pushed again when it
    /// fires early because a heartbeat moved the lease.
    leases: BinaryHeap<Reverse<(Millis, u32, u64)>>,
    pub(crate) counts: [usize; State::COUNT],
    next_seq: u64,
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
            free_slots: Vec::new(),
            ids: hasher.map(),
            live_count: 0,
            dependents: hasher.map(),
            types: Vec::new(),
            type_ids: hasher.map(),
            heads_any: BTreeSet::new(),
            heads_typed: BTreeSet::new(),
            wildcard: BTreeSet::new(),
            workers: Vec::new(),
            free_workers: Vec::new(),
            worker_ids: hasher.map(),
            delayed: BinaryHeap::new(),
            deadlines: BinaryHeap::new(),
            deadlines_live: 0,
            leases: BinaryHeap::new(),
            counts: [0; State::COUNT],
            next_seq: 0,
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
        let result = self.apply(input);
        self.dispatch();
        self.announce_wakeup();
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
        [delayed, deadline, lease].into_iter().flatten().min()
    }

    fn apply(&mut self, input: Input<P, R>) -> Result<(), StepError> {
        match input {
            Input::Submit(job) => self.submit(vec![job]),
            Input::SubmitBatch(jobs) => self.submit(jobs),
            Input::Cancel(id) => self.cancel(id),
            Input::Retry(retry) => self.retry(retry),
            Input::Forget(id) => self.forget(id),
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
                        self.end_run(slot, AttemptEnd::Completed);
                        self.finish(slot, State::Completed, Some(result));
                    }
                    Report::Failed(error) => {
                        let error: Arc<str> = error.into();
                        let ended = self.end_run(slot, AttemptEnd::Failed(error.clone()));
                        self.fail_attempt(slot, error, ended);
                    }
                }
                Ok(())
            }
            Input::Tick => Ok(()),
            Input::Restore(jobs) => self.restore(jobs),
        }
    }

    // ---- jobs: submit, cancel, retry, forget, restore ----

    fn is_known(&self, id: JobId) -> bool {
        self.ids.contains_key(&id)
    }

    pub(crate) fn live_slot(&self, id: JobId) -> Option<u32> {
        match self.ids.get(&id) {
            Some(Known::Live(slot)) => Some(*slot),
            _ => None,
        }
    }

    pub(crate) fn finished_state(&self, id: JobId) -> Option<State> {
        match self.ids.get(&id) {
            Some(Known::Finished(state)) => Some(*state),
            _ => None,
        }
    }

    /// Marks the ids of a batch as taken while it is validated, in order, so that a job may
    /// name an earlier one of the batch in `after` but not a later one, and duplicates are
    /// caught. On error every reservation is undone.
    fn reserve_ids<'a>(
        &mut self,
        specs: impl Iterator<Item = &'a NewJob<P>>,
        check_after: bool,
    ) -> Result<(), StepError>
    where
        P: 'a,
    {
        let mut reserved: Vec<JobId> = Vec::new();
        let mut outcome = Ok(());
        for spec in specs {
            if let Err(e) = self.check_spec(spec) {
                outcome = Err(e);
                break;
            }
            if check_after
                && let Some(&dependency) = spec.after.iter().find(|d| !self.is_known(**d))
            {
                outcome = Err(StepError::UnknownDependency {
                    job: spec.id,
                    dependency,
                });
                break;
            }
            match self.ids.entry(spec.id) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    outcome = Err(StepError::DuplicateJob(spec.id));
                    break;
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(Known::Reserved);
                    reserved.push(spec.id);
                }
            }
        }
        if outcome.is_err() {
            for id in reserved {
                self.ids.remove(&id);
            }
        }
        outcome
    }

    fn check_spec(&self, job: &NewJob<P>) -> Result<(), StepError> {
        if job.job_type.is_empty() {
            return Err(StepError::EmptyType(job.id));
        }
        if job.job_type.len() > self.config.max_type_len {
            return Err(StepError::TypeTooLong {
                job: job.id,
                len: job.job_type.len(),
                max: self.config.max_type_len,
            });
        }
        Ok(())
    }

    fn check_room(&self, extra: usize) -> Result<(), StepError> {
        let live = self.live_count;
        if live.saturating_add(extra) > self.config.max_live_jobs {
            return Err(StepError::QueueFull {
                live,
                max: self.config.max_live_jobs,
            });
        }
        Ok(())
    }

    fn submit(&mut self, jobs: Vec<NewJob<P>>) -> Result<(), StepError> {
        self.check_room(jobs.len())?;
        // Validate the whole batch before placing anything, so it is accepted or refused whole.
        self.ids.reserve(jobs.len());
        self.reserve_ids(jobs.iter(), true)?;
        self.outputs.reserve(jobs.len());
        let spare = self.free_slots.len();
        self.slots.reserve(jobs.len().saturating_sub(spare));
        for job in jobs {
            let slot = self.insert(job, None);
            self.admit(slot, true);
        }
        Ok(())
    }

    /// Builds a job record in a new slab slot, in state `Blocked` until `admit` places it.
    fn insert(&mut self, spec: NewJob<P>, created_at: Option<Millis>) -> u32 {
        let ty = self.intern(&spec.job_type);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut after = spec.after;
        after.sort_unstable();
        after.dedup();
        let cold = (!after.is_empty() || !spec.labels.is_empty() || spec.not_before.is_some())
            .then(|| {
                Box::new(Cold {
                    not_before: spec.not_before,
                    after: after.into_boxed_slice(),
                    labels: spec
                        .labels
                        .into_iter()
                        .map(String::into_boxed_str)
                        .collect(),
                    error: None,
                    history: Vec::new(),
                })
            });
        let job = Job {
            id: spec.id,
            seq,
            created_at: created_at.unwrap_or(self.now),
            due_at: spec.not_before.unwrap_or(Millis::ZERO),
            ty,
            priority: spec.priority,
            timeout_s: spec.timeout_s,
            max_retry: spec.max_retry,
            retries: 0,
            losses: 0,
            attempt: Attempt(0),
            unmet: 0,
            dep_epoch: 0,
            state: State::Blocked,
            mode: spec.mode,
            payload: spec.payload,
            run: None,
            cold,
        };
        self.alloc(job)
    }

    fn alloc(&mut self, job: Job<P>) -> u32 {
        let id = job.id;
        self.counts[job.state.index()] += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                let generation = &mut self.generations[slot as usize];
                *generation = generation.wrapping_add(1);
                self.slots[slot as usize] = Some(job);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(job));
                self.generations.push(0);
                slot
            }
        };
        self.ids.insert(id, Known::Live(slot));
        self.live_count += 1;
        slot
    }

    /// Places a freshly inserted (or retried) job: registers it with the jobs it waits for,
    /// announces it, then queues it, or fails it if one of them already failed.
    ///
    /// `strict` is false on restore, where a dependency the store no longer has counts as done:
    /// only terminal jobs are ever deleted, and a failed one would have failed its dependents.
    fn admit(&mut self, slot: u32, strict: bool) {
        let (id, epoch, after) = {
            let job = self.job_mut(slot);
            job.dep_epoch = job.dep_epoch.wrapping_add(1);
            (job.id, job.dep_epoch, job.after().to_vec())
        };
        let mut unmet = 0u32;
        let mut broken: Option<Arc<str>> = None;
        for dependency in after.iter().copied() {
            if self.live_slot(dependency).is_some() {
                unmet += 1;
                self.dependents
                    .entry(dependency)
                    .or_default()
                    .push((id, epoch));
            } else if let Some(done) = self.finished_state(dependency) {
                if broken.is_none() {
                    broken = dependency_error(dependency, done);
                }
            } else if strict && broken.is_none() {
                broken = Some(format!("dependency {dependency} is unknown").into());
            }
        }
        self.job_mut(slot).unmet = unmet;
        if let Some(error) = broken {
            self.job_mut(slot).set_error(Some(error));
            self.finish(slot, State::Failed, None);
            return;
        }
        self.enqueue(slot);
        self.changed(slot, None);
    }

    fn cancel(&mut self, id: JobId) -> Result<(), StepError> {
        let Some(slot) = self.live_slot(id) else {
            return Err(self.not_live(id, |job, status| StepError::AlreadyTerminal { job, status }));
        };
        if let Some(worker) = self.holder_peer(slot) {
            let attempt = self.job(slot).attempt;
            self.outputs.push(Output::Cancel {
                worker,
                job: id,
                attempt,
                reason: CancelReason::Cancelled,
            });
            self.end_run(slot, AttemptEnd::Cancelled);
        }
        self.finish(slot, State::Cancelled, None);
        Ok(())
    }

    fn retry(&mut self, retry: RetryJob<P>) -> Result<(), StepError> {
        let RetryJob { job: spec, attempt } = retry;
        let id = spec.id;
        let Some(state) = self.finished_state(id) else {
            return Err(match self.live_slot(id) {
                Some(slot) => StepError::NotRetryable {
                    job: id,
                    status: self.job(slot).state.status(),
                },
                None => StepError::UnknownJob(id),
            });
        };
        if state == State::Completed {
            return Err(StepError::NotRetryable {
                job: id,
                status: JobStatus::Completed,
            });
        }
        self.check_spec(&spec)?;
        for &dependency in &spec.after {
            if dependency == id || !self.is_known(dependency) {
                return Err(StepError::UnknownDependency {
                    job: id,
                    dependency,
                });
            }
            if let Some(done) = self.finished_state(dependency)
                && matches!(done, State::Failed | State::Cancelled)
            {
                return Err(StepError::DependencyFailed {
                    job: id,
                    dependency,
                    status: done.status(),
                });
            }
        }
        self.check_room(1)?;
        self.counts[state.index()] -= 1;
        let slot = self.insert(spec, None);
        self.job_mut(slot).attempt = attempt;
        self.admit(slot, true);
        Ok(())
    }

    fn forget(&mut self, id: JobId) -> Result<(), StepError> {
        if let Some(state) = self.finished_state(id) {
            self.ids.remove(&id);
            self.counts[state.index()] -= 1;
            return Ok(());
        }
        match self.live_slot(id) {
            Some(slot) => Err(StepError::NotTerminal {
                job: id,
                status: self.job(slot).state.status(),
            }),
            None => Err(StepError::UnknownJob(id)),
        }
    }

    fn restore(&mut self, jobs: Vec<RestoredJob<P>>) -> Result<(), StepError> {
        let live_count = jobs.iter().filter(|j| !j.status.is_terminal()).count();
        self.check_room(live_count)?;
        self.reserve_ids(jobs.iter().map(|j| &j.job), false)?;
        let mut jobs = jobs;
        // Submission order is creation order; the sort is stable so equal times keep theirs.
        jobs.sort_by_key(|j| j.created_at);
        let mut placed = Vec::with_capacity(live_count);
        let now = self.now;
        for restored in jobs {
            let RestoredJob {
                job: spec,
                status,
                attempt,
                retries,
                losses,
                error,
                created_at,
                done_at: _,
                mut history,
            } = restored;
            let terminal = match status {
                JobStatus::Completed => Some(State::Completed),
                JobStatus::Failed => Some(State::Failed),
                JobStatus::Cancelled => Some(State::Cancelled),
                _ => None,
            };
            if let Some(state) = terminal {
                // The store keeps the record; the dispatcher only needs the status.
                self.ids.insert(spec.id, Known::Finished(state));
                self.counts[state.index()] += 1;
                continue;
            }
            let interrupted = matches!(status, JobStatus::Assigned | JobStatus::Running);
            if interrupted
                && let Some(last) = history.last_mut()
                && last.attempt == attempt
                && last.end.is_none()
            {
                last.ended_at = Some(now);
                last.end = Some(AttemptEnd::Interrupted);
            }
            let slot = self.insert(spec, Some(created_at));
            let job = self.job_mut(slot);
            job.attempt = attempt;
            job.retries = retries;
            job.losses = losses;
            job.set_error(error.map(Into::into));
            if !history.is_empty() {
                job.cold_mut().history = history;
            }
            placed.push((slot, interrupted));
        }
        for (slot, interrupted) in placed {
            // Only the jobs whose stored status changes need writing back.
            let before = self.outputs.len();
            self.admit(slot, false);
            let failed = self.job_state(slot).is_none();
            if !interrupted && !failed {
                self.outputs.truncate(before);
            }
        }
        Ok(())
    }

    // ---- job transitions ----

    pub(crate) fn job(&self, slot: u32) -> &Job<P> {
        self.slots[slot as usize]
            .as_ref()
            .expect("slot indexes point at live jobs")
    }

    fn job_mut(&mut self, slot: u32) -> &mut Job<P> {
        self.slots[slot as usize]
            .as_mut()
            .expect("slot indexes point at live jobs")
    }

    fn job_state(&self, slot: u32) -> Option<State> {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|j| j.state)
    }

    /// Moves a live job to `state`, keeping the counts and the slot generation in step.
    fn set_state(&mut self, slot: u32, state: State) {
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        let job = self.slots[slot as usize]
            .as_mut()
            .expect("slot indexes point at live jobs");
        let old = job.state;
        job.state = state;
        let ty = job.ty as usize;
        self.counts[old.index()] -= 1;
        self.counts[state.index()] += 1;
        if old == State::Ready {
            self.types[ty].live -= 1;
        }
        if state == State::Ready {
            self.types[ty].live += 1;
        }
    }

    /// Puts a pending job where it waits: blocked on its dependencies, delayed until it is
    /// due, or in its type's ready heap.
    fn enqueue(&mut self, slot: u32) {
        let job = self.job(slot);
        if job.unmet > 0 {
            self.set_state(slot, State::Blocked);
        } else if job.due_at > self.now {
            let due = job.due_at;
            self.set_state(slot, State::Delayed);
            let generation = self.generations[slot as usize];
            self.delayed.push(Reverse((due, slot, generation)));
            if self.delayed.len() > 2 * self.counts[State::Delayed.index()] + COMPACT_SLACK {
                let generations = &self.generations;
                self.delayed
                    .retain(|Reverse((_, s, g))| generations[*s as usize] == *g);
            }
        } else {
            self.set_state(slot, State::Ready);
            self.push_ready(slot);
        }
    }

    fn push_ready(&mut self, slot: u32) {
        let generation = self.generations[slot as usize];
        let job = self.job(slot);
        let ty = job.ty;
        let priority = job.priority;
        let entry = ReadyEntry {
            seq: job.seq,
            slot,
            generation,
        };
        let queue = &mut self.types[ty as usize];
        queue.ready.push(priority, entry);
        let key = (Reverse(priority), entry.seq);
        if queue.head.is_none_or(|head| key < head) {
            self.set_head(ty, Some(key));
        }
    }

    /// Mirrors a type's new head in the head sets.
    fn set_head(&mut self, ty: u32, head: Option<HeadKey>) {
        let queue = &mut self.types[ty as usize];
        let old = std::mem::replace(&mut queue.head, head);
        let typed = !queue.workers.is_empty();
        if let Some(old) = old {
            self.heads_any.remove(&(old, ty));
            if typed {
                self.heads_typed.remove(&(old, ty));
            }
        }
        if let Some(new) = head {
            self.heads_any.insert((new, ty));
            if typed {
                self.heads_typed.insert((new, ty));
            }
        }
    }

    /// Drops stale entries off the front of a type's ready queue and updates its head.
    fn sync_head(&mut self, ty: u32) {
        let generations = &self.generations;
        let queue = &mut self.types[ty as usize];
        let head = queue
            .ready
            .clean_front(|e| generations[e.slot as usize] == e.generation);
        if head != queue.head {
            self.set_head(ty, head);
        }
    }

    /// After a ready job left its queue other than by being picked.
    fn ready_entry_dropped(&mut self, ty: u32) {
        let queue = &mut self.types[ty as usize];
        if queue.ready.len() > 2 * queue.live + 64 {
            let generations = &self.generations;
            queue
                .ready
                .retain(|e| generations[e.slot as usize] == e.generation);
        }
        self.sync_head(ty);
    }

    fn mark_running(&mut self, slot: u32) {
        if self.job(slot).state != State::Assigned {
            return;
        }
        let now = self.now;
        if let Some(run) = self.job_mut(slot).run.as_mut() {
            run.acked_at = Some(now);
        }
        self.set_state(slot, State::Running);
        self.changed(slot, None);
    }

    /// Gives the job at `slot` (just popped from its ready heap) to worker `w`.
    fn start_attempt(&mut self, slot: u32, w: u32) {
        let now = self.now;
        self.unindex_worker(w);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let (peer, held_pos) = {
            let worker = self.workers[w as usize]
                .as_mut()
                .expect("indexed workers exist");
            worker.stamp = stamp;
            let pos = u32::try_from(worker.held.len()).unwrap_or(u32::MAX);
            worker.held.push(slot);
            (worker.peer.clone(), pos)
        };
        self.index_worker(w);
        let grace = self.config.timeout_grace;
        let slab = &mut self.slots[slot as usize];
        let job = slab.as_mut().expect("slot indexes point at live jobs");
        job.attempt = job.attempt.next();
        let deadline = (job.timeout_s > 0).then(|| {
            now.saturating_add(Millis::from_secs(u64::from(job.timeout_s)))
                .saturating_add(grace)
        });
        job.run = Some(Run {
            worker: w,
            held_pos,
            assigned_at: now,
            acked_at: None,
            deadline,
        });
        let assignment = Assignment {
            worker: peer,
            job: job.id,
            attempt: job.attempt,
            job_type: self.types[job.ty as usize].name.clone(),
            mode: job.mode,
            payload: job.payload.clone(),
            priority: job.priority,
            timeout_s: job.timeout_s,
        };
        if let Some(deadline) = deadline {
            let id = assignment.job.as_u64();
            self.deadlines
                .push(Reverse((deadline, slot, id, assignment.attempt.0)));
            self.deadlines_live += 1;
        }
        self.set_state(slot, State::Assigned);
        self.outputs.push(Output::Assign(assignment));
        self.changed(slot, None);
    }

    /// Ends the current attempt of a job: frees the worker's capacity and announces the
    /// attempt. Returns its record, for the history of a job that stays live.
    fn end_run(&mut self, slot: u32, end: AttemptEnd) -> Option<AttemptRecord> {
        let now = self.now;
        let job = self.job_mut(slot);
        let run = job.run.take()?;
        let (id, attempt) = (job.id, job.attempt);
        if run.deadline.is_some() {
            self.deadlines_live -= 1;
            if self.deadlines.len() > 2 * self.deadlines_live + COMPACT_SLACK {
                self.compact_deadlines();
            }
        }
        let w = run.worker;
        let worker = self.workers[w as usize]
            .as_ref()
            .expect("a worker outlives the attempts it holds");
        let record = AttemptRecord {
            attempt,
            worker: worker.peer.clone(),
            assigned_at: run.assigned_at,
            acked_at: run.acked_at,
            ended_at: Some(now),
            end: Some(end),
        };
        // A worker being removed has emptied its list already.
        if worker.held.get(run.held_pos as usize) == Some(&slot) {
            self.unindex_worker(w);
            let worker = self.workers[w as usize]
                .as_mut()
                .expect("checked just above");
            worker.held.swap_remove(run.held_pos as usize);
            let moved = worker.held.get(run.held_pos as usize).copied();
            if let Some(moved) = moved
                && let Some(other) = self.job_mut(moved).run.as_mut()
            {
                other.held_pos = run.held_pos;
            }
            self.index_worker(w);
        }
        self.outputs.push(Output::AttemptEnded {
            job: id,
            record: record.clone(),
        });
        Some(record)
    }

    fn compact_deadlines(&mut self) {
        let slots = &self.slots;
        self.deadlines.retain(|Reverse((t, s, id, attempt))| {
            slots[*s as usize].as_ref().is_some_and(|j| {
                j.id.as_u64() == *id
                    && j.attempt.0 == *attempt
                    && j.run.as_ref().is_some_and(|r| r.deadline == Some(*t))
            })
        });
    }

    /// Counts a failure against the job's retry budget: back to the queue after a backoff, or
    /// `failed` when the budget is spent.
    fn fail_attempt(&mut self, slot: u32, error: Arc<str>, ended: Option<AttemptRecord>) {
        let job = self.job_mut(slot);
        job.retries = job.retries.saturating_add(1);
        job.set_error(Some(error));
        let retries = job.retries;
        if retries > job.max_retry {
            self.finish(slot, State::Failed, None);
            return;
        }
        if let Some(record) = ended {
            job.cold_mut().history.push(record);
        }
        let delay = self.backoff(retries);
        let due = self.now.saturating_add(delay);
        self.job_mut(slot).due_at = due;
        self.enqueue(slot);
        self.changed(slot, None);
    }

    /// Exponential backoff with "equal jitter": the delay for failure `n` is drawn from
    /// `[d/2, d]` where `d = min(cap, base * 2^(n-1))`.
    fn backoff(&mut self, failures: u32) -> Millis {
        let shift = failures.saturating_sub(1).min(63);
        let full = self
            .config
            .retry_base
            .0
            .checked_shl(shift)
            .filter(|d| d >> shift == self.config.retry_base.0)
            .unwrap_or(u64::MAX)
            .min(self.config.retry_cap.0);
        let half = full / 2;
        Millis(half + self.rng.up_to(full - half))
    }

    /// Puts a job whose worker was lost back in the queue without spending a retry, unless it
    /// has now lost workers `crash_limit` times.
    fn lose_attempt(&mut self, slot: u32, reason: &str, ended: Option<AttemptRecord>) {
        let limit = self.config.crash_limit;
        let now = self.now;
        let job = self.job_mut(slot);
        job.losses = job.losses.saturating_add(1);
        if limit > 0 && job.losses >= limit {
            let error = format!(
                "lost its worker {} times, crash limit reached (last: {reason})",
                job.losses
            );
            job.set_error(Some(error.into()));
            self.finish(slot, State::Failed, None);
            return;
        }
        if let Some(record) = ended {
            job.cold_mut().history.push(record);
        }
        job.due_at = job.due_at.min(now);
        self.enqueue(slot);
        self.changed(slot, None);
    }

    /// Moves a live job to a terminal state, then fails, one after the other, the jobs left
    /// waiting for a dependency that can no longer complete. The list is drained iteratively so
    /// that a long chain of dependents cannot overflow the stack.
    fn finish(&mut self, slot: u32, state: State, result: Option<R>) {
        self.finish_one(slot, state, result);
        while let Some((dependent, error)) = self.cascade.pop() {
            let Some(slot) = self.live_slot(dependent) else {
                continue;
            };
            if self.job(slot).state == State::Blocked {
                self.job_mut(slot).set_error(Some(error));
                self.finish_one(slot, State::Failed, None);
            }
        }
    }

    /// Moves a live job to a terminal state, announces it, hands it over (keeping only its
    /// status) and settles the jobs that wait for it.
    fn finish_one(&mut self, slot: u32, state: State, result: Option<R>) {
        let old = self.job(slot).state;
        let ty = self.job(slot).ty;
        self.set_state(slot, state);
        if old == State::Ready {
            self.ready_entry_dropped(ty);
        }
        if state == State::Completed {
            self.job_mut(slot).set_error(None);
        }
        let mut update = self.update(slot, result);
        update.done_at = Some(self.now);
        self.outputs.push(Output::JobChanged(update));
        let id = self.retire(slot, state);
        self.settle_dependents(id, state);
    }

    /// Takes a terminal job out of the slab, keeping only its status.
    fn retire(&mut self, slot: u32, state: State) -> JobId {
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        let job = self.slots[slot as usize]
            .take()
            .expect("slot indexes point at live jobs");
        self.free_slots.push(slot);
        self.ids.insert(job.id, Known::Finished(state));
        self.live_count -= 1;
        job.id
    }

    fn settle_dependents(&mut self, id: JobId, state: State) {
        if self.dependents.is_empty() {
            return;
        }
        let Some(waiting) = self.dependents.remove(&id) else {
            return;
        };
        for (dependent, epoch) in waiting {
            let Some(slot) = self.live_slot(dependent) else {
                continue;
            };
            let job = self.job(slot);
            if job.state != State::Blocked || job.dep_epoch != epoch {
                continue;
            }
            match dependency_error(id, state) {
                None => {
                    let job = self.job_mut(slot);
                    job.unmet = job.unmet.saturating_sub(1);
                    if job.unmet == 0 {
                        self.enqueue(slot);
                    }
                }
                Some(error) => self.cascade.push((dependent, error)),
            }
        }
    }

    /// Announces the job's current state.
    fn changed(&mut self, slot: u32, result: Option<R>) {
        let update = self.update(slot, result);
        self.outputs.push(Output::JobChanged(update));
    }

    fn update(&self, slot: u32, result: Option<R>) -> JobUpdate<R> {
        let job = self.job(slot);
        JobUpdate {
            id: job.id,
            status: job.state.status(),
            attempt: job.attempt,
            worker: self.holder_peer(slot),
            error: job.error().cloned(),
            retries: job.retries,
            losses: job.losses,
            created_at: job.created_at,
            started_at: job.started_at(),
            done_at: None,
            due_at: (job.state == State::Delayed).then_some(job.due_at),
            result,
        }
    }

    /// The worker holding the job's current attempt.
    pub(crate) fn holder_peer(&self, slot: u32) -> Option<Arc<PeerId>> {
        let run = self.job(slot).run.as_ref()?;
        let worker = self.workers[run.worker as usize].as_ref()?;
        Some(worker.peer.clone())
    }

    /// The current attempt's job slot, if `worker` holds attempt `attempt` of `job`.
    fn holder(&self, worker: &PeerId, job: JobId, attempt: Attempt) -> Result<u32, StepError> {
        let reject = |reason| Err(ignored(job, attempt, worker.clone(), reason));
        let slot = match self.ids.get(&job) {
            Some(Known::Live(slot)) => *slot,
            Some(Known::Finished(done)) => return reject(IgnoreReason::Finished(done.status())),
            _ => return reject(IgnoreReason::UnknownJob),
        };
        let record = self.job(slot);
        let Some(run) = record.run.as_ref() else {
            return reject(IgnoreReason::NotAssigned);
        };
        if record.attempt != attempt {
            return reject(IgnoreReason::Stale(record.attempt));
        }
        let holder = self.workers[run.worker as usize].as_ref();
        if holder.is_none_or(|w| *w.peer != *worker) {
            return reject(IgnoreReason::Foreign);
        }
        Ok(slot)
    }

    fn not_live(&self, id: JobId, terminal: impl Fn(JobId, JobStatus) -> StepError) -> StepError {
        match self.finished_state(id) {
            Some(done) => terminal(id, done.status()),
            None => StepError::UnknownJob(id),
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&ty) = self.type_ids.get(name) {
            return ty;
        }
        let ty = u32::try_from(self.types.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = name.into();
        self.types.push(TypeQueue::new(name.clone()));
        self.type_ids.insert(name, ty);
        ty
    }

    // ---- workers ----

    fn worker_slot(&self, peer: &PeerId) -> Result<u32, StepError> {
        self.worker_ids
            .get(peer)
            .copied()
            .ok_or_else(|| StepError::UnknownWorker(peer.clone()))
    }

    fn with_worker(
        &mut self,
        peer: &PeerId,
        f: impl FnOnce(&mut Self, u32),
    ) -> Result<(), StepError> {
        let slot = self.worker_slot(peer)?;
        f(self, slot);
        Ok(())
    }

    /// Applies `change` to a worker, keeping the eligible sets in step.
    fn reindex_worker(&mut self, w: u32, change: impl FnOnce(&mut Worker)) {
        self.unindex_worker(w);
        if let Some(worker) = self.workers[w as usize].as_mut() {
            change(worker);
        }
        self.index_worker(w);
    }

    fn worker_key(&self, w: u32) -> Option<WorkerKey> {
        let worker = self.workers[w as usize].as_ref()?;
        worker.eligible().then(|| WorkerKey {
            running: worker.running(),
            capacity: worker.capacity,
            stamp: worker.stamp,
            slot: w,
        })
    }

    fn unindex_worker(&mut self, w: u32) {
        let Some(key) = self.worker_key(w) else {
            return;
        };
        let Some(worker) = self.workers[w as usize].as_ref() else {
            return;
        };
        match worker.types.as_deref() {
            None => {
                self.wildcard.remove(&key);
            }
            Some(types) => {
                for &ty in types {
                    let queue = &mut self.types[ty as usize];
                    queue.workers.remove(&key);
                    if queue.workers.is_empty()
                        && let Some(head) = queue.head
                    {
                        self.heads_typed.remove(&(head, ty));
                    }
                }
            }
        }
    }

    fn index_worker(&mut self, w: u32) {
        let Some(key) = self.worker_key(w) else {
            return;
        };
        let Some(worker) = self.workers[w as usize].as_ref() else {
            return;
        };
        match worker.types.as_deref() {
            None => {
                self.wildcard.insert(key);
            }
            Some(types) => {
                for &ty in types {
                    let queue = &mut self.types[ty as usize];
                    if queue.workers.is_empty()
                        && let Some(head) = queue.head
                    {
                        self.heads_typed.insert((head, ty));
                    }
                    queue.workers.insert(key);
                }
            }
        }
    }

    fn worker_joined(&mut self, peer: PeerId) -> u32 {
        let lease_until = self.lease_until();
        if let Some(&w) = self.worker_ids.get(&peer) {
            // A join without a leave: the worker may have restarted with another executor, so
            // it must verify again. Its attempts stay; its next heartbeat settles them.
            self.reindex_worker(w, |worker| {
                worker.verified = false;
                worker.lease_until = lease_until;
            });
            return w;
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let worker = Worker {
            peer: Arc::new(peer.clone()),
            incarnation,
            verified: false,
            paused: false,
            capacity: 1,
            types: None,
            stamp: 0,
            lease_until,
            held: Vec::new(),
        };
        let w = match self.free_workers.pop() {
            Some(w) => {
                self.workers[w as usize] = Some(worker);
                w
            }
            None => {
                self.workers.push(Some(worker));
                u32::try_from(self.workers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.worker_ids.insert(peer, w);
        if self.config.lease.is_some() {
            self.leases.push(Reverse((lease_until, w, incarnation)));
        }
        w
    }

    fn lease_until(&self) -> Millis {
        match self.config.lease {
            Some(lease) => self.now.saturating_add(lease),
            None => Millis(u64::MAX),
        }
    }

    fn worker_verified(&mut self, peer: PeerId, types: &[String], capacity: u32) {
        // A verification may overtake the join (Goop² dropped it then): create the worker.
        let w = match self.worker_ids.get(&peer) {
            Some(&w) => w,
            None => self.worker_joined(peer),
        };
        let mut interned: Vec<u32> = Vec::new();
        for name in types.iter().filter(|t| !t.is_empty()) {
            if interned.len() >= self.config.max_worker_types {
                break;
            }
            if name.len() > self.config.max_type_len {
                continue;
            }
            let ty = self.intern(name);
            if !interned.contains(&ty) {
                interned.push(ty);
            }
        }
        // Declared types that were all refused leave a worker that runs nothing, not one that
        // runs everything.
        let declared = types.iter().any(|t| !t.is_empty());
        let types = declared.then(|| interned.into_boxed_slice());
        let lease_until = self.lease_until();
        self.reindex_worker(w, |worker| {
            worker.verified = true;
            worker.types = types;
            if capacity > 0 {
                worker.capacity = capacity;
            }
            worker.lease_until = lease_until;
        });
    }

    /// Removes a worker; its attempts go back to the queue without spending a retry.
    fn remove_worker(&mut self, w: u32, reason: LeaveReason) {
        self.unindex_worker(w);
        let Some(worker) = self.workers[w as usize].as_mut() else {
            return;
        };
        // The record stays until its attempts are settled, so they can name it; with its list
        // emptied and out of the index, it gets nothing new meanwhile.
        let held = std::mem::take(&mut worker.held);
        let lost: Arc<str> = reason.as_str().into();
        for slot in held {
            let ended = self.end_run(slot, AttemptEnd::Lost(lost.clone()));
            self.lose_attempt(slot, &lost, ended);
        }
        if let Some(worker) = self.workers[w as usize].take() {
            self.worker_ids.remove(&*worker.peer);
            self.free_workers.push(w);
        }
    }

    fn heartbeat(
        &mut self,
        peer: &PeerId,
        mut running: Vec<(JobId, Attempt)>,
    ) -> Result<(), StepError> {
        let w = self.worker_slot(peer)?;
        let lease_until = self.lease_until();
        let worker_peer = {
            let worker = self.workers[w as usize].as_mut().expect("looked up above");
            worker.lease_until = lease_until;
            worker.peer.clone()
        };
        running.sort_unstable();
        running.dedup();
        for &(job, attempt) in &running {
            match self.holder(peer, job, attempt) {
                // Running it proves it arrived, whether or not the ack did.
                Ok(slot) => self.mark_running(slot),
                Err(_) => self.outputs.push(Output::Cancel {
                    worker: worker_peer.clone(),
                    job,
                    attempt,
                    reason: CancelReason::NotHeld,
                }),
            }
        }
        let held = self.workers[w as usize]
            .as_ref()
            .map(|worker| worker.held.clone())
            .unwrap_or_default();
        let grace = self.config.assign_grace;
        for slot in held {
            let job = self.job(slot);
            let Some(run) = job.run.as_ref() else {
                continue;
            };
            let reported = running.binary_search(&(job.id, job.attempt)).is_ok();
            if !reported && run.assigned_at.saturating_add(grace) <= self.now {
                let reason = "worker no longer runs it";
                let ended = self.end_run(slot, AttemptEnd::Lost(reason.into()));
                self.lose_attempt(slot, reason, ended);
            }
        }
        Ok(())
    }

    // ---- time ----

    fn fire_timers(&mut self) {
        let now = self.now;
        while let Some(&Reverse((until, w, incarnation))) = self.leases.peek() {
            if until > now {
                break;
            }
            self.leases.pop();
            let Some(worker) = self.workers[w as usize].as_ref() else {
                continue;
            };
            if worker.incarnation != incarnation {
                continue;
            }
            if worker.lease_until > now {
                self.leases
                    .push(Reverse((worker.lease_until, w, incarnation)));
                continue;
            }
            let peer = worker.peer.clone();
            self.remove_worker(w, LeaveReason::LeaseExpired);
            self.outputs.push(Output::WorkerLost {
                worker: peer,
                reason: LeaveReason::LeaseExpired,
            });
        }
        while let Some(&Reverse((deadline, slot, id, attempt))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let current = self.slots[slot as usize].as_ref().is_some_and(|j| {
                j.id.as_u64() == id
                    && j.attempt.0 == attempt
                    && j.run.as_ref().is_some_and(|r| r.deadline == Some(deadline))
            });
            if !current {
                continue;
            }
            let job = self.job(slot);
            let (job_id, timeout_s) = (job.id, job.timeout_s);
            if let Some(worker) = self.holder_peer(slot) {
                self.outputs.push(Output::Cancel {
                    worker,
                    job: job_id,
                    attempt: Attempt(attempt),
                    reason: CancelReason::TimedOut,
                });
            }
            let ended = self.end_run(slot, AttemptEnd::TimedOut);
            let error: Arc<str> = format!("timed out after {timeout_s}s").into();
            self.fail_attempt(slot, error, ended);
        }
        while let Some(&Reverse((due, slot, generation))) = self.delayed.peek() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if self.generations[slot as usize] == generation {
                self.set_state(slot, State::Ready);
                self.push_ready(slot);
            }
        }
    }

    fn announce_wakeup(&mut self) {
        let next = self.next_wakeup();
        if next != self.announced {
            self.announced = next;
            if let Some(at) = next {
                self.outputs.push(Output::WakeAt(at));
            }
        }
    }

    // ---- dispatch ----

    /// Assigns ready jobs until no ready job has an eligible worker.
    ///
    /// The best ready job overall is the first of `heads_any` when some eligible worker runs
    /// every type; otherwise it is the first of `heads_typed`, which only holds types that an
    /// eligible worker lists. Either way a job nobody can serve is never looked at, so it
    /// blocks nothing behind it.
    fn dispatch(&mut self) {
        loop {
            let best = if self.wildcard.is_empty() {
                self.heads_typed.first()
            } else {
                self.heads_any.first()
            };
            let Some(&(_, ty)) = best else {
                return;
            };
            let queue = &self.types[ty as usize];
            let worker = match (queue.workers.first(), self.wildcard.first()) {
                (Some(a), Some(b)) => Some(if a < b { a } else { b }),
                (a, b) => a.or(b),
            };
            let Some(worker) = worker.map(|k| k.slot) else {
                // Unreachable while the head sets are in step; stop rather than spin.
                return;
            };
            let Some(entry) = self.types[ty as usize].ready.pop() else {
                self.set_head(ty, None);
                continue;
            };
            if self.generations[entry.slot as usize] == entry.generation {
                self.start_attempt(entry.slot, worker);
            }
            self.sync_head(ty);
        }
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
