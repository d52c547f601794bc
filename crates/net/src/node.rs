//! The [`Node`]: a libp2p swarm driven by one event loop task, and the [`NodeHandle`] that
//! commands it over a bounded channel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns};
use libp2p_stream::Control;
use multibee_blobs::BlobId;
use multibee_feed::{DiscoveryKey, Feed, FeedKey, Store};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::behaviour::{Behaviour, BehaviourEvent, build_swarm};
use crate::blob_providers::{self, Providers};
use crate::blob_session::{self, FetchOutcome};
use crate::config::Config;
use crate::downloads::{BlobDownload, Downloads};
use crate::error::{DialError, Error, FetchError, Violation};
use crate::event::{Counters, Event, PeerInfo, Stats};
use crate::session::{self, Context, Internal, SessionEnd};
use crate::wire::Refusal;

/// Commands waiting for the event loop.
const COMMAND_QUEUE: usize = 64;
/// Messages from stream tasks waiting for the event loop.
const INTERNAL_QUEUE: usize = 256;
/// Events kept for slow subscribers (older ones are dropped for them, see [`Node::next_event`]).
const EVENT_BUFFER: usize = 4096;
/// How long starting waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the outcome of a [`NodeHandle::connect`] goes.
type DialReply = oneshot::Sender<Result<PeerId, DialError>>;

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), Error>>),
    Connect(Multiaddr, Duration, DialReply),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Replicate(Feed),
    StopReplicating(DiscoveryKey, oneshot::Sender<()>),
    Announce(FeedKey),
    /// The stream opener of a connected peer (`None` if it is not connected).
    Opener(PeerId, oneshot::Sender<Option<Arc<Semaphore>>>),
    /// Looks up a blob's providers in the DHT.
    FindBlobProviders(BlobId, oneshot::Sender<Vec<PeerId>>),
    /// Dials a peer by id: `Ok(true)` if it is connected already, `Ok(false)` once the dial
    /// started.
    DialPeer(PeerId, oneshot::Sender<Result<bool, String>>),
    /// Stops providing a blob in the DHT.
    StopProvidingBlob(BlobId, oneshot::Sender<()>),
    Shutdown,
}

/// A running node: replicates the feeds it is asked to and serves every feed of its store.
///
/// Holds the event loop's task and a subscription to its events; [`Node::handle`] gives
/// cloneable handles. The node stops on [`Node::shutdown`], or when the node and every handle
/// are dropped.
pub struct Node {
    handle: NodeHandle,
    events: broadcast::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.handle.peer_id)
            .finish()
    }
}

/// A cloneable handle to a [`Node`]'s event loop.
///
/// Holds a clone of the node's [`Store`], so the store stays open while a handle lives.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    store: Store,
    counters: Arc<Counters>,
    events: broadcast::Sender<Event>,
    streams: Control,
    pub(crate) cx: Arc<Context>,
    downloads: Downloads,
}

impl Node {
    /// Starts a node serving `store`: listens on the configured addresses (waiting until each
    /// has reported its address), dials the configured peers and runs until shut down. Must be
    /// called within a tokio runtime.
    pub async fn start(store: Store, config: Config) -> Result<Node, Error> {
        let swarm = build_swarm(&config)?;
        let peer_id = *swarm.local_peer_id();
        let (events, events_rx) = broadcast::channel(EVENT_BUFFER);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (internal, internal_rx) = mpsc::channel(INTERNAL_QUEUE);
        let counters = Arc::new(Counters::default());
        let cx = Arc::new(Context {
            store: store.clone(),
            local: peer_id,
            config: config.clone(),
            counters: counters.clone(),
            events: events.clone(),
            internal,
            gone: broadcast::channel(INTERNAL_QUEUE).0,
        });
        let mut event_loop = EventLoop::new(swarm, cx.clone(), commands_rx, internal_rx)?;
        let streams = event_loop.control.clone();
        event_loop.listen(&config.listen).await?;
        for addr in &config.dial {
            event_loop.dial(addr.clone())?;
        }
        for key in store.feeds() {
            event_loop.provide(key.discovery_key());
        }
        if let Some(blobs) = config.blobs.as_ref().filter(|_| config.kademlia) {
            // Subscribed before the listing: a blob completed meanwhile is provided too.
            let arrivals = blobs.arrivals();
            match blobs.list(None, config.max_provided_blobs).await {
                Ok(held) => held.into_iter().for_each(|id| event_loop.provide_blob(id)),
                Err(e) => tracing::warn!(%e, "cannot list the blobs to provide"),
            }
            let internal = event_loop.cx.internal.clone();
            (event_loop.tasks).spawn(blob_providers::provide_arrivals(arrivals, internal));
        }
        let task = tokio::spawn(event_loop.run());
        let handle = NodeHandle {
            commands,
            peer_id,
            store,
            counters,
            events,
            streams,
            cx,
            downloads: Downloads::default(),
        };
        Ok(Node {
            handle,
            events: events_rx,
            task,
        })
    }

