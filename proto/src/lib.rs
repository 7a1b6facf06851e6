//! Wire types shared by every goop crate: ids, job records, the cluster and group messages, the
//! MQ envelope and the executor protocol lines, with their JSON encodings.
//!
//! This crate does no I/O. Field names follow Goop² so that existing executors and HTTP clients
//! keep working; payloads and results are carried as raw JSON so numbers pass through untouched.

#![deny(missing_docs)]

mod executor;
mod ids;
mod job;

pub use executor::{
    BinaryMode, CANCEL_TYPE, CHECK_JOB_ID, CHECK_LINE, CheckInfo, ExecutorLine, JobLine, LineError,
    UnknownBinaryMode, write_cancel_line,
};
pub use ids::{Attempt, GroupId, IdError, JobId, PeerId};
pub use job::{JobMode, JobStatus};
