//! The libp2p node: one swarm (TCP + Noise + Yamux, identify, ping, mDNS, raw streams) run by
//! one task, and a cloneable [`NodeHandle`] the rest of the program talks to it through.
//!
//! The swarm task owns every piece of libp2p state. Everything else sends it commands over a
//! bounded channel and gets answers on oneshot channels; connection changes go out as
//! [`PeerEvent`]s on a bounded broadcast channel.

mod behaviour;
mod config;
mod handle;
mod idle;
mod node;
mod swarm_loop;

pub use config::NodeConfig;
pub use handle::{NodeError, NodeHandle, PeerEvent, PeerInfo};
pub(crate) use idle::IdleTimeout;
pub use node::Node;

/// Converts a libp2p peer id to the wire form used in messages.
pub fn peer_to_proto(peer: &libp2p::PeerId) -> proto::PeerId {
    // A libp2p peer id prints as base58, which always satisfies `proto::PeerId`'s shape check
    // (non-empty, short, no ':' or whitespace).
    peer.to_base58()
        .parse()
        .expect("a base58 peer id is a valid wire peer id")
}

/// Converts a wire peer id to a libp2p one, checking that it really is one.
pub fn proto_to_peer(peer: &proto::PeerId) -> Result<libp2p::PeerId, NodeError> {
    peer.as_str()
        .parse()
        .map_err(|_| NodeError::InvalidPeerId(peer.as_str().to_owned()))
}

/// Serves a stream protocol of the node: each stream a peer opens on `protocol` goes to
/// `serve`, with the peer, in a task of its own, until `cancel`.
pub fn serve_protocol<F, Fut>(
    node: &NodeHandle,
    protocol: &'static str,
    tracker: &tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
    serve: F,
) -> Result<(), NodeError>
where
    F: Fn(proto::PeerId, libp2p::Stream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt as _;
    let mut incoming = node
        .stream_control()
        .accept(libp2p::StreamProtocol::new(protocol))
        .map_err(|_| NodeError::ProtocolTaken(protocol))?;
    let tasks = tracker.clone();
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => break,
                next = incoming.next() => next,
            };
            let Some((peer, stream)) = next else { break };
            tasks.spawn(serve(peer_to_proto(&peer), stream));
        }
    });
    Ok(())
}
