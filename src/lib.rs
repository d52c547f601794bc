//! multibee: a leaderless, multi-writer, peer-to-peer database.
//!
//! This crate is the one an application depends on. It re-exports the layers (the document
//! store [`MultiBee`] and its types at the top level; every layer as a module: [`db`], [`bee`],
//! [`feed`], [`net`]) and joins the document store to the network: [`serve`] starts a
//! [`net::Node`] on a [`MultiBee`]'s feed store that serves every feed it holds, announces the
//! peer's own diff feed and replicates the diff feed of every writer the peer counts. Diffs
//! stored by the node are merged in the background (with [`Options::auto_merge`], the default),
//! so remote changes show up in [`MultiBee::changes`] and [`MultiBee::get`] as they arrive.
//!
//! A new peer joins a database with a ticket ([`Served::invite`], [`join`]); writers counted
//! before [`serve`] are replicated from the start; a writer counted later,
//! through [`Served::add_writer`] or [`MultiBee::add_writer`] alike, or by a membership
//! operation replicated from another member, is replicated from then on.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multibee::{ChangesOptions, Config, MultiBee, Options, Value, join, serve};
//!
//! let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! // A starts a database and serves it (127.0.0.1 only here; `Config::default()` listens
//! // everywhere and finds peers on the local network with mDNS).
//! let a = MultiBee::open(dir_a.path()).await?;
//! a.put("greeting", Value::Bytes(b"hello".to_vec())).await?;
//! let served_a = serve(&a, Config::loopback()).await?;
//!
//! // B joins with one string: A's ticket. A adds B as a writer, and B replicates.
//! let ticket: multibee::Ticket = served_a.invite().await?.to_string().parse()?;
//! let served_b = join(dir_b.path(), &ticket, Options::default(), Config::loopback()).await?;
//! let b = served_b.multibee().clone();
//!
//! // A's write is replicated, verified and merged on B.
//! let mut changes = b.changes(ChangesOptions { live: true, ..Default::default() })?;
//! let change = changes.next().await.ok_or("the stream ended")??;
//! assert_eq!(change.key, b"greeting");
//! assert_eq!(b.get("greeting")?, Some(Value::Bytes(b"hello".to_vec())));
//!
//! served_b.shutdown().await;
//! served_a.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use multibee_net::{Node, NodeHandle};
use tokio::sync::broadcast;

pub use multibee_bee as bee;
pub use multibee_blobs as blobs;
pub use multibee_feed as feed;
pub use multibee_multibee as db;
pub use multibee_net as net;

pub use join::{JOIN_TIMEOUT, JoinError, join};
pub use multibee_feed::SyncMode;
pub use multibee_multibee::{
    BatchOp, Changes, ChangesOptions, Conflict, FeedKey, HistoryEntry, MultiBee, Options,
    StoreChange, Value, WriterInfo, WriterState,
};
pub use multibee_net::{Config, Multiaddr, PeerId};
pub use ticket::{Ticket, TicketError};

pub mod attachments;
pub mod blob_sync;
pub mod http;
mod join;
mod peers;
pub mod progress;
pub mod query_text;
mod ticket;