    /// A handle to this node.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.handle.peer_id
    }

    /// The node's libp2p stream control, for protocols of the layers above (they open and
    /// accept their own streams, under their own protocol names, on the node's connections).
    pub fn streams(&self) -> Control {
        self.handle.streams.clone()
    }

    /// The next event since the node started (or since the previous call). If more than a few
    /// thousand events were not read, the oldest are skipped. `None` once the node stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.events.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Stops the node: closes every connection and stream, and waits until the event loop and
    /// every stream task have ended (handles still hold the store).
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Shutdown).await;
        if let Err(e) = self.task.await {
            tracing::error!(%e, "the node's event loop failed");
        }
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's libp2p stream control (see [`Node::streams`]).
    pub fn streams(&self) -> Control {
        self.streams.clone()
    }

    /// The store the node serves.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The addresses the node listens on (with the ports the OS chose).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask(Command::ListenAddrs).await
    }

    /// The peers connected now.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.ask(Command::ConnectedPeers).await
    }

    /// Dials an address; returns once the dial started (see [`Event::PeerConnected`], and
    /// [`Event::DialFailed`] for a failure). [`NodeHandle::connect`] waits for the outcome.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.ask(|reply| Command::Dial(addr, reply)).await?
    }

    /// Connects to an address and waits, at most `timeout`, for the outcome: the peer that
    /// answered, or why no connection was made. An address with a peer id (`.../p2p/ID`)
    /// connects only to that peer. An address (or peer) already connected answers at once.
    /// A failure is also reported as [`Event::DialFailed`] (once libp2p gives up, which may be
    /// after the timeout).
    pub async fn connect(&self, addr: Multiaddr, timeout: Duration) -> Result<PeerId, DialError> {
        self.ask(|reply| Command::Connect(addr, timeout, reply))
            .await
            .map_err(|_| DialError::Stopped)?
    }

    /// The peers connected now: their addresses on the open connections, and the feeds each
    /// serves this node (open replication streams), ordered by peer id.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.ask(Command::Peers).await
    }

    /// Closes every connection to `peer` (it may connect again, and is not blocked). Returns
    /// whether it was connected; see [`Event::PeerDisconnected`] for when it is done.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, Error> {
        self.ask(|reply| Command::Disconnect(peer, reply)).await
    }

    /// Replicates the feed `key` live from every peer that has it: opens the replica (creating
    /// it empty if needed), asks connected peers, announces it and looks for providers of its
    /// discovery key. Returns the replica; follow it with [`Feed::subscribe`].
    pub async fn replicate(&self, key: FeedKey) -> Result<Feed, Error> {
        let feed = self.store.replica(key).await?;
        self.send(Command::Replicate(feed.clone())).await?;
        Ok(feed)
    }

    /// Stops fetching the feed `key` from peers; once this returns, nothing more of it is
    /// received (what is stored stays, and is still served to peers that ask for it).
    pub async fn stop_replicating(&self, key: FeedKey) -> Result<(), Error> {
        let dk = key.discovery_key();
        self.ask(|reply| Command::StopReplicating(dk, reply)).await
    }

    /// Announces a feed of the store that was created after the node started (every feed is
    /// served when asked for; announcing tells connected peers and the DHT).
    pub async fn announce(&self, key: FeedKey) -> Result<(), Error> {
        self.send(Command::Announce(key)).await
    }

    /// The blob store the node serves and fetches into ([`Config::blobs`]), if any.
    pub fn blobs(&self) -> Option<&multibee_blobs::Blobs> {
        self.cx.config.blobs.as_ref()
    }

    /// Fetches what the blob store lacks of blob `id` from the connected peers among `from`
    /// (several at once), verifying every range before it is stored, until the blob is
    /// complete. Resumes from what the store holds (an interrupted fetch keeps every range
    /// that verified). A peer that refuses or fails a request is asked nothing more in this
    /// fetch and its request goes to another peer; one whose bytes do not verify is also
    /// reported ([`Event::BlobPeerRejected`]). Fails with [`FetchError::Incomplete`] when no
    /// peer given can serve the rest.
    pub async fn fetch_blob(
        &self,
        id: multibee_blobs::BlobId,
        from: Vec<PeerId>,
    ) -> Result<FetchOutcome, FetchError> {
        let blobs = self.cx.config.blobs.clone().ok_or(FetchError::NoStore)?;
        let mut peers = Vec::new();
        for peer in from {
            if peer == self.peer_id || peers.iter().any(|(p, _)| *p == peer) {
                continue;
            }
            let opener = self
                .ask(|reply| Command::Opener(peer, reply))
                .await
                .map_err(|_| FetchError::Stopped)?;
            if let Some(opener) = opener {
                peers.push((peer, opener));
            }
        }
        // Listed by `blob_downloads` until it ends (or is dropped).
        let _running = self.downloads.start(id, peers.iter().map(|(p, _)| *p));
        blob_session::fetch(self.streams.clone(), self.cx.clone(), blobs, id, peers).await
    }

    /// The blob downloads in progress ([`NodeHandle::fetch_blob`]s running now, by whoever
    /// started them), in id order: each blob's size once known, the bytes of it held and
    /// verified, and the peers asked. A download leaves the list when its fetch ends, complete
    /// or not. Empty without a blob store.
    pub async fn blob_downloads(&self) -> Result<Vec<BlobDownload>, FetchError> {
        match &self.cx.config.blobs {
            Some(blobs) => Ok(self.downloads.list(blobs).await?),
            None => Ok(Vec::new()),
        }
    }

    /// A subscription to the node's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Replication counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped)
    }

    pub(crate) async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply)).await?;
        answer.await.map_err(|_| Error::Stopped)
    }
}

