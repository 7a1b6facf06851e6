//! Property test of the finished-job limit: random submits (some waiting for earlier jobs),
//! results, cancels, retries, forgets, prunes and clears, with the shell recalling from its "store"
//! (the model) every finished job it names that the dispatcher evicted, as the cluster host
//! does. Checked after every step: the counts include evicted jobs, no more finished jobs are
//! known than the limit, a known job has the status its last update announced, and a live job
//! is always known.

use dispatcher::{Config, Input, Output, StepError};
use proptest::prelude::*;
use proto::JobStatus;

use super::harness::{Harness, id, job, proptest_config};

#[derive(Clone, Debug)]
enum Op {
    Submit(Option<usize>),
    Result(usize, bool),
    Cancel(usize),
    Retry(usize),
    Forget(usize),
    /// The store deletes up to this many of its oldest finished jobs, known or evicted.
    Prune(usize),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        50 => proptest::option::weighted(0.4, 0..40usize).prop_map(Op::Submit),
        60 => (0..40usize, proptest::bool::weighted(0.7)).prop_map(|(j, ok)| Op::Result(j, ok)),
        10 => (0..40usize).prop_map(Op::Cancel),
        20 => (0..40usize).prop_map(Op::Retry),
        10 => (0..40usize).prop_map(Op::Forget),
        5 => (1..8usize).prop_map(Op::Prune),
        1 => Just(Op::Clear),
    ]
}

/// The shell's store: every job ever accepted, with its last announced status (`None` once
/// forgotten) and what it waits for.
struct Model {
    h: Harness,
    max: usize,
    jobs: Vec<(Option<JobStatus>, Vec<usize>)>,
}

impl Model {
    fn new(max: usize) -> Self {
        let mut h = Harness::with(Config {
            lease: None,
            max_finished: max,
            ..Config::default()
        });
        h.worker(1, &[], 1000);
        Self {
            h,
            max,
            jobs: Vec::new(),
        }
    }

    fn spec(&self, j: usize) -> dispatcher::NewJob<u32> {
        let mut spec = job(j as u64, "t");
        spec.after = self.jobs[j].1.iter().map(|&d| id(d as u64)).collect();
        spec
    }

    /// Recalls `js` where the dispatcher no longer knows them and the store has them
    /// finished.
    fn recall(&mut self, js: &[usize]) {
        let found: Vec<_> = js
            .iter()
            .filter(|&&j| self.h.d.status(id(j as u64)).is_none())
            .filter_map(|&j| {
                self.jobs[j]
                    .0
                    .filter(|s| s.is_terminal())
                    .map(|s| (id(j as u64), s))
            })
            .collect();
        if !found.is_empty() {
            self.h.ok(Input::Recall(found));
        }
    }

