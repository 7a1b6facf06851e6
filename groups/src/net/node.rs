//! Building and starting the node: the swarm, its task, and the MQ bus on top.

use std::time::Duration;

use libp2p::{Multiaddr, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::behaviour::Behaviour;
use super::config::NodeConfig;
use super::handle::{NodeError, NodeHandle};
use super::swarm_loop::SwarmLoop;
use crate::mq::Mq;

/// Commands queued for the swarm task before a sender waits.
const COMMAND_CAPACITY: usize = 256;
/// Connection events kept for slow receivers before they see `Lagged`.
const PEER_EVENT_CAPACITY: usize = 1024;
/// How long `start` waits for the listeners to report their addresses.
const LISTEN_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node: the swarm task, the MQ bus, and the token that stops them.
pub struct Node {
    handle: NodeHandle,
    mq: Mq,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.handle.local)
            .finish()
    }
}

impl Node {
    /// Builds the swarm, starts listening, starts the MQ bus, and returns once every listener
    /// has reported its addresses. Bootstrap addresses are dialled in the background.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let local = config.keypair.public().to_peer_id();
        let agent = config.agent_version.clone();
        let with_mdns = config.mdns;
        let mut swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::new().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NodeError::Start(e.to_string()))?
            // QUIC beside TCP (`/udp/<port>/quic-v1`): TLS 1.3 and its own streams, one
            // round trip to connect; what go-libp2p peers listen on by default.
            .with_quic()
            .with_behaviour(|key| {
                Behaviour::new(key, agent, with_mdns)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .map_err(|e| NodeError::Start(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
            .build();

        let mut listeners = Vec::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.push((id, addr.clone()));
        }

        let control = swarm.behaviour().stream.new_control();
        let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (event_tx, _) = broadcast::channel(PEER_EVENT_CAPACITY);
        let handle = NodeHandle {
            commands: command_tx,
            events: event_tx.clone(),
            local,
            dial_timeout: config.dial_timeout,
            control: control.clone(),
        };
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();

        let (ready_tx, ready_rx) = oneshot::channel();
        let swarm_loop = SwarmLoop::new(swarm, command_rx, event_tx, listeners, ready_tx);
        tasks.spawn(swarm_loop.run(cancel.clone()));

        let ready = tokio::time::timeout(LISTEN_READY_TIMEOUT, ready_rx).await;
        let ready = match ready {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Start(
                "listeners did not report their addresses in time".to_owned(),
            )),
        };
        if let Err(e) = ready {
            cancel.cancel();
            tasks.close();
            tasks.wait().await;
            return Err(e);
        }

        let mq = Mq::start(
            config.mq.clone(),
            control,
            handle.clone(),
            tasks.clone(),
            cancel.clone(),
        )
        .map_err(|e| NodeError::Start(e.to_string()))?;

        for addr in config.bootstrap {
            let handle = handle.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move { dial_bootstrap(handle, addr, cancel).await });
        }

        Ok(Self {
            handle,
            mq,
            tasks,
            cancel,
        })
    }

    /// The handle to the swarm task.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The MQ bus.
    pub fn mq(&self) -> Mq {
        self.mq.clone()
    }

    /// The token that stops the node; cancelling it is what [`Self::shutdown`] does first.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops every task of the node and waits for them to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn dial_bootstrap(handle: NodeHandle, addr: Multiaddr, cancel: CancellationToken) {
    let result = tokio::select! {
        result = handle.dial(addr.clone()) => result,
        () = cancel.cancelled() => return,
    };
    match result {
        Ok(peer) => tracing::info!(%addr, %peer, "connected to bootstrap peer"),
        Err(e) => tracing::warn!(%addr, error = %e, "cannot reach bootstrap peer"),
    }
}
