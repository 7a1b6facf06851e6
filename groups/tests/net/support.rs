//! Starting nodes on loopback and waiting for conditions with a deadline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use groups::{MqConfig, Node, NodeConfig};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;

/// A node listening on a random loopback port, mDNS off so parallel tests stay apart.
pub(crate) async fn start(mq: MqConfig) -> Node {
    start_on(&["/ip4/127.0.0.1/tcp/0"], mq).await
}

/// A node listening on `listen` (random ports), mDNS off.
pub(crate) async fn start_on(listen: &[&str], mq: MqConfig) -> Node {
    let mut config = NodeConfig::new(Keypair::generate_ed25519());
    config.listen = listen.iter().map(|a| a.parse().unwrap()).collect();
    config.mdns = false;
    config.mq = mq;
    Node::start(config).await.expect("node starts")
}

pub(crate) async fn addr_of(node: &Node) -> Multiaddr {
    node.handle().listen_addrs().await.unwrap()[0].clone()
}

/// Two nodes, the first connected to the second.
pub(crate) async fn pair(a: MqConfig, b: MqConfig) -> (Node, Node) {
    let (a, b) = (start(a).await, start(b).await);
    let peer = a.handle().dial(addr_of(&b).await).await.expect("dial");
    assert_eq!(peer, b.handle().local_peer_id());
    (a, b)
}

/// Bounds a future so a bug fails the test instead of hanging it.
pub(crate) async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

/// A fresh directory under the system temp dir.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "goop-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn raw(json: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(json.to_owned()).unwrap()
}
