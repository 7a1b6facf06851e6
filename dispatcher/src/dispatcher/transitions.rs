//! How a live job moves between states: queueing, attempts, failures, losses, the end.

use std::cmp::Reverse;
use std::sync::Arc;

use proto::{Attempt, JobId, JobStatus, PeerId};

use super::{COMPACT_SLACK, Dispatcher, dependency_error, ignored};
use crate::error::{IgnoreReason, StepError};
use crate::index::{HeadKey, ReadyEntry, TypeQueue, relink};
use crate::io::{Assignment, AttemptEnd, AttemptRecord, JobUpdate, Output};
use crate::state::{Job, Known, Run, State};
use crate::time::Millis;

impl<P: Clone, R> Dispatcher<P, R> {
    pub(crate) fn job(&self, slot: u32) -> &Job<P> {
        self.slots[slot as usize]
            .as_ref()
            .expect("slot indexes point at live jobs")
    }

    pub(super) fn job_mut(&mut self, slot: u32) -> &mut Job<P> {
        self.slots[slot as usize]
            .as_mut()
            .expect("slot indexes point at live jobs")
    }

    pub(super) fn job_state(&self, slot: u32) -> Option<State> {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|j| j.state)
    }

    /// Moves a live job to `state`, keeping the counts and the slot generation in step.
    pub(super) fn set_state(&mut self, slot: u32, state: State) {
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
    pub(super) fn enqueue(&mut self, slot: u32) {
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

    pub(super) fn push_ready(&mut self, slot: u32) {
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

    /// Mirrors a type's new head in the head heaps.
    pub(super) fn set_head(&mut self, ty: u32, head: Option<HeadKey>) {
        let queue = &mut self.types[ty as usize];
        queue.head = head;
        let key = head.map(|head| (head, ty));
        relink(&mut self.heads_any, &mut queue.any_link, key);
        if !queue.workers.is_empty() {
            relink(&mut self.heads_typed, &mut queue.typed_link, key);
        }
    }

    /// Drops stale entries off the front of a type's ready queue and updates its head.
    pub(super) fn sync_head(&mut self, ty: u32) {
        let generations = &self.generations;
        let queue = &mut self.types[ty as usize];
        let front = queue
            .ready
            .clean_front(|e| generations[e.slot as usize] == e.generation);
        let head = front.map(|(key, entry)| {
            // The head is the next job of this type to be picked: start fetching its record
            // now, so that on a queue too large for the caches the pick does not wait for it.
            prefetch(&self.slots[entry.slot as usize]);
            prefetch(&self.run_stamps[entry.slot as usize]);
            key
        });
        if head != queue.head {
            self.set_head(ty, head);
        }
    }

    /// After a ready job left its queue other than by being picked.
    pub(super) fn ready_entry_dropped(&mut self, ty: u32) {
        let queue = &mut self.types[ty as usize];
        if queue.ready.len() > 2 * queue.live + 64 {
            let generations = &self.generations;
            queue
                .ready
                .retain(|e| generations[e.slot as usize] == e.generation);
        }
        self.sync_head(ty);
    }

    pub(super) fn mark_running(&mut self, slot: u32) {
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
    pub(super) fn start_attempt(&mut self, slot: u32, w: u32) {
        let now = self.now;
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
        self.rekey_worker(w);
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
        self.inflight.insert(job.id, slot);
        self.run_stamps[slot as usize] = stamp;
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
            self.deadlines.push(Reverse((deadline, slot, id, stamp)));
            self.deadlines_live += 1;
        }
        self.set_state(slot, State::Assigned);
        self.outputs.push(Output::Assign(assignment));
        self.changed(slot, None);
    }

    /// Ends the current attempt of a job: frees the worker's capacity and announces the
    /// attempt. Returns its record, for the history of a job that may stay live.
    pub(super) fn end_run(&mut self, slot: u32, end: AttemptEnd) -> Option<AttemptRecord> {
        let (job, record) = self.close_run(slot, end)?;
        self.outputs.push(Output::AttemptEnded {
            job,
            record: record.clone(),
        });
        Some(record)
    }

    /// Ends the current attempt of a job that is about to finish, which keeps no history:
    /// the record only goes to the shell.
    pub(super) fn end_last_run(&mut self, slot: u32, end: AttemptEnd) {
        if let Some((job, record)) = self.close_run(slot, end) {
            self.outputs.push(Output::AttemptEnded { job, record });
        }
    }

    /// Ends the current attempt of a job and frees the worker's capacity; the caller announces
    /// the record.
    fn close_run(&mut self, slot: u32, end: AttemptEnd) -> Option<(JobId, AttemptRecord)> {
        let now = self.now;
        let job = self.job_mut(slot);
        let run = job.run.take()?;
        let (id, attempt) = (job.id, job.attempt);
        self.inflight.remove(&id);
        self.run_stamps[slot as usize] = 0;
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
            // Its heap entries are brought up to date when the step dispatches.
            self.released.push(w);
        }
        Some((id, record))
    }

    /// Whether a deadline entry belongs to an attempt still in flight.
    pub(super) fn deadline_is_live(&self, slot: u32, stamp: u64) -> bool {
        self.run_stamps[slot as usize] == stamp
    }

    pub(super) fn compact_deadlines(&mut self) {
        let run_stamps = &self.run_stamps;
        self.deadlines
            .retain(|&Reverse((_, slot, _, stamp))| run_stamps[slot as usize] == stamp);
    }

    /// Counts a failure against the job's retry budget: back to the queue after a backoff, or
    /// `failed` when the budget is spent.
    pub(super) fn fail_attempt(
        &mut self,
        slot: u32,
        error: Arc<str>,
        ended: Option<AttemptRecord>,
    ) {
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
    pub(super) fn backoff(&mut self, failures: u32) -> Millis {
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
    pub(super) fn lose_attempt(&mut self, slot: u32, reason: &str, ended: Option<AttemptRecord>) {
        let limit = self.config.crash_limit;
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
        self.requeue_attempt(slot, ended);
    }

    /// Puts a job whose attempt ended through no fault of its own back in the queue at once,
    /// with the attempt's record (`ended`), spending nothing.
    pub(super) fn requeue_attempt(&mut self, slot: u32, ended: Option<AttemptRecord>) {
        let now = self.now;
        let job = self.job_mut(slot);
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
    pub(super) fn finish(&mut self, slot: u32, state: State, result: Option<R>) {
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
    pub(super) fn finish_one(&mut self, slot: u32, state: State, result: Option<R>) {
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
    pub(super) fn retire(&mut self, slot: u32, state: State) -> JobId {
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        let job = self.slots[slot as usize]
            .take()
            .expect("slot indexes point at live jobs");
        self.free_slots.push(slot);
        // Through the job's cell: no hash lookup of its id.
        self.ids.set_cell(job.seq, Known::Finished(state));
        self.live_count -= 1;
        self.remember_finished(job.id, job.seq);
        job.id
    }

    pub(super) fn settle_dependents(&mut self, id: JobId, state: State) {
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
    pub(super) fn changed(&mut self, slot: u32, result: Option<R>) {
        let update = self.update(slot, result);
        self.outputs.push(Output::JobChanged(update));
    }

    pub(super) fn update(&self, slot: u32, result: Option<R>) -> JobUpdate<R> {
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
    pub(super) fn holder(
        &self,
        worker: &PeerId,
        job: JobId,
        attempt: Attempt,
    ) -> Result<u32, StepError> {
        let reject = |reason| Err(ignored(job, attempt, worker.clone(), reason));
        // Valid reports are about attempts in flight: the small map answers them from cache.
        let slot = match self.inflight.get(&job) {
            Some(&slot) => slot,
            None => match self.ids.get(job) {
                Some(Known::Live(_)) => return reject(IgnoreReason::NotAssigned),
                Some(Known::Finished(done)) => {
                    return reject(IgnoreReason::Finished(done.status()));
                }
                _ => return reject(IgnoreReason::UnknownJob),
            },
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

    pub(super) fn not_live(
        &self,
        id: JobId,
        terminal: impl Fn(JobId, JobStatus) -> StepError,
    ) -> StepError {
        match self.finished_state(id) {
            Some(done) => terminal(id, done.status()),
            None => StepError::UnknownJob(id),
        }
    }

    pub(super) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&ty) = self.type_ids.get(name) {
            return ty;
        }
        let ty = u32::try_from(self.types.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = name.into();
        self.types.push(TypeQueue::new(name.clone()));
        self.type_ids.insert(name, ty);
        ty
    }
}

/// Asks the processor to bring the cache lines of `value` in, without waiting for them. A
/// hint: it changes no state, and does nothing on other architectures.
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start: *const i8 = std::ptr::from_ref(value).cast();
        let size = std::mem::size_of::<T>();
        // Every line the value touches: one per 64 bytes from its start, and the line of its
        // last byte (a value need not start on a line).
        for offset in (0..size).step_by(64).chain(size.checked_sub(1)) {
            #[expect(unsafe_code, reason = "the prefetch intrinsic is an unsafe fn")]
            // SAFETY: `_mm_prefetch` only hints the cache: it reads nothing the program sees
            // and cannot fault. The address lies inside `value`, and SSE is part of every
            // x86_64 target.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
