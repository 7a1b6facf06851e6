//! The worker runtime: runs jobs through a user's executor binary, oneshot or daemon, over
//! newline-delimited JSON on stdin/stdout, and supervises the processes.
//!
//! - `config`: the executor's path, mode, limits and grace periods.
//! - `executor`: the handle the node drives (start and check, submit, cancel, shutdown).
//! - `job`: a job to run, its events and its outcome.
//! - `oneshot`: a process per job; `daemon`: one supervised long-lived process.
//! - `restarts`: the restart policy both follow when their executor goes down.
//! - `process`, `lines`, `stderr`, `sink`: process groups and signals, the bounded stdout line
//!   reader, the stderr tail, event delivery.
//!
//! Nothing here knows about the network, the host or storage: the node drives an `Executor`
//! and carries its events wherever they need to go.

mod config;
mod daemon;
mod executor;
mod job;
mod lines;
mod oneshot;
mod process;
mod restarts;
mod sink;
mod stderr;

pub use config::{DEFAULT_CHECK_TIMEOUT, DEFAULT_MAX_LINE_BYTES, ExecutorConfig};
pub use executor::{BatchRefused, Executor, ExecutorStatus, StartError, SubmitError, check};
pub use job::{Event, EventKind, Failure, FailureKind, JobSpec, LogStream, Outcome};
pub use proto::{BinaryMode, CheckInfo};
