//! Daemon style against the SDK executors: many concurrent jobs, panics, malformed lines,
//! capacity, cancellation and end of input with jobs in flight.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::harness::{CHECK, Exec, cancel, echo, job, rust_example};

#[test]
fn many_concurrent_jobs_are_each_answered_once_in_whole_lines() {
    const JOBS: usize = 2000;
    let mut exec = Exec::start(echo(None));
    let mut lines = vec![CHECK.to_owned()];
    for i in 0..JOBS {
        let payload = json!({"i": i, "pad": "x".repeat(i % 97)});
        lines.push(job(&format!("j{i}"), "echo", &payload));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    exec.send(&refs);
    assert_eq!(exec.line()["job_id"], "__check__");
    let mut results: HashMap<String, Value> = HashMap::new();
    for _ in 0..JOBS {
        // `line` fails on anything that is not one whole JSON object.
        let line = exec.line();
        assert_eq!(line["status"], "done", "{line}");
        let id = line["job_id"].as_str().unwrap().to_owned();
        assert!(
            results.insert(id, line["result"].clone()).is_none(),
            "{line}"
        );
    }
    for i in 0..JOBS {
        assert_eq!(results[&format!("j{i}")]["i"], i);
    }
    let (rest, status) = exec.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(status.success());
}

#[test]
fn a_panicking_or_failing_handler_fails_only_its_job() {
    let mut exec = Exec::start(echo(Some(2)));
    exec.send(&[
        &job("p1", "echo", &json!({"panic": "boom"})),
        &job("f1", "echo", &json!({"fail": "no such thing"})),
        &job("ok", "echo", &json!({"fine": true})),
    ]);
    let mut ends = HashMap::new();
    for _ in 0..3 {
        let line = exec.line();
        ends.insert(line["job_id"].as_str().unwrap().to_owned(), line);
    }
    assert_eq!(ends["p1"]["status"], "error");
    assert_eq!(ends["p1"]["error"], "handler panicked: boom");
    assert_eq!(ends["f1"]["error"], "no such thing");
    assert_eq!(ends["ok"]["result"], json!({"fine": true}));
    // Still serving after the panic.
    exec.send(&[&job("after", "echo", &json!(1))]);
    assert_eq!(exec.line()["result"], 1);
    let (_, status) = exec.finish();
    assert!(status.success());
}

#[test]
fn malformed_lines_are_reported_and_serving_goes_on() {
    let mut exec = Exec::start(echo(None));
    exec.send(&[
        "not json at all",
        "",
        "[1, 2]",
        r#"{"job_id": 5, "type": "x"}"#,
        r#"{"type": "x", "payload": 1}"#,
        r#"{"job_id": "m1", "payload": 1}"#,
        r#"{"job_id": "m2", "type": "x", "mode": "sideways"}"#,
        r#"{"job_id":"m3","type":"x","payload":{"#,
        r#"{"job_id":"m4","type":"x","payload":1,"timeout_s":"soon"}"#,
        &job("good", "x", &json!("still here")),
    ]);
    let mut logs = 0;
    let mut errors = HashMap::new();
    loop {
        let line = exec.line();
        if line["job_id"] == "good" {
            assert_eq!(line["result"], "still here");
            break;
        }
        match line["status"].as_str() {
            Some("log") => {
                assert!(line.get("job_id").is_none(), "{line}");
                logs += 1;
            }
            Some("error") => {
                errors.insert(line["job_id"].as_str().unwrap().to_owned(), line);
            }
            _ => panic!("unexpected {line}"),
        }
    }
    assert_eq!(logs, 4, "not json, [1, 2], a numeric job_id, no job_id");
    assert_eq!(errors["m1"]["error"], "job line has no type");
    assert_eq!(
        errors["m2"]["error"],
        "job line has unknown mode \"sideways\""
    );
    assert!(
        errors["m3"]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed input line")
    );
    assert!(
        errors["m4"]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed input line")
    );
    assert_eq!(errors.len(), 4);
    let (_, status) = exec.finish();
    assert!(status.success());
}

/// The `sleeping` log line an echo job writes when it starts.
fn started(line: &Value) -> Option<&str> {
    (line["status"] == "log" && line["msg"].as_str()?.starts_with("sleeping"))
        .then(|| line["job_id"].as_str())
        .flatten()
}

#[test]
fn capacity_bounds_running_jobs_and_cancel_reaches_the_handler() {
    let mut exec = Exec::start(echo(Some(3)));
    let long = json!({"sleep_ms": 600_000});
    let ids = ["s1", "s2", "s3", "s4", "s5"];
    let lines: Vec<String> = ids.iter().map(|id| job(id, "echo", &long)).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    exec.send(&refs);

    // Three start, in arrival order since each takes the next free thread.
    let mut running: Vec<String> = (0..3)
        .map(|_| started(&exec.line()).expect("a start line").to_owned())
        .collect();
    running.sort();
    assert_eq!(running, ["s1", "s2", "s3"]);

    // Cancelling a running job wakes its sleep at once. Only then does s4 start: had it started
    // earlier, its start line would come before s2's end.
    exec.send(&[&cancel("s2")]);
    let end = exec.line();
    assert_eq!(
        (&end["job_id"], &end["status"], &end["error"]),
        (&json!("s2"), &json!("error"), &json!("cancelled"))
    );
    assert_eq!(started(&exec.line()), Some("s4"));

    // A job cancelled while queued never reaches its handler.
    exec.send(&[&cancel("s5"), &cancel("s1")]);
    let end = exec.line();
    assert_eq!(
        (&end["job_id"], &end["error"]),
        (&json!("s1"), &json!("cancelled"))
    );
    let end = exec.line();
    assert_eq!(
        (&end["job_id"], &end["error"]),
        (&json!("s5"), &json!("cancelled before it started"))
    );

    exec.send(&[&cancel("s3"), &cancel("s4"), &cancel("unknown")]);
    let mut ends: Vec<String> = (0..2)
        .map(|_| exec.line()["job_id"].as_str().unwrap().to_owned())
        .collect();
    ends.sort();
    assert_eq!(ends, ["s3", "s4"]);
    let (rest, status) = exec.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(status.success());
}

#[test]
fn a_second_job_with_a_running_id_is_refused() {
    let mut exec = Exec::start(echo(None));
    exec.send(&[&job("d1", "echo", &json!({"sleep_ms": 600_000}))]);
    assert_eq!(started(&exec.line()), Some("d1"));
    exec.send(&[r#"{"job_id":"d1","type":"echo","payload":2,"attempt":2}"#]);
    let refused = exec.line();
    assert_eq!(refused["attempt"], 2);
    assert_eq!(
        refused["error"],
        "job d1 is already running in this executor"
    );
    exec.send(&[&cancel("d1")]);
    assert_eq!(exec.line()["error"], "cancelled");
    let (_, status) = exec.finish();
    assert!(status.success());
}

#[test]
fn end_of_input_finishes_jobs_in_flight_then_exits_zero() {
    let mut exec = Exec::start(echo(None));
    let lines: Vec<String> = (0..5)
        .map(|i| job(&format!("e{i}"), "echo", &json!({"sleep_ms": 200, "i": i})))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    exec.send(&refs);
    let (rest, status) = exec.finish();
    assert!(status.success());
    let done: Vec<Value> = rest
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["status"] == "done")
        .collect();
    assert_eq!(done.len(), 5, "{rest:?}");
}

#[test]
fn the_example_executor_serves_a_mixed_session() {
    let mut exec = Exec::start(rust_example());
    let mut lines = vec![CHECK.to_owned()];
    for i in 0..40 {
        lines.push(if i % 2 == 0 {
            job(
                &format!("c{i}"),
                "calculate",
                &json!({"expression": "x * 2", "parameters": {"x": i}}),
            )
        } else {
            job(
                &format!("t{i}"),
                "transform",
                &json!({"input": format!("n{i}"), "format": "upper"}),
            )
        });
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    exec.send(&refs);
    assert_eq!(exec.line()["job_id"], "__check__");
    let mut ends = HashMap::new();
    while ends.len() < 40 {
        let line = exec.line();
        assert_eq!(line["attempt"], 1, "{line}");
        if line["status"] == "done" {
            ends.insert(
                line["job_id"].as_str().unwrap().to_owned(),
                line["result"].clone(),
            );
        }
    }
    assert_eq!(ends["c10"]["value"], 20);
    assert_eq!(ends["t11"]["output"], "N11");
    let (rest, status) = exec.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(status.success());
}

#[test]
fn a_continuous_job_streams_output_until_its_count_or_a_cancel() {
    let mut exec = Exec::start(echo(None));
    let counted = json!({"job_id": "k1", "type": "tick", "mode": "continuous",
        "payload": {"count": 3, "interval_ms": 1, "big": 12345678901234567890_u64}});
    let endless = json!({"job_id": "k2", "type": "tick", "mode": "continuous",
        "payload": {"interval_ms": 1}});
    exec.send(&[&counted.to_string()]);
    let lines = exec.until_terminal("k1");
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["output", "output", "output", "done"]);
    assert_eq!(lines[0]["data"], counted["payload"]);
    assert_eq!(lines[3]["result"], json!({"outputs": 3}));

    exec.send(&[&endless.to_string()]);
    for _ in 0..5 {
        assert_eq!(exec.line()["status"], "output");
    }
    exec.send(&[&cancel("k2")]);
    let end = exec.until_terminal("k2").pop().expect("a terminal line");
    assert_eq!(end["error"], "cancelled");
    let (_, status) = exec.finish();
    assert!(status.success());
}
