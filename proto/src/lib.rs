//! Wire types shared by every goop crate: ids, job records, the cluster and group messages, the
//! MQ envelope and the executor protocol lines, with their JSON encodings.
//!
//! This crate does no I/O. Field names follow Goop² so that existing executors and HTTP clients
//! keep working; payloads and results are carried as raw JSON so numbers pass through untouched.

#![deny(missing_docs)]

mod ids;
mod job;
mod mq;

pub use ids::{Attempt, GroupId, IdError, JobId, PeerId};
pub use job::{JobMode, JobStatus};
pub use mq::{
    AckFrame, DEFAULT_MAX_FRAME_BYTES, Frame, FrameError, MAX_MSG_ID_LEN, MQ_PROTOCOL, MsgFrame,
    MsgId, NACK_MALFORMED, NACK_TOO_LARGE, NACK_UNAVAILABLE, NackFrame, sniff_id_and_seq,
};
