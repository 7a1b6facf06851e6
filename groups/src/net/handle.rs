//! The cloneable handle to the swarm task, the commands it carries and the events it hands out.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Why a node operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The node could not be built (transport or mDNS set-up).
    #[error("cannot start the libp2p node: {0}")]
    Start(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The node has stopped.
    #[error("the libp2p node has stopped")]
    Stopped,
    /// A string is not a libp2p peer id.
    #[error("invalid peer id {0:?}")]
    InvalidPeerId(String),
    /// Something else already serves this stream protocol.
    #[error("the stream protocol {0} is already served")]
    ProtocolTaken(&'static str),
    /// A dial failed.
    #[error("cannot dial {target}: {reason}")]
    Dial {
        /// The peer or address dialled.
        target: String,
        /// Why.
        reason: String,
    },
    /// No address is known for a peer that is not connected.
    #[error("peer {0} is not connected and no address is known for it")]
    NoAddress(PeerId),
    /// A dial took longer than the dial timeout.
    #[error("dialling {target} timed out after {after:?}")]
    DialTimeout {
        /// The peer or address dialled.
        target: String,
        /// The timeout.
        after: Duration,
    },
}

/// A change in the set of connected peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The first connection to `peer` is up.
    Connected {
        /// The remote peer.
        peer: PeerId,
        /// The remote address of that connection.
        addr: Multiaddr,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// The remote peer.
        peer: PeerId,
    },
}

/// A connected peer as the node sees it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Remote addresses of the open connections.
    pub addrs: Vec<Multiaddr>,
    /// The agent version the peer announced through identify, once known.
    pub agent_version: Option<String>,
    /// The last ping round-trip time, once measured.
    pub rtt: Option<Duration>,
}

/// What the rest of the program asks of the swarm task.
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, NodeError>>),
    Connect(PeerId, oneshot::Sender<Result<(), NodeError>>),
    AddAddress(PeerId, Multiaddr),
}

/// The handle to a running node. Cheap to clone; every call is a message to the swarm task.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<PeerEvent>,
    pub(crate) local: PeerId,
    pub(crate) dial_timeout: Duration,
    pub(crate) control: libp2p_stream::Control,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("local", &self.local)
            .finish()
    }
}

impl NodeHandle {
    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses the node listens on, without a `/p2p/` suffix.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(Command::ListenAddrs).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Dials `addr` and resolves once connected, with the remote's peer id. An address with a
    /// `/p2p/<id>` suffix only accepts that peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let target = addr.to_string();
        let answer = self.ask(|tx| Command::Dial(addr, tx));
        match tokio::time::timeout(self.dial_timeout, answer).await {
            Ok(result) => result?,
            Err(_) => Err(NodeError::DialTimeout {
                target,
                after: self.dial_timeout,
            }),
        }
    }

    /// Resolves once connected to `peer`, dialling its known addresses if needed.
    pub async fn connect(&self, peer: PeerId) -> Result<(), NodeError> {
        let answer = self.ask(|tx| Command::Connect(peer, tx));
        match tokio::time::timeout(self.dial_timeout, answer).await {
            Ok(result) => result?,
            Err(_) => Err(NodeError::DialTimeout {
                target: peer.to_string(),
                after: self.dial_timeout,
            }),
        }
    }

    /// Remembers an address for `peer`, used by later dials.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NodeError> {
        self.commands
            .send(Command::AddAddress(peer, addr))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// A control for raw libp2p streams on this node's connections, for protocols other than
    /// MQ (and for measuring MQ against a bare stream).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Connection events from now on. The channel is bounded: a receiver that falls more than
    /// its capacity behind gets `RecvError::Lagged` and should re-read [`Self::peers`].
    pub fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
}
