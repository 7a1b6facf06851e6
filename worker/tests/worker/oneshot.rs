//! Oneshot mode: a process per job, against executors that behave and executors that do not.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use proto::{JobId, JobMode};
use serde_json::Value;
use tokio::sync::mpsc;
use worker::{BinaryMode, EventKind, Executor, ExecutorStatus, FailureKind, LogStream, Outcome};

use crate::support::{
    config, eventually, finish, fixture, job, process_gone, read_pid, run, start, started, submit,
    temp_dir,
};

const ONESHOT: BinaryMode = BinaryMode::Oneshot;

#[tokio::test]
async fn results_pass_through_with_every_digit() {
    let executor = start("echo.py", ONESHOT).await;
    let payload = r#"{"n":12345678901234567890,"big":99999999999999999999999,"f":0.1}"#;
    let done = run(&executor, job(1, payload)).await;
    assert_eq!(done.result(), payload);
    executor.shutdown().await;
}

#[tokio::test]
async fn the_job_line_and_environment_are_what_goop2_sends_plus_mode_and_attempt() {
    let executor = start("echo.py", ONESHOT).await;
    let mut spec = job(0xabc, r#"{"do":"line"}"#);
    spec.timeout = Some(Duration::from_millis(29_500));
    spec.mode = JobMode::Continuous;
    spec.attempt = proto::Attempt(7);
    let done = run(&executor, spec).await;
    let line: Value = serde_json::from_str(done.result()).unwrap();
    assert_eq!(line["job_id"], "0000000000000abc");
    assert_eq!(line["type"], "alpha");
    assert_eq!(line["payload"]["do"], "line");
    assert_eq!(line["timeout_s"], 30);
    assert_eq!(line["mode"], "continuous");
    assert_eq!(line["attempt"], 7);

    let done = run(&executor, job(0xdef, r#"{"do":"env"}"#)).await;
    let env: Value = serde_json::from_str(done.result()).unwrap();
    assert_eq!(env["GOOP_JOB_ID"], "0000000000000def");
    assert_eq!(env["GOOP_JOB_TYPE"], "alpha");
    assert_eq!(env["GOOP_ATTEMPT"], "1");
    executor.shutdown().await;
}

#[tokio::test]
async fn a_goop2_executor_runs_unchanged() {
    let executor = start("goop2_style.sh", ONESHOT).await;
    let done = run(&executor, job(5, r#"{"frame":1}"#)).await;
    let result: Value = serde_json::from_str(done.result()).unwrap();
    assert_eq!(result["input"]["job_id"], "0000000000000005");
    assert_eq!(result["input"]["payload"]["frame"], 1);
    assert!(matches!(
        done.events.as_slice(),
        [EventKind::Progress { pct, msg }] if *pct == 50.0 && msg == "half"
    ));
    executor.shutdown().await;
}

#[tokio::test]
async fn progress_logs_output_and_garbage_become_events() {
    let executor = start("echo.py", ONESHOT).await;
    let done = run(&executor, job(2, r#"{"do":"chatty"}"#)).await;
    assert_eq!(done.result(), r#"{"ok":true}"#);
    let mut progress = Vec::new();
    let mut stdout_logs = Vec::new();
    let mut stderr_logs = Vec::new();
    let mut outputs = Vec::new();
    for event in &done.events {
        match event {
            EventKind::Progress { pct, msg } => progress.push((*pct, msg.clone())),
            EventKind::Log {
                stream: LogStream::Stdout,
                line,
            } => stdout_logs.push(line.clone()),
            EventKind::Log {
                stream: LogStream::Stderr,
                line,
            } => stderr_logs.push(line.clone()),
            EventKind::Output(data) => outputs.push(data.get().to_owned()),
            EventKind::Started | EventKind::Finished(_) => unreachable!(),
        }
    }
    assert_eq!(progress, [(12.5, "a".to_owned()), (50.0, "b".to_owned())]);
    assert_eq!(
        stdout_logs,
        ["note", "not json at all", r#"{"status":"weird"}"#, "[1,2]"]
    );
    assert_eq!(stderr_logs, ["err line"]);
    assert_eq!(outputs, [r#"{"part":1}"#]);
    executor.shutdown().await;
}

#[tokio::test]
async fn an_error_line_is_kept_verbatim_with_the_stderr_tail() {
    let executor = start("echo.py", ONESHOT).await;
    let text = "Bad input: \"x\" <at> line 3 & more";
    let payload = serde_json::json!({"do": "error", "text": text}).to_string();
    let done = run(&executor, job(3, &payload)).await;
    let failure = done.failure();
    assert_eq!(failure.kind, FailureKind::ErrorLine);
    assert_eq!(failure.message, text);
    assert_eq!(failure.stderr_tail.as_deref(), Some("about to fail"));
    executor.shutdown().await;
}

#[tokio::test]
async fn keys_match_in_any_case_and_the_last_duplicate_wins() {
    let executor = start("echo.py", ONESHOT).await;
    let done = run(&executor, job(4, r#"{"do":"case"}"#)).await;
    assert_eq!(done.result(), r#"{"x":2}"#);
    executor.shutdown().await;
}

#[tokio::test]
async fn exits_without_a_result_say_how_the_process_ended() {
    let executor = start("echo.py", ONESHOT).await;
    let done = run(
        &executor,
        job(1, r#"{"do":"exit","code":3,"stderr":"disk full\n"}"#),
    )
    .await;
    assert_eq!(done.failure().kind, FailureKind::Exited);
    assert_eq!(done.failure().message, "exited with status 3");
    assert_eq!(done.failure().stderr_tail.as_deref(), Some("disk full"));

    let done = run(&executor, job(2, r#"{"do":"selfkill"}"#)).await;
    assert_eq!(done.failure().kind, FailureKind::Signaled);
    assert_eq!(done.failure().message, "killed by signal 9 (SIGKILL)");

    let done = run(&executor, job(3, r#"{"do":"noresult"}"#)).await;
    assert_eq!(done.failure().kind, FailureKind::NoResult);
    assert_eq!(done.failure().message, "executor produced no result");

    // An empty error text falls through to the exit status, as in Goop².
    let done = run(&executor, job(4, r#"{"do":"empty_error","code":4}"#)).await;
    assert_eq!(done.failure().message, "exited with status 4");
    let done = run(&executor, job(5, r#"{"do":"empty_error","code":0}"#)).await;
    assert_eq!(done.failure().message, "executor produced no result");
    executor.shutdown().await;
}

#[tokio::test]
async fn a_hang_times_out_and_says_so() {
    let executor = start("echo.py", ONESHOT).await;
    let mut spec = job(1, r#"{"do":"sleep","secs":1000}"#);
    spec.timeout = Some(Duration::from_millis(300));
    let done = run(&executor, spec).await;
    assert_eq!(done.failure().kind, FailureKind::TimedOut);
    assert_eq!(done.failure().message, "timed out after 0.3s");
    executor.shutdown().await;
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_the_grace() {
    let executor = start("ignore_term.sh", ONESHOT).await;
    let mut spec = job(1, "null");
    spec.timeout = Some(Duration::from_secs(1));
    let begun = Instant::now();
    let mut rx = submit(&executor, spec).await;
    // The executor says when its trap is set, so the SIGTERM is sure to be ignored.
    started(&mut rx).await;
    let done = finish(&mut rx).await;
    assert_eq!(done.failure().message, "timed out after 1s");
    // The 300 ms grace was spent waiting for a SIGTERM that did nothing.
    assert!(begun.elapsed() >= Duration::from_millis(1300));
    executor.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_the_process_and_says_cancelled() {
    let executor = start("echo.py", ONESHOT).await;
    let mut rx = submit(&executor, job(1, r#"{"do":"sleep","secs":1000}"#)).await;
    started(&mut rx).await;
    executor.cancel(JobId::from_u64(1)).await;
    let done = finish(&mut rx).await;
    assert!(
        matches!(done.outcome, Outcome::Cancelled),
        "{:?}",
        done.outcome
    );
    executor.shutdown().await;
}

#[tokio::test]
async fn a_queued_job_is_cancelled_without_running() {
    let mut config = config("echo.py", ONESHOT);
    config.capacity_override = NonZeroU32::new(1);
    let executor = Executor::start(config).await.unwrap();
    assert_eq!(executor.capacity(), 1);
    let mut first = submit(&executor, job(1, r#"{"do":"sleep","secs":1000}"#)).await;
    started(&mut first).await;
    let mut second = submit(&executor, job(2, r#"{"do":"line"}"#)).await;
    executor.cancel(JobId::from_u64(2)).await;
    let done = finish(&mut second).await;
    assert!(matches!(done.outcome, Outcome::Cancelled));
    assert!(done.events.is_empty());
    executor.cancel(JobId::from_u64(1)).await;
    assert!(matches!(
        finish(&mut first).await.outcome,
        Outcome::Cancelled
    ));
    executor.shutdown().await;
}

#[tokio::test]
async fn a_grandchild_holding_stdout_does_not_hang_the_job_and_dies() {
    let dir = temp_dir("grandchild");
    let pidfile = dir.join("pid");
    let executor = start("echo.py", ONESHOT).await;
    let payload = serde_json::json!({"do": "grandchild", "pidfile": pidfile}).to_string();
    let done = run(&executor, job(1, &payload)).await;
    assert_eq!(done.result(), r#""left a child""#);
    let pid = read_pid(&pidfile);
    crate::support::eventually("the grandchild to die", || process_gone(pid)).await;
    executor.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn stopping_a_job_kills_its_whole_process_group() {
    // Timeout and cancel share the kill; cancel is used so the test need not guess how long
    // python takes to start and write its pid file.
    let dir = temp_dir("group-kill");
    let pidfile = dir.join("pid");
    let executor = start("echo.py", ONESHOT).await;
    let payload =
        serde_json::json!({"do": "grandchild", "pidfile": pidfile, "then": "hang"}).to_string();
    let mut rx = submit(&executor, job(1, &payload)).await;
    started(&mut rx).await;
    let pid = read_pid(&pidfile);
    executor.cancel(JobId::from_u64(1)).await;
    assert!(matches!(finish(&mut rx).await.outcome, Outcome::Cancelled));
    crate::support::eventually("the grandchild to die", || process_gone(pid)).await;
    executor.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn after_done_the_executor_gets_a_grace_then_is_killed() {
    let executor = start("echo.py", ONESHOT).await;
    let done = run(&executor, job(1, r#"{"do":"linger"}"#)).await;
    assert_eq!(done.result(), "1");
    executor.shutdown().await;
}

#[tokio::test]
async fn a_20_mib_line_fails_the_job_naming_the_limit() {
    let executor = start("echo.py", ONESHOT).await;
    let payload = format!(r#"{{"do":"big","bytes":{}}}"#, 20 << 20);
    let done = run(&executor, job(1, &payload)).await;
    let failure = done.failure();
    assert_eq!(failure.kind, FailureKind::LineTooLong);
    assert!(
        failure.message.contains("over the limit of 16777216 bytes"),
        "{}",
        failure.message
    );
    executor.shutdown().await;
}

#[tokio::test]
async fn the_line_limit_is_configurable() {
    let mut config = config("echo.py", ONESHOT);
    config.max_line_bytes = 1000;
    let executor = Executor::start(config).await.unwrap();
    let done = run(&executor, job(1, r#"{"do":"big","bytes":2000}"#)).await;
    assert!(
        done.failure()
            .message
            .contains("over the limit of 1000 bytes")
    );
    let done = run(&executor, job(2, r#"{"do":"big","bytes":500}"#)).await;
    assert_eq!(done.result().len(), 502);
    executor.shutdown().await;
}

#[tokio::test]
async fn a_slow_event_reader_loses_only_progress() {
    let executor = start("echo.py", ONESHOT).await;
    let (tx, mut rx) = mpsc::channel(2);
    executor
        .submit(job(1, r#"{"do":"progress_flood","n":5000}"#), tx)
        .await
        .unwrap();
    let done = finish(&mut rx).await;
    assert_eq!(done.result(), "5000");
    assert!(done.events.len() <= 5000);
    executor.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_job_id_is_refused() {
    let executor = start("echo.py", ONESHOT).await;
    let mut first = submit(&executor, job(1, r#"{"do":"sleep","secs":1000}"#)).await;
    started(&mut first).await;
    let done = run(&executor, job(1, "null")).await;
    assert_eq!(done.failure().kind, FailureKind::Rejected);
    executor.cancel(JobId::from_u64(1)).await;
    assert!(matches!(
        finish(&mut first).await.outcome,
        Outcome::Cancelled
    ));
    executor.shutdown().await;
}

#[tokio::test]
async fn jobs_run_concurrently_up_to_the_capacity() {
    // Four sleeping jobs with capacity 4 all start before any of them ends.
    let executor = start("echo.py", ONESHOT).await;
    assert_eq!(executor.capacity(), 4);
    let mut receivers = Vec::new();
    for id in 1..=4 {
        receivers.push(submit(&executor, job(id, r#"{"do":"sleep","secs":1000}"#)).await);
    }
    for rx in &mut receivers {
        started(rx).await;
    }
    for id in 1..=4 {
        executor.cancel(JobId::from_u64(id)).await;
    }
    for rx in &mut receivers {
        assert!(matches!(finish(rx).await.outcome, Outcome::Cancelled));
    }
    executor.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_running_jobs_as_executor_lost() {
    let executor = start("echo.py", ONESHOT).await;
    let mut rx = submit(&executor, job(1, r#"{"do":"sleep","secs":1000}"#)).await;
    started(&mut rx).await;
    executor.shutdown().await;
    let done = finish(&mut rx).await;
    assert_eq!(done.lost().kind, FailureKind::ShutDown);
}

#[tokio::test]
async fn an_executor_that_closes_stdout_is_stopped_not_waited_for() {
    let executor = start("closes_stdout.sh", ONESHOT).await;
    let done = run(&executor, job(1, "null")).await;
    assert_eq!(done.failure().kind, FailureKind::NoResult);
    executor.shutdown().await;
}

/// A copy of the echo fixture in a directory of its own, to take away and put back.
fn movable_echo(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let path = dir.join("echo.py");
    std::fs::copy(fixture("echo.py"), &path).unwrap();
    (path, dir.join("away.py"))
}

#[tokio::test]
async fn a_binary_that_cannot_start_loses_its_job_and_jobs_wait_for_a_check() {
    let (path, away) = movable_echo("oneshot-away");
    let mut config = config("echo.py", ONESHOT);
    config.path = path.clone();
    config.max_failed_restarts = u32::MAX;
    let executor = Executor::start(config).await.unwrap();
    let status = executor.status();
    std::fs::rename(&path, &away).unwrap();
    // Not the job's fault: lost, not failed, and the status said so before the outcome came.
    let done = run(&executor, job(1, "[1]")).await;
    assert_eq!(done.lost().kind, FailureKind::Io);
    assert!(
        done.lost().message.contains("cannot start executor"),
        "{}",
        done.lost().message
    );
    assert!(
        matches!(&*status.borrow(), ExecutorStatus::Restarting { .. }),
        "{:?}",
        *status.borrow()
    );
    // Jobs wait while it is down, and run once the binary passes a check again.
    let mut waiting = submit(&executor, job(2, "[2]")).await;
    std::fs::rename(&away, &path).unwrap();
    assert_eq!(finish(&mut waiting).await.result(), "[2]");
    assert!(matches!(&*status.borrow(), ExecutorStatus::Ready(_)));
    executor.shutdown().await;
}

#[tokio::test]
async fn a_binary_that_stays_gone_makes_the_executor_unusable() {
    let (path, away) = movable_echo("oneshot-gone");
    let mut config = config("echo.py", ONESHOT);
    config.path = path.clone();
    config.max_failed_restarts = 2;
    let executor = Executor::start(config).await.unwrap();
    let status = executor.status();
    std::fs::rename(&path, &away).unwrap();
    assert_eq!(
        run(&executor, job(1, "[1]")).await.lost().kind,
        FailureKind::Io
    );
    // Waiting, or refused once the executor is given up on: lost either way, not failed.
    let mut waiting = submit(&executor, job(2, "[2]")).await;
    eventually("the executor to be unusable", || {
        matches!(&*status.borrow(), ExecutorStatus::Unusable { .. })
    })
    .await;
    assert_eq!(
        finish(&mut waiting).await.lost().kind,
        FailureKind::Rejected
    );
    // Put back, it stays unusable: that is final, as for a daemon.
    std::fs::rename(&away, &path).unwrap();
    let done = run(&executor, job(3, "[3]")).await;
    assert_eq!(done.lost().kind, FailureKind::Rejected);
    assert!(done.lost().message.contains("executor is unusable"));
    executor.shutdown().await;
}
