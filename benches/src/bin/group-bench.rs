//! Group relay benchmark: small messages (100-byte payloads) from one member to the others
//! through the host, over the MQ bus on real libp2p swarms on loopback, next to a bare libp2p
//! stream between the sender and one receiver in the same run (the baseline).
//!
//! Every peer is a node of its own (its swarm, MQ bus and group manager) in this process, so
//! all of them share the machine's cores. A relayed message makes two hops (member to host,
//! host to member) and passes three group managers; the baseline makes one hop.
//!
//! Throughput: the sender queues messages as fast as the group manager takes them
//! (`GroupHandle::post`) and the clock stops when every receiver has had every message.
//! Latency: one message at a time, from `post` to its arrival at the receiver.
//!
//! Run: `cargo run --release -p benches --bin group-bench -- [messages] [latency-samples]`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{AsyncBufReadExt as _, AsyncWriteExt as _, StreamExt as _};
use groups::group::GroupSpec;
use groups::{GroupConfig, GroupHandle, GroupManagerParts, MqConfig, Node, NodeConfig};
use libp2p::StreamProtocol;
use libp2p::identity::Keypair;
use proto::{GroupEventKind, GroupId, PeerId};
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BASELINE: StreamProtocol = StreamProtocol::new("/goop/group-bench/1.0.0");
const PAYLOAD_BYTES: usize = 100;
const FAN_OUT: usize = 8;

