//! Fetching the blobs that documents reference, by policy, the coffer way; and the stream of
//! blob arrivals with the keys that reference them, for indexers.
//!
//! A [`BlobFetcher`] follows the merged store (the documents held when it starts, then the
//! changes stream) and keeps, in memory, which keys reference which blob
//! ([`crate::attachments::blob_refs`]). The blobs referenced under its [`FetchPolicy`] and not
//! held are *wanted*. It fetches a wanted blob:
//! - when a change references it: from the peers known to hold it, else from the connected
//!   peers, else from its providers in the DHT ([`NodeHandle::fetch_blob_anywhere`]);
//! - when a peer that holds it connects, or completes it later: on each connection the
//!   fetcher subscribes to the peer's live queue of new blob ids
//!   ([`NodeHandle::watch_peer_blobs`]), then lists the peer's ids once
//!   ([`NodeHandle::list_peer_blobs`], in pages) and intersects them with what is wanted.
//!
//! At most [`MAX_FETCHES`] fetches run at once; a blob that no one can serve stays wanted
//! until a holder shows up or a document references it again (nothing is retried on a
//! timer). Every blob that becomes complete
//! in the store, fetched or added locally, is published as a [`BlobArrival`] with the keys
//! that reference it ([`BlobFetcher::arrivals`]).
//!
//! Memory: the reference map holds one entry per (key, referenced blob) of the store; the
//! holders known per referenced blob are kept while the peers are connected.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use multibee_net::{FetchError, FetchOutcome, NodeHandle, PeerId, WatchEvent};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::attachments::blob_refs;
use crate::blobs::{Arrival, BlobId, Blobs};
use crate::db::{ChangesOptions, MultiBee, RangeOptions, Value};

/// The most blob fetches a [`BlobFetcher`] runs at once.
pub const MAX_FETCHES: usize = 4;
/// How long one fetch may take before it is given up (the blob stays wanted).
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Arrivals kept for slow subscribers of [`BlobFetcher::arrivals`].
const ARRIVALS_BUFFER: usize = 1024;
/// Documents read per page when the fetcher starts.
const START_PAGE: usize = 1000;
/// Ids asked for per page when a peer is listed.
const LIST_PAGE: usize = 1024;
/// Pages and live ids of peers waiting for the fetcher.
const NEWS_QUEUE: usize = 16;

/// Which referenced blobs a peer fetches by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FetchPolicy {
    /// Every blob any document references.
    #[default]
    All,
    /// None: blobs are fetched only on demand.
    None,
    /// Those referenced by documents whose keys start with one of these prefixes.
    Prefixes(Vec<String>),
}

impl FetchPolicy {
    /// The policy of `values`: none given or `all`, `none`, or key prefixes (any other
    /// values, not mixed with `all` or `none`).
    pub fn parse(values: &[String]) -> Result<FetchPolicy, String> {
        match values {
            [] => Ok(FetchPolicy::All),
            [one] if one == "all" => Ok(FetchPolicy::All),
            [one] if one == "none" => Ok(FetchPolicy::None),
            many if many.iter().any(|v| v == "all" || v == "none") => Err(
                "the blob fetch policy is \"all\", \"none\", or key prefixes (not mixed with them)"
                    .into(),
            ),
            prefixes => Ok(FetchPolicy::Prefixes(prefixes.to_vec())),
        }
    }

    /// Whether the blobs the document at `key` references are fetched.
    pub fn covers(&self, key: &[u8]) -> bool {
        match self {
            FetchPolicy::All => true,
            FetchPolicy::None => false,
            FetchPolicy::Prefixes(prefixes) => {
                prefixes.iter().any(|p| key.starts_with(p.as_bytes()))
            }
        }
    }
}

/// A blob that became complete in the store, with the keys of the documents that reference it
/// when it did (none for a blob no document references).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobArrival {
    /// The blob.
    pub id: BlobId,
    /// Its size.
    pub size: u64,
    /// The keys of the documents that reference it, sorted.
    pub keys: Vec<Vec<u8>>,
}

/// What a [`BlobFetcher`] is doing ([`BlobFetcher::status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetcherStatus {
    /// The documents held at the start were read.
    pub started: bool,
    /// The sequence number after the last change read (compare with [`MultiBee::version`]).
    pub next_seq: u64,
    /// Blobs wanted (referenced under the policy, not held).
    pub wanted: usize,
    /// Fetches running.
    pub fetching: usize,
    /// Fetches that completed a blob.
    pub fetched: u64,
    /// Fetches that ended without the blob (it stays wanted).
    pub failed: u64,
    /// Connected peers whose blob ids were listed (since the start).
    pub peers_listed: u64,
}