/// The replication of one feed from one peer: whether to start again when it ends.
/// A replication stream being fetched from a peer.
struct Fetching {
    /// The peer announced the feed while the stream was being refused: ask again.
    retry: bool,
    task: tokio::task::AbortHandle,
}

/// An outgoing connection being set up, started by a command.
struct Dialing {
    address: Multiaddr,
    /// The peer id the address names, if any.
    expected: Option<PeerId>,
    /// The [`NodeHandle::connect`] waiting for the outcome (taken when its time is up).
    reply: Option<DialReply>,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    cx: Arc<Context>,
    control: Control,
    commands: mpsc::Receiver<Command>,
    internal: mpsc::Receiver<Internal>,
    listen_addrs: Vec<Multiaddr>,
    /// The open connections: to which peer, at which of its addresses.
    connections: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Outgoing connections started by a command, until they are up or failed.
    dials: HashMap<ConnectionId, Dialing>,
    /// When each [`NodeHandle::connect`] stops waiting (one timer per entry of `dials` at most).
    dial_deadlines: JoinSet<ConnectionId>,
    /// The listen addresses each connected peer reported (identify).
    identified: HashMap<PeerId, Vec<Multiaddr>>,
    /// mDNS discovered a peer since the start.
    mdns_found: bool,
    wanted: HashMap<DiscoveryKey, Feed>,
    fetching: HashMap<(PeerId, DiscoveryKey), Fetching>,
    fetches: JoinSet<(PeerId, DiscoveryKey, SessionEnd)>,
    /// Per connected peer: the permit to open a stream (streams are opened one at a time).
    openers: HashMap<PeerId, Arc<Semaphore>>,
    /// Per (peer, feed): how many times in a row its stream ended early (for the backoff).
    streaks: HashMap<(PeerId, DiscoveryKey), u32>,
    /// Replication streams to start again once their backoff elapsed.
    retries: JoinSet<(PeerId, DiscoveryKey)>,
    tasks: JoinSet<()>,
    /// The tasks accepting streams (they end their own stream tasks when told to stop).
    accepts: JoinSet<()>,
    /// The blobs provided in the DHT and the lookups of blob providers.
    blob_providers: Providers,
    stop: watch::Sender<bool>,
}

