//! The SDK in process: `run_with` over in-memory input for whole sessions, and over OS pipes
//! for sessions that need a live conversation (capacity, cancellation).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread;
use std::time::Duration;

use executor_sdk::{Error, Executor, Mode, RawValue};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

/// Runs a whole session over in-memory input; returns the output lines.
fn session(executor: &Executor, input: &str) -> Vec<String> {
    let mut out = Vec::new();
    executor.run_with(input.as_bytes(), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn a_typed_payload_and_result_keep_every_digit() {
    #[derive(serde::Deserialize)]
    struct Add {
        a: u128,
        b: u128,
    }
    let executor = Executor::new("adder").handle("add", |job, _ctx| {
        let add: Add = job.payload()?;
        Ok(Sum(add.a + add.b))
    });
    #[derive(serde::Serialize)]
    struct Sum(u128);
    let lines = session(
        &executor,
        r#"{"job_id":"a","type":"add","payload":{"a":99999999999999999999999,"b":1}}"#,
    );
    assert_eq!(
        lines,
        [r#"{"job_id":"a","status":"done","result":100000000000000000000000}"#]
    );
}

#[test]
fn a_raw_result_passes_through_untouched() {
    let executor = Executor::new("raw").handle("pick", |job, _ctx| {
        #[derive(serde::Deserialize)]
        struct Pick<'a> {
            #[serde(borrow)]
            keep: &'a RawValue,
        }
        let pick: Pick<'_> = job.payload()?;
        Ok(pick.keep.to_owned())
    });
    let lines = session(
        &executor,
        r#"{"job_id":"a","type":"pick","payload":{"drop":1,"keep":[12345678901234567890, 1.50, "\u00e9"]}}"#,
    );
    assert_eq!(
        lines,
        [r#"{"job_id":"a","status":"done","result":[12345678901234567890, 1.50, "\u00e9"]}"#]
    );
}

#[test]
fn the_check_lists_types_capacity_and_version() {
    let typed = Executor::new("t")
        .version("2.1.0")
        .capacity(0)
        .handle("b", |_, _| Ok(()))
        .handle("a", |_, _| Ok(()))
        .handle("b", |_, _| Ok(1));
    let lines = session(
        &typed,
        r#"{"job_id":"__check__","type":"__check__","payload":null,"timeout_s":0}"#,
    );
    assert_eq!(
        parse(&lines[0])["result"],
        json!({"name": "t", "types": ["a", "b"], "capacity": 1, "version": "2.1.0"})
    );
    let any = Executor::new("any")
        .capacity(9)
        .handle("a", |_, _| Ok(()))
        .handle_any(|_, _| Ok(()));
    let lines = session(&any, r#"{"type":"__check__"}"#);
    assert_eq!(parse(&lines[0])["result"]["types"], json!([]));
    assert_eq!(parse(&lines[0])["result"]["capacity"], 9);
}

#[test]
fn the_handler_sees_the_job_fields() {
    let executor = Executor::new("fields").handle_any(|job, _ctx| {
        Ok(json!({
            "id": job.id(),
            "type": job.job_type(),
            "timeout_ms": job.timeout().map(|t| t.as_millis() as u64),
            "continuous": job.mode() == Mode::Continuous,
            "attempt": job.attempt(),
            "payload": job.payload_raw().get(),
        }))
    });
    let lines = session(
        &executor,
        concat!(
            r#"{"job_id":"a","type":"x","payload":null,"timeout_s":1.5,"mode":"continuous","attempt":4,"new_field":true}"#,
            "\n",
            r#"{"job_id":"b","type":"y"}"#,
        ),
    );
    let mut results: HashMap<String, Value> = lines
        .iter()
        .map(|l| {
            let v = parse(l);
            (v["job_id"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    let a = results.remove("a").unwrap();
    assert_eq!(a["attempt"], 4);
    assert_eq!(
        a["result"],
        json!({"id": "a", "type": "x", "timeout_ms": 1500, "continuous": true, "attempt": 4, "payload": "null"})
    );
    assert_eq!(
        results["b"]["result"],
        json!({"id": "b", "type": "y", "timeout_ms": null, "continuous": false, "attempt": null, "payload": "null"})
    );
}

#[test]
fn an_oversized_line_fails_its_job_and_serving_goes_on() {
    let executor = Executor::new("small")
        .max_line_bytes(100)
        .handle_any(|job, _| Ok(job.into_payload()));
    let big = format!(
        r#"{{"job_id":"big","type":"x","payload":"{}"}}"#,
        "x".repeat(500)
    );
    let input = format!(
        "{big}\n{}\n{}\n",
        "y".repeat(300),
        r#"{"job_id":"ok","type":"x","payload":1}"#
    );
    let lines = session(&executor, &input);
    assert_eq!(
        lines,
        [
            r#"{"job_id":"big","status":"error","error":"input line is longer than the limit of 100 bytes"}"#,
            r#"{"status":"log","msg":"input line is longer than the limit of 100 bytes"}"#,
            r#"{"job_id":"ok","status":"done","result":1}"#,
        ]
    );
}

#[test]
fn errors_panics_and_unencodable_results_fail_only_their_job() {
    let executor = Executor::new("bad")
        .handle("err", |_, _| Err::<(), _>(Error::new("no luck")))
        .handle("io", |_, _| -> Result<(), Error> {
            Err(io::Error::new(io::ErrorKind::NotFound, "gone"))?
        })
        .handle("panic", |_, _| -> Result<(), Error> {
            panic!("kaboom {}", 7)
        })
        .handle("encode", |_, _| {
            let mut map = HashMap::new();
            map.insert((1, 2), 3);
            Ok(map)
        })
        .handle("payload", |job, _| job.payload::<u8>());
    let input = ["err", "io", "panic", "encode", "payload"]
        .map(|t| format!(r#"{{"job_id":"{t}","type":"{t}","payload":300}}"#))
        .join("\n");
    let lines = session(&executor, &input);
    let errors: HashMap<String, String> = lines
        .iter()
        .map(|l| {
            let v = parse(l);
            assert_eq!(v["status"], "error", "{l}");
            (
                v["job_id"].as_str().unwrap().to_owned(),
                v["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(errors["err"], "no luck");
    assert_eq!(errors["io"], "gone");
    assert_eq!(errors["panic"], "handler panicked: kaboom 7");
    assert_eq!(
        errors["encode"],
        "result could not be encoded: key must be a string"
    );
    assert!(errors["payload"].starts_with("invalid payload: invalid value: integer `300`"));
}

#[test]
fn lines_from_threads_a_handler_starts_stay_whole() {
    let executor = Executor::new("chatty").capacity(4).handle_any(|job, ctx| {
        thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..200 {
                        ctx.progress(
                            f64::from(i) / 2.0,
                            format!("thread {t} step {i} {}", "z".repeat(i as usize)),
                        );
                        ctx.log("a \"quoted\"\nline");
                        ctx.output(&json!({"t": t, "i": i})).unwrap();
                    }
                });
            }
        });
        Ok(job.id().len())
    });
    let input: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"job_id":"j{i}","type":"x"}}"#))
        .collect();
    let lines = session(&executor, &input.join("\n"));
    assert_eq!(lines.len(), 8 * (4 * 200 * 3 + 1));
    let mut done = 0;
    for line in &lines {
        let v = parse(line);
        assert!(v["job_id"].as_str().unwrap().starts_with('j'));
        done += usize::from(v["status"] == "done");
    }
    assert_eq!(done, 8);
}

#[test]
fn a_failing_writer_is_reported_after_input_ends() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let executor = Executor::new("w").handle_any(|job, _| Ok(job.into_payload()));
    let input: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"job_id":"j{i}","type":"x"}}"#))
        .collect();
    let err = executor
        .run_with(input.join("\n").as_bytes(), Broken)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
}

/// A live session over OS pipes.
struct Live {
    input: Option<io::PipeWriter>,
    lines: Receiver<String>,
    done: thread::JoinHandle<io::Result<()>>,
}

impl Live {
    fn start(executor: Executor) -> Self {
        let (in_reader, input) = io::pipe().unwrap();
        let (out_reader, out_writer) = io::pipe().unwrap();
        let done = thread::spawn(move || executor.run_with(BufReader::new(in_reader), out_writer));
        let (tx, lines) = sync_channel(1 << 12);
        thread::spawn(move || {
            for line in BufReader::new(out_reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            input: Some(input),
            lines,
            done,
        }
    }

    fn send(&mut self, line: &str) {
        let input = self.input.as_mut().unwrap();
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn line(&self) -> Value {
        parse(
            &self
                .lines
                .recv_timeout(DEADLINE)
                .expect("a line before the deadline"),
        )
    }

    fn finish(mut self) {
        self.input = None;
        self.done.join().unwrap().unwrap();
        assert!(
            self.lines.recv_timeout(DEADLINE).is_err(),
            "no lines after the end"
        );
    }
}

#[test]
fn no_more_than_capacity_handlers_run_and_cancel_wakes_them() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    let executor = Executor::new("gate")
        .capacity(2)
        .handle_any(move |job, ctx| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            ctx.log("started");
            let cancelled = ctx.wait_for_cancel(Duration::from_secs(600));
            r.fetch_sub(1, Ordering::SeqCst);
            if cancelled {
                ctx.check_cancelled()?;
            }
            Ok(job.id().to_owned())
        });
    let mut live = Live::start(executor);
    for i in 0..5 {
        live.send(&format!(r#"{{"job_id":"j{i}","type":"x"}}"#));
    }
    let mut started = vec![live.line(), live.line()];
    // The queued ones first: cancels are read in order, so they are all flagged before a running
    // job ends and frees a thread.
    for i in [4, 3, 2, 0, 1] {
        live.send(&format!(r#"{{"type":"__cancel__","job_id":"j{i}"}}"#));
    }
    // Every job ends `cancelled`: the two running ones woken from their wait, the three queued
    // ones before they start; the queued ones never report `started`.
    let mut ends = HashMap::new();
    while ends.len() < 5 {
        let line = live.line();
        if line["status"] == "log" {
            started.push(line);
        } else {
            ends.insert(
                line["job_id"].as_str().unwrap().to_owned(),
                line["error"].clone(),
            );
        }
    }
    assert_eq!(started.len(), 2, "{started:?}");
    let before_start = ends
        .values()
        .filter(|e| *e == "cancelled before it started")
        .count();
    assert_eq!(before_start, 3, "{ends:?}");
    assert_eq!(
        ends.values().filter(|e| *e == "cancelled").count(),
        2,
        "{ends:?}"
    );
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    live.finish();
}

#[test]
fn a_job_id_is_free_again_as_soon_as_its_answer_is_out() {
    let executor = Executor::new("again")
        .capacity(4)
        .handle_any(|job, _| Ok(job.attempt()));
    let mut live = Live::start(executor);
    for attempt in 1..=200 {
        live.send(&format!(
            r#"{{"job_id":"same","type":"x","attempt":{attempt}}}"#
        ));
        let answer = live.line();
        assert_eq!(answer["status"], "done", "{answer}");
        assert_eq!(answer["result"], attempt);
    }
    live.finish();
}
