//! Property tests: random sequences of submits, cancels, retries, worker joins, leaves, pauses,
//! heartbeats, acks, results (stale, foreign and duplicated ones included) and ticks, checked
//! after every step against a simple model that only believes what the outputs say.
//!
//! Checked: no job is lost (every accepted job is known, with the status its last update
//! announced), none completes twice, no assignment exceeds a worker's capacity or goes to an
//! ineligible worker, terminal states are left only by a user retry, attempts only grow, reports
//! are applied exactly when the model says the sender holds the attempt, and every assignment
//! takes the best ready job its worker could serve, with no ready job left behind while an
//! eligible worker could run it.

use std::collections::{BTreeMap, BTreeSet};

use dispatcher::{
    Config, Dispatcher, Input, JobUpdate, Millis, NewJob, Output, Report, RetryJob, StepError,
};
use proptest::prelude::*;
use proto::{Attempt, JobId, JobStatus};

use super::harness::{id, peer, proptest_config, worker_number};

const TYPES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    Submit {
        ty: usize,
        priority: i32,
        max_retry: u32,
        timeout: bool,
        after: Option<usize>,
        unknown_after: bool,
    },
    /// Jobs submitted together; each may wait for an earlier one of the batch. A poisoned
    /// batch carries one bad job and must be refused whole.
    Batch {
        jobs: Vec<(usize, i32, Option<usize>)>,
        poison: Option<usize>,
    },
    Cancel(usize),
    Retry(usize),
    Join {
        worker: u32,
        types: u8,
        capacity: u32,
        verify: bool,
    },
    Leave(u32),
    Pause(u32),
    Resume(u32),
    Heartbeat {
        worker: u32,
        stale: Option<usize>,
    },
    Ack {
        job: usize,
        skew: i8,
        holder: bool,
        worker: u32,
    },
    Result {
        job: usize,
        skew: i8,
        holder: bool,
        worker: u32,
        ok: bool,
        twice: bool,
    },
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let skew = prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)];
    prop_oneof![
        6 => (0..3usize, -2..3i32, 0..3u32, any::<bool>(), proptest::option::weighted(0.3, 0..64usize), proptest::bool::weighted(0.05))
            .prop_map(|(ty, priority, max_retry, timeout, after, unknown_after)| Op::Submit {
                ty, priority, max_retry, timeout, after, unknown_after
            }),
        2 => (
            proptest::collection::vec((0..3usize, -2..3i32, proptest::option::weighted(0.4, 0..8usize)), 1..6),
            proptest::option::weighted(0.3, 0..8usize),
        )
            .prop_map(|(jobs, poison)| Op::Batch { jobs, poison }),
        1 => (0..64usize).prop_map(Op::Cancel),
        1 => (0..64usize).prop_map(Op::Retry),
        2 => (0..4u32, 0..8u8, 1..4u32, proptest::bool::weighted(0.9)).prop_map(
            |(worker, types, capacity, verify)| Op::Join { worker, types, capacity, verify }
        ),
        1 => (0..4u32).prop_map(Op::Leave),
        1 => (0..4u32).prop_map(Op::Pause),
        1 => (0..4u32).prop_map(Op::Resume),
        1 => (0..4u32, proptest::option::weighted(0.3, 0..64usize))
            .prop_map(|(worker, stale)| Op::Heartbeat { worker, stale }),
        3 => (0..64usize, skew.clone(), proptest::bool::weighted(0.8), 0..4u32)
            .prop_map(|(job, skew, holder, worker)| Op::Ack { job, skew, holder, worker }),
        5 => (0..64usize, skew, proptest::bool::weighted(0.8), 0..4u32, proptest::bool::weighted(0.7), proptest::bool::weighted(0.2))
            .prop_map(|(job, skew, holder, worker, ok, twice)| Op::Result { job, skew, holder, worker, ok, twice }),
        2 => (0..20_000u64).prop_map(Op::Tick),
    ]
}