    fn step(&mut self, input: Input<u32, String>) -> Result<(), StepError> {
        let result = self.h.step(input);
        for out in self.h.take() {
            if let Output::JobChanged(update) = out {
                self.jobs[update.id.as_u64() as usize].0 = Some(update.status);
            }
        }
        result
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.jobs.len();
        match op {
            Op::Submit(after) => {
                let after: Vec<usize> =
                    after.filter(|_| n > 0).map(|d| d % n).into_iter().collect();
                self.recall(&after);
                self.jobs.push((Some(JobStatus::Pending), after.clone()));
                let known = after.iter().all(|&d| self.jobs[d].0.is_some());
                let result = self.step(Input::Submit(self.spec(n)));
                prop_assert_eq!(
                    result.is_ok(),
                    known,
                    "submit after {:?}: {:?}",
                    after,
                    result
                );
                if result.is_err() {
                    self.jobs.pop();
                }
            }
            Op::Result(j, ok) if j < n => {
                if let Some(view) = self.h.d.job_view(id(j as u64))
                    && matches!(view.status, JobStatus::Assigned | JobStatus::Running)
                {
                    let attempt = view.attempt;
                    self.h.report(1, j as u64, attempt, ok).map_err(fail)?;
                    self.step(Input::Tick).map_err(fail)?;
                }
            }
            Op::Cancel(j) if j < n => {
                let live = self.jobs[j].0.is_some_and(|s| !s.is_terminal());
                let result = self.step(Input::Cancel(id(j as u64)));
                prop_assert_eq!(result.is_ok(), live);
            }
            Op::Retry(j) if j < n => {
                let Some(status) = self.jobs[j].0 else {
                    return Ok(());
                };
                if !matches!(status, JobStatus::Failed | JobStatus::Cancelled) {
                    return Ok(());
                }
                let mut named = self.jobs[j].1.clone();
                named.push(j);
                self.recall(&named);
                let deps_ok = self.jobs[j].1.iter().all(|&d| {
                    self.jobs[d]
                        .0
                        .is_some_and(|s| !matches!(s, JobStatus::Failed | JobStatus::Cancelled))
                });
                let spec = self.spec(j);
                let result = self.step(Input::Retry(dispatcher::RetryJob {
                    job: spec,
                    attempt: proto::Attempt(0),
                }));
                prop_assert_eq!(result.is_ok(), deps_ok, "retry {}: {:?}", j, result);
                if result.is_ok() {
                    self.jobs[j].0 = self.h.d.status(id(j as u64));
                }
            }
            Op::Forget(j) if j < n && self.jobs[j].0.is_some_and(JobStatus::is_terminal) => {
                self.recall(&[j]);
                self.step(Input::Forget(id(j as u64))).map_err(fail)?;
                self.jobs[j].0 = None;
            }
            Op::Prune(most) => {
                let oldest: Vec<usize> = (0..n)
                    .filter(|&j| self.jobs[j].0.is_some_and(JobStatus::is_terminal))
                    .take(most)
                    .collect();
                let deleted = oldest
                    .iter()
                    .filter_map(|&j| Some((id(j as u64), self.jobs[j].0?)))
                    .collect();
                self.step(Input::Deleted(deleted)).map_err(fail)?;
                for j in oldest {
                    self.jobs[j].0 = None;
                }
            }
            Op::Clear => {
                self.step(Input::ForgetFinished).map_err(fail)?;
                for job in &mut self.jobs {
                    job.0 = job.0.filter(|s| !s.is_terminal());
                }
            }
            _ => {}
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let count = |s: JobStatus| self.jobs.iter().filter(|j| j.0 == Some(s)).count();
        let stats = self.h.d.stats();
        prop_assert_eq!(stats.completed, count(JobStatus::Completed));
        prop_assert_eq!(stats.failed, count(JobStatus::Failed));
        prop_assert_eq!(stats.cancelled, count(JobStatus::Cancelled));
        let mut finished_known = 0;
        for (j, (status, _)) in self.jobs.iter().enumerate() {
            let seen = self.h.d.status(id(j as u64));
            match status {
                None => prop_assert_eq!(seen, None, "job {} was forgotten", j),
                Some(s) if s.is_terminal() => {
                    prop_assert!(
                        seen.is_none() || seen == Some(*s),
                        "job {}: {:?} vs {:?}",
                        j,
                        seen,
                        s
                    );
                    finished_known += usize::from(seen.is_some());
                }
                Some(_) => prop_assert!(
                    seen.is_some_and(|s| !s.is_terminal()),
                    "live job {} is {:?}",
                    j,
                    seen
                ),
            }
        }
        prop_assert!(
            finished_known <= self.max,
            "{} finished known, limit {}",
            finished_known,
            self.max
        );
        Ok(())
    }
}

fn fail(error: StepError) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

proptest! {
    #![proptest_config(proptest_config("proptest-regressions/eviction.txt"))]

    #[test]
    fn evicted_jobs_keep_their_counts_and_come_back_when_recalled(
        max in 0..6usize,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut model = Model::new(max);
        for op in ops {
            model.run(op)?;
        }
    }
}
