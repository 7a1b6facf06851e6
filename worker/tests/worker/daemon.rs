//! Daemon mode: one supervised process, many concurrent jobs correlated by `job_id`, cancel
//! lines, crashes and restarts, shutdown.

use std::num::NonZeroU32;
use std::time::Duration;

use proto::JobId;
use serde_json::Value;
use worker::{BinaryMode, EventKind, Executor, ExecutorStatus, FailureKind, Outcome};

use crate::support::{config, eventually, finish, job, run, start, started, submit, temp_dir};

const DAEMON: BinaryMode = BinaryMode::Daemon;

#[tokio::test]
async fn many_concurrent_jobs_are_correlated_by_job_id() {
    let executor = start("echo.py", DAEMON).await;
    assert_eq!(executor.capacity(), 4);
    let mut receivers = Vec::new();
    for id in 1..=200u64 {
        let payload = format!(r#"{{"n":{id},"big":99999999999999999999999}}"#);
        receivers.push((id, submit(&executor, job(id, &payload)).await));
    }
    for (id, rx) in &mut receivers {
        let done = finish(rx).await;
        assert_eq!(
            done.result(),
            format!(r#"{{"n":{id},"big":99999999999999999999999}}"#)
        );
    }
    executor.shutdown().await;
}

#[tokio::test]
async fn job_lines_carry_the_goop2_fields_plus_mode_and_attempt() {
    let executor = start("echo.py", DAEMON).await;
    let mut spec = job(9, r#"{"do":"line"}"#);
    spec.timeout = Some(Duration::from_secs(30));
    let done = run(&executor, spec).await;
    let line: Value = serde_json::from_str(done.result()).unwrap();
    assert_eq!(line["job_id"], "0000000000000009");
    assert_eq!(line["type"], "alpha");
    assert_eq!(line["timeout_s"], 30);
    assert_eq!(line["mode"], "oneshot");
    assert_eq!(line["attempt"], 1);
    executor.shutdown().await;
}

#[tokio::test]
async fn progress_logs_and_output_reach_the_right_job_and_garbage_is_ignored() {
    let executor = start("echo.py", DAEMON).await;
    let mut chatty = submit(&executor, job(1, r#"{"do":"chatty"}"#)).await;
    let mut quiet = submit(&executor, job(2, r#"{"x":1}"#)).await;
    let done = finish(&mut chatty).await;
    assert_eq!(done.result(), r#"{"ok":true}"#);
    let progress: Vec<f64> = done
        .events
        .iter()
        .filter_map(|e| match e {
            EventKind::Progress { pct, .. } => Some(*pct),
            _ => None,
        })
        .collect();
    assert_eq!(progress, [12.5, 50.0]);
    assert!(
        done.events
            .iter()
            .any(|e| matches!(e, EventKind::Output(d) if d.get() == r#"{"part":1}"#))
    );
    assert!(
        done.events
            .iter()
            .any(|e| matches!(e, EventKind::Log { line, .. } if line == "note"))
    );
    let done = finish(&mut quiet).await;
    assert_eq!(done.result(), r#"{"x":1}"#);
    assert!(done.events.is_empty());
    executor.shutdown().await;
}

#[tokio::test]
async fn errors_are_verbatim_and_keys_match_in_any_case() {
    let executor = start("echo.py", DAEMON).await;
    let done = run(&executor, job(1, r#"{"do":"error","text":"Nope: 42"}"#)).await;
    assert_eq!(done.failure().kind, FailureKind::ErrorLine);
    assert_eq!(done.failure().message, "Nope: 42");
    let done = run(&executor, job(2, r#"{"do":"case"}"#)).await;
    assert_eq!(done.result(), r#"{"x":2}"#);
    executor.shutdown().await;
}

#[tokio::test]
async fn cancel_sends_a_cancel_line_and_frees_the_slot() {
    let mut config = config("echo.py", DAEMON);
    config.capacity_override = NonZeroU32::new(1);
    let executor = Executor::start(config).await.unwrap();
    assert_eq!(executor.capacity(), 1);
    let mut rx = submit(&executor, job(1, r#"{"do":"sleep","secs":1000}"#)).await;
    started(&mut rx).await;
    executor.cancel(JobId::from_u64(1)).await;
    assert!(matches!(finish(&mut rx).await.outcome, Outcome::Cancelled));
    // With capacity 1 this runs only once the daemon has answered for the cancelled job.
    let done = run(&executor, job(2, r#""next""#)).await;
    assert_eq!(done.result(), r#""next""#);
    executor.shutdown().await;
}

#[tokio::test]
async fn a_hung_job_times_out_without_stopping_the_others() {
    let executor = start("echo.py", DAEMON).await;
    let mut spec = job(1, r#"{"do":"sleep","secs":1000}"#);
    spec.timeout = Some(Duration::from_millis(300));
    let mut hung = submit(&executor, spec).await;
    let done = run(&executor, job(2, "[1]")).await;
    assert_eq!(done.result(), "[1]");
    let done = finish(&mut hung).await;
    assert_eq!(done.failure().kind, FailureKind::TimedOut);
    assert_eq!(done.failure().message, "timed out after 0.3s");
    executor.shutdown().await;
}

#[tokio::test]
async fn a_crash_mid_batch_loses_the_jobs_in_flight_and_the_daemon_comes_back() {
    let executor = start("echo.py", DAEMON).await;
    let mut status = executor.status();
    let mut sleepers = Vec::new();
    for id in 1..=3 {
        let mut rx = submit(&executor, job(id, r#"{"do":"sleep","secs":1000}"#)).await;
        started(&mut rx).await;
        sleepers.push(rx);
    }
    let mut crash = submit(&executor, job(4, r#"{"do":"crash"}"#)).await;
    for rx in sleepers.iter_mut().chain(std::iter::once(&mut crash)) {
        let done = finish(rx).await;
        let lost = done.lost();
        assert_eq!(lost.kind, FailureKind::Crashed);
        assert_eq!(lost.message, "executor exited with status 3");
        assert!(
            lost.stderr_tail
                .as_deref()
                .is_some_and(|t| t.contains("daemon exploding")),
            "{lost:?}"
        );
    }
    // Restarted and checked again, it takes jobs.
    let done = run(&executor, job(5, r#""again""#)).await;
    assert_eq!(done.result(), r#""again""#);
    assert!(matches!(
        &*status.borrow_and_update(),
        ExecutorStatus::Ready(_)
    ));
    executor.shutdown().await;
}

#[tokio::test]
async fn a_daemon_that_keeps_failing_its_check_becomes_unusable() {
    let dir = temp_dir("flaky");
    let script = dir.join("flaky_check.sh");
    std::fs::copy(crate::support::fixture("flaky_check.sh"), &script).unwrap();
    let mut config = config("flaky_check.sh", DAEMON);
    config.path = script;
    config.max_failed_restarts = 2;
    let executor = Executor::start(config).await.unwrap();
    let status = executor.status();
    let done = run(&executor, job(1, "null")).await;
    assert_eq!(done.lost().message, "executor exited with status 5");
    assert_eq!(done.lost().stderr_tail.as_deref(), Some("dying"));
    eventually("the executor to be unusable", || {
        matches!(&*status.borrow(), ExecutorStatus::Unusable { .. })
    })
    .await;
    match &*status.borrow() {
        ExecutorStatus::Unusable { reason, .. } => {
            assert!(reason.contains("broken for good"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let done = run(&executor, job(2, "null")).await;
    assert_eq!(done.lost().kind, FailureKind::Rejected);
    executor.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_over_long_line_fails_only_its_job() {
    let executor = start("echo.py", DAEMON).await;
    let mut big = submit(
        &executor,
        job(1, &format!(r#"{{"do":"big","bytes":{}}}"#, 20 << 20)),
    )
    .await;
    let mut small = submit(&executor, job(2, r#""small""#)).await;
    let done = finish(&mut big).await;
    assert_eq!(done.failure().kind, FailureKind::LineTooLong);
    assert!(done.failure().message.contains("16777216"));
    assert_eq!(finish(&mut small).await.result(), r#""small""#);
    // The daemon is still there.
    assert_eq!(run(&executor, job(3, "3")).await.result(), "3");
    executor.shutdown().await;
}

#[tokio::test]
async fn a_slow_reader_gets_every_job() {
    let executor = start("slow_reader.py", DAEMON).await;
    assert_eq!(executor.capacity(), 8);
    let payload = format!("\"{}\"", "p".repeat(32 * 1024));
    let mut receivers = Vec::new();
    for id in 1..=100 {
        receivers.push(submit(&executor, job(id, &payload)).await);
    }
    for rx in &mut receivers {
        assert_eq!(finish(rx).await.result(), (32 * 1024).to_string());
    }
    executor.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_stdin_then_kills_after_the_grace() {
    let executor = start("echo.py", DAEMON).await;
    let mut rx = submit(&executor, job(1, r#"{"do":"sleep","secs":1000}"#)).await;
    started(&mut rx).await;
    executor.shutdown().await;
    let done = finish(&mut rx).await;
    assert_eq!(done.lost().kind, FailureKind::ShutDown);
}

#[tokio::test]
async fn shutdown_lets_a_daemon_finish_when_it_exits_by_itself() {
    // echo.py exits at end of input once its jobs are done; a quick job finishes normally.
    let executor = start("echo.py", DAEMON).await;
    let done = run(&executor, job(1, "1")).await;
    assert_eq!(done.result(), "1");
    let status = executor.status();
    executor.shutdown().await;
    assert_eq!(*status.borrow(), ExecutorStatus::Stopped);
}

#[tokio::test]
async fn lines_without_job_id_belong_to_the_only_job_in_flight() {
    let executor = start("loop_no_ids.sh", DAEMON).await;
    assert_eq!(executor.capacity(), 1);
    for id in 1..=3 {
        let done = run(&executor, job(id, r#"{"frame":1}"#)).await;
        let result: Value = serde_json::from_str(done.result()).unwrap();
        assert_eq!(result["input"]["job_id"], format!("{id:016x}"));
    }
    executor.shutdown().await;
}

#[tokio::test]
async fn a_crash_kills_what_the_daemon_started_even_if_it_holds_stdout() {
    let dir = temp_dir("daemon-grandchild");
    let pidfile = dir.join("pid");
    let executor = start("echo.py", DAEMON).await;
    let payload =
        serde_json::json!({"do": "grandchild", "pidfile": pidfile, "then": "hang"}).to_string();
    let mut holder = submit(&executor, job(1, &payload)).await;
    started(&mut holder).await;
    let pid = crate::support::read_pid(&pidfile);
    let done = run(&executor, job(2, r#"{"do":"crash"}"#)).await;
    assert_eq!(done.lost().kind, FailureKind::Crashed);
    assert_eq!(finish(&mut holder).await.lost().kind, FailureKind::Crashed);
    eventually("the grandchild to die", || {
        crate::support::process_gone(pid)
    })
    .await;
    executor.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_daemon_gets_no_per_job_environment() {
    let executor = start("echo.py", DAEMON).await;
    let done = run(&executor, job(1, r#"{"do":"env"}"#)).await;
    let env: Value = serde_json::from_str(done.result()).unwrap();
    assert_eq!(env["GOOP_JOB_ID"], Value::Null);
    executor.shutdown().await;
}

#[tokio::test]
async fn a_batch_larger_than_the_runtime_bound_goes_in_parts() {
    let mut config = config("echo.py", DAEMON);
    config.max_queued = 8;
    let executor = Executor::start(config).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let jobs: Vec<_> = (1..=100u64).map(|id| job(id, &id.to_string())).collect();
    // 100 jobs against a bound of 4 + 8: submitting must interleave with reading the events.
    let (submitted, results) = tokio::join!(executor.submit_batch(jobs, &tx), async {
        let mut results = std::collections::BTreeMap::new();
        while results.len() < 100 {
            let done = finish(&mut rx).await;
            results.insert(results.len(), done.result().to_owned());
        }
        results
    });
    submitted.unwrap();
    let mut values: Vec<u64> = results.values().map(|r| r.parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values, (1..=100).collect::<Vec<_>>());
    executor.shutdown().await;
}
