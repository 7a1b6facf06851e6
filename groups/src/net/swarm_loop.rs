//! The swarm task: one `select!` over swarm events, commands and cancellation, folded into
//! one [`LoopEvent`] and handled in one `match`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::handle::{Command, NodeError, PeerEvent, PeerInfo};

/// Addresses remembered per peer, newest first.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers whose addresses are remembered; beyond this, disconnected peers are forgotten.
const MAX_KNOWN_PEERS: usize = 4096;

/// Everything the loop reacts to.
enum LoopEvent {
    Swarm(Box<SwarmEvent<BehaviourEvent>>),
    Command(Command),
    Stop,
}

/// What the loop knows about one connected peer.
#[derive(Default)]
struct Connected {
    connections: HashMap<ConnectionId, Multiaddr>,
    agent_version: Option<String>,
    rtt: Option<Duration>,
}

pub(crate) struct SwarmLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<PeerEvent>,
    /// Listeners that have not reported an address yet, and who to tell when none are left.
    unready: HashMap<ListenerId, Multiaddr>,
    ready: Option<oneshot::Sender<Result<(), NodeError>>>,
    listen_addrs: Vec<Multiaddr>,
    connected: HashMap<PeerId, Connected>,
    known_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Dials by address, answered when that connection is up or has failed.
    addr_dials: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, NodeError>>)>,
    /// Waiters for a connection to a peer.
    peer_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NodeError>>>>,
}

