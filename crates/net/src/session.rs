//! The stream tasks: the async shell that runs [`crate::protocol`] sessions over libp2p streams.
//!
//! Every task awaits its writes (a slow reader slows the writer), reads frames no longer than
//! the limit, and keeps at most `pipeline_depth` verified batches waiting for storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use multibee_feed::{DiscoveryKey, Feed, Store, VerifiedBatch, VerifyError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::{ReceiveError, Violation};
use crate::event::{Counters, Event};
use crate::io::{StreamError, read_frame, write_frame, write_message};
use crate::protocol::{self, Client, ClientAction, Server, ServerAction};
use crate::wire::{ANNOUNCE_PROTOCOL, REPLICATE_PROTOCOL, Refusal};

/// The longest request frame a server reads: a `Want` is under 100 bytes, a `WantFiltered`
/// at most 256 prefixes of 1 KiB.
const MAX_REQUEST_BYTES: usize = 300 << 10;
/// The most data frames being built or written at once to one peer, over all its streams:
/// with frames of ~2 MiB (at most the frame limit), what a peer that stops reading can make
/// this node hold is bounded by this many frames.
const FRAMES_IN_FLIGHT_PER_PEER: usize = 4;
/// The most announce streams handled at once, from all peers.
const MAX_ANNOUNCE_TASKS: usize = 256;

/// The replication protocol's name.
pub(crate) fn replicate_protocol() -> StreamProtocol {
    StreamProtocol::new(REPLICATE_PROTOCOL)
}

/// The announce protocol's name.
pub(crate) fn announce_protocol() -> StreamProtocol {
    StreamProtocol::new(ANNOUNCE_PROTOCOL)
}

/// What the stream tasks tell the event loop.
#[derive(Debug)]
pub(crate) enum Internal {
    /// A peer broke the protocol.
    Violation { peer: PeerId, reason: Violation },
    /// A peer announced feeds it holds.
    Announced {
        peer: PeerId,
        keys: Vec<DiscoveryKey>,
    },
    /// A peer blocked for being too slow has served its time.
    Unblock { peer: PeerId },
    /// A blob became complete: provide it in the DHT.
    ProvideBlob(multibee_blobs::BlobId),
}

/// What every stream task shares.
pub(crate) struct Context {
    pub(crate) store: Store,
    pub(crate) local: PeerId,
    pub(crate) config: Config,
    pub(crate) counters: Arc<Counters>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) internal: mpsc::Sender<Internal>,
    /// Peers whose last connection closed: their stream tasks end (a stream of a closed
    /// connection does not always report it to a pending read).
    pub(crate) gone: broadcast::Sender<PeerId>,
}

impl Context {
    /// Resolves once `peer`'s last connection closed after this call.
    pub(crate) fn gone(&self, peer: PeerId) -> impl Future<Output = ()> + use<> {
        let mut gone = self.gone.subscribe();
        async move {
            loop {
                match gone.recv().await {
                    Ok(p) if p == peer => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        }
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.config.limits.max_frame_bytes
    }

    pub(crate) fn frame_timeout(&self) -> Duration {
        self.config.frame_timeout
    }

    pub(crate) async fn report(&self, peer: PeerId, reason: Violation) {
        tracing::warn!(%peer, %reason, "peer broke the protocol");
        let _ = self
            .internal
            .send(Internal::Violation { peer, reason })
            .await;
    }
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The peer broke the protocol.
    Violation(Violation),
    /// The server refused the request.
    Refused(Refusal),
    /// The stream failed or was closed.
    Closed(String),
    /// The local store failed.
    Local(multibee_feed::Error),
    /// The feed's writer signed two histories, and the peer sent the one not held: the feed
    /// is frozen. Not the peer's fault: it may only have forwarded what the writer signed.
    Forked,
}

impl SessionEnd {
    /// How a session that met `violation` ends.
    pub(crate) fn violation(violation: Violation) -> Self {
        match violation {
            Violation::Invalid(VerifyError::Forked) => SessionEnd::Forked,
            other => SessionEnd::Violation(other),
        }
    }
}

impl From<StreamError> for SessionEnd {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Io(e) => SessionEnd::Closed(e.to_string()),
            StreamError::Frame(e) => SessionEnd::Violation(e.into()),
            StreamError::Slow(waited) => SessionEnd::Violation(Violation::TooSlow(waited)),
        }
    }
}

