//! The job dispatcher: a pure, deterministic state machine that owns the job queue and decides
//! which worker runs which job.
//!
//! It does no I/O, reads no clock and draws no randomness except from a seed: the shell feeds it
//! inputs with the current time through [`Dispatcher::step`], and carries out the [`Output`]s it
//! leaves in its buffer (send assigns and cancels, persist job changes, arm a wake-up timer).
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
