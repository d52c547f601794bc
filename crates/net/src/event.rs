//! What a node tells its user: [`Event`]s and [`Stats`].

use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::{Multiaddr, PeerId};
use multibee_feed::FeedKey;

use crate::error::Violation;

/// Something that happened in a node.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The node listens on a new address.
    Listening {
        /// The address.
        address: Multiaddr,
    },
    /// The first connection to a peer is up.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The peer's address on that connection.
        address: Multiaddr,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// Verified entries of a replicated feed were stored.
    FeedProgressed {
        /// The feed.
        key: FeedKey,
        /// Its length now.
        length: u64,
        /// The peer they came from.
        peer: PeerId,
    },
    /// A peer that serves us a feed said how many entries of it it holds (when the
    /// replication stream starts; what arrives later shows as [`Event::FeedProgressed`]).
    PeerHas {
        /// The feed.
        key: FeedKey,
        /// The peer.
        peer: PeerId,
        /// How many entries it holds.
        length: u64,
    },
    /// A peer broke the protocol: it was disconnected and is blocked, for the life of the node
    /// or, if it was only too slow, for [`crate::Config::slow_peer_block`]; nothing it sent in
    /// the offending message was stored.
    PeerRejected {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: Violation,
    },
    /// An outgoing connection failed: one asked for ([`crate::NodeHandle::connect`],
    /// [`crate::NodeHandle::dial`], [`crate::Config::dial`]) or one the node started on its
    /// own (a peer found with mDNS or in the DHT).
    DialFailed {
        /// The peer dialed, if known.
        peer: Option<PeerId>,
        /// The address dialed, if known.
        address: Option<Multiaddr>,
        /// Why (the text of a [`crate::DialError`]).
        reason: String,
    },
    /// An outgoing connection is up: the address dialed worked (asked for or not).
    DialSucceeded {
        /// The peer that answered.
        peer: PeerId,
        /// The address dialed.
        address: Multiaddr,
    },
    /// A connected peer told the addresses it listens on (with the identify protocol).
    PeerIdentified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses, as it reports them.
        listen_addrs: Vec<Multiaddr>,
    },
    /// Verified ranges of a blob being fetched ([`crate::NodeHandle::fetch_blob`]) were
    /// stored.
    BlobProgress {
        /// The blob.
        id: multibee_blobs::BlobId,
        /// The peer they came from.
        peer: PeerId,
        /// Bytes of the blob held now.
        held_bytes: u64,
        /// The blob's size.
        size: u64,
    },
    /// A peer sent blob bytes that failed verification (or broke the blob protocol) during a
    /// [`crate::NodeHandle::fetch_blob`]: nothing of them was stored, and the peer is asked
    /// nothing more in that fetch.
    BlobPeerRejected {
        /// The peer.
        peer: PeerId,
        /// The blob being fetched.
        id: multibee_blobs::BlobId,
        /// What it did.
        reason: String,
    },
    /// mDNS found no peer within [`crate::Config::mdns_quiet_after`] of the start (reported
    /// once).
    MdnsFoundNothing {
        /// The local addresses mDNS was looking from.
        tried: Vec<String>,
    },
}

/// A connected peer, as [`crate::NodeHandle::peers`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses on the connections open to it.
    pub addresses: Vec<Multiaddr>,
    /// The addresses it listens on, as it reported them (identify), if it did yet.
    pub listen_addrs: Vec<Multiaddr>,
    /// The feeds it is serving this node now (open replication streams).
    pub feeds: Vec<FeedKey>,
}

/// Counters of a node's replication traffic, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Entries sent to peers.
    pub entries_sent: u64,
    /// Entries received from peers (counted on arrival, before verification).
    pub entries_received: u64,
    /// Entries received, verified and newly stored.
    pub entries_stored: u64,
    /// Bytes of replication frames sent (entries and their proofs).
    pub bytes_sent: u64,
    /// Bytes of replication frames received.
    pub bytes_received: u64,
    /// Bytes of blob encodings (data and proofs) sent to peers.
    pub blob_bytes_sent: u64,
    /// Bytes of blob encodings received from peers (counted on arrival, before verification).
    pub blob_bytes_received: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) blob_bytes_sent: AtomicU64,
    pub(crate) blob_bytes_received: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            entries_sent: self.sent.load(Ordering::Relaxed),
            entries_received: self.received.load(Ordering::Relaxed),
            entries_stored: self.stored.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            blob_bytes_sent: self.blob_bytes_sent.load(Ordering::Relaxed),
            blob_bytes_received: self.blob_bytes_received.load(Ordering::Relaxed),
        }
    }
}
