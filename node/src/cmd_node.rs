//! `goop node`: runs a peer (libp2p node, MQ bus, groups, HTTP API) until SIGINT or SIGTERM.
//! The parts are wired in [`crate::peer`]; this file reads the settings and serves the API.
//!
//! stdout stays empty except for the ready line that `--print-ready` asks for: one JSON object
//! `{"event":"ready","peer_id","listen":[...],"api":"HOST:PORT"}` once the node listens and
//! the API is bound (listen addresses end in `/p2p/<peer id>`; `api` is the bound address, so
//! `--api 127.0.0.1:0` works). Logs go to stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use groups::{GroupConfig, HandlerRegistry, MqConfig, NodeConfig};
use libp2p::multiaddr::Protocol;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::cluster::host::Limits;
use crate::cluster::service::{CLUSTER_TYPE, HostSettings, JoinTry};
use crate::http::{self, AppState, Hub};
use crate::node_config::{Config, GROUP_PINGS_BEFORE_LOST, RawConfig};
use crate::peer::{Peer, PeerParts};

/// Flags of `goop node`. Each overrides the same setting of the `--config` file.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A JSON config file (keys: data_dir, label, listen, api, peers, mdns, api_token,
    /// max_message_bytes, group_ping_ms, group_relay_rate, max_finished_jobs,
    /// keep_finished_s, keep_finished_jobs); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the identity key and data live [default: $XDG_DATA_HOME/goop or
    /// ~/.local/share/goop].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A libp2p listen address, TCP (`/ip4/0.0.0.0/tcp/4001`) or QUIC
    /// (`/ip4/0.0.0.0/udp/4001/quic-v1`); repeatable [default: both, on ports the system picks].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// The HTTP API address [default: 127.0.0.1:8787]. A non-loopback address needs a token.
    #[arg(long, value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// A peer to dial at start; repeatable.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Turn off mDNS discovery on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// A name for this peer: shown by /api/self, sent with its chat messages and its group
    /// joins, and given to peers that ask (they list it with its groups and connections).
    #[arg(long)]
    pub label: Option<String>,
    /// The token every API request must carry as `Authorization: Bearer <token>`.
    #[arg(long, env = "GOOP_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Print one JSON line on stdout once ready (peer id, listen and API addresses).
    #[arg(long)]
    pub print_ready: bool,
    /// How often a host pings the members of its groups, in milliseconds [default: 20000]; a
    /// member or host not heard from for three intervals is lost.
    #[arg(long, value_name = "MS")]
    pub group_ping_ms: Option<u64>,
    /// Messages per second a member of a group this peer hosts may have relayed [default:
    /// 500, in bursts of up to four times as many]; beyond it they are dropped and the member
    /// gets a `rate_limited` error event. 0 for no limit.
    #[arg(long, value_name = "N")]
    pub group_relay_rate: Option<u32>,
    /// The most finished jobs whose status a cluster host keeps in memory [default: 1000000,
    /// 40 to 70 bytes each]; older ones are looked up in the job store when named (in
    /// `after`, a retry, a cancel or a delete).
    #[arg(long, value_name = "N")]
    pub max_finished_jobs: Option<usize>,
    /// How long a cluster host keeps finished jobs in its store, in seconds after they were
    /// submitted and finished [default: 604800, a week]; older ones are deleted, with their
    /// results and attempts, oldest first. 0 keeps them for ever.
    #[arg(long, value_name = "SECONDS")]
    pub keep_finished_s: Option<u64>,
    /// The most finished jobs a cluster host keeps in its store, whatever their age
    /// [default: 100000000, about 20 GB for small jobs]; past it the oldest are deleted. 0
    /// means no limit.
    #[arg(long, value_name = "N")]
    pub keep_finished_jobs: Option<u64>,
}

