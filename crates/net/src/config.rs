//! How a [`crate::Node`] is set up.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;

use crate::blob_wire::BlobLimits;
use crate::protocol::Limits;

/// How to start a [`crate::Node`]. Build it from [`Config::default`] (every interface, TCP and
/// QUIC, mDNS on) or [`Config::loopback`] (127.0.0.1 only, mDNS off: for tests and benches),
/// then adjust it with the builder methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Addresses to listen on; port 0 asks the OS for a free port (see
    /// [`crate::NodeHandle::listen_addrs`] for the chosen ones).
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial once started.
    pub dial: Vec<Multiaddr>,
    /// Find peers on the local network with mDNS.
    pub mdns: bool,
    /// With mDNS on: how long after the start finding no peer is reported, once
    /// ([`crate::Event::MdnsFoundNothing`] and a log line naming the addresses tried).
    pub mdns_quiet_after: Duration,
    /// Run the Kademlia DHT: announce and look up the feeds' discovery keys.
    pub kademlia: bool,
    /// The node's identity; a fresh one if `None`.
    pub identity: Option<Keypair>,
    /// Frame and batch sizes of the replication protocol.
    pub limits: Limits,
    /// The most replicate streams a peer may have open to this node at once: one per feed it
    /// replicates from this node. Keep it below the transports' stream limits (QUIC: 256 per
    /// connection, Yamux: 512).
    pub max_streams_per_peer: usize,
    /// The most connections other peers may have open to this node at once (and being set up
    /// at once): peer identities cost nothing to make, so this is what bounds a crowd of them.
    /// Connections this node dials do not count.
    pub max_incoming_connections: u32,
    /// Batches received and verified but not yet stored, per stream (back-pressure beyond this).
    pub pipeline_depth: usize,
    /// How long a connection without streams stays open.
    pub idle_timeout: Duration,
    /// How long each 64 KiB of a begun frame (or the rest of it, if less) may take to move,
    /// read or written, and a peer to send its request on a stream it opened: a peer slower
    /// than this is rejected (a slowloris, or a reader that stopped reading).
    pub frame_timeout: Duration,
    /// How long a peer rejected for being too slow stays blocked (default 10 minutes); peers
    /// rejected for anything else stay blocked for the life of the node.
    pub slow_peer_block: Duration,
    /// How often wanted feeds are asked for again from connected peers that are not serving
    /// them (a stream that ended, a peer that did not hold the feed yet) and looked up in the
    /// DHT when no peer serves them.
    pub resync_interval: Duration,
    /// Where fetched batches are stored (`None`: [`crate::StoreSink`], the feed store alone).
    pub sink: Option<std::sync::Arc<dyn crate::Sink>>,
    /// What this node fetches of each feed and how it answers filtered requests (`None`:
    /// every feed whole, and filtered requests are refused). See [`crate::Filter`].
    pub filter: Option<std::sync::Arc<dyn crate::Filter>>,
    /// The blob store served to peers and fetched into ([`crate::NodeHandle::fetch_blob`]);
    /// without one, blob requests are refused ([`crate::blob_wire::BlobRefusal::NoStore`]).
    pub blobs: Option<multibee_blobs::Blobs>,
    /// Request and frame sizes of the blob protocol.
    pub blob_limits: BlobLimits,
    /// The most blobs announced as provided in the Kademlia DHT (256): those held at the
    /// start, in id order, then those that become complete, until the cap (see
    /// [`crate::NodeHandle::find_blob_providers`]). Every blob is served whether provided or
    /// not.
    pub max_provided_blobs: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                addr("/ip4/0.0.0.0/tcp/0"),
                addr("/ip4/0.0.0.0/udp/0/quic-v1"),
            ],
            dial: Vec::new(),
            mdns: true,
            mdns_quiet_after: Duration::from_secs(10),
            kademlia: true,
            identity: None,
            limits: Limits::default(),
            max_streams_per_peer: 200,
            max_incoming_connections: 256,
            pipeline_depth: 2,
            idle_timeout: Duration::from_secs(60),
            resync_interval: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(30),
            slow_peer_block: Duration::from_secs(600),
            sink: None,
            filter: None,
            blobs: None,
            blob_limits: BlobLimits::default(),
            max_provided_blobs: 256,
        }
    }
}

/// A multiaddr literal known to parse.
fn addr(text: &str) -> Multiaddr {
    text.parse().unwrap_or_else(|_| Multiaddr::empty())
}

impl Config {
    /// Listens on 127.0.0.1 only, over TCP and QUIC on ports the OS picks, with mDNS off.
    pub fn loopback() -> Self {
        Config {
            listen: vec![
                addr("/ip4/127.0.0.1/tcp/0"),
                addr("/ip4/127.0.0.1/udp/0/quic-v1"),
            ],
            mdns: false,
            ..Config::default()
        }
    }

    /// Replaces the listen addresses.
    pub fn listen_on(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    /// Adds an address to dial once started.
    pub fn dial(mut self, addr: Multiaddr) -> Self {
        self.dial.push(addr);
        self
    }

    /// Switches mDNS on or off.
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Switches the Kademlia DHT on or off.
    pub fn kademlia(mut self, on: bool) -> Self {
        self.kademlia = on;
        self
    }

    /// Uses this identity.
    pub fn identity(mut self, keypair: Keypair) -> Self {
        self.identity = Some(keypair);
        self
    }

    /// Stores fetched batches through `sink` (see [`crate::Sink`]).
    pub fn sink(mut self, sink: std::sync::Arc<dyn crate::Sink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Sets what this node fetches of each feed and how it answers filtered requests.
    pub fn filter(mut self, filter: std::sync::Arc<dyn crate::Filter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Serves `blobs` to peers and fetches blobs into it.
    pub fn blobs(mut self, blobs: multibee_blobs::Blobs) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Uses these blob protocol limits.
    pub fn blob_limits(mut self, limits: BlobLimits) -> Self {
        self.blob_limits = limits;
        self
    }

    /// Uses these protocol limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}