/// Fetches the blobs documents reference, by policy, and publishes blob arrivals with their
/// referencing keys (see the [module](self)). Runs until dropped or the node stops.
#[derive(Debug)]
pub struct BlobFetcher {
    arrivals: broadcast::Sender<BlobArrival>,
    status: watch::Receiver<FetcherStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl BlobFetcher {
    /// Starts fetching into `blobs` (the node's blob store) what the documents of `mb`
    /// reference under `policy`, through `node`. Must be called within a tokio runtime.
    pub fn start(
        mb: MultiBee,
        node: NodeHandle,
        blobs: Blobs,
        policy: FetchPolicy,
    ) -> crate::Result<BlobFetcher> {
        // Every source is subscribed to before anything is read: nothing falls between.
        let since = mb.version()?;
        let changes = mb.changes(ChangesOptions {
            since,
            live: true,
            ..ChangesOptions::default()
        })?;
        let events = node.subscribe();
        let stored = blobs.arrivals();
        let arrivals = broadcast::channel(ARRIVALS_BUFFER).0;
        let (status_tx, status) = watch::channel(FetcherStatus::default());
        let (news_tx, news) = mpsc::channel(NEWS_QUEUE);
        let fetcher = Fetcher {
            mb,
            node,
            blobs,
            policy,
            refs: HashMap::new(),
            by_key: HashMap::new(),
            wanted: HashSet::new(),
            holders: HashMap::new(),
            failed_holders: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashSet::new(),
            again: HashSet::new(),
            fetches: JoinSet::new(),
            peers: HashMap::new(),
            peer_tasks: JoinSet::new(),
            news_tx,
            arrivals: arrivals.clone(),
            status: status_tx,
            counts: FetcherStatus::default(),
        };
        let task = tokio::spawn(fetcher.run(changes, events, stored, news));
        Ok(BlobFetcher {
            arrivals,
            status,
            task,
        })
    }

    /// A subscription to blob arrivals from now on: every blob that becomes complete in the
    /// store, with the keys referencing it. A subscriber more than 1024 arrivals behind
    /// misses the oldest (`RecvError::Lagged`).
    pub fn arrivals(&self) -> broadcast::Receiver<BlobArrival> {
        self.arrivals.subscribe()
    }

    /// What the fetcher is doing, updated as it goes.
    pub fn status(&self) -> watch::Receiver<FetcherStatus> {
        self.status.clone()
    }
}

impl Drop for BlobFetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The documents referencing one blob.
#[derive(Debug, Default)]
struct Refs {
    keys: BTreeSet<Vec<u8>>,
    /// The media type the latest reference gives.
    media_type: Option<String>,
}

/// What a peer's sync task tells the fetcher.
#[derive(Debug)]
enum News {
    /// The peer holds these complete blobs.
    Holds(PeerId, Vec<BlobId>),
    /// The peer's ids were listed in full.
    Listed,
}

struct Fetcher {
    mb: MultiBee,
    node: NodeHandle,
    blobs: Blobs,
    policy: FetchPolicy,
    refs: HashMap<BlobId, Refs>,
    /// The blobs each key references.
    by_key: HashMap<Vec<u8>, Vec<BlobId>>,
    wanted: HashSet<BlobId>,
    /// Connected peers known to hold a referenced blob.
    holders: HashMap<BlobId, HashSet<PeerId>>,
    /// Peers that said they hold a blob but failed to serve it: what they say of it is
    /// ignored until they reconnect (a peer that lies about what it holds cannot make this
    /// node fetch, and look up the DHT, again and again).
    failed_holders: HashMap<BlobId, HashSet<PeerId>>,
    /// Wanted blobs waiting for a fetch slot (each at most once, none in flight).
    queue: VecDeque<BlobId>,
    /// The blobs in `queue`.
    queued: HashSet<BlobId>,
    in_flight: HashSet<BlobId>,
    /// Blobs in flight that a holder was learned of meanwhile: fetched again if they fail.
    again: HashSet<BlobId>,
    fetches: JoinSet<Fetched>,
    /// The sync task of each connected peer.
    peers: HashMap<PeerId, tokio::task::AbortHandle>,
    peer_tasks: JoinSet<()>,
    news_tx: mpsc::Sender<News>,
    arrivals: broadcast::Sender<BlobArrival>,
    status: watch::Sender<FetcherStatus>,
    counts: FetcherStatus,
}

impl Fetcher {
    async fn run(
        mut self,
        mut changes: crate::Changes,
        mut events: broadcast::Receiver<multibee_net::Event>,
        mut stored: broadcast::Receiver<Arrival>,
        mut news: mpsc::Receiver<News>,
    ) {
        // The documents already held, a page at a time (a change made meanwhile is seen
        // again: harmless).
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut opts = RangeOptions::all().limit(START_PAGE);
            if let Some(key) = &after {
                opts = opts.gt(key);
            }
            let Ok(entries) = self.mb.range(&opts) else {
                break;
            };
            let page: Vec<(Vec<u8>, Value)> = entries.filter_map(Result::ok).collect();
            let full = page.len() == START_PAGE;
            after = page.last().map(|(key, _)| key.clone());
            for (key, value) in page {
                self.on_document(key, Some(&value)).await;
            }
            if !full {
                break;
            }
        }
        self.counts.started = true;
        self.sync_connected().await;
        self.publish();
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(change)) => {
                        self.on_document(change.key, change.value.as_ref()).await;
                        self.counts.next_seq = change.seq + 1;
                    }
                    Some(Err(e)) => tracing::warn!(%e, "the changes stream failed"),
                    None => return,
                },
                arrival = stored.recv() => match arrival {
                    Ok(arrival) => self.on_arrival(arrival).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.recheck_wanted().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                event = events.recv() => match event {
                    Ok(multibee_net::Event::PeerConnected { peer, .. }) => self.sync_peer(peer),
                    Ok(multibee_net::Event::PeerDisconnected { peer }) => self.forget_peer(peer),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.sync_connected().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(news) = news.recv() => match news {
                    News::Holds(peer, ids) => self.on_holds(peer, ids),
                    News::Listed => self.counts.peers_listed += 1,
                },
                Some(done) = self.fetches.join_next() => {
                    if let Ok(fetched) = done {
                        self.on_fetched(fetched).await;
                    }
                }
                Some(_) = self.peer_tasks.join_next() => {}
            }
            self.pump();
            self.publish();
        }
    }

    /// The document at `key` is now `value` (`None`: deleted): its references replace the
    /// key's previous ones.
    async fn on_document(&mut self, key: Vec<u8>, value: Option<&Value>) {
        let refs = match value {
            Some(Value::Json(doc)) => blob_refs(doc),
            _ => Vec::new(),
        };
        let old = self.by_key.remove(&key).unwrap_or_default();
        let new: Vec<BlobId> = refs.iter().map(|r| r.id).collect();
        for id in old.iter().filter(|id| !new.contains(id)) {
            if let Some(entry) = self.refs.get_mut(id) {
                entry.keys.remove(&key);
                if entry.keys.is_empty() {
                    self.refs.remove(id);
                    self.holders.remove(id);
                }
            }
            if self.wanted.contains(id) && !self.is_covered(id) {
                self.wanted.remove(id);
            }
        }
        let covered = self.policy.covers(&key);
        for r in refs {
            let entry = self.refs.entry(r.id).or_default();
            entry.keys.insert(key.clone());
            if r.media_type.is_some() {
                entry.media_type = r.media_type;
            }
            if !covered {
                continue;
            }
            // A new reference to a blob still wanted is a reason to try again.
            if self.wanted.contains(&r.id) || !self.blobs.has(r.id).await.unwrap_or(false) {
                self.wanted.insert(r.id);
                self.enqueue(r.id);
            }
        }
        if !new.is_empty() {
            self.by_key.insert(key, new);
        }
    }

    /// Whether a key the policy covers references `id`.
    fn is_covered(&self, id: &BlobId) -> bool {
        self.refs
            .get(id)
            .is_some_and(|r| r.keys.iter().any(|k| self.policy.covers(k)))
    }

    /// A blob became complete in the store.
    async fn on_arrival(&mut self, arrival: Arrival) {
        let was_wanted = self.wanted.remove(&arrival.id);
        let refs = self.refs.get(&arrival.id);
        if was_wanted && let Some(media_type) = refs.and_then(|r| r.media_type.as_deref()) {
            // The document says what the blob is: kept for reads over HTTP.
            if let Err(e) = self
                .blobs
                .set_media_type(arrival.id, Some(media_type))
                .await
            {
                tracing::debug!(id = %arrival.id, "the reference's media type is not kept: {e}");
            }
        }
        let keys = refs
            .map(|r| r.keys.iter().cloned().collect())
            .unwrap_or_default();
        let _ = self.arrivals.send(BlobArrival {
            id: arrival.id,
            size: arrival.size,
            keys,
        });
    }

    /// Arrivals were missed: drops the wanted blobs held now.
    async fn recheck_wanted(&mut self) {
        let wanted: Vec<BlobId> = self.wanted.iter().copied().collect();
        for id in wanted {
            if self.blobs.has(id).await.unwrap_or(false) {
                self.wanted.remove(&id);
            }
        }
    }

    /// `peer` holds `ids`: remembered for the referenced ones, fetched if wanted.
    fn on_holds(&mut self, peer: PeerId, ids: Vec<BlobId>) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        for id in ids {
            if !self.refs.contains_key(&id) {
                continue;
            }
            if self
                .failed_holders
                .get(&id)
                .is_some_and(|f| f.contains(&peer))
            {
                continue;
            }
            self.holders.entry(id).or_default().insert(peer);
            if self.wanted.contains(&id) {
                self.enqueue(id);
            }
        }
    }

    fn enqueue(&mut self, id: BlobId) {
        if self.in_flight.contains(&id) {
            self.again.insert(id);
        } else if self.queued.insert(id) {
            self.queue.push_back(id);
        }
    }

    /// Starts queued fetches while there is room.
    fn pump(&mut self) {
        while self.in_flight.len() < MAX_FETCHES {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            self.queued.remove(&id);
            if !self.wanted.contains(&id) {
                continue;
            }
            let holders: Vec<PeerId> = self
                .holders
                .get(&id)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default();
            let (node, blobs) = (self.node.clone(), self.blobs.clone());
            self.in_flight.insert(id);
            self.fetches.spawn(async move {
                // Bytes held and bytes missing.
                let progress = |status: Option<crate::blobs::Status>| {
                    status.map_or((0, 0), |s| {
                        let held: u64 = s.held.iter().map(|r| r.end - r.start).sum();
                        (held, s.size - held)
                    })
                };
                let (before, _) = progress(blobs.status(id).await.ok().flatten());
                let asked = holders.clone();
                let fetch = fetch(&node, id, holders);
                let (outcome, progressed) = match tokio::time::timeout(FETCH_TIMEOUT, fetch).await {
                    Ok(outcome) => (outcome, false),
                    // A slow download goes on in a later fetch if this one made progress.
                    Err(_) => {
                        let (after, missing) = progress(blobs.status(id).await.ok().flatten());
                        (Err(FetchError::Incomplete { id, missing }), after > before)
                    }
                };
                Fetched {
                    id,
                    asked,
                    outcome,
                    progressed,
                }
            });
        }
    }

    async fn on_fetched(&mut self, fetched: Fetched) {
        let Fetched {
            id,
            asked,
            outcome,
            progressed,
        } = fetched;
        self.in_flight.remove(&id);
        let again = self.again.remove(&id) || progressed;
        // The holders failed to serve it (not this node's store).
        if matches!(&outcome, Err(e) if !matches!(e, FetchError::Store(_))) {
            for peer in asked {
                if let Some(holders) = self.holders.get_mut(&id) {
                    holders.remove(&peer);
                }
                self.failed_holders.entry(id).or_default().insert(peer);
            }
            self.holders.retain(|_, holders| !holders.is_empty());
        }
        match outcome {
            Ok(outcome) => {
                tracing::debug!(%id, bytes = outcome.bytes_fetched, "fetched a referenced blob");
                self.counts.fetched += 1;
                // Usually seen on the store's channel first (which publishes the arrival and
                // keeps the media type): else the media type is kept here.
                if self.wanted.remove(&id)
                    && let Some(t) = self.refs.get(&id).and_then(|r| r.media_type.clone())
                    && let Err(e) = self.blobs.set_media_type(id, Some(&t)).await
                {
                    tracing::debug!(%id, "the reference's media type is not kept: {e}");
                }
            }
            Err(e) => {
                tracing::debug!(%id, "cannot fetch a referenced blob (yet): {e}");
                self.counts.failed += 1;
                if again && self.wanted.contains(&id) {
                    self.enqueue(id);
                }
            }
        }
    }

    /// Starts syncing every connected peer not synced yet, and forgets the others (after
    /// missed node events, a disconnection may have gone unseen).
    async fn sync_connected(&mut self) {
        let Ok(peers) = self.node.connected_peers().await else {
            return;
        };
        let gone: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| !peers.contains(p))
            .copied()
            .collect();
        for peer in gone {
            self.forget_peer(peer);
        }
        for peer in peers {
            self.sync_peer(peer);
        }
    }

    /// Starts syncing `peer`: its live queue of new ids, then its list, intersected with what
    /// is wanted. Nothing to do under [`FetchPolicy::None`].
    fn sync_peer(&mut self, peer: PeerId) {
        if self.policy == FetchPolicy::None || self.peers.contains_key(&peer) {
            return;
        }
        let (node, news) = (self.node.clone(), self.news_tx.clone());
        let task = self.peer_tasks.spawn(sync_peer(node, peer, news));
        self.peers.insert(peer, task);
    }

    fn forget_peer(&mut self, peer: PeerId) {
        if let Some(task) = self.peers.remove(&peer) {
            task.abort();
        }
        self.holders.retain(|_, holders| {
            holders.remove(&peer);
            !holders.is_empty()
        });
        self.failed_holders.retain(|_, failed| {
            failed.remove(&peer);
            !failed.is_empty()
        });
    }

    fn publish(&mut self) {
        self.counts.wanted = self.wanted.len();
        self.counts.fetching = self.in_flight.len();
        let counts = self.counts.clone();
        self.status.send_if_modified(|s| {
            let changed = *s != counts;
            *s = counts;
            changed
        });
    }
}

