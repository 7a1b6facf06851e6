//! Groups: host-relayed channels with membership, built over a message transport.
//!
//! A group is a star around its host. Members talk only to the host on
//! `group:<gid>:<type>`; the host admits them, relays their `msg` and `state` to the other
//! members with the original author, and tells everyone when the membership or the settings
//! change. This module holds:
//! - `core`: the membership state machine, host and member side, driven by
//!   `handle(now, input)` and commands, whose outputs (sends, store writes, local events, hook
//!   calls) the shell carries out. It does no I/O and reads no clock.
//! - `store`: the SQLite tables for hosted groups, members, invitations and subscriptions,
//!   on a thread of their own.
//! - `config`, `error`: settings and errors.
//! - `handler`: the [`TypeHandler`] trait of group types and their registry.
//! - `transport`: the small interface the groups need from the MQ bus.
//! - `manager`: the async shell and the [`GroupHandle`] the HTTP layer calls.
//! - `mq_transport`: the [`GroupTransport`] over the MQ bus, what a node runs on.
//! - `memory`: an in-memory [`GroupTransport`] joining several managers, for tests.

mod config;
mod core;
mod error;
mod handler;
mod manager;
mod memory;
mod mq_transport;
mod store;
mod transport;

pub use self::config::GroupConfig;
pub use self::core::{
    DiscoverTicket, GroupCore, GroupSpec, HookCall, HostedGroup, Input, JoinTicket, JoinedGroup,
    LeaveReason, MetaUpdate, Output, ReceivedInvite, SendToken, Subscription,
};
pub use self::error::GroupError;
pub use self::handler::{CreateInfo, HandlerRegistry, TypeHandler};
pub use self::manager::{GroupHandle, GroupManagerParts, spawn_group_manager};
pub use self::memory::{MemoryNetwork, MemoryTransport};
pub use self::mq_transport::{MqTransport, mq_transport};
pub use self::store::{
    GroupRecord, GroupStore, MemberRecord, StoreError, StoreOp, StoreSnapshot, SubscriptionRecord,
};
pub use self::transport::{GroupTransport, TransportError, TransportEvent};
