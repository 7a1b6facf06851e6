//! `transform` in the Rust example executor.

use serde_json::{Value, json};

use super::harness::{Exec, job, oneshot, rust_example, terminal};

fn transform(payload: &Value) -> (Vec<Value>, Value) {
    let lines = oneshot(rust_example(), &job("t1", "transform", payload));
    let end = terminal(&lines).clone();
    (lines, end)
}

#[test]
fn converts_text_and_tables() {
    let cases = [
        (json!({"input": "Hello", "format": "upper"}), json!("HELLO")),
        (
            json!({"input": "Hello", "format": "reverse"}),
            json!("olleH"),
        ),
        (
            json!({"input": "hello", "format": "base64"}),
            json!("aGVsbG8="),
        ),
        (
            json!({"input": "aGVsbG8=", "format": "base64_decode"}),
            json!("hello"),
        ),
        (
            json!({"input": "a b\nc", "format": "word_count"}),
            json!({"lines": 2, "words": 3, "chars": 5, "bytes": 5}),
        ),
        (
            json!({"input": "b;a\n1;\"x;y\"\n", "format": "csv_to_json", "options": {"delimiter": ";"}}),
            json!([{"b": "1", "a": "x;y"}]),
        ),
        (
            // The array as JSON text, because `json!` would sort the keys of an inline array.
            json!({"input": r#"[{"name":"ada","n":1},{"name":"a,b"}]"#, "format": "json_to_csv"}),
            json!("name,n\nada,1\n\"a,b\",\n"),
        ),
    ];
    for (payload, output) in cases {
        let (lines, end) = transform(&payload);
        assert_eq!(end["status"], "done", "{payload}: {end}");
        assert_eq!(end["result"]["output"], output, "{payload}");
        assert_eq!(end["result"]["format"], payload["format"]);
        let progress: Vec<&Value> = lines.iter().filter(|l| l["status"] == "progress").collect();
        assert_eq!(progress.first().unwrap()["pct"], 0);
        assert_eq!(progress.last().unwrap()["pct"], 100);
    }
}

#[test]
fn csv_to_json_keeps_column_order() {
    // A parsed `Value` forgets key order, so look at the raw line.
    let mut exec = Exec::start(rust_example());
    exec.send(&[&job(
        "t2",
        "transform",
        &json!({"input": "zeta,alpha\n1,2", "format": "csv_to_json"}),
    )]);
    let (rest, status) = exec.finish();
    assert!(status.success());
    let done = rest.last().expect("a done line");
    assert!(
        done.ends_with(r#""status":"done","result":{"format":"csv_to_json","output":[{"zeta":"1","alpha":"2"}]}}"#),
        "{done}"
    );
}

#[test]
fn bad_input_fails_with_a_reason() {
    let cases = [
        (
            json!({"input": "x", "format": "rot13"}),
            "unknown format \"rot13\"",
        ),
        (
            json!({"input": 5, "format": "upper"}),
            "`input` must be a string for upper",
        ),
        (
            json!({"input": "a,b\n1", "format": "csv_to_json"}),
            "row 2 has 1 fields",
        ),
        (
            json!({"input": {"a": 1}, "format": "json_to_csv"}),
            "`input` must be an array of objects",
        ),
        (
            json!({"input": "x", "format": "csv_to_json", "options": {"delimiter": "ab"}}),
            "`options.delimiter` must be one character",
        ),
        (
            json!({"format": "upper"}),
            "invalid payload: missing field `input`",
        ),
    ];
    for (payload, reason) in cases {
        let (_, end) = transform(&payload);
        assert_eq!(end["status"], "error", "{payload}: {end}");
        let error = end["error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{payload}: {error}");
    }
}
