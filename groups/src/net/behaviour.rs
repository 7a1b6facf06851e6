//! The composed libp2p behaviour: identify, ping, optional mDNS, and raw streams for MQ.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{identify, mdns, ping};

/// The protocol version announced by identify.
pub(crate) const IDENTIFY_PROTOCOL_VERSION: &str = "/goop/1.0.0";

/// Everything the swarm runs. mDNS sits in a `Toggle` so `--no-mdns` removes it entirely.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) stream: libp2p_stream::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(
        key: &libp2p::identity::Keypair,
        agent_version: String,
        with_mdns: bool,
    ) -> std::io::Result<Self> {
        // The plain configuration on purpose: the signed-peer-record variant produces an
        // envelope go-libp2p and js-libp2p reject, which fails their whole identify exchange.
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
                .with_agent_version(agent_version),
        );
        let mdns = if with_mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                key.public().to_peer_id(),
            )?)
        } else {
            None
        };
        Ok(Self {
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
            stream: libp2p_stream::Behaviour::new(),
        })
    }
}
