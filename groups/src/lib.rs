//! The goop peer: the libp2p node, the MQ bus between peers, groups (host-relayed channels with
//! membership) and the type handlers that build on them.

pub mod group;

pub use group::{
    GroupConfig, GroupError, GroupHandle, GroupManagerParts, GroupSpec, GroupStore, GroupTransport,
    HandlerRegistry, MetaUpdate, TransportError, TransportEvent, TypeHandler, spawn_group_manager,
};
