//! What a node needs to start. Defaults live in one place: [`NodeConfig::new`].

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;

use crate::mq::MqConfig;

/// The node's configuration, already validated.
#[derive(Clone)]
pub struct NodeConfig {
    /// The peer's key (see [`crate::identity::load_or_create`]).
    pub keypair: Keypair,
    /// Addresses to listen on. Empty means dial-only.
    pub listen: Vec<Multiaddr>,
    /// Addresses dialled once the node runs; a failure is logged, not fatal.
    pub bootstrap: Vec<Multiaddr>,
    /// Whether mDNS discovery runs (peers found on the local network are dialled).
    pub mdns: bool,
    /// The agent version identify announces.
    pub agent_version: String,
    /// How long a connection with no open stream stays up.
    pub idle_connection_timeout: Duration,
    /// How long a dial may take before it counts as failed.
    pub dial_timeout: Duration,
    /// The MQ bus settings.
    pub mq: MqConfig,
}

impl NodeConfig {
    /// A configuration with the defaults: no listen address, no bootstrap peers, mDNS on,
    /// connections idle for 60 s, dials bounded at 5 s, the default MQ settings.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            agent_version: format!("goop/{}", env!("CARGO_PKG_VERSION")),
            idle_connection_timeout: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(5),
            mq: MqConfig::default(),
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("agent_version", &self.agent_version)
            .field("idle_connection_timeout", &self.idle_connection_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("mq", &self.mq)
            .finish()
    }
}
