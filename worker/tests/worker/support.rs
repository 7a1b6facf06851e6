//! Helpers: fixture paths, configurations with short grace periods, jobs, and collecting a
//! job's events with a deadline.

use std::path::PathBuf;
use std::time::Duration;

use proto::{Attempt, JobId, JobMode};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use worker::{BinaryMode, Event, EventKind, Executor, ExecutorConfig, JobSpec, Outcome};

/// Every wait in these tests is bounded by this; a hang fails the test instead of blocking it.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn config(name: &str, mode: BinaryMode) -> ExecutorConfig {
    let mut config = ExecutorConfig::new(fixture(name), mode);
    config.kill_grace = Duration::from_millis(300);
    config.done_grace = Duration::from_millis(300);
    config.shutdown_grace = Duration::from_millis(300);
    config.restart_backoff = Duration::from_millis(10);
    config
}

pub async fn start(name: &str, mode: BinaryMode) -> Executor {
    Executor::start(config(name, mode))
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

pub fn job(id: u64, payload: &str) -> JobSpec {
    JobSpec {
        id: JobId::from_u64(id),
        attempt: Attempt(1),
        job_type: "alpha".to_owned(),
        mode: JobMode::Oneshot,
        payload: RawValue::from_string(payload.to_owned())
            .expect("valid payload")
            .into(),
        timeout: None,
    }
}

/// A job's events up to and including its outcome.
pub struct Finished {
    pub events: Vec<EventKind>,
    pub outcome: Outcome,
}

impl Finished {
    pub fn result(&self) -> &str {
        match &self.outcome {
            Outcome::Completed { result } => result.get(),
            other => panic!("job did not complete: {other:?}"),
        }
    }

    pub fn failure(&self) -> &worker::Failure {
        match &self.outcome {
            Outcome::Failed(failure) => failure,
            other => panic!("job did not fail: {other:?}"),
        }
    }

    pub fn lost(&self) -> &worker::Failure {
        match &self.outcome {
            Outcome::ExecutorLost(failure) => failure,
            other => panic!("job was not lost: {other:?}"),
        }
    }
}

/// Reads events until the job finishes, within the deadline.
pub async fn finish(rx: &mut mpsc::Receiver<Event>) -> Finished {
    let mut events = Vec::new();
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = rx
                .recv()
                .await
                .expect("event channel closed before the outcome");
            match event.kind {
                EventKind::Finished(outcome) => return outcome,
                EventKind::Started => {}
                other => events.push(other),
            }
        }
    })
    .await
    .expect("job did not finish in time");
    Finished { events, outcome }
}

/// Waits for the job's first progress event, to know its process is running.
pub async fn started(rx: &mut mpsc::Receiver<Event>) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match rx.recv().await.expect("event channel closed").kind {
                EventKind::Progress { .. } => return,
                EventKind::Finished(outcome) => panic!("finished before starting: {outcome:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("job did not start in time");
}

/// Submits one job and returns its event receiver.
pub async fn submit(executor: &Executor, spec: JobSpec) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(64);
    executor.submit(spec, tx).await.expect("submit");
    rx
}

/// Runs one job to its end.
pub async fn run(executor: &Executor, spec: JobSpec) -> Finished {
    let mut rx = submit(executor, spec).await;
    finish(&mut rx).await
}

/// Polls `condition` until it holds, failing after the deadline.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the process is gone (a zombie counts as gone: it runs nothing).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

pub fn read_pid(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goop-worker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
