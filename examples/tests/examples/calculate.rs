//! `calculate` in the Rust example executor: values, errors, and the progress, output and log
//! lines it writes on the way.

use serde_json::{Value, json};

use super::harness::{job, oneshot, rust_example, terminal};

fn calculate(payload: &Value) -> Vec<Value> {
    oneshot(rust_example(), &job("c1", "calculate", payload))
}

#[test]
fn evaluates_with_parameters_and_reports_progress() {
    let lines = calculate(&json!({
        "expression": "(a + b) * 2 ^ c",
        "parameters": {"a": 1, "b": 2, "c": 3}
    }));
    let done = terminal(&lines);
    assert_eq!(done["status"], "done");
    assert_eq!(
        done["result"],
        json!({"expression": "(a + b) * 2 ^ c", "value": 24})
    );
    let pcts: Vec<f64> = lines
        .iter()
        .filter(|l| l["status"] == "progress")
        .map(|l| l["pct"].as_f64().expect("pct is a number"))
        .collect();
    assert_eq!(pcts, [0.0, 50.0, 100.0]);
    assert!(
        lines
            .iter()
            .all(|l| l["job_id"] == "c1" && l["attempt"] == 1)
    );
}

#[test]
fn failures_are_error_lines_with_a_reason() {
    let cases = [
        (json!({"expression": "1 / 0"}), "division by zero"),
        (json!({"expression": "a + 1"}), "unknown name `a`"),
        (
            json!({"expression": "(1 + 2"}),
            "syntax error at column 7: expected `)`",
        ),
        (json!({"expression": "nope(1)"}), "unknown function `nope`"),
        (
            json!({"expression": "x", "parameters": {"x": "one"}}),
            "invalid payload: invalid type: string \"one\", expected f64",
        ),
        (
            json!({"expression": 5}),
            "invalid payload: invalid type: integer `5`",
        ),
        (json!({}), "payload needs exactly one of `expression`"),
    ];
    for (payload, reason) in cases {
        let lines = calculate(&payload);
        let end = terminal(&lines);
        assert_eq!(end["status"], "error", "{payload}: {end}");
        let error = end["error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{payload}: {error}");
    }
}

#[test]
fn a_batch_streams_outputs_and_logs() {
    let lines = calculate(&json!({"expressions": ["1 + 1", "2 * 3", "10 / 4"]}));
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "log", "output", "progress", "output", "progress", "output", "progress", "done"
        ]
    );
    assert_eq!(lines[0]["msg"], "evaluating 3 expressions");
    let outputs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["status"] == "output")
        .map(|l| &l["data"])
        .collect();
    assert_eq!(outputs[2], &json!({"index": 2, "value": 2.5}));
    assert_eq!(lines[6]["pct"], 100);
    assert_eq!(terminal(&lines)["result"], json!({"values": [2, 6, 2.5]}));

    let lines = calculate(&json!({"expressions": ["1", "1 / 0"]}));
    assert_eq!(terminal(&lines)["error"], "expression 2: division by zero");
}

#[test]
fn a_type_it_does_not_serve_is_an_error() {
    let lines = oneshot(rust_example(), &job("s1", "search", &json!({"query": "x"})));
    assert_eq!(terminal(&lines)["error"], "unsupported job type \"search\"");
}
