//! Write goop executors in Rust: turn a handler into a correct executor for both the oneshot and
//! the daemon mode of the goop executor protocol.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use executor_sdk::{Error, Executor};
//!
//! #[derive(serde::Deserialize)]
//! struct Sum {
//!     numbers: Vec<i64>,
//! }
//!
//! fn main() -> ExitCode {
//!     Executor::new("summer")
//!         .version("1.0.0")
//!         .capacity(4)
//!         .handle("sum", |job, ctx| {
//!             let sum: Sum = job.payload()?;
//!             let mut total = 0i64;
//!             for (i, n) in sum.numbers.iter().enumerate() {
//!                 ctx.check_cancelled()?;
//!                 total = total.checked_add(*n).ok_or_else(|| Error::new("sum overflows"))?;
//!                 ctx.progress(100.0 * (i + 1) as f64 / sum.numbers.len() as f64, "adding");
//!             }
//!             Ok(serde_json::json!({ "total": total }))
//!         })
//!         .run()
//! }
//! ```
//!
//! # The protocol, for an executor author
//!
//! An executor is a program that reads job lines on stdin and writes answer lines on stdout:
//! one JSON object per line, UTF-8, ending in `\n`. This crate implements all of it; this section
//! says what it does on your behalf (and is enough to write an executor by hand in any language).
//!
//! **Input lines** (worker to executor):
//! - a job: `{"job_id":"9f2c…","type":"calculate","payload":{…},"timeout_s":30,"mode":"oneshot","attempt":1}`.
//!   `payload` is any JSON, `null` included; `mode` and `attempt` come from goop workers only.
//!   Fields an executor does not know must be ignored.
//! - the check: `{"job_id":"__check__","type":"__check__","payload":null,"timeout_s":0}`, sent
//!   before any job to learn what the executor serves.
//! - a cancel (daemon mode): `{"type":"__cancel__","job_id":"9f2c…"}`.
//! - end of input: the worker closes stdin to shut the executor down.
//!
//! **Output lines** (executor to worker), told apart by `status`, each carrying the `job_id` it
//! is about (and the `attempt` when the job line had one):
//! - `{"job_id":…,"status":"progress","pct":40,"msg":"parsing"}`
//! - `{"job_id":…,"status":"output","data":<JSON>}`: a piece of streamed output
//! - `{"job_id":…,"status":"log","msg":"…"}`
//! - `{"job_id":…,"status":"done","result":<JSON>}`: the job succeeded; ends it
//! - `{"job_id":…,"status":"error","error":"…"}`: the job failed; ends it
//!
//! The check is answered with a `done` whose result describes the executor:
//! `{"name":…,"types":["calculate","transform"],"capacity":4,"version":"1.0.0"}`. An empty
//! `types` list means every type; `capacity` is how many jobs may run at once.
//!
//! **Two modes, one binary.** In *oneshot* mode the worker starts the executor per job, writes
//! one line (the check, or one job) and closes stdin. In *daemon* mode one long-lived process gets
//! the check, then many job lines, up to `capacity` at a time, interleaved with cancels, and
//! stdin closes on shutdown. An executor that reads lines until end of input, answers each job
//! exactly once by its `job_id`, finishes the jobs it has when input ends and then exits 0 serves
//! both; that is what [`Executor::run`] does.
//!
//! **What the SDK guarantees.**
//! - Jobs run on up to `capacity` handler threads, started as needed; further job lines wait
//!   in arrival order, while cancel lines are still read and acted on.
//! - At end of input, queued and running jobs all finish and answer before `run` returns; a
//!   handler that never returns keeps the process alive until the worker kills it.
//! - Every job gets exactly one `done` or `error` line. A handler's `Err` and a handler's panic
//!   both become an `error` line, and the executor keeps serving. A job of a type nobody handles,
//!   a duplicate of a job still running, and a job cancelled while still queued get an `error`.
//! - Lines are written whole by one writer thread, so lines of concurrent jobs never mix; a
//!   line goes out as soon as it is ready, and lines that queue up meanwhile go out together.
//! - Payloads reach the handler as raw JSON text ([`RawValue`]) and results are written as the
//!   handler serializes them, so numbers keep every digit: `12345678901234567890` echoes back as
//!   written if the handler returns the raw payload or decodes it into a type that holds it
//!   (`u128`, a string, a `RawValue`), never through `f64`.
//! - A malformed input line never stops the executor: it fails the job it names when a `job_id`
//!   can be read from it, and is reported as a `log` line (without a `job_id`) otherwise. Blank
//!   lines are skipped. Lines over [`DEFAULT_MAX_LINE_BYTES`] (see
//!   [`Executor::max_line_bytes`]) are treated as malformed.
//! - Cancellation reaches the handler as a flag ([`Context::is_cancelled`]) and as an early
//!   wake-up from [`Context::sleep`] and [`Context::wait_for_cancel`]. The worker also kills an
//!   executor whose job outlives its time limit, so a handler that ignores cancellation is
//!   stopped in the end, but one that polls it stops cleanly.
//!
//! **Compatibility.** A Goop² worker runs every job as oneshot, ignores `job_id` and `log` lines,
//! takes only whole-number `pct`, and wants the `done` result to be a JSON object; an executor
//! that returns objects works with both.

#![deny(missing_docs)]

mod context;
mod error;
mod executor;
mod job;
mod output;
mod pool;
mod wire;

pub use context::Context;
pub use error::Error;
pub use executor::{DEFAULT_MAX_LINE_BYTES, Executor};
pub use job::{Job, Mode};
pub use serde_json::value::RawValue;