impl From<std::io::Error> for SessionEnd {
    fn from(e: std::io::Error) -> Self {
        SessionEnd::Closed(e.to_string())
    }
}

impl From<multibee_feed::Error> for SessionEnd {
    fn from(e: multibee_feed::Error) -> Self {
        match e {
            multibee_feed::Error::Rejected { reason, .. } => {
                SessionEnd::violation(Violation::Invalid(reason))
            }
            other => SessionEnd::Local(other),
        }
    }
}

/// Accepts replicate streams and serves each in its own task, at most
/// `max_streams_per_peer` at once per peer. Once `stop` changes (or its sender is gone), ends
/// every serving task and waits for them, so that none holds the store after this returns.
pub(crate) async fn accept_replicate(
    incoming: IncomingStreams,
    cx: Arc<Context>,
    stop: watch::Receiver<bool>,
) {
    accept_streams(
        incoming,
        cx,
        stop,
        "serving",
        |peer, stream, cx, frames| async move { serve(peer, stream, &cx, &frames).await },
        |stream, cx| async move { refuse_busy(stream, &cx).await },
    )
    .await;
}

/// The accept loop of a stream protocol: serves each stream with `serve` in its own task, at
/// most `max_streams_per_peer` at once per peer (a stream beyond is handed to `busy`). A
/// violation reports (and blocks) the peer; a serving task ends when its peer disconnects.
/// Once `stop` changes (or its sender is gone), ends every serving task and waits for them.
pub(crate) async fn accept_streams<S, SF, B, BF>(
    mut incoming: IncomingStreams,
    cx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    serve: S,
    busy: B,
) where
    S: Fn(PeerId, Stream, Arc<Context>, Arc<Semaphore>) -> SF + Clone + Send + 'static,
    SF: Future<Output = Result<(), SessionEnd>> + Send + 'static,
    B: Fn(Stream, Arc<Context>) -> BF + Clone + Send + 'static,
    BF: Future<Output = ()> + Send + 'static,
{
    let open: Arc<Mutex<HashMap<PeerId, PeerSlots>>> = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            next = incoming.next() => {
                let Some((peer, stream)) = next else { break };
                let slot = StreamSlot::take(&open, peer, cx.config.max_streams_per_peer);
                let cx = cx.clone();
                let (serve, busy) = (serve.clone(), busy.clone());
                tasks.spawn(async move {
                    let Some(slot) = slot else {
                        busy(stream, cx).await;
                        return;
                    };
                    let gone = cx.gone(peer);
                    let served = tokio::select! {
                        served = serve(peer, stream, cx.clone(), slot.frames.clone()) => served,
                        () = gone => Err(SessionEnd::Closed("the peer disconnected".into())),
                    };
                    if let Err(end) = served {
                        match end {
                            SessionEnd::Violation(reason) => cx.report(peer, reason).await,
                            other => tracing::debug!(%peer, ?other, "{what} ended"),
                        }
                    }
                });
            }
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.shutdown().await;
}

/// What a peer's serving streams share.
struct PeerSlots {
    /// Streams open.
    count: usize,
    /// Permits to build and write a data frame (see [`FRAMES_IN_FLIGHT_PER_PEER`]).
    frames: Arc<Semaphore>,
}

/// One of a peer's stream slots, given back when dropped.
struct StreamSlot {
    open: Arc<Mutex<HashMap<PeerId, PeerSlots>>>,
    peer: PeerId,
    pub(crate) frames: Arc<Semaphore>,
}