/// What a fetch of the fetcher came to.
struct Fetched {
    id: BlobId,
    /// The peers that said they hold it, asked first.
    asked: Vec<PeerId>,
    outcome: Result<FetchOutcome, FetchError>,
    /// It timed out after storing part of the blob: worth another fetch.
    progressed: bool,
}

/// Fetches `id` from `holders` if any, else (or if they fail) wherever it is.
async fn fetch(
    node: &NodeHandle,
    id: BlobId,
    holders: Vec<PeerId>,
) -> Result<FetchOutcome, FetchError> {
    if !holders.is_empty() {
        match node.fetch_blob(id, holders).await {
            Err(FetchError::Incomplete { .. }) => {}
            done => return done,
        }
    }
    node.fetch_blob_anywhere(id).await
}

/// Watches `peer`'s new blob ids, then lists its ids, telling the fetcher; lists again when
/// the watch lagged. Ends when the peer disconnects or serves no blobs.
async fn sync_peer(node: NodeHandle, peer: PeerId, news: mpsc::Sender<News>) {
    let mut watch = match node.watch_peer_blobs(peer).await {
        Ok(watch) => Some(watch),
        Err(e) => {
            // Listed once all the same (a peer may serve lists but refuse more watches).
            tracing::debug!(%peer, %e, "cannot watch a peer's blobs");
            None
        }
    };
    if !list_peer(&node, peer, &news).await {
        return;
    }
    let Some(watch) = watch.as_mut() else { return };
    while let Some(event) = watch.next().await {
        let more = match event {
            WatchEvent::Arrived(id) => news.send(News::Holds(peer, vec![id])).await.is_ok(),
            WatchEvent::Lagged => list_peer(&node, peer, &news).await,
        };
        if !more {
            return;
        }
    }
}

