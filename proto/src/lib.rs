//! Wire types shared by every goop crate: ids, job records, the cluster and group messages, the
//! MQ envelope and the executor protocol lines, with their JSON encodings.
//!
//! This crate does no I/O and reads no clock. Field names follow Goop² so that existing
//! executors and HTTP clients keep working; payloads and results are carried as raw JSON text so
//! numbers pass through untouched.

#![deny(missing_docs)]

pub mod api;
pub mod cluster;
mod executor;
mod group;
mod ids;
mod job;
mod mq;
mod object;
mod time;

pub use executor::{
    BinaryMode, CANCEL_TYPE, CHECK_JOB_ID, CHECK_LINE, CheckInfo, ExecutorLine, JobLine, LineError,
    UnknownBinaryMode, write_cancel_line,
};
pub use group::{
    Admission, CloseBody, CloseReason, DEFAULT_ROLE, DISCOVER_REPLY_TOPIC, DISCOVER_TOPIC,
    DiscoverReply, DiscoverRequest, ErrorBody, ErrorCode, FEATURE_AUTHOR, GROUP_TOPIC_PREFIX,
    GroupEvent, GroupEventKind, GroupMessage, GroupMsgKind, GroupRow, GroupTopic, GroupWireError,
    INVITE_TOPIC, Invite, JoinOptions, MemberInfo, Members, Meta, OWNER_ROLE, PingBody, Relay,
    RelayForm, SetRole, Welcome,
};
pub use ids::{Attempt, GroupId, IdError, IdHasher, IdMap, IdSet, JobId, PeerId};
pub use job::{JobMode, JobStatus};
pub use mq::{
    AckFrame, DEFAULT_MAX_FRAME_BYTES, Frame, FrameError, MAX_MSG_ID_LEN, MQ_PROTOCOL, MsgFrame,
    MsgId, NACK_MALFORMED, NACK_TOO_LARGE, NACK_UNAVAILABLE, NackFrame, sniff_id_and_seq,
};
pub use object::{Object, objects};
pub use time::{Timestamp, TimestampError};
