//! The Python executor: safe `calculate`, and daemon style with threads, cancel and end of input.

use serde_json::{Value, json};

use super::harness::{CHECK, Exec, cancel, job, oneshot, python, terminal};

#[test]
fn calculates_in_oneshot_style() {
    let lines = oneshot(
        python(),
        &job(
            "c1",
            "calculate",
            &json!({"expression": "(a + b) * 2 ^ c", "parameters": {"a": 1, "b": 2, "c": 3}}),
        ),
    );
    assert_eq!(lines[0]["status"], "progress");
    assert_eq!(terminal(&lines)["result"]["value"], 24);
}

#[test]
fn refuses_everything_but_arithmetic() {
    let cases = [
        (
            "__import__('os').system('true')",
            "unsupported syntax: Call",
        ),
        ("__import__('os')", "unknown function `__import__`"),
        ("abs(x=1)", "unsupported syntax: Call"),
        ("().__class__", "unsupported syntax: Attribute"),
        ("[1, 2]", "unsupported syntax: List"),
        ("'a' * 3", "unsupported syntax: Constant"),
        ("1 / 0", "division by zero"),
        ("a + 1", "unknown name `a`"),
        ("(1 +", "syntax error"),
        ("sqrt(1, 2)", "`sqrt` takes 1 argument(s), got 2"),
    ];
    for (expression, reason) in cases {
        let lines = oneshot(
            python(),
            &job("c1", "calculate", &json!({"expression": expression})),
        );
        let end = terminal(&lines);
        assert_eq!(end["status"], "error", "{expression}: {end}");
        let error = end["error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{expression}: {error}");
    }
}

#[test]
fn daemon_style_runs_jobs_at_once_cancels_and_drains_at_end_of_input() {
    let mut exec = Exec::start(python());
    let long = json!({"sleep_ms": 600_000});
    exec.send(&[
        CHECK,
        &job("p1", "echo", &long),
        &job("p2", "echo", &long),
        &job("p3", "echo", &long),
        &job("quick", "echo", &json!({"n": 1})),
    ]);
    assert_eq!(exec.line()["job_id"], "__check__");
    // The quick job answers while three others sleep: they run on their own threads.
    let mut quick = exec.line();
    while quick["status"] == "log" {
        quick = exec.line();
    }
    assert_eq!(
        (&quick["job_id"], &quick["result"]),
        (&json!("quick"), &json!({"n": 1}))
    );
    exec.send(&[&cancel("p2")]);
    // The sleepers' "sleeping" logs may still be on their way: read past them.
    let lines = exec.until_terminal("p2");
    let end = lines.last().expect("p2 ended");
    assert_eq!(
        (&end["job_id"], &end["error"]),
        (&json!("p2"), &json!("cancelled"))
    );
    exec.send(&[
        "this is not json",
        &cancel("p1"),
        &cancel("p3"),
        &job("last", "echo", &json!({"sleep_ms": 100})),
    ]);
    let (rest, status) = exec.finish();
    assert!(status.success());
    let rest: Vec<Value> = rest
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let malformed = rest
        .iter()
        .filter(|l| l["status"] == "log" && l.get("job_id").is_none());
    assert_eq!(malformed.count(), 1, "{rest:?}");
    let mut ends: Vec<(String, String)> = rest
        .iter()
        .filter(|l| l["status"] != "log")
        .map(|l| {
            (
                l["job_id"].as_str().unwrap().to_owned(),
                l["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ends.sort();
    assert_eq!(
        ends,
        [
            ("last".into(), "done".into()),
            ("p1".into(), "error".into()),
            ("p3".into(), "error".into())
        ]
    );
}

#[test]
fn capacity_holds_jobs_back_while_cancels_still_get_through() {
    let mut command = python();
    command.env("PY_EXECUTOR_CAPACITY", "2");
    let mut exec = Exec::start(command);
    let long = json!({"sleep_ms": 600_000});
    exec.send(&[
        &job("p1", "echo", &long),
        &job("p2", "echo", &long),
        &job("p3", "echo", &long),
    ]);
    let mut started: Vec<String> = (0..2)
        .map(|_| {
            let line = exec.line();
            assert_eq!(line["status"], "log", "{line}");
            line["job_id"].as_str().unwrap().to_owned()
        })
        .collect();
    started.sort();
    assert_eq!(started, ["p1", "p2"]);
    // p3 waits for a slot; the reader still reads the cancel, and p3 starts only after p1 ends.
    exec.send(&[&cancel("p1")]);
    let end = exec.line();
    assert_eq!(
        (&end["job_id"], &end["error"]),
        (&json!("p1"), &json!("cancelled"))
    );
    let next = exec.line();
    assert_eq!(
        (&next["job_id"], &next["status"]),
        (&json!("p3"), &json!("log"))
    );
    exec.send(&[&cancel("p2"), &cancel("p3")]);
    let (rest, status) = exec.finish();
    assert!(status.success());
    assert_eq!(rest.len(), 2, "{rest:?}");
}
