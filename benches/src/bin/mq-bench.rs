//! MQ bus benchmark: small messages from one peer to another over the MQ bus, next to a bare
//! libp2p stream between the same two peers in the same run (the baseline).
//!
//! Both paths carry newline-terminated lines answered by one short line each, on one stream:
//! the MQ bus adds the JSON envelope, ids, de-duplication, subscription delivery and its
//! window. Throughput is pipelined (many messages in flight); latency is one message at a
//! time, send to acknowledgement.
//!
//! Run: `cargo run --release -p benches --bin mq-bench -- [messages] [latency-samples]`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use groups::{MqConfig, Node, NodeConfig};
use libp2p::StreamProtocol;
use libp2p::identity::Keypair;
use serde_json::value::RawValue;

const BASELINE: StreamProtocol = StreamProtocol::new("/goop/bench/1.0.0");
const PAYLOAD_BYTES: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str = "\
mq-bench: small messages from one peer to another over the MQ bus, next to a bare libp2p stream
between the same two peers in the same run. Reported, not asserted.

usage: mq-bench [MESSAGES] [LATENCY-SAMPLES]   (defaults 100000 and 2000)";
    if benches::wants_help(USAGE) {
        return Ok(());
    }
    let messages = benches::count_arg(0, "MESSAGES", 100_000)?;
    let samples = benches::count_arg(1, "LATENCY-SAMPLES", 2_000)?;

    let a = start().await;
    let b = start().await;
    let b_addr = b
        .handle()
        .listen_addrs()
        .await?
        .first()
        .cloned()
        .context("no listen address")?;
    a.handle().dial(b_addr).await?;
    let peer = b.handle().local_peer_id();

    // The baseline server: answers every line with a short line.
    let mut incoming = b
        .handle()
        .stream_control()
        .accept(BASELINE)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.split();
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
                    // Flush when nothing more is buffered, like the MQ receiver does.
                    if reader.buffer().is_empty() || out.len() > 32 * 1024 {
                        if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            });
        }
    });

    // The MQ receiver drains its subscription as fast as it can.
    let mut sub = b.mq().subscribe("bench:");
    let drain = tokio::spawn(async move { while sub.recv().await.is_some() {} });

    let payload = format!("\"{}\"", "x".repeat(PAYLOAD_BYTES - 2));
    let raw = || RawValue::from_string(payload.clone()).unwrap_or_default();
    let line = format!("{}\n", "x".repeat(PAYLOAD_BYTES));

    // Warm up both paths.
    mq_throughput(&a, peer, 2_000, &raw).await?;
    stream_throughput(&a, peer, 2_000, &line).await?;

    let mq_rate = mq_throughput(&a, peer, messages, &raw).await?;
    let stream_rate = stream_throughput(&a, peer, messages, &line).await?;
    let mq_lat = mq_latency(&a, peer, samples, &raw).await?;
    let stream_lat = stream_latency(&a, peer, samples, &line).await?;

    println!(
        "mq-bench: {messages} messages of {PAYLOAD_BYTES} bytes, {samples} latency samples, one peer to another on loopback"
    );
    println!(
        "{:<22} {:>14} {:>12} {:>12}",
        "path", "messages/s", "p50", "p99"
    );
    print_row("bare libp2p stream", stream_rate, &stream_lat);
    print_row("mq bus", mq_rate, &mq_lat);
    println!(
        "ratio mq/bare: throughput {:.2}, p50 latency {:.2}, p99 latency {:.2}",
        mq_rate / stream_rate,
        pct(&mq_lat, 50).as_secs_f64() / pct(&stream_lat, 50).as_secs_f64(),
        pct(&mq_lat, 99).as_secs_f64() / pct(&stream_lat, 99).as_secs_f64(),
    );

    server.abort();
    drain.abort();
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

async fn start() -> Node {
    let mut config = NodeConfig::new(Keypair::generate_ed25519());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    config.mdns = false;
    config.mq = MqConfig::default();
    Node::start(config).await.expect("node starts")
}

async fn mq_throughput(
    a: &Node,
    peer: libp2p::PeerId,
    n: usize,
    raw: &dyn Fn() -> Box<RawValue>,
) -> anyhow::Result<f64> {
    let mq = a.mq();
    let started = Instant::now();
    // Acks are awaited by a second task so the window keeps moving while this one enqueues.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let acks = tokio::spawn(async move {
        let mut ok = 0usize;
        while let Some(p) = rx.recv().await {
            let p: groups::Pending = p;
            if p.acked().await.is_ok() {
                ok += 1;
            }
        }
        ok
    });
    for _ in 0..n {
        let pending = mq.enqueue(peer, "bench:t", raw()).await?;
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let ok = acks.await?;
    let elapsed = started.elapsed();
    if ok != n {
        anyhow::bail!("{} of {n} mq messages failed", n - ok);
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

async fn mq_latency(
    a: &Node,
    peer: libp2p::PeerId,
    n: usize,
    raw: &dyn Fn() -> Box<RawValue>,
) -> anyhow::Result<Vec<Duration>> {
    let mq = a.mq();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        mq.send(peer, "bench:t", raw()).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples)
}

async fn open(a: &Node, peer: libp2p::PeerId) -> anyhow::Result<libp2p::Stream> {
    a.handle()
        .stream_control()
        .open_stream(peer, BASELINE)
        .await
        .context("opening the baseline stream")
}

async fn stream_throughput(
    a: &Node,
    peer: libp2p::PeerId,
    n: usize,
    line: &str,
) -> anyhow::Result<f64> {
    benches::bare_stream_throughput(open(a, peer).await?, n, line).await
}

async fn stream_latency(
    a: &Node,
    peer: libp2p::PeerId,
    n: usize,
    line: &str,
) -> anyhow::Result<Vec<Duration>> {
    benches::bare_stream_latency(open(a, peer).await?, n, line).await
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p / 100).min(sorted.len() - 1)]
}

fn print_row(name: &str, rate: f64, lat: &[Duration]) {
    println!(
        "{name:<22} {rate:>14.0} {:>12?} {:>12?}",
        pct(lat, 50),
        pct(lat, 99)
    );
}