impl NodeArgs {
    fn raw(&self) -> RawConfig {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        RawConfig {
            data_dir: self.data_dir.clone(),
            label: self.label.clone(),
            listen: list(&self.listen),
            api: self.api.clone(),
            peers: list(&self.peers),
            mdns: self.no_mdns.then_some(false),
            api_token: self.api_token.clone(),
            max_message_bytes: None,
            group_ping_ms: self.group_ping_ms,
            group_relay_rate: self.group_relay_rate,
            max_finished_jobs: self.max_finished_jobs,
            keep_finished_s: self.keep_finished_s,
            keep_finished_jobs: self.keep_finished_jobs,
        }
    }

    /// The file's settings under the flags', validated.
    pub fn config(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        Ok(file.overlay(self.raw()).validate()?)
    }
}

/// Runs `goop node` and returns the exit status.
pub fn run(args: &NodeArgs) -> ExitCode {
    let result = args.config().and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(serve(config, args.print_ready, None))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("goop node: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line. Our error messages already quote their source, so a
/// cause whose text the line holds already is not repeated.
fn report(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Flags of `goop worker`: a node that joins a cluster as a worker, in one command.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The node's settings, as for `goop node`.
    #[command(flatten)]
    pub node: NodeArgs,
    /// The host's address, ending in `/p2p/<peer id>` (as `goop node --print-ready` and
    /// `GET /api/self` show it).
    #[arg(long, value_name = "MULTIADDR")]
    pub join: String,
    /// The cluster's group id (as `goop cluster create` prints it).
    #[arg(long, value_name = "ID")]
    pub group: proto::GroupId,
    /// The executor binary: it speaks newline-delimited JSON on stdin/stdout.
    #[arg(long, value_name = "PATH")]
    pub executor: PathBuf,
    /// `oneshot` (a process per job) or `daemon` (one process, many jobs).
    #[arg(long, default_value = "oneshot")]
    pub mode: String,
    /// Run at most this many jobs at once, whatever the executor declares.
    #[arg(long)]
    pub capacity: Option<u32>,
}

/// Where a `goop worker` joins, validated.
struct WorkerJoin {
    host: libp2p::PeerId,
    addr: libp2p::Multiaddr,
    settings: crate::cluster::service::WorkerSettings,
}

impl WorkerArgs {
    fn join(&self) -> anyhow::Result<WorkerJoin> {
        let addr: libp2p::Multiaddr = self
            .join
            .parse()
            .with_context(|| format!("invalid --join address {:?}", self.join))?;
        let Some(Protocol::P2p(host)) = addr.iter().last() else {
            anyhow::bail!("--join {:?} must end in /p2p/<host peer id>", self.join);
        };
        let mode = self
            .mode
            .parse::<proto::BinaryMode>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let executor = std::fs::canonicalize(&self.executor)
            .with_context(|| format!("executor {} not found", self.executor.display()))?;
        Ok(WorkerJoin {
            host,
            addr,
            settings: crate::cluster::service::WorkerSettings {
                group: self.group.clone(),
                host: groups::net::peer_to_proto(&host),
                executor,
                mode,
                capacity: self.capacity.filter(|c| *c > 0),
            },
        })
    }
}

/// Runs `goop worker` and returns the exit status.
pub fn run_worker(args: &WorkerArgs) -> ExitCode {
    let result = args.node.config().and_then(|config| {
        let join = args.join()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(serve(config, args.node.print_ready, Some(join)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("goop worker: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

#[derive(Serialize)]
struct Ready<'a> {
    event: &'static str,
    peer_id: String,
    listen: Vec<String>,
    api: String,
    label: &'a str,
}

async fn serve(
    config: Config,
    print_ready: bool,
    worker: Option<WorkerJoin>,
) -> anyhow::Result<()> {
    // Installed before anything else, so a signal sent right after the ready line is handled
    // as a graceful stop rather than by the default action.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let keypair = groups::identity::load_or_create(&config.data_dir)?;
    let me = groups::net::peer_to_proto(&keypair.public().to_peer_id());
    let mut node_config = NodeConfig::new(keypair);
    node_config.listen = config.listen.clone();
    node_config.bootstrap = config.peers.clone();
    node_config.mdns = config.mdns;
    node_config.mq = MqConfig {
        max_frame_bytes: config.max_message_bytes,
        ..MqConfig::default()
    };
    let (cluster_handler, cluster_routes) = Cluster::handler(me);
    let (chat_handler, chat_hooks) = groups::chat::handler();
    let mut registry = HandlerRegistry::new();
    registry.register(CLUSTER_TYPE, cluster_handler);
    registry.register(groups::chat::CHAT_TYPE, chat_handler);
    let (listen_handler, listen_slot) = groups::listen::handler();
    registry.register(groups::listen::LISTEN_TYPE, listen_handler);
    let (federation_handler, federation_slot) = crate::federation::handler();
    registry.register(crate::federation::FEDERATION_TYPE, federation_handler);
    let peer = Peer::start(PeerParts {
        node: node_config,
        data_dir: config.data_dir.clone(),
        groups: group_config(&config),
        registry,
        startup_groups: Vec::new(),
    })
    .await?;
    let handle = peer.node();
    let peer_id = handle.local_peer_id();

    let listener = match tokio::net::TcpListener::bind(config.api).await {
        Ok(listener) => listener,
        Err(e) => {
            peer.shutdown().await;
            return Err(e).with_context(|| format!("cannot bind the API to {}", config.api));
        }
    };
    let api_addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let names = groups::names::Names::start(
        &peer.mq,
        groups::names::NamesConfig::new(&config.label),
        &tasks,
        cancel.clone(),
    );
    let started = async {
        let cluster =
            start_cluster(&config, &peer, cluster_routes, worker, &tasks, &cancel).await?;
        let chat = groups::chat::start(
            groups::chat::ChatParts {
                hooks: chat_hooks,
                database: config.data_dir.join(crate::peer::DATABASE_FILE),
                names: names.clone(),
                mq: peer.mq.clone(),
                groups: peer.groups.clone(),
            },
            &tasks,
            cancel.clone(),
        )
        .await
        .context("cannot start the chat rooms")?;
        let files = groups::files::Files::start(
            config.data_dir.join("shared"),
            peer.groups.clone(),
            handle.clone(),
            &tasks,
            cancel.clone(),
        )
        .context("cannot start the shared files")?;
        let listen = groups::listen::Listen::start(
            listen_slot,
            config.data_dir.clone(),
            peer.groups.clone(),
            handle.clone(),
            &tasks,
            cancel.clone(),
        )
        .await
        .context("cannot start the listening groups")?;
        let database = config.data_dir.join(crate::peer::DATABASE_FILE);
        let owner = peer_id.to_base58();
        let data = tokio::task::spawn_blocking(move || graphql::Data::open(&database, owner))
            .await
            .context("cannot open the data tables")?
            .context("cannot open the data tables")?;
        let federation = crate::federation::Federation::start(
            federation_slot,
            &config.data_dir,
            peer.groups.clone(),
            handle.clone(),
            data.clone(),
            &tasks,
            cancel.clone(),
        )
        .context("cannot start the data federation")?;
        anyhow::Ok((cluster, chat, files, listen, data, federation))
    };
    let (cluster, chat, files, listen, data, federation) = match started.await {
        Ok(started) => started,
        Err(e) => {
            cancel.cancel();
            tasks.close();
            tasks.wait().await;
            peer.shutdown().await;
            return Err(e);
        }
    };
    let state = AppState {
        node: handle.clone(),
        mq: peer.mq.clone(),
        groups: peer.groups.clone(),
        cluster,
        chat,
        files,
        listen,
        data,
        federation,
        hub: Hub::new(),
        names,
        token: config.api_token.as_deref().map(Arc::from),
        api_addr,
        cancel: cancel.clone(),
    };
    let app = http::router(state, config.max_message_bytes, &tasks);
    tracing::info!(peer = %peer_id, api = %api_addr, "goop node running");

    if print_ready {
        let listen = handle
            .listen_addrs()
            .await?
            .into_iter()
            .map(|a| a.with(Protocol::P2p(peer_id)).to_string())
            .collect();
        let ready = Ready {
            event: "ready",
            peer_id: peer_id.to_base58(),
            listen,
            api: api_addr.to_string(),
            label: &config.label,
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &ready)?;
        writeln!(out)?;
        out.flush()?;
    }

    let shutdown = cancel.clone();
    tasks.spawn(async move {
        signals.wait().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    http::serve::serve(
        listener,
        app,
        cancel.clone(),
        http::serve::Limits::default(),
    )
    .await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    peer.shutdown().await;
    Ok(())
}

/// Brings back this peer's cluster role and, for `goop worker`, joins the cluster it names.
async fn start_cluster(
    config: &Config,
    peer: &Peer,
    routes: crate::cluster::service::ClusterRoutes,
    worker: Option<WorkerJoin>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<Cluster> {
    let hosting = HostSettings {
        dispatcher: dispatcher::Config {
            max_finished: config.max_finished_jobs,
            ..dispatcher::Config::default()
        },
        limits: Limits {
            keep_finished: config.keep_finished,
            keep_finished_jobs: config.keep_finished_jobs,
            ..Limits::default()
        },
    };
    let cluster = Cluster::start(
        routes,
        &config.data_dir,
        hosting,
        peer.mq.clone(),
        peer.groups.clone(),
        tasks,
        cancel.clone(),
    )
    .await
    .context("cannot start the cluster role")?;
    let Some(join) = worker else {
        return Ok(cluster);
    };
    peer.node()
        .add_address(join.host, join.addr.clone())
        .await?;
    match cluster.worker() {
        Some(current) if current.group == join.settings.group => {
            tracing::info!(group = %current.group, "already a worker in this cluster");
        }
        Some(current) => anyhow::bail!(
            "this data directory belongs to a worker of cluster {}; use another --data-dir",
            current.group
        ),
        None => {
            // Dial now so the join does not wait for the first retry; a failure is retried by
            // the join.
            let node = peer.node();
            let addr = join.addr.clone();
            tasks.spawn(async move {
                if let Err(error) = node.dial(addr.clone()).await {
                    tracing::warn!(%error, %addr, "cannot reach the cluster host yet; will keep trying");
                }
            });
            let first = cluster
                .start_worker(join.settings)
                .await
                .context("cannot join the cluster")?;
            // A host that refuses this peer for good stops the command; one not reachable yet
            // is waited for (the join keeps trying, and says so in the log).
            match first.outcome().await {
                JoinTry::Refused(error) => {
                    anyhow::bail!("cannot join the cluster: the host refused: {error}")
                }
                JoinTry::Ended => anyhow::bail!("cannot join the cluster: the worker role ended"),
                JoinTry::Joined | JoinTry::NotYet(_) => {}
            }
        }
    }
    Ok(cluster)
}

/// The group settings of a node: the defaults, with liveness scaled to the ping interval and
/// room for bursts (a relay to a member waits in its queue; a full queue drops the member).
fn group_config(config: &Config) -> GroupConfig {
    let ping = config.group_ping_interval;
    let defaults = GroupConfig::default();
    GroupConfig {
        ping_interval: ping,
        member_timeout: ping * GROUP_PINGS_BEFORE_LOST,
        // Ticks drive pings and timeouts; a short ping interval needs finer ticks.
        tick_interval: defaults.tick_interval.min(ping / 4),
        rejoin_backoff_max: defaults
            .rejoin_backoff_max
            .min(ping * GROUP_PINGS_BEFORE_LOST)
            .max(defaults.rejoin_backoff_min),
        peer_queue: 16 * 1024,
        event_buffer: 16 * 1024,
        label: config.label.clone(),
        relay_rate: config.group_relay_rate,
        relay_burst: config.group_relay_rate.saturating_mul(4),
        ..defaults
    }
}

/// SIGINT and SIGTERM, listened to from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGINT or SIGTERM.
    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
