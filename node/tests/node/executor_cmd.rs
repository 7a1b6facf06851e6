//! `goop executor check` and `goop executor run` against the worker's fixture executors.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../worker/tests/fixtures")
        .join(name)
}

fn goop(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_goop"))
        .args(args)
        .env("GOOP_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start goop");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("goop output")
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn by_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["job_id"] == id)
        .unwrap_or_else(|| panic!("no result for {id} in {lines:?}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_prints_the_declaration_in_both_modes() {
    let path = fixture("echo.py");
    for mode in ["oneshot", "daemon"] {
        let output = goop(
            &["executor", "check", path.to_str().unwrap(), "--mode", mode],
            "",
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let lines = lines(&output);
        assert_eq!(
            lines,
            [
                serde_json::json!({"ok": true, "types": ["alpha", "beta"], "capacity": 4, "version": "fixture-1"})
            ]
        );
    }
}

#[test]
fn check_reports_a_failure_with_stderr_and_exit_status_1() {
    let path = fixture("check_crash.sh");
    let output = goop(&["executor", "check", path.to_str().unwrap()], "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        lines(&output),
        [
            serde_json::json!({"ok": false, "error": "exited with status 2", "stderr": "boom: missing config"})
        ]
    );
    let output = goop(&["executor", "check", "/no/such/executor"], "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(lines(&output)[0]["ok"], false);
}

#[test]
fn run_reports_every_job_in_both_modes() {
    let path = fixture("echo.py");
    let jobs = concat!(
        r#"{"id":"big","type":"alpha","payload":{"n":12345678901234567890,"m":99999999999999999999999}}"#,
        "\n",
        r#"{"id":"bad","type":"alpha","payload":{"do":"error","text":"Nope \"quoted\""}}"#,
        "\n\n",
        r#"{"type":"alpha"}"#,
        "\n",
        r#"{"id":"slow","type":"alpha","payload":{"do":"sleep","secs":1000},"timeout_s":1}"#,
        "\n",
    );
    for mode in ["oneshot", "daemon"] {
        let output = goop(
            &["executor", "run", path.to_str().unwrap(), "--mode", mode],
            jobs,
        );
        assert_eq!(output.status.code(), Some(1), "{mode}: {}", stderr(&output));
        let lines = lines(&output);
        assert_eq!(lines.len(), 4, "{mode}: {lines:?}");
        let big = by_id(&lines, "big");
        assert_eq!(big["status"], "completed");
        // Compared as text: a serde_json::Value would round the numbers through f64.
        let raw = String::from_utf8_lossy(&output.stdout);
        assert!(raw.contains(r#""result":{"n":12345678901234567890,"m":99999999999999999999999}"#));
        assert!(big["elapsed_ms"].is_u64());
        let bad = by_id(&lines, "bad");
        assert_eq!(bad["status"], "failed");
        assert_eq!(bad["error"], "Nope \"quoted\"");
        let slow = by_id(&lines, "slow");
        assert_eq!(slow["status"], "failed");
        assert_eq!(slow["error"], "timed out after 1s");
        let generated = lines
            .iter()
            .find(|l| !["big", "bad", "slow"].contains(&l["job_id"].as_str().unwrap()))
            .unwrap();
        assert_eq!(generated["job_id"].as_str().unwrap().len(), 16);
        assert_eq!(generated["status"], "completed");
        assert_eq!(generated["result"], Value::Null);
    }
}

#[test]
fn run_exits_0_when_all_complete_and_reads_a_jobs_file() {
    let dir = std::env::temp_dir().join(format!("goop-node-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jobs.ndjson");
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "{{\"id\":\"j{i}\",\"type\":\"alpha\",\"payload\":{i}}}\n"
        ));
    }
    std::fs::write(&file, text).unwrap();
    let path = fixture("echo.py");
    let output = goop(
        &[
            "executor",
            "run",
            path.to_str().unwrap(),
            "--mode",
            "daemon",
            "--capacity",
            "8",
            "--jobs",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = lines(&output);
    assert_eq!(lines.len(), 50);
    for i in 0..50 {
        let line = by_id(&lines, &format!("j{i}"));
        assert_eq!(line["status"], "completed");
        assert_eq!(line["result"], i);
    }
    assert!(stderr(&output).contains("50 completed, 0 failed"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn jobs_lost_to_a_daemon_crash_run_again_then_fail() {
    let path = fixture("echo.py");
    let jobs = concat!(
        r#"{"id":"boom","type":"alpha","payload":{"do":"crash"}}"#,
        "\n",
        r#"{"id":"ok","type":"alpha","payload":"fine"}"#,
        "\n",
    );
    let output = goop(
        &[
            "executor",
            "run",
            path.to_str().unwrap(),
            "--mode",
            "daemon",
            "--capacity",
            "1",
            "--max-lost",
            "2",
        ],
        jobs,
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines = lines(&output);
    let boom = by_id(&lines, "boom");
    assert_eq!(boom["status"], "failed");
    assert_eq!(
        boom["error"],
        "executor lost 3 times, last: executor exited with status 3"
    );
    assert_eq!(boom["stderr"], "daemon exploding");
    // With capacity 1 the good job waits in the queue, which survives the restarts.
    assert_eq!(by_id(&lines, "ok")["status"], "completed");
}

#[test]
fn bad_input_and_unusable_executors_exit_2() {
    let path = fixture("echo.py");
    let output = goop(
        &[
            "executor",
            "run",
            path.to_str().unwrap(),
            "--mode",
            "oneshot",
        ],
        "{\"type\":\"alpha\"}\n{\"type\":\"alpha\",\"timeout\":5}\n",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert!(
        err.contains("line 2:") && err.contains("unknown field `timeout`"),
        "{err}"
    );

    let output = goop(
        &[
            "executor",
            "run",
            path.to_str().unwrap(),
            "--mode",
            "oneshot",
        ],
        "{\"id\":\"a\",\"type\":\"x\"}\n{\"id\":\"a\",\"type\":\"x\"}\n",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("line 2: duplicate id \"a\" (first on line 1)"));

    let crash = fixture("check_crash.sh");
    let output = goop(
        &[
            "executor",
            "run",
            crash.to_str().unwrap(),
            "--mode",
            "daemon",
        ],
        "{\"type\":\"x\"}\n",
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("executor check failed") && err.contains("boom: missing config"),
        "{err}"
    );

    let output = goop(&["executor", "run", path.to_str().unwrap()], "");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a missing --mode is a usage error"
    );
}

#[test]
fn help_explains_the_commands() {
    let output = goop(&["executor", "run", "--help"], "");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--mode",
        "--capacity",
        "--jobs",
        "timeout_s",
        "elapsed_ms",
        "Exit status",
        "--max-lost",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
    let output = goop(&["executor", "check", "--help"], "");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("\"ok\":true"), "{help}");
}
