//! The Bash executor: oneshot jobs, and several lines through one process.

use serde_json::json;

use super::harness::{CHECK, Exec, bash, job, oneshot, terminal};

#[test]
fn counts_words_in_oneshot_style() {
    let lines = oneshot(
        bash(),
        &job(
            "w1",
            "word-count",
            &json!({"text": "hello world\nsecond line é \"q\""}),
        ),
    );
    assert_eq!(lines[0]["status"], "progress");
    assert_eq!(
        terminal(&lines)["result"],
        json!({"lines": 2, "words": 6, "bytes": 30})
    );
}

#[test]
fn reports_bad_jobs_as_errors_and_logs() {
    let cases = [
        (
            job("w2", "word-count", &json!({"txt": "x"})),
            "payload needs a string field \"text\"",
        ),
        (
            job("w3", "word-count", &json!({"text": 5})),
            "payload needs a string field \"text\"",
        ),
        (
            job("z", "zip", &json!(null)),
            "unsupported job type \"zip\"",
        ),
    ];
    for (line, reason) in cases {
        let lines = oneshot(bash(), &line);
        assert_eq!(terminal(&lines)["error"], reason, "{line}");
    }
    let lines = oneshot(bash(), "not json");
    assert_eq!(
        lines,
        [json!({"status": "log", "msg": "input line has no job_id"})]
    );
}

#[test]
fn serves_several_lines_in_one_process() {
    let mut exec = Exec::start(bash());
    exec.send(&[
        CHECK,
        &job(
            "e1",
            "echo",
            &json!({"nested": {"s": "a,}\"b"}, "list": [1, [2]]}),
        ),
        &job("w1", "word-count", &json!({"text": "one two three"})),
    ]);
    assert_eq!(exec.line()["job_id"], "__check__");
    assert_eq!(
        exec.line()["result"],
        json!({"nested": {"s": "a,}\"b"}, "list": [1, [2]]})
    );
    let lines = exec.until_terminal("w1");
    assert_eq!(lines.last().unwrap()["result"]["words"], 3);
    let (rest, status) = exec.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(status.success());
}
