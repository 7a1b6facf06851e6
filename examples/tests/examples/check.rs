//! The `__check__` handshake of every example executor.

use serde_json::{Value, json};

use super::harness::{CHECK, Exec, bash, echo, job, oneshot, python, rust_example};

fn assert_check(line: &Value, types: &Value, capacity: u64) {
    assert_eq!(line["job_id"], "__check__", "{line}");
    assert_eq!(line["status"], "done", "{line}");
    let result = &line["result"];
    assert_eq!(&result["types"], types, "{line}");
    assert_eq!(result["capacity"].as_u64(), Some(capacity), "{line}");
    assert!(result["version"].is_string(), "{line}");
}

#[test]
fn every_executor_answers_the_check_in_oneshot_style() {
    let cases = [
        ("rust", rust_example(), json!(["calculate", "transform"]), 4),
        ("echo", echo(None), json!([]), 64),
        ("python", python(), json!(["calculate", "echo"]), 4),
        ("bash", bash(), json!(["echo", "word-count"]), 1),
    ];
    for (name, command, types, capacity) in cases {
        let lines = oneshot(command, CHECK);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert_check(&lines[0], &types, capacity);
    }
}

#[test]
fn echo_takes_its_capacity_from_the_environment() {
    let lines = oneshot(echo(Some(7)), CHECK);
    assert_check(&lines[0], &json!([]), 7);
}

#[test]
fn the_check_comes_first_in_daemon_style_and_jobs_follow() {
    let mut exec = Exec::start(rust_example());
    exec.send(&[
        CHECK,
        &job("c1", "calculate", &json!({"expression": "6 * 7"})),
    ]);
    assert_check(&exec.line(), &json!(["calculate", "transform"]), 4);
    let lines = exec.until_terminal("c1");
    assert_eq!(lines.last().unwrap()["result"]["value"], 42);
    let (rest, status) = exec.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(status.success());
}