impl EventLoop {
    fn new(
        mut swarm: Swarm<Behaviour>,
        cx: Arc<Context>,
        commands: mpsc::Receiver<Command>,
        internal: mpsc::Receiver<Internal>,
    ) -> Result<Self, Error> {
        let mut control = swarm.behaviour_mut().stream.new_control();
        let replicate = control
            .accept(session::replicate_protocol())
            .map_err(|e| Error::transport("accepting replicate streams", e))?;
        let announce = control
            .accept(session::announce_protocol())
            .map_err(|e| Error::transport("accepting announce streams", e))?;
        let blobs = control
            .accept(blob_session::blobs_protocol())
            .map_err(|e| Error::transport("accepting blob streams", e))?;
        let (stop, stopped) = watch::channel(false);
        let mut accepts = JoinSet::new();
        accepts.spawn(session::accept_replicate(
            replicate,
            cx.clone(),
            stopped.clone(),
        ));
        accepts.spawn(blob_session::accept_blobs(
            blobs,
            cx.clone(),
            stopped.clone(),
        ));
        accepts.spawn(session::accept_announce(announce, cx.clone(), stopped));
        Ok(EventLoop {
            swarm,
            cx,
            control,
            commands,
            internal,
            listen_addrs: Vec::new(),
            connections: HashMap::new(),
            dials: HashMap::new(),
            dial_deadlines: JoinSet::new(),
            identified: HashMap::new(),
            mdns_found: false,
            wanted: HashMap::new(),
            fetching: HashMap::new(),
            fetches: JoinSet::new(),
            openers: HashMap::new(),
            streaks: HashMap::new(),
            retries: JoinSet::new(),
            tasks: JoinSet::new(),
            accepts,
            blob_providers: Providers::default(),
            stop,
        })
    }

