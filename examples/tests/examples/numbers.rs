//! Numbers pass through exactly: payloads are never decoded into `f64` on the way.

use super::harness::{Exec, bash, echo, python};
use std::process::Command;

/// Integers past 2^64 and 2^53, a fraction past `f64` precision, an exponent past `f64` range.
const PAYLOAD: &str = r#"{"big":12345678901234567890,"bigger":99999999999999999999999,"neg":-99999999999999999999999,"frac":0.1000000000000000000000000001,"exp":1e400,"list":[18446744073709551616,-0.0]}"#;

/// Integers only: what the Python executor keeps exactly (its floats are `float`).
const INTEGERS: &str = r#"{"big":12345678901234567890,"bigger":99999999999999999999999,"neg":-99999999999999999999999}"#;

fn echo_line(command: Command, job_type: &str, payload: &str) -> String {
    let mut exec = Exec::start(command);
    exec.send(&[&format!(
        r#"{{"job_id":"n1","type":"{job_type}","payload":{payload},"timeout_s":0,"attempt":1}}"#
    )]);
    let (rest, status) = exec.finish();
    assert!(status.success(), "{status}");
    assert_eq!(rest.len(), 1, "{rest:?}");
    rest.into_iter().next().unwrap()
}

#[test]
fn the_sdk_echo_returns_the_payload_byte_for_byte() {
    let line = echo_line(echo(None), "anything", PAYLOAD);
    assert_eq!(
        line,
        format!(r#"{{"job_id":"n1","attempt":1,"status":"done","result":{PAYLOAD}}}"#)
    );
}

#[test]
fn the_bash_echo_returns_the_payload_byte_for_byte() {
    let line = echo_line(bash(), "echo", PAYLOAD);
    assert_eq!(
        line,
        format!(r#"{{"job_id":"n1","status":"done","result":{PAYLOAD}}}"#)
    );
}

#[test]
fn the_python_echo_keeps_big_integers() {
    let line = echo_line(python(), "echo", INTEGERS);
    assert_eq!(
        line,
        format!(r#"{{"job_id":"n1","status":"done","result":{INTEGERS},"attempt":1}}"#)
    );
}