/// What can go wrong serving a [`MultiBee`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document store failed (or refused a writer).
    #[error(transparent)]
    Db(#[from] multibee_multibee::Error),
    /// The network node failed or has stopped.
    #[error(transparent)]
    Net(#[from] multibee_net::Error),
    /// Joining a database with a ticket failed.
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Serves `mb` on the network: starts a node on its feed store with `config`, announces its
/// own diff feed and replicates the diff feed of every active writer it counts. Must be called
/// within a tokio runtime. The node runs until [`Served::shutdown`] (or until the [`Served`]
/// and every handle taken from it are dropped); the [`MultiBee`] stays open either way.
pub async fn serve(mb: &MultiBee, mut config: Config) -> Result<Served> {
    if config.sink.is_none() {
        config = config.sink(std::sync::Arc::new(MergeSink(mb.clone())));
    }
    if config.filter.is_none() {
        config = config.filter(std::sync::Arc::new(ViewFilter(mb.clone())));
    }
    let node = Node::start(mb.feed_store().clone(), config).await?;
    let handle = node.handle();
    // Subscribed before the writers are listed, so that none added meanwhile is missed.
    let events = mb.events();
    handle.announce(mb.diff_key()).await?;
    sync_writers(mb, &handle).await?;
    let joins = tokio::spawn(join::accept(mb.clone(), handle.streams()));
    let follow = tokio::spawn(follow_writers(mb.clone(), handle, events));
    Ok(Served {
        mb: mb.clone(),
        node,
        _follow: AbortOnDrop(follow),
        _joins: AbortOnDrop(joins),
        _peers: None,
    })
}

/// Stores each batch the node fetches and merges it in the same transaction
/// ([`MultiBee::ingest_verified`]): one commit per remote batch.
#[derive(Debug)]
struct MergeSink(MultiBee);

impl net::Sink for MergeSink {
    fn ingest(
        &self,
        batch: feed::VerifiedBatch,
    ) -> futures::future::BoxFuture<'static, feed::Result<feed::Ingested>> {
        let mb = self.0.clone();
        Box::pin(async move { mb.ingest_verified(batch).await.map_err(Self::feed_error) })
    }

    fn ingest_sparse(
        &self,
        batch: feed::VerifiedSparse,
        prefixes: Vec<Vec<u8>>,
        covered: u64,
    ) -> futures::future::BoxFuture<'static, feed::Result<feed::SparseIngested>> {
        let mb = self.0.clone();
        Box::pin(async move {
            mb.ingest_sparse_verified(batch, prefixes, covered)
                .await
                .map_err(Self::feed_error)
        })
    }
}

impl MergeSink {
    fn feed_error(e: multibee_multibee::Error) -> feed::Error {
        match e {
            multibee_multibee::Error::Feed(e) => e,
            other => feed::Error::InvalidArgument(other.to_string()),
        }
    }
}

/// Partial views over the network: a peer with a view asks each writer's diff feed for the
/// keys under its prefixes ([`MultiBee::wanted`]); every peer answers such requests from what
/// it holds ([`MultiBee::export_filtered`]).
#[derive(Debug)]
struct ViewFilter(MultiBee);

impl net::Filter for ViewFilter {
    fn wanted(&self, feed: &feed::FeedKey) -> Option<Vec<(Vec<u8>, u64)>> {
        match self.0.wanted(feed) {
            Ok(wanted) => wanted,
            Err(e) => {
                // A partial peer must not fetch a whole feed: nothing is fetched until the
                // next attempt.
                tracing::warn!(%feed, %e, "reading the partial view failed");
                self.0
                    .view()
                    .map(|v| v.prefixes().iter().map(|p| (p.clone(), u64::MAX)).collect())
            }
        }
    }

    fn next(
        &self,
        feed: &feed::Feed,
        wants: &[(Vec<u8>, u64)],
        cursor: u64,
        base: u64,
        max_bytes: usize,
    ) -> feed::Result<Option<(feed::SparseBatch, u64)>> {
        self.0
            .export_filtered(&feed.key(), wants, cursor, base, max_bytes)
            .map_err(MergeSink::feed_error)
    }
}

/// Fetches the diff feed of every writer of `mb` that is or was a member (a removed writer's
/// feed is still fetched, held and not merged past its cut, so that every peer holds the same
/// membership operations), and of no frozen one.
async fn sync_writers(mb: &MultiBee, handle: &NodeHandle) -> Result<()> {
    for writer in mb.writers()? {
        match writer.state {
            WriterState::Forked => handle.stop_replicating(writer.key).await?,
            _ => drop(handle.replicate(writer.key).await?),
        }
    }
    Ok(())
}