/// Lists every id `peer` holds, page by page, telling the fetcher; whether to go on.
async fn list_peer(node: &NodeHandle, peer: PeerId, news: &mpsc::Sender<News>) -> bool {
    let mut after = None;
    loop {
        let page = match node.list_peer_blobs(peer, after, LIST_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::debug!(%peer, %e, "cannot list a peer's blobs");
                return false;
            }
        };
        after = page.ids.last().copied();
        let more = page.more && after.is_some();
        if !page.ids.is_empty() && news.send(News::Holds(peer, page.ids)).await.is_err() {
            return false;
        }
        if !more {
            return news.send(News::Listed).await.is_ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_cover_keys() {
        let parse =
            |v: &[&str]| FetchPolicy::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&[]), Ok(FetchPolicy::All));
        assert_eq!(parse(&["all"]), Ok(FetchPolicy::All));
        assert_eq!(parse(&["none"]), Ok(FetchPolicy::None));
        assert!(parse(&["photos/", "none"]).is_err());
        let prefixes = parse(&["photos/", "docs/"]).unwrap();
        assert!(prefixes.covers(b"photos/a") && prefixes.covers(b"docs/x"));
        assert!(!prefixes.covers(b"other/photos/a"));
        assert!(FetchPolicy::All.covers(b"") && !FetchPolicy::None.covers(b"x"));
    }
}