struct Peer {
    node: Node,
    groups: GroupHandle,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Peer {
    fn id(&self) -> PeerId {
        groups::net::peer_to_proto(&self.node.handle().local_peer_id())
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.node.shutdown().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str = "\
group-bench: small messages from one member to the others through the group host, over the MQ
bus on libp2p, next to a bare libp2p stream in the same run. Reported, not asserted.

usage: group-bench [MESSAGES] [LATENCY-SAMPLES]   (defaults 50000 and 1000)";
    if benches::wants_help(USAGE) {
        return Ok(());
    }
    let messages = benches::count_arg(0, "MESSAGES", 50_000)?;
    let samples = benches::count_arg(1, "LATENCY-SAMPLES", 1_000)?;

    let host = peer().await?;
    let mut members = Vec::new();
    for _ in 0..=FAN_OUT {
        let member = peer().await?;
        let addr = host
            .node
            .handle()
            .listen_addrs()
            .await?
            .first()
            .cloned()
            .context("no listen address")?;
        member.node.handle().dial(addr).await?;
        members.push(member);
    }
    let sender = &members[0];
    let receiver = &members[1];

    // One group with the sender and one receiver, one with the sender and eight receivers.
    let pair = group(&host, "pair", &members[..2]).await?;
    let fan = group(&host, "fan-out", &members).await?;

    // The baseline: a bare stream from the sender to the receiver, each line answered.
    let baseline = Baseline::start(sender, receiver).await?;

    let payload = |n: usize| {
        let head = format!(r#"{{"n":{n},"p":""#);
        let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2);
        RawValue::from_string(format!("{head}{}\"}}", "x".repeat(pad))).unwrap_or_default()
    };

    // Warm up.
    relay(sender, &pair, &[receiver], 2_000, &payload).await?;
    baseline.throughput(2_000).await?;

    let base_rate = baseline.throughput(messages).await?;
    let base_lat = baseline.latency(samples).await?;
    let one_rate = relay(sender, &pair, &[receiver], messages, &payload).await?;
    let one_lat = latency(sender, &pair, receiver, samples, &payload).await?;
    let receivers: Vec<&Peer> = members[1..].iter().collect();
    let fan_messages = messages / 2;
    let fan_rate = relay(sender, &fan, &receivers, fan_messages, &payload).await?;
    let fan_lat = latency(sender, &fan, receivers[FAN_OUT - 1], samples, &payload).await?;

    println!(
        "group-bench: {PAYLOAD_BYTES}-byte payloads, {samples} latency samples, {} peers in one process on loopback",
        FAN_OUT + 2
    );
    println!(
        "{:<34} {:>10} {:>14} {:>12} {:>12}",
        "path", "messages", "deliveries/s", "p50", "p99"
    );
    print_row("bare libp2p stream (1 hop)", messages, base_rate, &base_lat);
    print_row("group relay, 1 to 1 (2 hops)", messages, one_rate, &one_lat);
    print_row(
        &format!("group relay, 1 to {FAN_OUT} (deliveries)"),
        fan_messages,
        fan_rate,
        &fan_lat,
    );
    println!(
        "ratio relay 1:1 / bare: throughput {:.2}, p50 latency {:.2}",
        one_rate / base_rate,
        pct(&one_lat, 50).as_secs_f64() / pct(&base_lat, 50).as_secs_f64(),
    );
    println!(
        "targets: >= 50000 relayed messages/s 1:1 ({}), >= 100000 deliveries/s 1:{FAN_OUT} ({})",
        if one_rate >= 50_000.0 {
            "met"
        } else {
            "missed"
        },
        if fan_rate >= 100_000.0 {
            "met"
        } else {
            "missed"
        },
    );

    baseline.stop();
    for member in members {
        member.stop().await;
    }
    host.stop().await;
    Ok(())
}

async fn peer() -> anyhow::Result<Peer> {
    let mut config = NodeConfig::new(Keypair::generate_ed25519());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.mdns = false;
    config.mq = MqConfig::default();
    let node = Node::start(config).await?;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (transport, incoming) = groups::mq_transport(&node.mq(), 4096, &tasks, cancel.clone());
    let me = groups::net::peer_to_proto(&node.handle().local_peer_id());
    let mut parts = GroupManagerParts::new(me, transport, incoming);
    parts.config = GroupConfig {
        peer_queue: 256 * 1024,
        event_buffer: 256 * 1024,
        // Relay throughput is what is measured: no per-member limit.
        relay_rate: 0,
        ..GroupConfig::default()
    };
    let groups = groups::spawn_group_manager(parts, &tasks, cancel.clone()).await?;
    Ok(Peer {
        node,
        groups,
        tasks,
        cancel,
    })
}

async fn group(host: &Peer, name: &str, members: &[Peer]) -> anyhow::Result<GroupId> {
    let id = host
        .groups
        .create(GroupSpec {
            name: name.to_owned(),
            ..GroupSpec::default()
        })
        .await?;
    for member in members {
        member.groups.join(host.id(), id.clone()).await?;
    }
    Ok(id)
}

/// Counts the `msg` events of `group` until `n` arrived; lagging counts as a failure.
async fn receive(
    mut events: broadcast::Receiver<proto::GroupEvent>,
    group: GroupId,
    n: usize,
) -> anyhow::Result<()> {
    let mut got = 0;
    while got < n {
        match events.recv().await {
            Ok(event) if event.kind == GroupEventKind::Msg && event.group == group => got += 1,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                anyhow::bail!("a receiver fell {missed} events behind")
            }
            Err(broadcast::error::RecvError::Closed) => anyhow::bail!("events closed"),
        }
    }
    Ok(())
}

/// Deliveries per second of `n` messages to every receiver.
async fn relay(
    sender: &Peer,
    group: &GroupId,
    receivers: &[&Peer],
    n: usize,
    payload: &dyn Fn(usize) -> Box<RawValue>,
) -> anyhow::Result<f64> {
    let waits: Vec<_> = receivers
        .iter()
        .map(|r| tokio::spawn(receive(r.groups.events(), group.clone(), n)))
        .collect();
    let started = Instant::now();
    for i in 0..n {
        sender.groups.post(group.clone(), payload(i)).await?;
    }
    for wait in waits {
        wait.await??;
    }
    let elapsed = started.elapsed();
    Ok((n * receivers.len()) as f64 / elapsed.as_secs_f64())
}

async fn latency(
    sender: &Peer,
    group: &GroupId,
    receiver: &Peer,
    n: usize,
    payload: &dyn Fn(usize) -> Box<RawValue>,
) -> anyhow::Result<Vec<Duration>> {
    let mut events = receiver.groups.events();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        sender.groups.post(group.clone(), payload(i)).await?;
        loop {
            let event = events.recv().await?;
            if event.kind == GroupEventKind::Msg && &event.group == group {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples)
}

/// A bare libp2p stream from the sender to the receiver that answers each line.
struct Baseline {
    sender: groups::NodeHandle,
    peer: libp2p::PeerId,
    server: tokio::task::JoinHandle<()>,
}

impl Baseline {
    async fn start(sender: &Peer, receiver: &Peer) -> anyhow::Result<Self> {
        let addr = receiver
            .node
            .handle()
            .listen_addrs()
            .await?
            .first()
            .cloned()
            .context("no listen address")?;
        let peer = sender.node.handle().dial(addr).await?;
        let mut incoming = receiver
            .node
            .handle()
            .stream_control()
            .accept(BASELINE)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let server = tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(async move {
                    let (read, mut write) = futures::AsyncReadExt::split(stream);
                    let mut reader = futures::io::BufReader::new(read);
                    let mut line = Vec::new();
                    let mut out = Vec::new();
                    loop {
                        line.clear();
                        match reader.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        out.extend_from_slice(b"{\"ok\":1}\n");
                        if reader.buffer().is_empty() || out.len() > 32 * 1024 {
                            if write.write_all(&out).await.is_err() || write.flush().await.is_err()
                            {
                                return;
                            }
                            out.clear();
                        }
                    }
                });
            }
        });
        Ok(Self {
            sender: sender.node.handle(),
            peer,
            server,
        })
    }

    fn line() -> String {
        format!("{}\n", "x".repeat(PAYLOAD_BYTES))
    }

    async fn open(&self) -> anyhow::Result<libp2p::Stream> {
        self.sender
            .stream_control()
            .open_stream(self.peer, BASELINE)
            .await
            .context("opening the baseline stream")
    }

    async fn throughput(&self, n: usize) -> anyhow::Result<f64> {
        benches::bare_stream_throughput(self.open().await?, n, &Self::line()).await
    }

    async fn latency(&self, n: usize) -> anyhow::Result<Vec<Duration>> {
        benches::bare_stream_latency(self.open().await?, n, &Self::line()).await
    }

    fn stop(self) {
        self.server.abort();
    }
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p / 100).min(sorted.len() - 1)]
}

fn print_row(name: &str, messages: usize, rate: f64, lat: &[Duration]) {
    println!(
        "{name:<34} {messages:>10} {rate:>14.0} {:>12?} {:>12?}",
        pct(lat, 50),
        pct(lat, 99)
    );
}
