//! Starting an executor and talking to it line by line, every wait bounded by a deadline.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any single expected line or exit may take before the test fails. Generous, because
/// the machine is shared; nothing waits this long when things work.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) const CHECK: &str =
    r#"{"job_id":"__check__","type":"__check__","payload":null,"timeout_s":0}"#;

pub(crate) fn rust_example() -> Command {
    Command::new(env!("CARGO_BIN_EXE_goop-example-executor"))
}

pub(crate) fn echo(capacity: Option<usize>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echo-executor"));
    match capacity {
        Some(n) => command.env("ECHO_CAPACITY", n.to_string()),
        None => command.env_remove("ECHO_CAPACITY"),
    };
    command
}

pub(crate) fn python() -> Command {
    let mut command = Command::new("python3");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/executor.py"));
    command
}

pub(crate) fn bash() -> Command {
    let mut command = Command::new("bash");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bash/executor.sh"));
    command
}

/// A job line.
pub(crate) fn job(id: &str, job_type: &str, payload: &Value) -> String {
    json!({"job_id": id, "type": job_type, "payload": payload, "timeout_s": 0, "mode": "oneshot", "attempt": 1})
        .to_string()
}

pub(crate) fn cancel(id: &str) -> String {
    json!({"type": "__cancel__", "job_id": id}).to_string()
}

/// A running executor. Killed when dropped, so a failing test leaves no process behind.
pub(crate) struct Exec {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Exec {
    pub(crate) fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the executor");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Lines are drained as they come so the executor never blocks on a full pipe; the bound
        // is far above what any test produces.
        let (tx, lines) = sync_channel(1 << 16);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// Writes lines (each gets its `\n`) in one write.
    pub(crate) fn send(&mut self, lines: &[&str]) {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(text.as_bytes())
            .expect("write to the executor");
        stdin.flush().expect("flush to the executor");
    }

    /// Closes stdin: end of input.
    pub(crate) fn close(&mut self) {
        self.stdin = None;
    }

    /// The next raw line.
    pub(crate) fn raw_line(&self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line from the executor within {DEADLINE:?}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the executor closed stdout"),
        }
    }

    /// The next line, which must be a JSON object.
    pub(crate) fn line(&self) -> Value {
        let line = self.raw_line();
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(value.is_object(), "not an object: {line}");
        value
    }

    /// Lines up to and including the terminal (`done` or `error`) line of `job_id`.
    pub(crate) fn until_terminal(&self, job_id: &str) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let terminal = line["job_id"] == job_id && is_terminal(&line);
            lines.push(line);
            if terminal {
                return lines;
            }
        }
    }

    /// Every line left until the executor closes stdout, then its exit status.
    pub(crate) fn finish(mut self) -> (Vec<String>, ExitStatus) {
        self.close();
        let start = Instant::now();
        let mut rest = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the executor did not exit at end of input")
                }
            }
        }
        // Stdout is closed, so the process is exiting; waiting is bounded in practice.
        let status = self.child.wait().expect("wait for the executor");
        (rest, status)
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn is_terminal(line: &Value) -> bool {
    line["status"] == "done" || line["status"] == "error"
}

/// Runs one line in oneshot style: the line, end of input; returns every output line parsed and
/// checks the executor exited 0.
pub(crate) fn oneshot(command: Command, line: &str) -> Vec<Value> {
    let mut exec = Exec::start(command);
    exec.send(&[line]);
    let (rest, status) = exec.finish();
    assert!(status.success(), "exit status {status}");
    rest.iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The single terminal line of a oneshot run.
pub(crate) fn terminal(lines: &[Value]) -> &Value {
    let terminal: Vec<&Value> = lines.iter().filter(|l| is_terminal(l)).collect();
    assert_eq!(terminal.len(), 1, "expected one terminal line in {lines:?}");
    terminal[0]
}
