#![allow(clippy::unwrap_used)]
//! Helpers shared by the tests: peers in temporary folders and waits with generous timeouts.

use std::future::Future;
use std::time::Duration;

use multibee_feed::{Feed, Store};
use multibee_net::{Config, Event, Multiaddr, Node, Stats};
use tempfile::TempDir;

/// How long any wait may take before the test fails (generous: 2-core CI under load).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A node over a store in its own temporary folder.
pub struct Peer {
    pub dir: TempDir,
    pub store: Store,
    pub node: Node,
}

impl Peer {
    pub async fn start(config: Config) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        Peer::start_in(dir, config).await
    }

    pub async fn start_in(dir: TempDir, config: Config) -> Peer {
        let store = Store::open(dir.path()).unwrap();
        let node = Node::start(store.clone(), config).await.unwrap();
        Peer { dir, store, node }
    }

    pub async fn addr(&self, transport: Transport) -> Multiaddr {
        let addrs = self.node.handle().listen_addrs().await.unwrap();
        addrs
            .into_iter()
            .find(|a| transport.matches(a))
            .expect("a listen address of that transport")
    }

    /// Waits for an event matching `pred` and returns it.
    pub async fn event<T>(&mut self, mut pred: impl FnMut(&Event) -> Option<T>) -> T {
        within(async {
            loop {
                let event = self.node.next_event().await.expect("the node runs");
                if let Some(found) = pred(&event) {
                    return found;
                }
            }
        })
        .await
    }

    /// Stops the node and closes the store, keeping the folder; returns the node's final
    /// counters.
    pub async fn stop(self) -> (TempDir, Stats) {
        let handle = self.node.handle();
        self.node.shutdown().await;
        let stats = handle.stats();
        drop(handle);
        drop(self.store);
        (self.dir, stats)
    }
}

/// Which transport an address uses.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    pub fn matches(self, addr: &Multiaddr) -> bool {
        let text = addr.to_string();
        match self {
            Transport::Tcp => text.contains("/tcp/"),
            Transport::Quic => text.contains("/quic-v1"),
        }
    }
}

/// Loopback nodes for tests: 127.0.0.1, port 0, mDNS off.
pub fn config() -> Config {
    // Logs with RUST_LOG=multibee_net=debug (once per test binary).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Config::loopback()
}

/// Runs `f`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.expect("timed out")
}

/// Waits until `feed` holds at least `length` entries.
pub async fn wait_length(feed: &Feed, length: u64) {
    let mut status = feed.subscribe();
    within(status.wait_for(|s| s.length >= length))
        .await
        .unwrap();
}

/// Entries `i` of the test feeds.
pub fn entry(i: u64) -> Vec<u8> {
    format!("entry number {i}").into_bytes()
}

/// Appends entries `from..to` in batches of 1,000.
pub async fn append(feed: &Feed, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let end = to.min(i + 1000);
        feed.append_batch((i..end).map(entry).collect())
            .await
            .unwrap();
        i = end;
    }
}

/// Checks every entry of `feed` up to `length`.
pub fn check_entries(feed: &Feed, length: u64) {
    assert_eq!(feed.length(), length);
    for (i, e) in feed.range(0..length).unwrap().map(Result::unwrap) {
        assert_eq!(e, entry(i));
    }
}

/// Copies the files of the folder `from` into `to` (a store "restored from a backup").
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for file in std::fs::read_dir(from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
}

/// A bare swarm over TCP+Noise+Yamux that speaks only `libp2p-stream`: a peer that frames
/// protocol messages by hand (to misbehave, or to probe a node's limits).
pub fn bare_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// Dials `addr` from `swarm` and drives it until the connection is up (`true`) or the dial
/// failed (`false`: a node at its connection limit turns it away).
pub async fn dial_bare(
    swarm: &mut libp2p::Swarm<libp2p_stream::Behaviour>,
    addr: Multiaddr,
) -> bool {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    swarm.dial(addr).unwrap();
    within(async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => return true,
                SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await
}

/// Makes `swarm` listen on loopback TCP (port from the OS) and returns the address.
pub async fn listen_loopback<B: libp2p::swarm::NetworkBehaviour>(
    swarm: &mut libp2p::Swarm<B>,
) -> Multiaddr {
    use futures::StreamExt;
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    within(async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                return address;
            }
        }
    })
    .await
}