    /// Starts the listeners and handles swarm events until each reported an address.
    async fn listen(&mut self, addrs: &[Multiaddr]) -> Result<(), Error> {
        let mut waiting = HashSet::new();
        for addr in addrs {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::transport(format!("listening on {addr}"), e))?;
            waiting.insert(id);
        }
        let wait = async {
            while !waiting.is_empty() {
                let event = self.swarm.select_next_some().await;
                match &event {
                    SwarmEvent::NewListenAddr { listener_id, .. } => {
                        waiting.remove(listener_id);
                    }
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason,
                        ..
                    } if waiting.contains(listener_id) => {
                        let detail = match reason {
                            Ok(()) => "closed".to_string(),
                            Err(e) => e.to_string(),
                        };
                        return Err(Error::transport("listening", detail));
                    }
                    _ => {}
                }
                self.on_swarm_event(event);
            }
            Ok(())
        };
        tokio::time::timeout(LISTEN_TIMEOUT, wait)
            .await
            .map_err(|_| Error::transport("listening", "no address reported in time"))?
    }

    async fn run(mut self) {
        let period = self
            .cx
            .config
            .resync_interval
            .max(Duration::from_millis(100));
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let quiet = tokio::time::sleep(self.cx.config.mdns_quiet_after);
        tokio::pin!(quiet);
        let mut quiet_armed = self.cx.config.mdns;
        loop {
            tokio::select! {
                _ = resync.tick() => self.resync(),
                _ = &mut quiet, if quiet_armed => {
                    quiet_armed = false;
                    self.mdns_quiet();
                }
                Some(Ok(id)) = self.dial_deadlines.join_next() => self.dial_timed_out(id),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                Some(message) = self.internal.recv() => self.on_internal(message),
                Some(done) = self.fetches.join_next() => match done {
                    Ok((peer, dk, end)) => self.on_fetch_end(peer, dk, end),
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::error!(%e, "a replication task failed"),
                },
                Some(due) = self.retries.join_next() => {
                    if let Ok((peer, dk)) = due && self.swarm.is_connected(&peer) {
                        self.start_fetch(peer, dk);
                    }
                }
                Some(_) = self.tasks.join_next() => {}
            }
        }
        self.retries.shutdown().await;
        self.dial_deadlines.shutdown().await;
        self.fetches.shutdown().await;
        self.tasks.shutdown().await;
        // Aborting the accepting tasks would drop their stream tasks without waiting for
        // them (and so release the store some time later): they are told to stop instead.
        let _ = self.stop.send(true);
        while self.accepts.join_next().await.is_some() {}
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.dial(addr));
            }
            Command::Connect(addr, timeout, reply) => self.connect(addr, timeout, reply),
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer).is_ok());
            }
            Command::Replicate(feed) => self.replicate(feed),
            Command::StopReplicating(dk, done) => {
                self.stop_replicating(dk);
                let _ = done.send(());
            }
            Command::Announce(key) => self.announce_everywhere(key.discovery_key()),
            Command::Opener(peer, reply) => {
                let opener = self.swarm.is_connected(&peer).then(|| self.opener(peer));
                let _ = reply.send(opener);
            }
            Command::FindBlobProviders(id, reply) => {
                let local = *self.swarm.local_peer_id();
                let kad = self.swarm.behaviour_mut().kad.as_mut();
                self.blob_providers.find(kad, local, id, reply);
            }
            Command::StopProvidingBlob(id, done) => {
                let kad = self.swarm.behaviour_mut().kad.as_mut();
                self.blob_providers.unprovide(kad, id);
                let _ = done.send(());
            }
            Command::DialPeer(peer, reply) => {
                let dialed = if self.swarm.is_connected(&peer) {
                    Ok(true)
                } else {
                    let opts = DialOpts::peer_id(peer).build();
                    self.swarm
                        .dial(opts)
                        .map(|()| false)
                        .map_err(|e| e.to_string())
                };
                let _ = reply.send(dialed);
            }
            Command::Shutdown => {}
        }
    }

    /// Provides blob `id` in the DHT (within [`Config::max_provided_blobs`]).
    fn provide_blob(&mut self, id: BlobId) {
        let max = self.cx.config.max_provided_blobs;
        let kad = self.swarm.behaviour_mut().kad.as_mut();
        self.blob_providers.provide(kad, id, max);
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), Error> {
        self.start_dial(addr.clone(), None)
            .map(drop)
            .map_err(|e| Error::transport(format!("dialing {addr}"), e))
    }

    /// Starts a dial to `address`. A failure to start is the outcome: it is reported (event,
    /// reply) and returned as text.
    fn start_dial(
        &mut self,
        address: Multiaddr,
        reply: Option<DialReply>,
    ) -> Result<ConnectionId, String> {
        let expected = peer_in(&address);
        let opts = DialOpts::unknown_peer_id().address(address.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                let dialing = Dialing {
                    address,
                    expected,
                    reply,
                };
                self.dials.insert(id, dialing);
                Ok(id)
            }
            Err(e) => {
                let error = DialError::classify(&e, expected);
                self.dial_failed(expected, Some(address), &error);
                let text = error.to_string();
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
                Err(text)
            }
        }
    }

    fn connect(&mut self, address: Multiaddr, timeout: Duration, reply: DialReply) {
        if let Some(peer) = self.connected_at(&address) {
            let _ = reply.send(Ok(peer));
            return;
        }
        if let Ok(id) = self.start_dial(address, Some(reply)) {
            self.dial_deadlines.spawn(async move {
                tokio::time::sleep(timeout).await;
                id
            });
        }
    }

    /// The peer already connected at `address` (or named by it), if any.
    fn connected_at(&self, address: &Multiaddr) -> Option<PeerId> {
        if let Some(peer) = peer_in(address) {
            return self.swarm.is_connected(&peer).then_some(peer);
        }
        let wanted = without_peer(address);
        self.connections
            .values()
            .find(|(_, remote)| without_peer(remote) == wanted)
            .map(|(peer, _)| *peer)
    }

    /// A [`NodeHandle::connect`]'s time is up: it is answered now (the dial goes on, and its
    /// failure is still reported as an event).
    fn dial_timed_out(&mut self, id: ConnectionId) {
        if let Some(reply) = self.dials.get_mut(&id).and_then(|d| d.reply.take()) {
            let _ = reply.send(Err(DialError::TimedOut));
        }
    }

    fn dial_failed(&self, peer: Option<PeerId>, address: Option<Multiaddr>, error: &DialError) {
        tracing::debug!(?peer, ?address, %error, "dial failed");
        let reason = error.to_string();
        let event = Event::DialFailed {
            peer,
            address,
            reason,
        };
        let _ = self.cx.events.send(event);
    }

    fn on_dial_error(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        error: &libp2p::swarm::DialError,
    ) {
        let dialing = self.dials.remove(&id);
        let expected = dialing.as_ref().and_then(|d| d.expected).or(peer);
        let classified = DialError::classify(error, expected);
        let address = match (&dialing, error) {
            (Some(d), _) => Some(d.address.clone()),
            (None, libp2p::swarm::DialError::WrongPeerId { address, .. }) => Some(address.clone()),
            (None, libp2p::swarm::DialError::Transport(tried)) if tried.len() == 1 => {
                Some(tried[0].0.clone())
            }
            _ => None,
        };
        self.dial_failed(peer.or(expected), address, &classified);
        if let Some(reply) = dialing.and_then(|d| d.reply) {
            let _ = reply.send(Err(classified));
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let mut peers: BTreeMap<PeerId, PeerInfo> = BTreeMap::new();
        for (peer, address) in self.connections.values() {
            let info = peers.entry(*peer).or_insert_with(|| PeerInfo {
                peer: *peer,
                addresses: Vec::new(),
                listen_addrs: self.identified.get(peer).cloned().unwrap_or_default(),
                feeds: Vec::new(),
            });
            if !info.addresses.contains(address) {
                info.addresses.push(address.clone());
            }
        }
        for (peer, dk) in self.fetching.keys() {
            if let (Some(info), Some(feed)) = (peers.get_mut(peer), self.wanted.get(dk)) {
                info.feeds.push(feed.key());
            }
        }
        peers.into_values().collect()
    }

    /// mDNS found no peer in its first [`Config::mdns_quiet_after`]: says so, once.
    fn mdns_quiet(&self) {
        if self.mdns_found {
            return;
        }
        let mut tried: Vec<String> = Vec::new();
        for addr in &self.listen_addrs {
            let ip = addr.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(ip.to_string()),
                Protocol::Ip6(ip) => Some(ip.to_string()),
                _ => None,
            });
            if let Some(ip) = ip
                && !tried.contains(&ip)
            {
                tried.push(ip);
            }
        }
        tracing::info!(
            after = ?self.cx.config.mdns_quiet_after,
            tried = %tried.join(", "),
            "mDNS found no peer on the local network (none runs there, or multicast is \
             blocked); dial a peer's address instead"
        );
        let _ = self.cx.events.send(Event::MdnsFoundNothing { tried });
    }

    fn replicate(&mut self, feed: Feed) {
        let dk = feed.discovery_key();
        if feed.is_writable() {
            // Our own feed: nothing to fetch, only to serve.
            self.announce_everywhere(dk);
            return;
        }
        self.wanted.insert(dk, feed);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            kad.get_providers(record_key(&dk));
        }
        self.announce_everywhere(dk);
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.start_fetch(peer, dk);
        }
    }

    /// Forgets a wanted feed and ends the streams fetching it.
    fn stop_replicating(&mut self, dk: DiscoveryKey) {
        self.wanted.remove(&dk);
        self.fetching.retain(|(_, fetched), fetching| {
            let keep = *fetched != dk;
            if !keep {
                fetching.task.abort();
            }
            keep
        });
    }

    /// Asks connected peers again for wanted feeds they are not serving, and looks up in the
    /// DHT the wanted feeds that no peer serves.
    fn resync(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let wanted: Vec<DiscoveryKey> = self.wanted.keys().copied().collect();
        for dk in wanted {
            let served = peers.iter().any(|p| self.fetching.contains_key(&(*p, dk)));
            if !served && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.get_providers(record_key(&dk));
            }
            for peer in &peers {
                self.start_fetch(*peer, dk);
            }
        }
    }

    fn provide(&mut self, dk: DiscoveryKey) {
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
            && let Err(e) = kad.start_providing(record_key(&dk))
        {
            tracing::debug!(%e, "cannot record a provided feed");
        }
    }

    fn announce_everywhere(&mut self, dk: DiscoveryKey) {
        self.provide(dk);
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.announce_to(peer, vec![dk]);
        }
    }

    fn announce_to(&mut self, peer: PeerId, keys: Vec<DiscoveryKey>) {
        let (control, opener) = (self.control.clone(), self.opener(peer));
        self.tasks.spawn(session::announce(
            control,
            peer,
            keys,
            self.cx.clone(),
            opener,
        ));
    }

    fn opener(&mut self, peer: PeerId) -> Arc<Semaphore> {
        self.openers
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }

    fn start_fetch(&mut self, peer: PeerId, dk: DiscoveryKey) {
        let Some(feed) = self.wanted.get(&dk).cloned() else {
            return;
        };
        if self.fetching.contains_key(&(peer, dk)) {
            return;
        }
        let (control, cx, opener) = (self.control.clone(), self.cx.clone(), self.opener(peer));
        let task = self.fetches.spawn(async move {
            let end = session::fetch(control, peer, feed, cx, opener).await;
            (peer, dk, end)
        });
        let fetching = Fetching { retry: false, task };
        self.fetching.insert((peer, dk), fetching);
    }

    fn on_fetch_end(&mut self, peer: PeerId, dk: DiscoveryKey, end: SessionEnd) {
        let retry = self
            .fetching
            .remove(&(peer, dk))
            .is_some_and(|fetching| fetching.retry);
        match &end {
            SessionEnd::Local(e) => tracing::warn!(%peer, %e, "replication failed locally"),
            SessionEnd::Closed(why) => {
                tracing::debug!(%peer, why, retry, "replication stream closed")
            }
            _ => tracing::debug!(%peer, ?end, retry, "replication stream ended"),
        }
        match end {
            SessionEnd::Violation(reason) => return self.reject(peer, reason),
            // The peer is not rejected: it cannot tell a forked writer's histories apart
            // until it holds both, so it may only have forwarded one. The feed takes nothing
            // more, so it is no longer asked for (what is held stays served).
            SessionEnd::Forked => return self.stop_replicating(dk),
            _ => {}
        }
        if !self.swarm.is_connected(&peer) {
            return;
        }
        match end {
            SessionEnd::Refused(Refusal::NotFound) if retry => self.start_fetch(peer, dk),
            SessionEnd::Refused(Refusal::Busy) | SessionEnd::Closed(_) => {
                self.retry_later(peer, dk)
            }
            _ => {}
        }
    }

    /// Starts a replication stream again after a backoff that doubles with every early end in
    /// a row (50 ms to 30 s, with jitter so that many streams do not come back at once).
    fn retry_later(&mut self, peer: PeerId, dk: DiscoveryKey) {
        let streak = self.streaks.entry((peer, dk)).or_default();
        *streak = streak.saturating_add(1);
        let base = Duration::from_millis(50).saturating_mul(1 << (*streak - 1).min(10));
        let base = base.min(Duration::from_secs(30));
        let jitter = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one((peer, dk, *streak)) % 1000
        };
        let delay = base + base.mul_f64(jitter as f64 / 1000.0);
        self.retries.spawn(async move {
            tokio::time::sleep(delay).await;
            (peer, dk)
        });
    }

    fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Violation { peer, reason } => self.reject(peer, reason),
            Internal::ProvideBlob(id) => self.provide_blob(id),
            Internal::Unblock { peer } => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
            Internal::Announced { peer, keys } => {
                for dk in keys {
                    if !self.wanted.contains_key(&dk) {
                        continue;
                    }
                    match self.fetching.get_mut(&(peer, dk)) {
                        Some(fetching) => fetching.retry = true,
                        None => self.start_fetch(peer, dk),
                    }
                }
            }
        }
    }

    /// Disconnects a peer that broke the protocol and blocks it: for the life of the node, or
    /// for [`Config::slow_peer_block`](crate::Config::slow_peer_block) if it was only too slow
    /// (a bad link looks the same as a slowloris).
    fn reject(&mut self, peer: PeerId, reason: Violation) {
        tracing::warn!(%peer, %reason, "rejecting peer");
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        if let Violation::TooSlow(_) = reason {
            let (internal, wait) = (self.cx.internal.clone(), self.cx.config.slow_peer_block);
            self.tasks.spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = internal.send(Internal::Unblock { peer }).await;
            });
        }
        let _ = self.cx.events.send(Event::PeerRejected { peer, reason });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.listen_addrs.push(address.clone());
                let _ = self.cx.events.send(Event::Listening { address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let address = endpoint.get_remote_address().clone();
                self.connections
                    .insert(connection_id, (peer_id, address.clone()));
                if let Some(reply) = self.dials.remove(&connection_id).and_then(|d| d.reply) {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer_id, address.clone());
                    }
                    let _ = self.cx.events.send(Event::DialSucceeded {
                        peer: peer_id,
                        address: address.clone(),
                    });
                }
                if num_established.get() == 1 {
                    self.on_peer_connected(peer_id, address);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established > 0 {
                    return;
                }
                self.identified.remove(&peer_id);
                let _ = self.cx.gone.send(peer_id);
                self.openers.remove(&peer_id);
                self.streaks.retain(|(peer, _), _| *peer != peer_id);
                let _ = self
                    .cx
                    .events
                    .send(Event::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_error(connection_id, peer_id, &error),
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_peer_connected(&mut self, peer: PeerId, address: Multiaddr) {
        let _ = self.cx.events.send(Event::PeerConnected { peer, address });
        let held: Vec<DiscoveryKey> = self
            .cx
            .store
            .feeds()
            .iter()
            .map(FeedKey::discovery_key)
            .collect();
        if !held.is_empty() {
            self.announce_to(peer, held);
        }
        let wanted: Vec<DiscoveryKey> = self.wanted.keys().copied().collect();
        for dk in wanted {
            self.start_fetch(peer, dk);
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for addr in &info.listen_addrs {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                if self.swarm.is_connected(&peer_id) {
                    self.identified.insert(peer_id, info.listen_addrs.clone());
                }
                let _ = self.cx.events.send(Event::PeerIdentified {
                    peer: peer_id,
                    listen_addrs: info.listen_addrs,
                });
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                self.mdns_found = true;
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer).addresses(vec![addr]).build();
                        if let Err(e) = self.swarm.dial(opts) {
                            tracing::debug!(%peer, %e, "dialing an mDNS peer failed");
                        }
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => {
                let kad = self.swarm.behaviour_mut().kad.as_mut();
                if self.blob_providers.on_progress(kad, id, &result, step.last) {
                    return;
                }
                let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) = result
                else {
                    return;
                };
                let local = *self.swarm.local_peer_id();
                for peer in providers {
                    if peer != local
                        && !self.swarm.is_connected(&peer)
                        && let Err(e) = self.swarm.dial(peer)
                    {
                        tracing::debug!(%peer, %e, "dialing a provider failed");
                    }
                }
            }
            _ => {}
        }
    }
}

/// The peer id an address ends with (`.../p2p/ID`), if any.
fn peer_in(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// `address` without its trailing peer id.
fn without_peer(address: &Multiaddr) -> Multiaddr {
    let mut address = address.clone();
    if let Some(Protocol::P2p(_)) = address.iter().last() {
        address.pop();
    }
    address
}

/// The DHT key under which a feed's holders are recorded: its discovery key.
fn record_key(dk: &DiscoveryKey) -> kad::RecordKey {
    kad::RecordKey::new(dk.as_bytes())
}