/// Replicates every writer `mb` learns of from now on, and stops fetching frozen ones, until
/// the node or the peer stops.
async fn follow_writers(
    mb: MultiBee,
    handle: NodeHandle,
    mut events: broadcast::Receiver<db::Event>,
) {
    loop {
        let followed = match events.recv().await {
            // A writer learned of as already removed is fetched too (see `sync_writers`).
            Ok(db::Event::WriterAdded { writer } | db::Event::WriterRemoved { writer }) => handle
                .replicate(writer)
                .await
                .map(drop)
                .map_err(Error::from),
            Ok(db::Event::WriterFrozen { writer }) => {
                handle.stop_replicating(writer).await.map_err(Error::from)
            }
            Ok(_) => Ok(()),
            // Missed events: look at every writer again.
            Err(broadcast::error::RecvError::Lagged(_)) => sync_writers(&mb, &handle).await,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match followed {
            Ok(()) => {}
            Err(Error::Net(multibee_net::Error::Stopped)) => return,
            Err(e) => tracing::warn!(error = %e, "replicating a new writer failed"),
        }
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A [`MultiBee`] served by a running [`net::Node`] (see [`serve`]).
#[derive(Debug)]
pub struct Served {
    mb: MultiBee,
    node: Node,
    /// Replicates writers added after `serve`.
    _follow: AbortOnDrop,
    /// Answers join requests.
    _joins: AbortOnDrop,
    /// Remembers peers and dials them again (see [`Served::remember_peers`]).
    _peers: Option<AbortOnDrop>,
}

impl Served {
    /// The served document store.
    pub fn multibee(&self) -> &MultiBee {
        &self.mb
    }

    /// A handle to the node: connections, replication of other feeds, counters, events.
    pub fn node(&self) -> NodeHandle {
        self.node.handle()
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// The addresses the node listens on (with the ports the OS chose).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        Ok(self.node.handle().listen_addrs().await?)
    }

    /// Dials a peer; returns once the dial started (see [`net::Event::PeerConnected`]).
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        Ok(self.node.handle().dial(addr).await?)
    }

    /// Remembers the peers this node connects to in the file `path` and dials them again:
    /// the ones already in the file now, and each one that disconnects, until it is back
    /// (waiting 1 s, then twice as long after each failed round, up to 5 minutes, with
    /// jitter). A peer this node dialed is remembered with the address that worked, every
    /// peer with the listen addresses it reports; at most 64 peers, 8 addresses each, the most
    /// recent first; a peer that breaks the protocol is forgotten. The file is owner-only and
    /// replaced whole; one that cannot be read is reported with a warning and ignored. Failed
    /// dials show as [`net::Event::DialFailed`]. Runs until [`Served::shutdown`]; calling this
    /// again replaces the file used.
    pub fn remember_peers(&mut self, path: impl Into<std::path::PathBuf>) {
        let node = self.node.handle();
        let events = node.subscribe();
        let task = tokio::spawn(peers::remember(node, path.into(), events));
        self._peers = Some(AbortOnDrop(task));
    }

    /// Closes every connection to `peer` (see [`net::NodeHandle::disconnect`]); returns whether
    /// it was connected.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool> {
        Ok(self.node.handle().disconnect(peer).await?)
    }

    /// Makes the writer whose diff feed is `key` a member ([`MultiBee::add_writer`]: a
    /// replicated membership operation) and replicates that feed live from every peer that
    /// has it.
    pub async fn add_writer(&self, key: FeedKey) -> Result<()> {
        self.mb.add_writer(key).await?;
        // The node follows the peer's writers on its own; asking here as well means the
        // replication has started when this returns.
        self.node.handle().replicate(key).await?;
        Ok(())
    }

    /// Removes the writer `key` ([`MultiBee::remove_writer`]: a cut at what this peer has
    /// merged of it). Its feed is still fetched and served, but its diffs past the cut no
    /// longer count, here or on any peer that applies the removal.
    pub async fn remove_writer(&self, key: FeedKey) -> Result<()> {
        Ok(self.mb.remove_writer(key).await?)
    }

    /// The old name of [`Served::add_writer`].
    #[deprecated(note = "use add_writer")]
    pub async fn add_peer(&self, key: FeedKey) -> Result<()> {
        self.add_writer(key).await
    }

    /// The old name of [`Served::remove_writer`].
    #[deprecated(note = "use remove_writer")]
    pub async fn remove_peer(&self, key: FeedKey) -> Result<()> {
        self.remove_writer(key).await
    }

    /// A subscription to the node's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<net::Event> {
        self.node.handle().subscribe()
    }

    /// The next node event since the node started (or since the previous call); `None` once
    /// the node stopped.
    pub async fn next_event(&mut self) -> Option<net::Event> {
        self.node.next_event().await
    }

    /// Stops the node: closes every connection and waits until its tasks ended. The
    /// [`MultiBee`] stays open (close it with [`MultiBee::close`]); replicated diffs already
    /// stored are merged as usual.
    pub async fn shutdown(self) {
        drop(self._follow);
        drop(self._peers);
        self.node.shutdown().await;
    }
}