impl SwarmLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<PeerEvent>,
        listeners: Vec<(ListenerId, Multiaddr)>,
        ready: oneshot::Sender<Result<(), NodeError>>,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            unready: listeners.into_iter().collect(),
            ready: Some(ready),
            listen_addrs: Vec::new(),
            connected: HashMap::new(),
            known_addrs: HashMap::new(),
            addr_dials: HashMap::new(),
            peer_waiters: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        self.check_ready();
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => LoopEvent::Stop,
                event = self.swarm.select_next_some() => LoopEvent::Swarm(Box::new(event)),
                command = self.commands.recv() => match command {
                    Some(command) => LoopEvent::Command(command),
                    None => LoopEvent::Stop,
                },
            };
            match event {
                LoopEvent::Swarm(event) => self.on_swarm_event(*event),
                LoopEvent::Command(command) => self.on_command(command),
                LoopEvent::Stop => break,
            }
        }
        tracing::debug!("swarm task stopped");
    }

    fn check_ready(&mut self) {
        if self.unready.is_empty()
            && let Some(ready) = self.ready.take()
        {
            let _ = ready.send(Ok(()));
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Peers(reply) => {
                let mut peers: Vec<PeerInfo> = self
                    .connected
                    .iter()
                    .map(|(peer, c)| PeerInfo {
                        peer: *peer,
                        addrs: c.connections.values().cloned().collect(),
                        agent_version: c.agent_version.clone(),
                        rtt: c.rtt,
                    })
                    .collect();
                peers.sort_by_key(|p| p.peer.to_bytes());
                let _ = reply.send(peers);
            }
            Command::Dial(addr, reply) => self.dial_addr(addr, reply),
            Command::Connect(peer, reply) => self.connect_peer(peer, reply),
            Command::AddAddress(peer, addr) => self.remember(peer, addr),
        }
    }

    fn dial_addr(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, NodeError>>) {
        let expected = match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Some(peer),
            _ => None,
        };
        if let Some(peer) = expected
            && self.connected.contains_key(&peer)
        {
            let _ = reply.send(Ok(peer));
            return;
        }
        // Always open a new connection for an explicit dial by address, so the answer names
        // the peer actually found there.
        let opts = match expected {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.addr_dials.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial {
                    target: addr.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn connect_peer(&mut self, peer: PeerId, reply: oneshot::Sender<Result<(), NodeError>>) {
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err(NodeError::Dial {
                target: peer.to_string(),
                reason: "that is this peer".to_owned(),
            }));
            return;
        }
        if self.connected.contains_key(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let addrs = self.known_addrs.get(&peer).cloned().unwrap_or_default();
        if addrs.is_empty() {
            let _ = reply.send(Err(NodeError::NoAddress(peer)));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            // A dial already under way answers this waiter too.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                self.peer_waiters.entry(peer).or_default().push(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial {
                    target: peer.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        // Strip a `/p2p/<id>` suffix: the dial options carry the peer id already.
        let addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        if !self.known_addrs.contains_key(&peer) && self.known_addrs.len() >= MAX_KNOWN_PEERS {
            let stale = self
                .known_addrs
                .keys()
                .find(|p| !self.connected.contains_key(p))
                .copied();
            match stale {
                Some(stale) => {
                    self.known_addrs.remove(&stale);
                }
                None => return,
            }
        }
        let addrs = self.known_addrs.entry(peer).or_default();
        addrs.retain(|a| *a != addr);
        addrs.insert(0, addr);
        addrs.truncate(MAX_ADDRS_PER_PEER);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
                self.unready.remove(&listener_id);
                self.check_ready();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = self.unready.remove(&listener_id)
                    && let Some(ready) = self.ready.take()
                {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = ready.send(Err(NodeError::Listen { addr, reason }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_established(peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                let last = match self.connected.get_mut(&peer_id) {
                    Some(c) => {
                        c.connections.remove(&connection_id);
                        c.connections.is_empty()
                    }
                    None => false,
                };
                if last {
                    self.connected.remove(&peer_id);
                    tracing::info!(peer = %peer_id, cause = ?cause, "peer disconnected");
                    let _ = self.events.send(PeerEvent::Disconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let reason = error.to_string();
                if let Some((addr, reply)) = self.addr_dials.remove(&connection_id) {
                    tracing::debug!(%addr, %reason, "dial failed");
                    let _ = reply.send(Err(NodeError::Dial {
                        target: addr.to_string(),
                        reason: reason.clone(),
                    }));
                }
                if let Some(peer) = peer_id
                    && !self.connected.contains_key(&peer)
                    && let Some(waiters) = self.peer_waiters.remove(&peer)
                {
                    for waiter in waiters {
                        let _ = waiter.send(Err(NodeError::Dial {
                            target: peer.to_string(),
                            reason: reason.clone(),
                        }));
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let addr = endpoint.get_remote_address().clone();
        if endpoint.is_dialer() {
            self.remember(peer, addr.clone());
        }
        let entry = self.connected.entry(peer).or_default();
        let first = entry.connections.is_empty();
        entry.connections.insert(connection, addr.clone());
        if first {
            tracing::info!(%peer, %addr, "peer connected");
            let _ = self.events.send(PeerEvent::Connected {
                peer,
                addr: addr.clone(),
            });
        }
        if let Some((_, reply)) = self.addr_dials.remove(&connection) {
            let _ = reply.send(Ok(peer));
        }
        if let Some(waiters) = self.peer_waiters.remove(&peer) {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified peer");
                for addr in info.listen_addrs {
                    if usable(&addr) {
                        self.remember(peer_id, addr);
                    }
                }
                if let Some(c) = self.connected.get_mut(&peer_id) {
                    c.agent_version = Some(info.agent_version);
                }
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event { peer, result, .. }) => match result {
                Ok(rtt) => {
                    if let Some(c) = self.connected.get_mut(&peer) {
                        c.rtt = Some(rtt);
                    }
                }
                Err(error) => tracing::debug!(%peer, %error, "ping failed"),
            },
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut peers = HashSet::new();
                for (peer, addr) in found {
                    self.remember(peer, addr);
                    peers.insert(peer);
                }
                for peer in peers {
                    if self.connected.contains_key(&peer) {
                        continue;
                    }
                    tracing::debug!(%peer, "found peer through mdns");
                    let addrs = self.known_addrs.get(&peer).cloned().unwrap_or_default();
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(error) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, %error, "mdns dial not started");
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Stream(()) => {}
        }
    }
}

/// Whether an address a peer announced is worth dialling later: not unspecified (`0.0.0.0`).
fn usable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
