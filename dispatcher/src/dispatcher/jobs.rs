//! Jobs coming and going: submit, cancel, retry, forget and restore.

use std::sync::Arc;

use proto::{Attempt, JobId, JobStatus};

use super::{Dispatcher, dependency_error};
use crate::error::StepError;
use crate::io::{AttemptEnd, CancelReason, NewJob, Output, RestoredJob, RetryJob};
use crate::state::{Cold, Job, Known, State};
use crate::time::Millis;

impl<P: Clone, R> Dispatcher<P, R> {
    pub(super) fn is_known(&self, id: JobId) -> bool {
        self.ids.contains(id)
    }

    pub(crate) fn live_slot(&self, id: JobId) -> Option<u32> {
        match self.ids.get(id) {
            Some(Known::Live(slot)) => Some(slot),
            _ => None,
        }
    }

    pub(crate) fn finished_state(&self, id: JobId) -> Option<State> {
        match self.ids.get(id) {
            Some(Known::Finished(state)) => Some(state),
            _ => None,
        }
    }

    /// Marks the ids of a batch as taken while it is validated, in order, so that a job may
    /// name an earlier one of the batch in `after` but not a later one, and duplicates are
    /// caught. On error every reservation is undone.
    pub(super) fn reserve_ids<'a>(
        &mut self,
        specs: impl Iterator<Item = &'a NewJob<P>> + Clone,
        check_after: bool,
    ) -> Result<(), StepError>
    where
        P: 'a,
    {
        let mut reserved = 0;
        let mut outcome = Ok(());
        for spec in specs.clone() {
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
            if self.ids.claim(spec.id, Known::Reserved).is_none() {
                outcome = Err(StepError::DuplicateJob(spec.id));
                break;
            }
            reserved += 1;
        }
        if outcome.is_err() {
            for spec in specs.take(reserved) {
                self.ids.remove(spec.id);
            }
        }
        outcome
    }

    pub(super) fn check_spec(&self, job: &NewJob<P>) -> Result<(), StepError> {
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

    pub(super) fn check_room(&self, extra: usize) -> Result<(), StepError> {
        let live = self.live_count;
        if live.saturating_add(extra) > self.config.max_live_jobs {
            return Err(StepError::QueueFull {
                live,
                max: self.config.max_live_jobs,
            });
        }
        Ok(())
    }

    pub(super) fn submit_one(&mut self, job: NewJob<P>) -> Result<(), StepError> {
        self.check_room(1)?;
        let slot = self.place(job)?;
        self.admit(slot, true, false);
        Ok(())
    }

    /// Queues a batch, all or none. Each job is checked and placed in one pass (so its id's
    /// bucket is touched while it is still in cache); if a later one is refused, the ones
    /// already placed are taken back before anything was announced.
    pub(super) fn submit(&mut self, jobs: Vec<NewJob<P>>) -> Result<(), StepError> {
        self.check_room(jobs.len())?;
        self.ids.reserve(jobs.len());
        self.outputs.reserve(jobs.len());
        let spare = self.free_slots.len();
        self.slots.reserve(jobs.len().saturating_sub(spare));
        self.generations.reserve(jobs.len().saturating_sub(spare));
        self.run_stamps.reserve(jobs.len().saturating_sub(spare));
        if jobs.len() >= 1024 && spare <= jobs.len().saturating_mul(4) {
            // Slots come back in completion order, scattered over the slab; a large batch
            // fills them in address order instead, which the caches handle far better. The
            // bound keeps the sort's cost proportional to the batch.
            self.free_slots.sort_unstable_by(|a, b| b.cmp(a));
        }
        let mut placed = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.place(job) {
                Ok(slot) => placed.push(slot),
                Err(e) => {
                    for slot in placed.into_iter().rev() {
                        self.unplace(slot);
                    }
                    return Err(e);
                }
            }
        }
        for slot in placed {
            self.admit(slot, true, false);
        }
        Ok(())
    }

    /// Checks a submitted job against what is known (a job placed earlier in the same batch
    /// counts as known), then puts it in the slab and the id map, not yet announced or queued.
    fn place(&mut self, job: NewJob<P>) -> Result<u32, StepError> {
        self.check_spec(&job)?;
        if let Some(&dependency) = job.after.iter().find(|d| !self.is_known(**d)) {
            return Err(StepError::UnknownDependency {
                job: job.id,
                dependency,
            });
        }
        // One probe of the id map both refuses a duplicate and records the job, at the slot
        // `alloc` is about to give it: on a large queue that probe is a cache miss.
        let slot = self.next_slot();
        let Some(seq) = self.ids.claim(job.id, Known::Live(slot)) else {
            return Err(StepError::DuplicateJob(job.id));
        };
        let placed = self.insert(job, seq, None);
        debug_assert_eq!(placed, slot, "the slot alloc gave");
        Ok(slot)
    }

    /// The slot `alloc` gives next.
    fn next_slot(&self) -> u32 {
        match self.free_slots.last() {
            Some(&slot) => slot,
            None => u32::try_from(self.slots.len()).unwrap_or(u32::MAX),
        }
    }

    /// Takes back a job `place` put in, for a refused batch.
    fn unplace(&mut self, slot: u32) {
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        if let Some(job) = self.slots[slot as usize].take() {
            self.ids.remove(job.id);
            self.counts[job.state.index()] -= 1;
            self.live_count -= 1;
            self.free_slots.push(slot);
        }
    }

    /// Builds a job record in a new slab slot, in state `Blocked` until `admit` places it.
    /// `seq` is the number of the job's cell in the id map, given when its id was recorded.
    pub(super) fn insert(&mut self, spec: NewJob<P>, seq: u64, created_at: Option<Millis>) -> u32 {
        let ty = self.intern(&spec.job_type);
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

    /// Puts a job in a free slab slot. The caller records it in the id map.
    pub(super) fn alloc(&mut self, job: Job<P>) -> u32 {
        self.counts[job.state.index()] += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                let generation = &mut self.generations[slot as usize];
                *generation = generation.wrapping_add(1);
                self.run_stamps[slot as usize] = 0;
                self.slots[slot as usize] = Some(job);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(job));
                self.generations.push(0);
                self.run_stamps.push(0);
                slot
            }
        };
        self.live_count += 1;
        slot
    }

    /// Places a freshly inserted (or retried) job: registers it with the jobs it waits for,
    /// queues it and, if `announce`, announces it; or fails it (always announced) if one of
    /// them already failed.
    ///
    /// `strict` is false on restore, where a dependency the store no longer has counts as done:
    /// only terminal jobs are ever deleted, and a failed one would have failed its dependents.
    /// `announce` is false on submit: the submit's `Ok` tells the shell its jobs are pending,
    /// and a large batch would otherwise fill the output buffer with one update per job.
    pub(super) fn admit(&mut self, slot: u32, strict: bool, announce: bool) {
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
        if announce {
            self.changed(slot, None);
        }
    }

    pub(super) fn cancel(&mut self, id: JobId) -> Result<(), StepError> {
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
            self.end_last_run(slot, AttemptEnd::Cancelled);
        }
        self.finish(slot, State::Cancelled, None);
        Ok(())
    }

    pub(super) fn retry(&mut self, retry: RetryJob<P>) -> Result<(), StepError> {
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
        self.finished_known -= 1;
        // A new life: a new cell, so a new place in the submission order.
        let seq = self.ids.rebind(id, Known::Live(self.next_slot()));
        let slot = self.insert(spec, seq, None);
        self.job_mut(slot).attempt = attempt;
        self.admit(slot, true, true);
        Ok(())
    }

    pub(super) fn forget(&mut self, id: JobId) -> Result<(), StepError> {
        if let Some(state) = self.finished_state(id) {
            self.ids.remove(id);
            self.counts[state.index()] -= 1;
            self.finished_known -= 1;
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

    pub(super) fn restore(&mut self, jobs: Vec<RestoredJob<P>>) -> Result<(), StepError> {
        let live_count = jobs.iter().filter(|j| !j.status.is_terminal()).count();
        self.check_room(live_count)?;
        let mut jobs = jobs;
        // Submission order is creation order, and ids are given cells (whose numbers are the
        // jobs' sequence numbers) in the order they are reserved; the sort is stable so equal
        // times keep theirs.
        jobs.sort_by_key(|j| j.created_at);
        self.reserve_ids(jobs.iter().map(|j| &j.job), false)?;
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
            // The cell `reserve_ids` gave it: its number is the job's sequence number.
            let seq = self
                .ids
                .cell_of(spec.id)
                .expect("reserve_ids gave every restored id a cell");
            if let Some(state) = State::finished(status) {
                // The store keeps the record; the dispatcher only needs the status.
                self.ids.set_cell(seq, Known::Finished(state));
                self.counts[state.index()] += 1;
                self.remember_finished(spec.id, seq);
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
            let slot = self.insert(spec, seq, Some(created_at));
            self.ids.set_cell(seq, Known::Live(slot));
            let job = self.job_mut(slot);
            // The attempt after the stored one may have been handed out before the restart
            // and never stored (the shell holds assigned states back for a moment): it is
            // skipped, so that a report the worker sends again about it is stale rather than
            // taken for the next attempt.
            job.attempt = attempt.next();
            job.retries = retries;
            job.losses = losses;
            job.set_error(error.map(Into::into));
            if !history.is_empty() {
                job.cold_mut().history = history;
            }
            placed.push(slot);
        }
        // Every live job is written back, the skipped number with it: stored only with the
        // next assignment, which the shell holds back too, it could be lost to a second
        // crash soon after this restore, which would then hand the same number out again.
        for slot in placed {
            self.admit(slot, false, true);
        }
        Ok(())
    }

    /// Records that `id`, in cell `cell`, is now known as finished.
    pub(super) fn remember_finished(&mut self, id: JobId, cell: u64) {
        self.finished_known += 1;
        self.finished.push_back((id, cell));
    }

    /// Knows finished jobs again without counting them (see [`Input::Recall`]).
    ///
    /// [`Input::Recall`]: crate::Input::Recall
    pub(super) fn recall(&mut self, jobs: Vec<(JobId, JobStatus)>) {
        for (id, status) in jobs {
            let Some(state) = State::finished(status) else {
                continue;
            };
            if let Some(cell) = self.ids.claim(id, Known::Finished(state)) {
                self.remember_finished(id, cell);
            }
        }
    }

    /// Forgets every finished job, evicted and unloaded ones included.
    /// Forgets finished jobs the shell deleted; an evicted one only leaves the counts.
    pub(super) fn deleted(&mut self, jobs: Vec<(JobId, JobStatus)>) {
        for (id, status) in jobs {
            if self.forget(id).is_ok() || self.live_slot(id).is_some() {
                continue;
            }
            if let Some(state) = State::finished(status) {
                let count = &mut self.counts[state.index()];
                *count = count.saturating_sub(1);
            }
        }
    }

    pub(super) fn forget_finished(&mut self) {
        self.ids.forget_finished();
        for state in [State::Completed, State::Failed, State::Cancelled] {
            self.counts[state.index()] = 0;
        }
        self.finished.clear();
        self.finished_known = 0;
    }

    /// Evicts the jobs that finished longest ago while more than `max_finished` are known,
    /// keeping their counts. Stale entries of the finish order are dropped on the way, and
    /// all at once when they outnumber the finished jobs known, so the order stays
    /// proportional to what is known.
    pub(super) fn evict_finished(&mut self) {
        let max = self.config.max_finished;
        while self.finished_known > max {
            let Some((id, cell)) = self.finished.pop_front() else {
                break;
            };
            if self.ids.evict(id, cell) {
                self.finished_known -= 1;
            }
        }
        if self.finished.len() > 2 * self.finished_known + 1024 {
            let ids = &self.ids;
            self.finished.retain(|&(_, cell)| ids.is_finished(cell));
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::{Attempt, JobId, JobStatus, PeerId};

    use crate::{
        Config, Dispatcher, IgnoreReason, Input, Millis, NewJob, Output, Report, RestoredJob,
        StepError,
    };

    /// The attempt after the stored one may have gone out before a crash without reaching the
    /// store (assigned states are held back for a moment, and a stored pending job may hide
    /// one): a restore never hands out that number again, so the worker's report about the
    /// old attempt, sent again to the new host, is stale instead of taken for the new one.
    #[test]
    fn a_restore_skips_the_attempt_that_may_have_gone_out_unstored() {
        let mut d: Dispatcher<(), String> = Dispatcher::new(Config::default(), 1);
        let restored = |n: u64, status: JobStatus, attempt: u32| RestoredJob {
            job: NewJob::new(JobId::from_u64(n), "t", ()),
            status,
            attempt: Attempt(attempt),
            retries: 0,
            losses: 0,
            error: None,
            created_at: Millis(n),
            done_at: None,
            history: Vec::new(),
        };
        d.step(
            Millis(10),
            Input::Restore(vec![
                // Stored pending, never stored as assigned: attempt 1 may be out.
                restored(1, JobStatus::Pending, 0),
                // Stored running attempt 3: attempt 4 may be out.
                restored(2, JobStatus::Running, 3),
            ]),
        )
        .unwrap();
        let written: Vec<(u64, JobStatus, Attempt)> = d
            .drain_outputs()
            .filter_map(|o| match o {
                Output::JobChanged(u) => Some((u.id.as_u64(), u.status, u.attempt)),
                _ => None,
            })
            .collect();
        // Both are written back with the skipped number, so a second restart skips past it
        // even if the next assignment never reached the store.
        assert_eq!(
            written,
            [
                (1, JobStatus::Pending, Attempt(1)),
                (2, JobStatus::Pending, Attempt(4))
            ]
        );

        let worker: PeerId = "12D3KooWworker".parse().unwrap();
        d.step(Millis(20), Input::WorkerJoined(worker.clone()))
            .unwrap();
        d.step(
            Millis(20),
            Input::WorkerVerified {
                worker: worker.clone(),
                types: Vec::new(),
                capacity: 2,
            },
        )
        .unwrap();
        let assigned: Vec<(u64, Attempt)> = d
            .drain_outputs()
            .filter_map(|o| match o {
                Output::Assign(a) => Some((a.job.as_u64(), a.attempt)),
                _ => None,
            })
            .collect();
        assert_eq!(assigned, [(1, Attempt(2)), (2, Attempt(5))]);
        for (n, old) in [(1, Attempt(1)), (2, Attempt(4))] {
            let job = JobId::from_u64(n);
            let late = d.step(
                Millis(30),
                Input::Result {
                    worker: worker.clone(),
                    job,
                    attempt: old,
                    report: Report::Completed("from before the restart".to_owned()),
                },
            );
            assert!(
                matches!(
                    late,
                    Err(StepError::Ignored {
                        reason: IgnoreReason::Stale(_),
                        ..
                    })
                ),
                "{late:?}"
            );
            assert_eq!(d.status(job), Some(JobStatus::Assigned));
        }
    }

    /// Forgotten and retried jobs leave stale entries in the finish order; they are dropped
    /// once they outnumber the finished jobs known, so the order stays bounded.
    #[test]
    fn the_finish_order_stays_proportional_to_the_finished_jobs_known() {
        let mut d: Dispatcher<(), ()> = Dispatcher::new(
            Config {
                max_finished: 10,
                ..Config::default()
            },
            1,
        );
        for n in 0..20_000u64 {
            let id = JobId::from_u64(n);
            d.step(Millis(n), Input::Submit(NewJob::new(id, "t", ())))
                .unwrap();
            d.step(Millis(n), Input::Cancel(id)).unwrap();
            // Below the limit, so nothing is evicted: only the clean-up drops the entries.
            if n < 19_995 {
                d.step(Millis(n), Input::Forget(id)).unwrap();
            }
        }
        assert_eq!(d.finished_known, 5);
        assert!(
            d.finished.len() <= 2 * 5 + 1024,
            "{} entries",
            d.finished.len()
        );
        assert_eq!(d.stats().cancelled, 5);
        assert_eq!(
            d.status(JobId::from_u64(19_999)),
            Some(JobStatus::Cancelled)
        );
        assert_eq!(d.status(JobId::from_u64(19_000)), None);
    }
}