impl StreamSlot {
    pub(crate) fn take(
        open: &Arc<Mutex<HashMap<PeerId, PeerSlots>>>,
        peer: PeerId,
        max: usize,
    ) -> Option<Self> {
        let mut slots = lock(open);
        let slots = slots.entry(peer).or_insert_with(|| PeerSlots {
            count: 0,
            frames: Arc::new(Semaphore::new(FRAMES_IN_FLIGHT_PER_PEER)),
        });
        if slots.count >= max {
            return None;
        }
        slots.count += 1;
        Some(StreamSlot {
            open: open.clone(),
            peer,
            frames: slots.frames.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut slots = lock(&self.open);
        if let Some(peer) = slots.get_mut(&self.peer) {
            peer.count -= 1;
            if peer.count == 0 {
                slots.remove(&self.peer);
            }
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map holds plain counters: a panic while it was held cannot leave it inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn refuse_busy(mut stream: Stream, cx: &Context) {
    let _ = write_message(
        &mut stream,
        &Server::busy(),
        cx.max_frame(),
        cx.frame_timeout(),
    )
    .await;
    let _ = stream.close().await;
}

/// Serves one replicate stream: the request, then the entries asked for, then live ones until
/// the peer closes the stream.
async fn serve(
    peer: PeerId,
    stream: Stream,
    cx: &Context,
    frames: &Semaphore,
) -> Result<(), SessionEnd> {
    let (mut reader, mut writer) = stream.split();
    let mut buf = Vec::new();
    let request = tokio::time::timeout(
        cx.frame_timeout(),
        read_frame(&mut reader, MAX_REQUEST_BYTES, &mut buf, cx.frame_timeout()),
    );
    let Ok(read) = request.await else {
        return Err(SessionEnd::Violation(Violation::TooSlow(
            cx.frame_timeout(),
        )));
    };
    if !read? {
        return Ok(());
    }
    let mut server = Server::new(
        &cx.local.to_bytes(),
        &peer.to_bytes(),
        cx.config.limits.clone(),
    );
    let action = server.receive(&buf, |dk| {
        cx.store.feed_by_discovery_key(dk).map(|f| f.key())
    });
    let (key, filtered) = match action.map_err(SessionEnd::Violation)? {
        ServerAction::Refuse(message) => {
            write_message(&mut writer, &message, cx.max_frame(), cx.frame_timeout()).await?;
            writer.close().await?;
            return Ok(());
        }
        ServerAction::Serve { key, .. } => (key, None),
        ServerAction::ServeFiltered { key, wants, base } => (key, Some((wants, base))),
    };
    if filtered.is_some() && cx.config.filter.is_none() {
        let refusal = crate::wire::Message::Refused(Refusal::NotFound);
        write_message(&mut writer, &refusal, cx.max_frame(), cx.frame_timeout()).await?;
        writer.close().await?;
        return Ok(());
    }
    let feed = cx
        .store
        .feed(&key)
        .ok_or(SessionEnd::Local(multibee_feed::Error::UnknownFeed(key)))?;
    let mut status = feed.subscribe();
    if let Some(have) = server.have(feed.length()) {
        write_message(&mut writer, &have, cx.max_frame(), cx.frame_timeout()).await?;
    }
    let frame_timeout = cx.frame_timeout();
    // The client sends nothing after its request: the next frame read must be the end.
    let mut ended = Box::pin(async move {
        let mut buf = Vec::new();
        read_frame(&mut reader, MAX_REQUEST_BYTES, &mut buf, frame_timeout).await
    });
    if let Some((wants, base)) = filtered {
        return crate::filtered::serve(
            &mut writer,
            &mut ended,
            &server,
            &feed,
            wants,
            base,
            cx,
            frames,
        )
        .await;
    }
    loop {
        let length = status.borrow_and_update().length;
        while let Some(range) = server.next_range(length) {
            let count = range.end - range.start;
            let _permit = tokio::select! {
                permit = frames.acquire() => permit.map_err(|_| SessionEnd::Closed("stopped".into()))?,
                end = &mut ended => return client_end(end),
            };
            let Some(frame) = server.data_frame(feed.proof(range)?) else {
                if count == 1 {
                    return Err(SessionEnd::Local(multibee_feed::Error::InvalidArgument(
                        "an entry does not fit in a frame".into(),
                    )));
                }
                continue;
            };
            // A peer that stops reading is cut off once the frame stops moving.
            tokio::select! {
                written = write_frame(&mut writer, &frame, cx.frame_timeout()) => written?,
                end = &mut ended => return client_end(end),
            }
            Counters::add(&cx.counters.sent, count);
            Counters::add(&cx.counters.bytes_sent, frame.len() as u64);
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return Ok(()) },
            end = &mut ended => return client_end(end),
        }
    }
}

/// What the client's side of a served stream did after its request.
pub(crate) fn client_end(read: Result<bool, StreamError>) -> Result<(), SessionEnd> {
    match read? {
        false => Ok(()),
        true => Err(SessionEnd::Violation(Violation::Unexpected {
            message: "second",
            detail: "the client sends nothing after its Want",
        })),
    }
}

/// Replicates `feed` from `peer`: asks for what is missing, verifies and stores it, and stays
/// subscribed until the stream ends. Always returns how it ended.
///
/// Streams to one peer are opened one at a time (`opener` holds one permit, kept until the
/// server answered): libp2p-stream drops inbound streams that arrive faster than they are
/// accepted, so a burst of requests would lose most of them.
pub(crate) async fn fetch(
    control: Control,
    peer: PeerId,
    feed: Feed,
    cx: Arc<Context>,
    opener: Arc<Semaphore>,
) -> SessionEnd {
    let gone = cx.gone(peer);
    tokio::select! {
        end = fetch_stream(control, peer, feed, &cx, opener) => end,
        () = gone => SessionEnd::Closed("the peer disconnected".into()),
    }
}

async fn fetch_stream(
    mut control: Control,
    peer: PeerId,
    feed: Feed,
    cx: &Context,
    opener: Arc<Semaphore>,
) -> SessionEnd {
    let Ok(permit) = opener.acquire_owned().await else {
        return SessionEnd::Closed("the peer disconnected".into());
    };
    let permit = Some(permit);
    let stream = match control.open_stream(peer, replicate_protocol()).await {
        Ok(stream) => stream,
        Err(e) => return SessionEnd::Closed(e.to_string()),
    };
    let (reader, mut writer) = stream.split();
    let mut client = Client::new(feed.key(), &cx.local.to_bytes(), &peer.to_bytes());
    if let Some(wants) = cx
        .config
        .filter
        .as_ref()
        .and_then(|f| f.wanted(&feed.key()))
    {
        return crate::filtered::fetch(reader, writer, permit, peer, feed, wants, cx, client).await;
    }
    if let Err(e) = write_message(
        &mut writer,
        &client.want(feed.length()),
        cx.max_frame(),
        cx.frame_timeout(),
    )
    .await
    {
        return e.into();
    }
    let (batches, mut to_store) = mpsc::channel::<VerifiedBatch>(cx.config.pipeline_depth.max(1));
    let verify = |batch: multibee_feed::Batch| {
        Counters::add(&cx.counters.received, batch.entries.len() as u64);
        feed.verify(batch)
    };
    let stored = |action| match action {
        ClientAction::Store(verified) => Some(verified),
        _ => None,
    };
    let receive = receive_answers(
        reader,
        &mut client,
        permit,
        cx,
        peer,
        verify,
        batches,
        stored,
    );
    let store = async {
        while let Some(verified) = to_store.recv().await {
            let ingested = match &cx.config.sink {
                Some(sink) => sink.ingest(verified).await?,
                None => feed.store().write(move |txn| txn.ingest(&verified)).await?,
            };
            feed.check_not_forked()?;
            Counters::add(&cx.counters.stored, ingested.added);
            let _ = cx.events.send(Event::FeedProgressed {
                key: feed.key(),
                length: ingested.length,
                peer,
            });
        }
        Ok::<(), SessionEnd>(())
    };
    let end = match tokio::try_join!(receive, store) {
        Ok(((), ())) => SessionEnd::Closed("stopped".into()),
        Err(end) => end,
    };
    drop(writer);
    end
}

/// Reads the server's answers on a fetching stream (plain or filtered) until it ends: each
/// message goes through `client` (`verify` checks a `Data` batch), and what `entries` makes of
/// an entries action goes to `out`, for the task that stores it. The first answer must come
/// in time: until it does, the stream holds `permit`, which every other stream to the peer
/// waits for.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn receive_answers<R, V, T>(
    mut reader: R,
    client: &mut Client,
    mut permit: Option<OwnedSemaphorePermit>,
    cx: &Context,
    peer: PeerId,
    verify: impl Fn(multibee_feed::Batch) -> multibee_feed::Result<V>,
    out: mpsc::Sender<T>,
    entries: impl Fn(ClientAction<V>) -> Option<T>,
) -> Result<(), SessionEnd>
where
    R: futures::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let read = read_frame(&mut reader, cx.max_frame(), &mut buf, cx.frame_timeout());
        let read = match permit.is_some() {
            true => tokio::time::timeout(cx.frame_timeout(), read)
                .await
                .map_err(|_| SessionEnd::Closed("no answer in time".into()))?,
            false => read.await,
        };
        if !read? {
            return Err(SessionEnd::Closed("closed by the peer".into()));
        }
        Counters::add(&cx.counters.bytes_received, buf.len() as u64);
        let action = client.receive(&buf, &verify);
        // The server took the request: the next stream to this peer may be opened.
        permit.take();
        match action {
            Ok(ClientAction::RemoteLength(length)) => {
                let _ = cx.events.send(Event::PeerHas {
                    key: client.key(),
                    peer,
                    length,
                });
            }
            Ok(ClientAction::Refused(refusal)) => return Err(SessionEnd::Refused(refusal)),
            Ok(action) => {
                if let Some(item) = entries(action)
                    && out.send(item).await.is_err()
                {
                    return Ok(());
                }
            }
            Err(ReceiveError::Peer(v)) => return Err(SessionEnd::violation(v)),
            Err(ReceiveError::Local(e)) => return Err(SessionEnd::Local(e)),
        }
    }
}

/// Tells `peer` which feeds this node holds (opening the stream in turn with the replicate
/// streams, see [`fetch`]).
pub(crate) async fn announce(
    mut control: Control,
    peer: PeerId,
    keys: Vec<DiscoveryKey>,
    cx: Arc<Context>,
    opener: Arc<Semaphore>,
) {
    let sent = async {
        let _permit = opener
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let mut stream = control
            .open_stream(peer, announce_protocol())
            .await
            .map_err(std::io::Error::other)?;
        let message = protocol::announce(keys);
        write_message(&mut stream, &message, cx.max_frame(), cx.frame_timeout()).await?;
        Ok::<(), StreamError>(stream.close().await?)
    };
    if let Err(e) = sent.await {
        tracing::debug!(%peer, %e, "announcing failed");
    }
}

/// Accepts announce streams and passes what they say to the event loop. Stops like
/// [`accept_replicate`].
pub(crate) async fn accept_announce(
    mut incoming: IncomingStreams,
    cx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            next = incoming.next() => {
                let Some((peer, mut stream)) = next else { break };
                if tasks.len() >= MAX_ANNOUNCE_TASKS {
                    continue;
                }
                let cx = cx.clone();
                tasks.spawn(async move {
                    let mut buf = Vec::new();
                    let read = tokio::time::timeout(
                        cx.frame_timeout(),
                        read_frame(&mut stream, cx.max_frame(), &mut buf, cx.frame_timeout()),
                    );
                    let message = match read.await {
                        Ok(Ok(true)) => protocol::receive_announce(&buf),
                        Ok(Err(StreamError::Frame(e))) => Err(e.into()),
                        Ok(Err(StreamError::Slow(waited))) => Err(Violation::TooSlow(waited)),
                        Err(_) => Err(Violation::TooSlow(cx.frame_timeout())),
                        Ok(Ok(false) | Err(StreamError::Io(_))) => return,
                    };
                    match message {
                        Ok(keys) => {
                            let _ = cx.internal.send(Internal::Announced { peer, keys }).await;
                        }
                        Err(reason) => cx.report(peer, reason).await,
                    }
                });
            }
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.shutdown().await;
}
