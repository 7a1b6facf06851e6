//! A small driver around the dispatcher: names workers and jobs by number, keeps the clock,
//! and collects outputs.

use dispatcher::{
    Assignment, AttemptRecord, CancelReason, Config, Dispatcher, Input, JobUpdate, Millis, NewJob,
    Output, Report, RetryJob, StepError,
};
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use proto::{Attempt, JobId, JobStatus, PeerId};

pub(crate) type Disp = Dispatcher<u32, String>;

/// The property tests' settings: 200 cases keep the crate's tests fast, and
/// `PROPTEST_CASES=20000` makes a soak run. Failing cases are saved in
/// `dispatcher/proptest-regressions/<file>` (tests run from the crate directory) and replayed
/// first on every later run.
pub(crate) fn proptest_config(file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}
pub(crate) type Out = Output<u32, String>;

pub(crate) fn peer(n: u32) -> PeerId {
    format!("worker{n}").parse().expect("valid peer id")
}

pub(crate) fn id(n: u64) -> JobId {
    JobId::from_u64(n)
}

pub(crate) fn job(n: u64, job_type: &str) -> NewJob<u32> {
    NewJob::new(id(n), job_type, u32::try_from(n).unwrap_or(0))
}

pub(crate) struct Harness {
    pub(crate) d: Disp,
    pub(crate) now: u64,
    pub(crate) out: Vec<Out>,
    /// Every output ever, for what the dispatcher no longer holds (terminal jobs).
    pub(crate) log: Vec<Out>,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with(Config {
            lease: None,
            ..Config::default()
        })
    }

    pub(crate) fn with(config: Config) -> Self {
        Self {
            d: Dispatcher::new(config, 42),
            now: 0,
            out: Vec::new(),
            log: Vec::new(),
        }
    }

    pub(crate) fn step(&mut self, input: Input<u32, String>) -> Result<(), StepError> {
        let result = self.d.step(Millis(self.now), input);
        let start = self.out.len();
        self.d.take_outputs(&mut self.out);
        self.log.extend_from_slice(&self.out[start..]);
        result
    }

    pub(crate) fn ok(&mut self, input: Input<u32, String>) {
        if let Err(e) = self.step(input) {
            panic!("step refused: {e}");
        }
    }

    pub(crate) fn at(&mut self, now: u64) {
        self.now = now;
        self.ok(Input::Tick);
    }

    pub(crate) fn submit(&mut self, job: NewJob<u32>) {
        self.ok(Input::Submit(job));
    }

    /// A verified worker with these types (empty: all) and capacity.
    pub(crate) fn worker(&mut self, n: u32, types: &[&str], capacity: u32) {
        self.ok(Input::WorkerJoined(peer(n)));
        self.ok(Input::WorkerVerified {
            worker: peer(n),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            capacity,
        });
    }

    /// Takes the assignments produced since the last call, in order.
    pub(crate) fn assigns(&mut self) -> Vec<Assignment<u32>> {
        let out = std::mem::take(&mut self.out);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Assign(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Takes the outputs produced since the last call.
    pub(crate) fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// (worker number, job number) of each new assignment.
    pub(crate) fn pairs(&mut self) -> Vec<(u32, u64)> {
        self.assigns()
            .into_iter()
            .map(|a| (worker_number(&a.worker), a.job.as_u64()))
            .collect()
    }

    pub(crate) fn status(&self, n: u64) -> JobStatus {
        self.d.status(id(n)).expect("job exists")
    }

    /// The last update announced for a job.
    pub(crate) fn last(&self, n: u64) -> JobUpdate<String> {
        self.log
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::JobChanged(u) if u.id == id(n) => Some(u.clone()),
                _ => None,
            })
            .expect("an update for the job")
    }

    /// Every attempt of a job announced as ended, oldest first.
    pub(crate) fn ended(&self, n: u64) -> Vec<AttemptRecord> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::AttemptEnded { job, record } if *job == id(n) => Some(record.clone()),
                _ => None,
            })
            .collect()
    }

    /// A user retry, with the spec the shell would load from its store.
    pub(crate) fn retry(&mut self, spec: NewJob<u32>) -> Result<(), StepError> {
        let attempt = self
            .ended(spec.id.as_u64())
            .last()
            .map_or(Attempt(0), |r| r.attempt);
        self.step(Input::Retry(RetryJob { job: spec, attempt }))
    }

    pub(crate) fn attempt(&self, n: u64) -> Attempt {
        self.d.job_view(id(n)).expect("job exists").attempt
    }

    pub(crate) fn result(&mut self, w: u32, n: u64, ok: bool) -> Result<(), StepError> {
        let attempt = self.attempt(n);
        self.report(w, n, attempt, ok)
    }

    pub(crate) fn report(
        &mut self,
        w: u32,
        n: u64,
        attempt: Attempt,
        ok: bool,
    ) -> Result<(), StepError> {
        let report = if ok {
            Report::Completed(format!("result {n}"))
        } else {
            Report::Failed(format!("boom {n}"))
        };
        self.step(Input::Result {
            worker: peer(w),
            job: id(n),
            attempt,
            report,
        })
    }
}

pub(crate) fn worker_number(peer: &PeerId) -> u32 {
    peer.as_str()
        .trim_start_matches("worker")
        .parse()
        .expect("harness peer")
}

pub(crate) fn updates(out: &[Out]) -> Vec<&JobUpdate<String>> {
    out.iter()
        .filter_map(|o| match o {
            Output::JobChanged(u) => Some(u),
            _ => None,
        })
        .collect()
}

pub(crate) fn cancels(out: &[Out]) -> Vec<(u32, u64, CancelReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cancel {
                worker,
                job,
                reason,
                ..
            } => Some((worker_number(worker), job.as_u64(), *reason)),
            _ => None,
        })
        .collect()
}
