//! Replication of multibee feeds between peers over libp2p.
//!
//! A [`Node`] runs a libp2p swarm (TCP+Noise+Yamux and QUIC, identify, ping, mDNS, Kademlia,
//! relay client, DCUtR, AutoNAT) around a [`multibee_feed::Store`]. Ask it to
//! [`replicate`](NodeHandle::replicate) a feed by its public key: it asks connected peers for
//! the entries it lacks, verifies each batch against the writer's signature before storing it,
//! and stays subscribed so that new entries arrive as they are appended. It serves every feed
//! of its store, own or replicated, so writers that never meet converge through peers between
//! them. Peers find feeds by discovery key; the public key itself never goes on the wire.
//!
//! Given a blob store ([`Config::blobs`], crate `multibee-blobs`), a node also serves byte
//! ranges of its blobs with their BLAKE3 proofs (the protocol in [`blob_wire`]), and
//! [`NodeHandle::fetch_blob`] fetches the ranges a blob lacks from several peers at once,
//! verifying each before it is stored; a fetch resumes from what the store holds.
//!
//! The protocol is a sans-IO state machine ([`protocol`]) over versioned, length-prefixed
//! frames ([`wire`]); a peer that breaks it is disconnected and reported
//! ([`Event::PeerRejected`]), and nothing it sent in the offending message is stored.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multibee_feed::Store;
//! use multibee_net::{Config, Node};
//!
//! // The writer.
//! let a = Store::open("./peer-a")?;
//! let feed = a.create_feed().await?;
//! feed.append(b"hello".to_vec()).await?;
//! let node_a = Node::start(a, Config::loopback()).await?;
//! let addr = node_a.handle().listen_addrs().await?[0].clone();
//!
//! // A reader that knows the feed's key.
//! let node_b = Node::start(Store::open("./peer-b")?, Config::loopback().dial(addr)).await?;
//! let replica = node_b.handle().replicate(feed.key()).await?;
//! let mut status = replica.subscribe();
//! status.wait_for(|s| s.length == 1).await?;
//! assert_eq!(replica.get(0)?, Some(b"hello".to_vec()));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod behaviour;
mod blob_providers;
mod blob_session;
mod blob_sync;
pub mod blob_wire;
mod config;
mod downloads;
mod error;
mod event;
mod filtered;
mod io;
mod node;
pub mod protocol;
mod session;
mod sink;
pub mod wire;

pub use blob_providers::blob_record_key;
pub use blob_session::FetchOutcome;
pub use blob_sync::{BlobList, BlobWatch, PeerBlobsError, WatchEvent};
pub use config::Config;
pub use downloads::BlobDownload;
pub use error::{DialError, Error, FetchError, FrameError, ReceiveError, Violation};
pub use event::{Event, PeerInfo, Stats};
pub use filtered::Filter;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
pub use libp2p::{Stream, StreamProtocol};
pub use libp2p_stream::Control;
pub use multibee_blobs::{BlobId, Blobs};
pub use node::{Node, NodeHandle};
pub use sink::{Sink, StoreSink};
