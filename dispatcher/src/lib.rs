//! The job dispatcher: a pure, deterministic state machine that owns the job queue and decides
//! which worker runs which job.
//!
//! It does no I/O, reads no clock and draws no randomness except from a seed: the shell feeds it
//! inputs with the current time through [`Dispatcher::step`], and carries out the [`Output`]s it
//! leaves in its buffer (send assigns and cancels, persist job changes, arm a wake-up timer).
//!
//! The shell's loop: turn each request or worker message into an [`Input`], call `step` with
//! the current time, drain the outputs and act on them; when an [`Output::WakeAt`] time comes
//! (or [`Dispatcher::next_wakeup`]), step with [`Input::Tick`]. A job's last `JobChanged`
//! with a terminal status is the last word on it: the dispatcher keeps only that status
//! (until [`Input::Forget`]), and the store keeps the record, the result and the attempts
//! (each one announced by [`Output::AttemptEnded`]).
//!
//! ```
//! use dispatcher::{Config, Dispatcher, Input, Millis, NewJob, Output, Report};
//! use proto::{JobId, JobStatus, PeerId};
//!
//! let mut d: Dispatcher<&str, String> = Dispatcher::new(Config::default(), 7);
//! let worker: PeerId = "12D3KooWworker".parse()?;
//! let job = JobId::from_u64(1);
//! d.step(Millis(0), Input::Submit(NewJob::new(job, "render", r#"{"frame":1}"#)))?;
//! d.step(Millis(5), Input::WorkerVerified { worker: worker.clone(), types: vec![], capacity: 2 })?;
//! let assign = d.drain_outputs().find_map(|o| match o {
//!     Output::Assign(a) => Some(a),
//!     _ => None,
//! });
//! let assign = assign.expect("the worker got the job");
//! assert_eq!((assign.job, assign.payload), (job, r#"{"frame":1}"#));
//! let report = Report::Completed("ok".to_owned());
//! d.step(Millis(9), Input::Result { worker, job, attempt: assign.attempt, report })?;
//! assert_eq!(d.status(job), Some(JobStatus::Completed));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - `config`: the settings and their defaults.
//! - `io`: inputs, outputs and the records they carry.
//! - `error`: why an input was refused or ignored.
//! - `dispatcher`: the state machine itself.
//! - `query`: read-only views for the shell (job detail, lists, stats, workers).
//! - `index`, `state`, `seeded`, `time`: its building blocks.

mod config;
mod dispatcher;
mod error;
mod index;
mod io;
mod known;
mod query;
mod seeded;
mod state;
mod time;

pub use config::Config;
pub use dispatcher::Dispatcher;
pub use error::{IgnoreReason, StepError};
pub use io::{
    Assignment, AttemptEnd, AttemptRecord, CancelReason, Input, JobUpdate, LeaveReason, NewJob,
    Output, Report, RestoredJob, RetryJob,
};
pub use query::{JobFilter, JobView, QueueStats, WorkerView};
pub use time::Millis;
