//! The goop peer: the libp2p node, the MQ bus between peers, groups (host-relayed channels with
//! membership) and the type handlers that build on them.
//!
//! - [`identity`]: the peer's key in the data directory.
//! - [`net`]: the libp2p node and the handle to it.
//! - [`mq`]: the MQ bus on `/goop/mq/1.0.0`.
//! - [`group`]: groups, their persistence and their type handlers.
//! - [`chat`]: the `chat` group type.
//! - [`files`]: the `files` group type.
//! - [`listen`]: the `listen` group type.
//! - [`names`]: peer names, asked and answered as Goop² does (`identity`).

pub mod chat;
pub mod files;
pub mod group;
pub mod identity;
pub mod listen;
mod migrate;
pub mod mq;
pub mod names;
pub mod net;

pub use group::{
    GroupConfig, GroupError, GroupHandle, GroupManagerParts, GroupSpec, GroupStore, GroupTransport,
    HandlerRegistry, MetaUpdate, MqTransport, TransportError, TransportEvent, TypeHandler,
    mq_transport, spawn_group_manager,
};
pub use mq::{Incoming, Mq, MqConfig, MqError, Pending, Subscription};
pub use net::{Node, NodeConfig, NodeError, NodeHandle, PeerEvent, PeerInfo};
