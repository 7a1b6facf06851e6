//! The cluster group type: the host side that drives the dispatcher and the job store, and the
//! worker side that drives the executor runtime, talking over the MQ bus.
//!
//! Both sides are actors: one task each with an explicit event loop. They reach the network
//! through [`Link`], so they can be tested over an in-memory link as well as over libp2p.

pub(crate) mod counters;
pub(crate) mod host;
mod ids;
pub(crate) mod member;
mod outbox;
pub(crate) mod service;
#[cfg(test)]
mod tests;
mod time;

use std::future::Future;

use proto::PeerId;
use serde_json::value::RawValue;

pub(crate) use service::Cluster;

/// How a cluster actor sends a message to another peer: delivered in order, acknowledged once
/// the receiver took it, or an error after bounded retries.
pub(crate) trait Link: Clone + Send + Sync + 'static {
    /// Sends `payload` on `topic` to `to`.
    fn send(
        &self,
        to: PeerId,
        topic: String,
        payload: Box<RawValue>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// A message that reached this peer on a `cluster:` topic.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The authenticated sender.
    pub from: PeerId,
    /// The message type (the topic after `cluster:<group>:`).
    pub msg_type: String,
    /// The payload as JSON text.
    pub payload: String,
}