struct ModelJob {
    id: JobId,
    /// What the shell's store would hold, for user retries.
    spec: NewJob<u32>,
    ty: usize,
    priority: i32,
    /// Queue order within a priority: submission, or the user retry that re-submitted it.
    seq: u64,
    after: Option<usize>,
    status: Option<JobStatus>,
    attempt: Attempt,
    holder: Option<u32>,
    completions: u32,
}

struct ModelWorker {
    verified: bool,
    paused: bool,
    capacity: u32,
    /// `None`: every type.
    types: Option<BTreeSet<usize>>,
    held: BTreeSet<usize>,
}

impl ModelWorker {
    fn serves(&self, ty: usize) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&ty))
    }

    fn eligible_for(&self, ty: usize) -> bool {
        self.verified && !self.paused && (self.held.len() as u32) < self.capacity && self.serves(ty)
    }
}

struct Model {
    d: Dispatcher<u32, String>,
    now: u64,
    jobs: Vec<ModelJob>,
    index: BTreeMap<JobId, usize>,
    workers: BTreeMap<u32, ModelWorker>,
    next_seq: u64,
}

impl Model {
    fn new(seed: u64) -> Self {
        let config = Config {
            retry_base: Millis(1_000),
            retry_cap: Millis(8_000),
            timeout_grace: Millis(1_000),
            lease: Some(Millis(30_000)),
            assign_grace: Millis(10_000),
            ..Config::default()
        };
        Self {
            d: Dispatcher::new(config, seed),
            now: 0,
            jobs: Vec::new(),
            index: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn pick(&self, n: usize) -> Option<usize> {
        (!self.jobs.is_empty()).then(|| n % self.jobs.len())
    }

    /// Runs one input and checks every output against the model.
    fn step(&mut self, input: Input<u32, String>, retried: Option<usize>) -> Result<(), StepError> {
        let submitted: Vec<JobId> = match &input {
            Input::Submit(job) => vec![job.id],
            Input::SubmitBatch(jobs) => jobs.iter().map(|j| j.id).collect(),
            _ => Vec::new(),
        };
        let result = self.d.step(Millis(self.now), input);
        if result.is_ok() {
            // An accepted submit is pending without an update saying so.
            for id in submitted {
                let j = self.index[&id];
                assert_eq!(self.jobs[j].status, None, "submitted twice");
                self.jobs[j].status = Some(JobStatus::Pending);
            }
        }
        let outputs: Vec<_> = self.d.drain_outputs().collect();
        let mut assigned = Vec::new();
        for output in &outputs {
            match output {
                Output::Assign(a) => {
                    let j = self.index[&a.job];
                    let w = worker_number(&a.worker);
                    let job = &mut self.jobs[j];
                    assert!(a.attempt > job.attempt, "attempts only grow");
                    assert_eq!(
                        job.status,
                        Some(JobStatus::Pending),
                        "only pending jobs are assigned"
                    );
                    job.attempt = a.attempt;
                    job.holder = Some(w);
                    let ty = job.ty;
                    let worker = self
                        .workers
                        .get_mut(&w)
                        .expect("assigned to a known worker");
                    assert!(worker.eligible_for(ty), "assigned to an ineligible worker");
                    worker.held.insert(j);
                    assert!(
                        worker.held.len() as u32 <= worker.capacity,
                        "capacity exceeded"
                    );
                    assigned.push((j, w));
                }
                Output::JobChanged(update) => self.apply_update(update, retried),
                Output::WorkerLost { worker, .. } => {
                    let w = worker_number(worker);
                    let gone = self.workers.remove(&w).expect("lost a known worker");
                    assert!(gone.held.is_empty(), "its attempts were settled first");
                }
                _ => {}
            }
        }
        self.check(&assigned);
        result
    }

    fn apply_update(&mut self, update: &JobUpdate<String>, retried: Option<usize>) {
        let j = self.index[&update.id];
        let job = &mut self.jobs[j];
        if let Some(old) = job.status {
            if old.is_terminal() && !update.status.is_terminal() {
                assert_eq!(retried, Some(j), "left {old:?} without a user retry");
            }
            if old.is_terminal() && update.status.is_terminal() {
                panic!("terminal job {j} announced again as {:?}", update.status);
            }
        }
        if update.status == JobStatus::Completed {
            job.completions += 1;
            assert_eq!(job.completions, 1, "completed twice");
        }
        job.status = Some(update.status);
        if !matches!(update.status, JobStatus::Assigned | JobStatus::Running)
            && let Some(w) = job.holder.take()
            && let Some(worker) = self.workers.get_mut(&w)
        {
            worker.held.remove(&j);
        }
    }

    fn check(&self, assigned: &[(usize, u32)]) {
        // No job lost: every job is known, with the status last announced.
        let mut total = 0;
        for job in self.jobs.iter().filter(|j| j.status.is_some()) {
            let status = self.d.status(job.id);
            assert!(status.is_some(), "job {} is lost", job.id);
            assert_eq!(status, job.status, "job {} status", job.id);
            total += 1;
        }
        let stats = self.d.stats();
        let counted = stats.pending
            + stats.assigned
            + stats.running
            + stats.completed
            + stats.failed
            + stats.cancelled;
        assert_eq!(counted, total, "stats account for every job");
        // Workers agree on what they hold.
        for view in self.d.workers() {
            let w = worker_number(view.peer);
            let model = &self.workers[&w];
            let held: BTreeSet<usize> =
                view.attempts.iter().map(|(id, _)| self.index[id]).collect();
            assert_eq!(held, model.held, "worker {w} holds");
        }
        assert_eq!(self.d.workers().len(), self.workers.len());
        // Priority order and no head-of-line blocking, over the jobs ready now.
        let ready: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| self.jobs[j].status.is_some())
            .filter(|&j| {
                self.d.job_view(self.jobs[j].id).is_some_and(|view| {
                    view.status == JobStatus::Pending
                        && view.due_at.is_none()
                        && view.waiting_on == 0
                })
            })
            .collect();
        for &k in &ready {
            let ty = self.jobs[k].ty;
            assert!(
                !self.workers.values().any(|w| w.eligible_for(ty)),
                "ready job {k} left behind while a worker could run it"
            );
            for &(j, w) in assigned {
                if self.workers.get(&w).is_some_and(|w| w.serves(ty)) {
                    let key =
                        |j: usize| (self.jobs[j].priority, std::cmp::Reverse(self.jobs[j].seq));
                    let better = key(k) > key(j);
                    assert!(!better, "job {j} assigned before better job {k}");
                }
            }
        }
    }

    /// Whether a report from `w` on attempt `attempt` of job `j` must be applied.
    fn holds(&self, w: u32, j: usize, attempt: Attempt) -> bool {
        let job = &self.jobs[j];
        job.holder == Some(w) && job.attempt == attempt
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Submit {
                ty,
                priority,
                max_retry,
                timeout,
                after,
                unknown_after,
            } => {
                let n = self.jobs.len();
                let mut job = NewJob::new(id(n as u64 + 1), TYPES[ty], 0u32);
                job.priority = priority;
                job.max_retry = max_retry;
                job.timeout_s = if timeout { 5 } else { 0 };
                let dep = after.and_then(|a| self.pick(a));
                if let Some(dep) = dep {
                    job.after.push(self.jobs[dep].id);
                }
                if unknown_after {
                    job.after.push(id(999_999));
                }
                self.jobs.push(ModelJob {
                    id: job.id,
                    spec: job.clone(),
                    ty,
                    priority,
                    seq: self.next_seq,
                    after: dep,
                    status: None,
                    attempt: Attempt(0),
                    holder: None,
                    completions: 0,
                });
                self.index.insert(job.id, n);
                self.next_seq += 1;
                let result = self.step(Input::Submit(job), None);
                if unknown_after {
                    assert!(matches!(result, Err(StepError::UnknownDependency { .. })));
                    self.index.remove(&self.jobs[n].id);
                    self.jobs.pop();
                } else {
                    // `check` found it in the dispatcher with the status the model gave it.
                    assert_eq!(result, Ok(()));
                }
            }
            Op::Batch { jobs, poison } => {
                let first = self.jobs.len();
                let mut batch = Vec::new();
                for (k, (ty, priority, after)) in jobs.into_iter().enumerate() {
                    let n = first + k;
                    let mut job = NewJob::new(id(n as u64 + 1), TYPES[ty], 0u32);
                    job.priority = priority;
                    // Within the batch, only an earlier job may be named.
                    let dep = after.filter(|a| *a < k).map(|a| first + a);
                    if let Some(dep) = dep {
                        job.after.push(id(dep as u64 + 1));
                    }
                    self.jobs.push(ModelJob {
                        id: job.id,
                        spec: job.clone(),
                        ty,
                        priority,
                        seq: self.next_seq + k as u64,
                        after: dep,
                        status: None,
                        attempt: Attempt(0),
                        holder: None,
                        completions: 0,
                    });
                    self.index.insert(job.id, n);
                    batch.push(job);
                }
                let poisoned = poison.map(|p| p % batch.len());
                if let Some(p) = poisoned {
                    batch[p].after.push(id(999_999));
                }
                let ids: Vec<JobId> = batch.iter().map(|j| j.id).collect();
                let result = self.step(Input::SubmitBatch(batch), None);
                if poisoned.is_some() {
                    assert!(matches!(result, Err(StepError::UnknownDependency { .. })));
                    for id in ids {
                        assert_eq!(self.d.status(id), None, "a refused batch leaves no trace");
                        self.index.remove(&id);
                    }
                    self.jobs.truncate(first);
                } else {
                    assert_eq!(result, Ok(()));
                    self.next_seq += ids.len() as u64;
                }
            }
            Op::Cancel(n) => {
                let Some(j) = self.pick(n) else { return };
                let terminal = self.jobs[j].status.is_some_and(JobStatus::is_terminal);
                let result = self.step(Input::Cancel(self.jobs[j].id), None);
                assert_eq!(result.is_ok(), !terminal, "{result:?}");
                if result.is_ok() {
                    assert_eq!(self.jobs[j].status, Some(JobStatus::Cancelled));
                }
            }
            Op::Retry(n) => {
                let Some(j) = self.pick(n) else { return };
                let failed = |j: usize| {
                    matches!(
                        self.jobs[j].status,
                        Some(JobStatus::Failed | JobStatus::Cancelled)
                    )
                };
                let retryable = failed(j) && !self.jobs[j].after.is_some_and(failed);
                let retry = RetryJob {
                    job: self.jobs[j].spec.clone(),
                    attempt: self.jobs[j].attempt,
                };
                let old_seq = std::mem::replace(&mut self.jobs[j].seq, self.next_seq);
                let result = self.step(Input::Retry(retry), Some(j));
                assert_eq!(result.is_ok(), retryable, "{result:?}");
                if result.is_ok() {
                    self.next_seq += 1;
                } else {
                    self.jobs[j].seq = old_seq;
                }
            }
            Op::Join {
                worker,
                types,
                capacity,
                verify,
            } => {
                let entry = self.workers.entry(worker).or_insert(ModelWorker {
                    verified: false,
                    paused: false,
                    capacity: 1,
                    types: None,
                    held: BTreeSet::new(),
                });
                entry.verified = false;
                assert_eq!(self.step(Input::WorkerJoined(peer(worker)), None), Ok(()));
                if verify {
                    let names: Vec<String> = (0..3)
                        .filter(|b| types & (1 << b) != 0)
                        .map(|b| TYPES[b].to_owned())
                        .collect();
                    let entry = self.workers.get_mut(&worker).expect("just inserted");
                    entry.verified = true;
                    entry.capacity = capacity;
                    entry.types =
                        (types != 0).then(|| (0..3).filter(|b| types & (1 << b) != 0).collect());
                    let result = self.step(
                        Input::WorkerVerified {
                            worker: peer(worker),
                            types: names,
                            capacity,
                        },
                        None,
                    );
                    assert_eq!(result, Ok(()));
                }
            }
            Op::Leave(w) => {
                // Forget it first: the check after the step expects it gone.
                let known = self.workers.remove(&w).is_some();
                let result = self.step(
                    Input::WorkerLeft {
                        worker: peer(w),
                        reason: dispatcher::LeaveReason::Left,
                    },
                    None,
                );
                assert_eq!(result.is_ok(), known);
            }
            Op::Pause(w) | Op::Resume(w) => {
                let pause = matches!(op, Op::Pause(_));
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.paused = pause;
                }
                let input = if pause {
                    Input::Pause(peer(w))
                } else {
                    Input::Resume(peer(w))
                };
                let known = self.workers.contains_key(&w);
                assert_eq!(self.step(input, None).is_ok(), known);
            }
            Op::Heartbeat { worker, stale } => {
                let Some(model) = self.workers.get(&worker) else {
                    return;
                };
                let mut running: Vec<(JobId, Attempt)> = model
                    .held
                    .iter()
                    .map(|&j| (self.jobs[j].id, self.jobs[j].attempt))
                    .collect();
                if let Some(j) = stale.and_then(|s| self.pick(s))
                    && self.jobs[j].holder != Some(worker)
                {
                    running.push((self.jobs[j].id, self.jobs[j].attempt));
                }
                let result = self.step(
                    Input::Heartbeat {
                        worker: peer(worker),
                        running,
                    },
                    None,
                );
                assert_eq!(result, Ok(()));
            }
            Op::Ack {
                job,
                skew,
                holder,
                worker,
            } => {
                let Some(j) = self.pick(job) else { return };
                let (w, attempt) = self.reporter(j, skew, holder, worker);
                let expected =
                    self.holds(w, j, attempt) && self.jobs[j].status == Some(JobStatus::Assigned);
                let result = self.step(
                    Input::Ack {
                        worker: peer(w),
                        job: self.jobs[j].id,
                        attempt,
                    },
                    None,
                );
                assert_eq!(result.is_ok(), expected, "{result:?}");
            }
            Op::Result {
                job,
                skew,
                holder,
                worker,
                ok,
                twice,
            } => {
                let Some(j) = self.pick(job) else { return };
                let (w, attempt) = self.reporter(j, skew, holder, worker);
                for round in 0..if twice { 2 } else { 1 } {
                    let expected = round == 0 && self.holds(w, j, attempt);
                    let report = if ok {
                        Report::Completed("done".to_owned())
                    } else {
                        Report::Failed("boom".to_owned())
                    };
                    let result = self.step(
                        Input::Result {
                            worker: peer(w),
                            job: self.jobs[j].id,
                            attempt,
                            report,
                        },
                        None,
                    );
                    assert_eq!(result.is_ok(), expected, "round {round}: {result:?}");
                }
            }
            Op::Tick(dt) => {
                self.now += dt;
                assert_eq!(self.step(Input::Tick, None), Ok(()));
            }
        }
    }

    /// Who reports, and on which attempt: usually the holder on the current attempt.
    fn reporter(&self, j: usize, skew: i8, holder: bool, worker: u32) -> (u32, Attempt) {
        let job = &self.jobs[j];
        let w = match (holder, job.holder) {
            (true, Some(h)) => h,
            _ => worker,
        };
        let attempt = Attempt(job.attempt.0.saturating_add_signed(i32::from(skew)));
        (w, attempt)
    }
}

proptest! {
    #![proptest_config(proptest_config("proptest-regressions/properties.txt"))]

    #[test]
    fn the_dispatcher_agrees_with_the_model(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut model = Model::new(seed);
        for op in ops {
            model.run(op);
        }
        // Drain: resume everyone, let time pass, complete what runs; nothing may stay stuck.
        let workers: Vec<u32> = model.workers.keys().copied().collect();
        for w in workers {
            model.run(Op::Resume(w));
        }
        model.run(Op::Join { worker: 9, types: 0, capacity: 1000, verify: true });
        for _ in 0..50 {
            model.run(Op::Tick(10_000));
            model.run(Op::Heartbeat { worker: 9, stale: None });
            let held: Vec<usize> = model.workers.values().flat_map(|w| w.held.iter().copied()).collect();
            for j in held {
                model.run(Op::Result { job: j, skew: 0, holder: true, worker: 0, ok: true, twice: false });
            }
        }
        for job in &model.jobs {
            prop_assert!(job.status.is_some_and(JobStatus::is_terminal), "job {} ended {:?}", job.id, job.status);
        }
    }
}
